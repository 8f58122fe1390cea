"""PII scrubbing: runs on the request path, before anything is stored, so raw values never reach the
database, the logs or an error message.

Pattern-based (``rules.py``: RE2 patterns, linear in the text whatever it holds) with validation where
a checksum exists (Luhn for cards, mod-97 for IBANs) and numbering plans for phones (``phones.py``:
libphonenumber, over the expected regions of ``CONVOLENS_PHONE_REGIONS``), so that order numbers,
part numbers and prices are left alone. What is found is replaced by Context's dummy values where Context had
one (e-mail, card, SSN, UK NI number) and by a typed tag otherwise (``[PHONE]``, ``[IBAN]``, ``[IP]``,
``[SECRET]``), so that transcripts stay readable and the same kind always looks the same.

Labels (message ``name`` and ``model``, event names) and the keys of metadata, properties and tool
inputs are scrubbed too. Ids (``user_id``, conversation ids) are not scrubbed: they are the keys of
the analytics. An app that uses e-mail addresses as user ids should hash them before sending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convolens.enrich.pii import remembered
from convolens.enrich.pii.phones import Budget
from convolens.enrich.pii.rules import (
    CARD_DUMMY,
    CUES,
    EMAIL_DUMMY,
    NI_DUMMY,
    RULES,
    SSN_DUMMY,
    Rule,
)
from convolens.schemas.ingest import ConversationEvent, CustomEvent, FeedbackEvent, IngestBatch, MessageEvent

__all__ = [
    "CARD_DUMMY", "EMAIL_DUMMY", "NI_DUMMY", "RULES", "SSN_DUMMY", "Budget", "apply_changes", "batch_fields",
    "scrub", "scrub_batch", "scrub_fields", "scrub_name", "scrub_value",
]  # fmt: skip

_ASCII_DIGITS = "0123456789"


@dataclass
class ScrubResult:
    text: str
    found: Counter[str]


# Literal markers that every match of a rule contains. Substring tests run in C at memory speed and
# the patterns cost up to 200 µs on a long message, so a pattern only runs where its marker is. The
# tests are grouped behind single characters the markers need ("-", "_", "=" or ":"), because even
# substring tests add up: 13 of them over a 780-character message were 11 µs (bench/README.md).
_DASHED_SECRET_MARKERS = ("sk-", "xox", "xapp-", "glpat-", "-----BEGIN")
_UNDERSCORED_SECRET_MARKERS = (
    "cl_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "k_live_", "k_test_", "whsec_", "hf_", "npm_",
)  # fmt: skip
_BARE_SECRET_MARKERS = ("AKIA", "ASIA", "AIza", "eyJ", "SG.")  # the patterns are case-sensitive
_KEYED_STEMS = ("passw", "pwd", "secret", "key", "token")  # followed by "=" or ":" (any case)


def _may_hold_secret(text: str) -> bool:
    return (
        ("-" in text and any(marker in text for marker in _DASHED_SECRET_MARKERS))
        or ("_" in text and any(marker in text for marker in _UNDERSCORED_SECRET_MARKERS))
        or any(marker in text for marker in _BARE_SECRET_MARKERS)
    )


# A password told in words needs no "=" or ":" ("Mein Passwort ist …", "パスワードは…"): stems of the
# words of rules._PASSWORD_WORDS, the ASCII ones apart so that an ASCII text skips the others.
_PASSWORD_STEMS = ("pass", "contrase", "senha", "parola", "wachtwoord")
_PASSWORD_STEMS_OTHER = ("şifre", "hasło", "пароль", "비밀번호", "암호", "パスワード", "密码", "密碼", "كلمة المرور")


def _may_hold_keyed_secret(text: str, lower: str) -> bool:
    if "earer" in lower:  # bearer, any case
        return True
    if ("=" in text or ":" in text) and any(stem in lower for stem in _KEYED_STEMS):
        return True
    return any(stem in lower for stem in _PASSWORD_STEMS) or (
        not text.isascii() and any(stem in lower for stem in _PASSWORD_STEMS_OTHER)
    )


def _has_digit(text: str) -> bool:
    # ASCII digits, and the full-width ones Japanese and Chinese input methods type (scrub() reads them
    # as ASCII); RE2's \d is ASCII, so no rule matches another script's digits.
    return any(digit in text for digit in _ASCII_DIGITS) or _has_wide_digit(text)


# Full-width digits (U+FF10-FF19) and signs, and the ideographic space, to ASCII: one character for
# one, so that lengths and positions stay the same.
_WIDE_DIGITS = "".join(chr(0xFF10 + i) for i in range(10))
_NARROW = {0xFF10 + i: ord("0") + i for i in range(10)} | {
    0xFF0B: "+", 0xFF0D: "-", 0xFF08: "(", 0xFF09: ")", 0xFF0E: ".", 0xFF20: "@", 0x3000: " ",
}  # fmt: skip


def _has_wide_digit(text: str) -> bool:
    return not text.isascii() and any(digit in text for digit in _WIDE_DIGITS)


@dataclass(frozen=True)
class Possible:
    """Which gates a text can pass at all, known from a larger text that contains it: a batch's free
    texts are gated once, joined, so that a gate no text passes is not tried text by text."""

    digit: bool = True
    at: bool = True
    secret: bool = True
    keyed_secret: bool = True

    @classmethod
    def within(cls, texts: list[str]) -> Possible:
        joined = "\n".join(texts)
        return cls(
            digit=_has_digit(joined),
            at="@" in joined,
            secret=_may_hold_secret(joined),
            keyed_secret=_may_hold_keyed_secret(joined, joined.lower()),
        )

    @property
    def nothing(self) -> bool:
        return not (self.digit or self.at or self.secret or self.keyed_secret)


ANYTHING = Possible()


def _worth_trying(rule: Rule, text: str, lower: str, has_digit: bool, possible: Possible) -> bool:
    name = rule.name
    if name == "secret":
        return possible.secret and _may_hold_secret(text)
    if name == "keyed_secret":
        return possible.keyed_secret and _may_hold_keyed_secret(text, lower)
    if name == "email":
        return possible.at and "@" in text
    if not has_digit:
        return False
    if name == "ssn":
        return "-" in text
    if name == "ipv6":
        return "::" in text or text.count(":") >= 3
    if name == "ipv4":
        return text.count(".") >= 3
    if name == "cued_phone" or name == "cued_ssn":
        return any(cue in lower for cue in CUES)
    return True


def apply_rule(rule: Rule, text: str, found: Counter[str], budget: Budget) -> str:
    """The text with the rule's replacements made (the same object when there is none)."""
    pieces: list[str] = []
    last = 0
    for match in rule.pattern.finditer(text):
        replacement = rule.replace(match, budget)
        if replacement is None:
            continue
        pieces += [text[last : match.start()], replacement]
        last = match.end()
        found[rule.kind] += 1
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def scrub(text: str, possible: Possible = ANYTHING, budget: Budget | None = None) -> ScrubResult:
    """The text with every PII value found replaced, and how many of each kind were found. A text with
    nothing to replace comes back as the same object. Linear in the text: RE2 patterns, and a bounded
    number of numbering-plan checks (``budget``: pass one to share it between the texts of a message,
    so that a message of many small texts is bounded too)."""
    budget = Budget() if budget is None else budget
    found: Counter[str] = Counter()
    if not text or possible.nothing:
        return ScrubResult(text, found)
    has_digit = possible.digit and _has_digit(text)
    if has_digit and _has_wide_digit(text):
        # A number typed full-width (Japanese and Chinese input methods) is scrubbed as ASCII; a text
        # with nothing found stays as it was.
        narrow = text.translate(_NARROW)
        result = _scrub(narrow, possible, has_digit, found, budget)
        return ScrubResult(text if result == narrow else result, found)
    return ScrubResult(_scrub(text, possible, has_digit, found, budget), found)


def _scrub(text: str, possible: Possible, has_digit: bool, found: Counter[str], budget: Budget) -> str:
    lower = text.lower()
    for rule in RULES:
        if _worth_trying(rule, text, lower, has_digit, possible):
            text = apply_rule(rule, text, found, budget)
    return text


def scrub_text(text: str | None) -> str | None:
    return None if text is None else scrub(text).text


def scrub_value(value: Any, budget: Budget | None = None) -> Any:
    """Strings anywhere inside JSON-like data (metadata, tool inputs), keys included, all on one budget
    of numbering-plan checks; unchanged data comes back as the same object."""
    budget = Budget() if budget is None else budget
    if isinstance(value, str):
        return scrub(value, budget=budget).text
    if isinstance(value, dict):
        scrubbed = {}
        changed = False
        for key, item in value.items():
            new_key = scrub_name(key, budget) if isinstance(key, str) else key
            new_item = scrub_value(item, budget)
            changed = changed or new_key is not key or new_item is not item
            while new_key in scrubbed:  # two addresses as keys: both kept, under distinct dummies
                new_key = f"{new_key}~"
            scrubbed[new_key] = new_item
        return scrubbed if changed else value
    if isinstance(value, list):
        items = [scrub_value(item, budget) for item in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else items
    return value


def scrub_name(value: str | None, budget: Budget | None = None) -> str | None:
    """A short label (a message's ``name``, ``model``, an event's name, a metadata key): scrubbed like
    free text but not gated with it, since the batch's gates are computed over the free texts only.
    Labels repeat (every reply names its model), so the short ones found clean are remembered; a label
    with PII is never kept, not even in memory."""
    if not value or value in _CLEAN_LABELS:
        return value
    scrubbed = scrub(value, budget=budget).text
    if scrubbed is value and len(value) <= _LABEL_CHARS:
        if len(_CLEAN_LABELS) >= _CLEAN_LABELS_KEPT:
            _CLEAN_LABELS.clear()
        _CLEAN_LABELS.add(value)
    return scrubbed


_LABEL_CHARS = 128  # config.Limits.max_id_chars and max_metadata_key_chars
_CLEAN_LABELS_KEPT = 4096
_CLEAN_LABELS: set[str] = set()


# What ``scrub_batch`` scrubs, by attribute, and how: free text (gated by the batch's texts joined,
# ``Possible``), JSON-like values (strings and keys anywhere inside), labels (``scrub_name``).
_TEXT, _VALUE, _LABEL = "text", "value", "label"
_HOW = {
    "content": _TEXT, "error": _TEXT, "thought": _TEXT, "observation": _TEXT, "feedback": _TEXT,
    "metadata": _VALUE, "extra": _VALUE, "input": _VALUE, "properties": _VALUE,
    "name": _LABEL, "model": _LABEL,
}  # fmt: skip
# Each kind of event's scrubbed attributes, in the order they spend the event's one budget of checks.
_SCRUBBED: dict[type, tuple[str, ...]] = {
    MessageEvent: ("content", "error", "metadata", "extra", "thought", "observation", "input", "name", "model"),
    ConversationEvent: ("metadata", "feedback"),
    FeedbackEvent: ("feedback",),
    CustomEvent: ("name", "properties"),
}
# What the name model reads, once the rest is scrubbed: the texts a transcript shows.
_NAMED = frozenset({"content", "error", "feedback"})

# (event index, attribute, value): a field of a batch to scrub, or a scrubbed value that changed.
BatchField = tuple[int, str, Any]


def batch_fields(batch: IngestBatch) -> list[BatchField]:
    """The batch's fields that ``scrub_fields`` scrubs, the empty ones left out (nothing to scrub in them):
    plain tuples, cheap to send to the scrubbing process (server/scrubbing_process.py), where the batch's
    pydantic events pickled and unpickled both ways cost ~2/3 of the scrubbing itself."""
    fields: list[BatchField] = []
    for i, event in enumerate(batch.events):
        for attribute in _SCRUBBED.get(type(event), ()):
            value = getattr(event, attribute)
            if value:
                fields.append((i, attribute, value))
    return fields


def scrub_fields(fields: list[BatchField], names: bool = False) -> tuple[list[BatchField], Counter[str]]:
    """The fields of ``batch_fields`` scrubbed: only those that changed come back, and what was found, by
    kind. One budget of numbering-plan checks per event, shared by its fields. With ``names``, people's
    names and places in the transcript texts go too (``enrich/names.py``, an optional extra).

    A text this process scrubbed before is not scrubbed again (``remembered.py``): its result is reused
    where it is exactly what scrubbing would give, so a resent history costs a digest a message."""
    found: Counter[str] = Counter()
    # Field index: (its text's digest, the result kept for it or None), for texts long enough to keep.
    memory: dict[int, tuple[bytes, remembered.Kept | None]] = {}
    unknown: list[str] = []
    for k, (_, attribute, value) in enumerate(fields):
        if _HOW[attribute] is not _TEXT:
            continue
        if len(value) >= remembered.FROM_CHARS:
            key = remembered.digest(value)
            memory[k] = (key, remembered.look(key))
            if memory[k][1] is not None:
                continue
        unknown.append(value)
    # Gated on the texts that may need scrubbing; a remembered text that must be scrubbed after all (its
    # message's checks are short) is scrubbed with every gate open.
    possible = Possible.within(unknown)
    changed: dict[tuple[int, str], Any] = {}
    budget, event = Budget(), -1
    for k, (i, attribute, value) in enumerate(fields):
        if i != event:
            budget, event = Budget(), i
        how = _HOW[attribute]
        if how is _TEXT:
            key, kept = memory.get(k, (None, None))
            if kept is not None and remembered.spend(kept, budget):
                if kept.found:
                    found.update(dict(kept.found))
                new = value if kept.text is None else kept.text
            elif possible.nothing and kept is None:
                continue
            else:
                checks = budget.checks
                result = scrub(value, ANYTHING if kept is not None else possible, budget)
                if result.found:
                    found.update(result.found)
                new = result.text
                if key is not None and budget.checks > 0:  # it did not run short of checks
                    remembered.keep(key, None if new is value else new, result.found, checks - budget.checks)
        elif how is _VALUE:
            new = scrub_value(value, budget)
        else:
            new = scrub_name(value, budget)
        # The scrubbers return what they did not change as the same object: only real changes travel back
        # and are set (pydantic's ``__setattr__`` costs a microsecond or two, and most fields are clean).
        if new is not value:
            changed[(i, attribute)] = new
    if names:
        named = [(i, a, changed.get((i, a), value)) for i, a, value in fields if a in _NAMED]
        redacted = _redact([value for _, _, value in named])
        for (i, attribute, value), text in zip(named, redacted, strict=True):
            if text != value:
                changed[(i, attribute)] = text
    return [(i, attribute, value) for (i, attribute), value in changed.items()], found


def apply_changes(batch: IngestBatch, changes: list[BatchField]) -> None:
    events = batch.events
    for i, attribute, value in changes:
        setattr(events[i], attribute, value)


def scrub_batch(batch: IngestBatch, *, names: bool = False, run: Callable[..., Any] | None = None) -> Counter[str]:
    """Scrub every free-text field of a native batch in place; returns what was found, by kind. ``run``
    calls ``scrub_fields`` with its arguments somewhere else (``scrubbing_process.scrubbed``: in a child
    process), with only the fields' values going there and only the changed ones back."""
    fields = batch_fields(batch)
    if not fields:
        return Counter()
    changes, found = scrub_fields(fields, names) if run is None else run(scrub_fields, fields, names)
    apply_changes(batch, changes)
    return found


def _redact(texts: list[str]) -> list[str]:
    from convolens.enrich import names as name_model

    return name_model.redact(texts) if texts else texts

"""PII scrubbing: runs on the request path, before anything is stored, so raw values never reach the
database, the logs or an error message.

Pattern-based with validation where a checksum exists (Luhn for cards, mod-97 for IBANs), so that order
numbers and prices are left alone. What is found is replaced by Context's dummy values where Context had
one (e-mail, card, SSN, UK NI number) and by a typed tag otherwise (``[PHONE]``, ``[IBAN]``, ``[IP]``,
``[SECRET]``), so that transcripts stay readable and the same kind always looks the same.

Ids (``user_id``, conversation ids) are not scrubbed: they are the keys of the analytics. An app that
uses e-mail addresses as user ids should hash them before sending.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convolens.schemas.ingest import ConversationEvent, CustomEvent, FeedbackEvent, IngestBatch, MessageEvent

EMAIL_DUMMY = "email@example.com"
CARD_DUMMY = "1111 1111 1111 1111"
SSN_DUMMY = "000-00-0000"
NI_DUMMY = "QQ 12 34 56 C"

_SECRET = re.compile(
    r"""
    \bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}        # OpenAI / Anthropic / Stripe style keys
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                            # AWS access key ids
    | \bgh[pousr]_[A-Za-z0-9]{30,}\b | \bgithub_pat_[A-Za-z0-9_]{40,}\b
    | \bxox[abprs]-[A-Za-z0-9-]{10,}\b                         # Slack
    | \bAIza[0-9A-Za-z_\-]{35}\b                               # Google API keys
    | \bcl_[A-Za-z0-9_\-]{40,}\b                               # convolens' own tokens
    | \beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}  # JWTs
    """,
    re.VERBOSE,
)
# Values named by the words before them: "Bearer <token>", "password=<value>". Matched forwards (a
# look-behind at every position cost ~200 µs on a long message) and the name is kept.
_KEYED_SECRET = re.compile(
    r"(?P<name>\b[Bb]earer\s+|(?i:\b(?:password|passwd|api_key|secret)[=:]\s?))(?P<value>[A-Za-z0-9_\-.=+/]{6,}|\S{6,})"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\d.])(?:\d[ \-]?){12,18}\d(?![\d.])")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_NI = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
# Phones: an international prefix, or the separators of a national format. Bare digit runs are not
# phones (they are order numbers, amounts, years), so at least one separator or a "+" is required.
_PHONE = re.compile(
    r"""
    (?<![\w+])
    (?:
        \+\d{1,3}[ \-.]?(?:\(\d{1,4}\)[ \-.]?)?\d{1,4}(?:[ \-.]?\d{2,4}){1,4}     # +44 20 7946 0958, +82-10-1234-5678
      | \(\d{2,4}\)[ \-.]?\d{3,4}[ \-.]?\d{3,4}                                   # (415) 555-2671
      | 0\d{1,4}[ \-.]\d{3,4}[ \-.]?\d{3,4}                                      # 020 7946 0958, 010-1234-5678
      | \d{3}[\-.]\d{3}[\-.]\d{4}                                                # 415-555-2671
    )
    (?![\w])
    """,
    re.VERBOSE,
)


_NOT_AN_ADDRESS = ("version", "firmware", "release", "section", "chapter", "build", "rule", "clause")

# A bare run of digits is a phone number or an SSN only when the words before it say so.
_CUED_NUMBER = re.compile(
    r"(?i)(?P<cue>\b(?:phone|mobile|cell|tel|telephone|call|text me|whatsapp|ssn|social security)\b"
    r"|전화|휴대폰|teléfono|téléphone|telefon)[^\d\n]{0,20}(?P<number>\+?\d[\d \-.]{5,16}\d)(?![\d.])"
)


def _cued_number(match: re.Match[str]) -> str:
    number = match.group("number")
    digits = sum(ch.isdigit() for ch in number)
    cue = match.group("cue").lower()
    if cue in ("ssn", "social security"):
        replacement = SSN_DUMMY if digits == 9 else None
    else:
        replacement = "[PHONE]" if 7 <= digits <= 15 else None
    if replacement is None:
        return match.group()
    start = match.start("number") - match.start()
    return match.group()[:start] + replacement


def _keyed_secret(match: re.Match[str]) -> str | None:
    name, value = match.group("name"), match.group("value")
    if name.lower().startswith("bearer") and len(value) < 16:
        return None  # "Bearer of bad news"
    return name + "[SECRET]"


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    if 13 <= len(digits) <= 19 and _luhn_ok(digits) and len(set(digits)) > 1:
        return CARD_DUMMY
    return None


def _iban_ok(candidate: str) -> bool:
    raw = candidate.replace(" ", "").upper()
    if not 15 <= len(raw) <= 34:
        return False
    rearranged = raw[4:] + raw[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban(match: re.Match[str]) -> str | None:
    text = match.group()
    # The pattern may have run on into the next word ("… 7034 by Friday"): try without it too.
    for candidate in (text, text[: text.rfind(" ")] if " " in text else ""):
        if candidate and _iban_ok(candidate):
            return "[IBAN]" + text[len(candidate) :]
    return None


def _ipv4(match: re.Match[str]) -> str | None:
    before = match.string[max(0, match.start() - 12) : match.start()].lower()
    if before.endswith(("v", "ver ", "v. ", "§", "§ ")) or any(word in before for word in _NOT_AN_ADDRESS):
        return None  # "version 1.2.3.4" or "section 4.2.1.3", whatever ipaddress thinks
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    return "[IP]"


def _ipv6(match: re.Match[str]) -> str | None:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "[IP]"


def _phone(match: re.Match[str]) -> str | None:
    digits = sum(ch.isdigit() for ch in match.group())
    return "[PHONE]" if 7 <= digits <= 15 else None


def _always(replacement: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: replacement


# (kind, pattern, replacement or validator); earlier rules run first, so a key or an e-mail address is
# gone before the number patterns look at the text.
RULES: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]]] = [
    ("secret", _SECRET, _always("[SECRET]")),
    ("secret", _KEYED_SECRET, _keyed_secret),
    ("email", _EMAIL, _always(EMAIL_DUMMY)),
    ("iban", _IBAN, _iban),
    ("card", _CARD, _card),
    ("ssn", _SSN, _always(SSN_DUMMY)),
    ("uk_ni", _NI, _always(NI_DUMMY)),
    ("ip", _IPV4, _ipv4),
    ("ip", _IPV6, _ipv6),
    ("phone", _PHONE, _phone),
]
# Run last, on what the rules above left: (kind, pattern, function returning the whole replaced match).
CUED_RULES = [("cued", _CUED_NUMBER, _cued_number)]
# Cheap gates: most chat messages have no digit and no "@", and skip most of the work.
_HAS_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = "0123456789"


@dataclass
class ScrubResult:
    text: str
    found: Counter[str]


# Literal markers that every match of a rule contains. Substring tests run in C at memory speed and
# the patterns cost up to 200 µs on a long message, so a pattern only runs where its marker is. The
# tests are grouped behind single characters the markers need ("-", "_", "=" or ":"), because even
# substring tests add up: 13 of them over a 780-character message were 11 µs (bench/README.md).
_DASHED_SECRET_MARKERS = ("sk-", "xox")
_UNDERSCORED_SECRET_MARKERS = ("cl_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
_BARE_SECRET_MARKERS = ("AKIA", "ASIA", "AIza", "eyJ")  # the patterns are case-sensitive
_KEYED_STEMS = ("passw", "api_key", "secret")  # followed by "=" or ":" (any case)


def _may_hold_secret(text: str) -> bool:
    return (
        ("-" in text and any(marker in text for marker in _DASHED_SECRET_MARKERS))
        or ("_" in text and any(marker in text for marker in _UNDERSCORED_SECRET_MARKERS))
        or any(marker in text for marker in _BARE_SECRET_MARKERS)
    )


def _may_hold_keyed_secret(text: str, lower: str) -> bool:
    if "earer" in text:  # [Bb]earer
        return True
    return ("=" in text or ":" in text) and any(stem in lower for stem in _KEYED_STEMS)


def _has_digit(text: str) -> bool:
    if text.isascii():
        return any(digit in text for digit in _ASCII_DIGITS)
    return _HAS_DIGIT.search(text) is not None


_CUES = (
    "phone",
    "mobile",
    "cell",
    "tel",
    "call",
    "text me",
    "whatsapp",
    "ssn",
    "social security",
    "전화",
    "휴대폰",
    "teléfono",
    "téléphone",
    "telefon",
)


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


def _worth_trying(
    kind: str, pattern: re.Pattern[str], text: str, lower: str, has_digit: bool, possible: Possible
) -> bool:
    if pattern is _SECRET:
        return possible.secret and _may_hold_secret(text)
    if pattern is _KEYED_SECRET:
        return possible.keyed_secret and _may_hold_keyed_secret(text, lower)
    if kind == "email":
        return possible.at and "@" in text
    if not has_digit:
        return False
    if kind == "ssn":
        return "-" in text
    if pattern is _IPV6:
        return "::" in text or text.count(":") >= 3
    if pattern is _IPV4:
        return text.count(".") >= 3
    return True


def scrub(text: str, possible: Possible = ANYTHING) -> ScrubResult:
    """The text with every PII value found replaced, and how many of each kind were found. A text with
    nothing to replace comes back as the same object."""
    found: Counter[str] = Counter()
    if not text or possible.nothing:
        return ScrubResult(text, found)
    has_digit = possible.digit and _has_digit(text)
    lower = text.lower()
    for kind, pattern, replace in RULES:
        if not _worth_trying(kind, pattern, text, lower, has_digit, possible):
            continue

        def substitute(match: re.Match[str], kind: str = kind, replace=replace) -> str:
            replacement = replace(match)
            if replacement is None:
                return match.group()
            found[kind] += 1
            return replacement

        replaced = pattern.sub(substitute, text)
        if replaced != text:
            text = replaced
    if has_digit and any(cue in lower for cue in _CUES):
        for _kind, pattern, replace_whole in CUED_RULES:

            def substitute_cued(match: re.Match[str], replace_whole=replace_whole) -> str:
                replaced = replace_whole(match)
                if replaced != match.group():
                    found["ssn" if SSN_DUMMY in replaced else "phone"] += 1
                return replaced

            replaced = pattern.sub(substitute_cued, text)
            if replaced != text:
                text = replaced
    return ScrubResult(text, found)


def scrub_text(text: str | None) -> str | None:
    return None if text is None else scrub(text).text


def scrub_value(value: Any) -> Any:
    """Strings anywhere inside JSON-like data (metadata, tool inputs); unchanged data comes back as the
    same object."""
    if isinstance(value, str):
        return scrub(value).text
    if isinstance(value, dict):
        scrubbed = {key: scrub_value(item) for key, item in value.items()}
        return value if all(scrubbed[key] is item for key, item in value.items()) else scrubbed
    if isinstance(value, list):
        items = [scrub_value(item) for item in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else items
    return value


def assign_if_changed(model: Any, attribute: str, value: Any) -> None:
    """Set a scrubbed field only if scrubbing changed it (``scrub`` returns unchanged text as the same
    object): pydantic's ``__setattr__`` costs a microsecond or two, and most fields come back unchanged."""
    if getattr(model, attribute) is not value:
        setattr(model, attribute, value)


def scrub_batch(batch: IngestBatch, *, names: bool = False) -> Counter[str]:
    """Scrub every free-text field of a native batch in place; returns what was found, by kind. With
    ``names``, people's names and places in free text go too (``enrich/names.py``, an optional extra)."""
    found: Counter[str] = Counter()
    possible = Possible.within(
        [
            value
            for event in batch.events
            for value in (
                (event.content, event.error) if isinstance(event, MessageEvent)
                else (event.feedback,) if isinstance(event, ConversationEvent | FeedbackEvent)
                else ()
            )
            if value
        ]
    )  # fmt: skip

    def text(value: str | None) -> str | None:
        if value is None or possible.nothing:
            return value
        result = scrub(value, possible)
        if result.found:
            found.update(result.found)
        return result.text

    for event in batch.events:
        if isinstance(event, MessageEvent):
            assign_if_changed(event, "content", text(event.content) or "")
            if event.error is not None:
                assign_if_changed(event, "error", text(event.error))
            if event.metadata:
                assign_if_changed(event, "metadata", scrub_value(event.metadata))
            if event.extra:
                assign_if_changed(event, "extra", scrub_value(event.extra))
        elif isinstance(event, ConversationEvent):
            if event.metadata:
                assign_if_changed(event, "metadata", scrub_value(event.metadata))
            if event.feedback is not None:
                assign_if_changed(event, "feedback", text(event.feedback))
        elif isinstance(event, FeedbackEvent):
            assign_if_changed(event, "feedback", text(event.feedback) or "")
        elif isinstance(event, CustomEvent) and event.properties:
            assign_if_changed(event, "properties", scrub_value(event.properties))
    if names:
        redact_names(batch)
    return found


def redact_names(batch: IngestBatch) -> None:
    """People's names and places out of the batch's free text, in one pass of the model."""
    from convolens.enrich import names as name_model

    fields = [
        (event, attribute)
        for event in batch.events
        for attribute in (
            ("content", "error") if isinstance(event, MessageEvent)
            else ("feedback",) if isinstance(event, ConversationEvent | FeedbackEvent)
            else ()
        )
        if getattr(event, attribute)
    ]  # fmt: skip
    redacted = name_model.redact([getattr(event, attribute) for event, attribute in fields])
    for (event, attribute), text in zip(fields, redacted, strict=True):
        setattr(event, attribute, text)

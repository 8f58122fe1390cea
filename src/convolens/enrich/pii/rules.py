"""The scrubbing rules: one RE2 pattern each, and a function that decides on every match.

Every pattern is compiled by RE2 (``google-re2``), whose matching time is linear in the text by
construction: no backtracking, so no input, however crafted, makes a pattern slow (Python's ``re``
took 1.7 s on 50 KB of ``a.a.a.…@`` with the former e-mail pattern). RE2 has no look-arounds and no
back-references, so a pattern matches a wider candidate (a whole run of digits and separators, say)
and its function checks what the look-arounds used to (the characters around the match, a checksum,
a numbering plan) in Python, in time bounded by the match. RE2's ``\\b``, ``\\d`` and ``\\w`` are
ASCII-only, which is what PII needs: ``…@naver.com으로`` ends the address before the Korean particle.

``tests/test_pii.py`` runs every rule of ``RULES`` against long runs of the characters its pattern
consumes and checks that 100 KB costs at most ~15 times what 10 KB does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convolens.enrich.pii import linear
from convolens.enrich.pii.phones import CANDIDATE as _PHONE_CANDIDATE
from convolens.enrich.pii.phones import Budget, replace_phone

EMAIL_DUMMY = "email@example.com"
CARD_DUMMY = "1111 1111 1111 1111"
SSN_DUMMY = "000-00-0000"
NI_DUMMY = "QQ 12 34 56 C"

Match = Any  # linear.AsciiMatch or re2._Match: .string, .start(), .end(), .group(), by group number


@dataclass(frozen=True)
class Rule:
    name: str  # unique, for the gates and the tests
    kind: str  # what a replacement counts as
    pattern: Any  # a compiled RE2 pattern
    # The replacement for a match, or None to leave it (a failed checksum, a version number, …).
    replace: Callable[[Match, Budget], str | None]
    # One text the rule changes: documents the rule, and seeds the adversarial inputs of the tests.
    example: str


def _always(replacement: str) -> Callable[[Match, Budget], str]:
    return lambda _match, _budget: replacement


_SECRET = linear.compile(
    r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}"  # OpenAI / Anthropic / Stripe style keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}\b|\bglpat-[A-Za-z0-9_\-]{20,}"  # GitHub, GitLab
    r"|\bx(?:ox[abprs]|app)-[A-Za-z0-9-]{10,}\b"  # Slack
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b|\bwhsec_[A-Za-z0-9+/=]{20,}"  # Stripe keys, webhook secrets
    r"|\bAIza[0-9A-Za-z_\-]{35}\b"  # Google API keys
    r"|\bhf_[A-Za-z0-9]{30,}\b|\bnpm_[A-Za-z0-9]{30,}\b"  # Hugging Face, npm
    r"|\bSG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"  # SendGrid
    r"|\bcl_[A-Za-z0-9_\-]{40,}\b"  # convolens' own tokens
    r"|\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"  # JWTs
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[A-Za-z0-9+/=\s]*(?:-----END [A-Z ]*PRIVATE KEY-----)?"  # PEM keys
)

# Values named by the words before them, the name kept: "Bearer <token>", "password=<value>",
# "AWS_SECRET_ACCESS_KEY=<value>", "\"client_secret\": \"<value>\"", and a password announced in
# words, in the languages of the labelled sets ("Mein Passwort ist …", "パスワードは…"). Values are
# printable ASCII, so a value ends where a sentence in another script resumes.
_PASSWORD_WORDS = (
    r"\bpassword|\bpasswort|\bmot de passe|\bcontraseña|\bsenha|\bparola|\bwachtwoord|şifre\w*|\bhasło"
    r"|пароль|비밀번호|암호|パスワード|密码|密碼|كلمة المرور"
)
_KEYED_SECRET = linear.compile(
    r"(?i)(\bbearer\s+"
    r"|\b[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key|token)"
    r"[A-Za-z0-9_\-]*[\"']?\s*[=:]\s*[\"']?"
    r"|(?:" + _PASSWORD_WORDS + r")\s*(?:is|ist|est|es|é|è|era|was|это|は|는|은|是|为|為|هي)?\s*[:=\x{FF1A}]?\s*)"
    r"([A-Za-z0-9!#$%&*+\-./:=?@^_|~]{6,})"
)


def _keyed_secret(match: Match, _budget: Budget) -> str | None:
    name, value = match.group(1), match.group(2)
    if name[:6].lower() == "bearer":
        return None if len(value) < 16 else name + "[SECRET]"  # "Bearer of bad news"
    if "=" in name:
        return name + "[SECRET]"
    # "Password: please reset it", "token: expired", "Passwort vergessen": prose, not a value. A
    # value told in words or after a colon has a digit or a symbol.
    if value.isalpha():
        return None
    return name + "[SECRET]"


# The local part and the domain may hold Latin letters with accents; the top-level domain is ASCII
# letters and the ends are ASCII word boundaries, so an address glued to Korean, Japanese or Chinese
# text ("…@docomo.ne.jpまで") ends where the Latin letters do.
_EMAIL = linear.compile(
    r"\b[A-Za-z0-9._%+\-\x{C0}-\x{24F}]+@[A-Za-z0-9\-\x{C0}-\x{24F}]+(?:\.[A-Za-z0-9\-\x{C0}-\x{24F}]+)*\.[A-Za-z]{2,}\b"
)

_IBAN = linear.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?\b")


def _iban_ok(candidate: str) -> bool:
    raw = candidate.replace(" ", "").upper()
    if not 15 <= len(raw) <= 34:
        return False
    rearranged = raw[4:] + raw[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban(match: Match, _budget: Budget) -> str | None:
    text = match.group()
    # The pattern may have run on into the next word ("… 7034 by Friday"): try without it too.
    for candidate in (text, text[: text.rfind(" ")] if " " in text else ""):
        if candidate and _iban_ok(candidate):
            return "[IBAN]" + text[len(candidate) :]
    return None


def _is_ascii_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _in_a_decimal(text: str, start: int, end: int) -> bool:
    """True when the digits at [start, end) continue a decimal, a version or an address: a "." with a
    digit on its far side right before or right after them."""
    before = start >= 2 and text[start - 1] == "." and _is_ascii_digit(text[start - 2])
    after = end + 1 < len(text) and text[end] == "." and _is_ascii_digit(text[end + 1])
    return before or after


# A whole run of at least 13 digits joined by single spaces or dashes (shorter runs never reach the
# function); the function finds the card in it.
_CARD = linear.compile(r"\d(?:[ \-]?\d){12,}")
_CARD_GROUPS = linear.compile(r"\d+")


# Luhn: every second digit from the right doubled, and a two-digit result's digits added (7 -> 14 -> 5).
_DOUBLED = str.maketrans("0123456789", "0246813579")


def _luhn_ok(digits: str) -> bool:
    backwards = digits[::-1]
    return (sum(map(int, backwards[0::2])) + sum(map(int, backwards[1::2].translate(_DOUBLED)))) % 10 == 0


def _ean13_ok(digits: str) -> bool:
    return sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12])) % 10 == (10 - int(digits[12])) % 10


def _is_card(digits: str) -> bool:
    if not (13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)):
        return False
    # Thirteen digits that are also a valid EAN-13 are a barcode (JAN, ISBN-13): the 13-digit Visa
    # numbers are long gone.
    return not (len(digits) == 13 and _ean13_ok(digits))


def _card(match: Match, _budget: Budget) -> str | None:
    text, start, end = match.string, match.start(), match.end()
    if (start and text[start - 1] == ".") or _in_a_decimal(text, start, end):
        return None
    run = match.group()
    if run.isdigit():
        return CARD_DUMMY if _is_card(run) else None
    # The card may be part of the run ("ref 12 4539 1488 0343 6467"): windows of up to five whole
    # groups, starting at a group of four digits (how every card number is grouped) or at a
    # card-length group, are tried from left to right; one Luhn test per window of a card's length.
    groups = [(g.start(), g.end()) for g in _CARD_GROUPS.finditer(run)]
    pieces, last, i = [], 0, 0
    while i < len(groups):
        first = groups[i][1] - groups[i][0]
        found_end = 0
        if first == 4 or 13 <= first <= 19:
            digits = ""
            for j in range(i, min(i + 5, len(groups))):
                digits += run[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _is_card(digits):
                    found_end = j + 1
        if found_end:
            pieces += [run[last : groups[i][0]], CARD_DUMMY]
            last, i = groups[found_end - 1][1], found_end
        else:
            i += 1
    return "".join([*pieces, run[last:]]) if pieces else None


_SSN = linear.compile(r"\d{3}-\d{2}-\d{4}")


def _ssn(match: Match, _budget: Budget) -> str | None:
    text, start, end = match.string, match.start(), match.end()
    if (start and _is_ascii_digit(text[start - 1])) or (end < len(text) and _is_ascii_digit(text[end])):
        return None
    area, group, serial = match.group().split("-")
    if area in ("000", "666") or area.startswith("9") or group == "00" or serial == "0000":
        return None
    return SSN_DUMMY


_NI = linear.compile(r"(?i)\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_NI_NEVER_ISSUED = ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")


def _ni(match: Match, _budget: Budget) -> str | None:
    return None if match.group()[:2].upper() in _NI_NEVER_ISSUED else NI_DUMMY


# Words near a dotted quad that make it a version or a section number, in the sets' languages.
_NOT_AN_ADDRESS = (
    "version", "firmware", "release", "section", "chapter", "build", "rule", "clause", "versión", "versão",
    "versione", "versie", "wersja", "sürüm", "версия", "прошивк", "버전", "펌웨어", "バージョン", "ファームウェア",
    "版本", "固件", "abschnitt", "kapitel", "artikel", "article", "artículo", "第", "条", "項", "章",
)  # fmt: skip

# After the quad, only words that make it a version ("10.2.0.1 of the firmware"): "… in the firewall rule"
# still follows an address.
_VERSION_AFTER = ("version", "firmware", "release", "build", "バージョン", "版本", "버전")

# A whole run of dot-joined digit groups; the function wants exactly four of at most three digits.
_IPV4 = linear.compile(r"\d+(?:\.\d+)+")


def _ipv4(match: Match, _budget: Budget) -> str | None:
    text, start = match.string, match.start()
    if start and text[start - 1] == ".":
        return None
    parts = match.group().split(".")
    if len(parts) != 4 or any(len(part) > 3 for part in parts):
        return None
    before = text[max(0, start - 16) : start].lower()
    after = text[match.end() : match.end() + 24].lower()
    if (
        before.endswith(("v", "ver ", "v. ", "§", "§ "))
        or any(word in before for word in _NOT_AN_ADDRESS)
        or any(word in after for word in _VERSION_AFTER)
    ):
        return None  # "version 1.2.3.4", "section 4.2.1.3", "10.2.0.1 of the firmware", whatever ipaddress says
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    return "[IP]"


# Hex groups joined by at least two colons; ipaddress decides.
_IPV6 = linear.compile(r"[0-9A-Fa-f]*(?::[0-9A-Fa-f]*){2,}")


def _ipv6(match: Match, _budget: Budget) -> str | None:
    text, start, end = match.string, match.start(), match.end()
    if end - start > 39:
        return None
    if start and (text[start - 1].isascii() and (text[start - 1].isalnum() or text[start - 1] == "_")):
        return None
    if end < len(text) and text[end].isascii() and (text[end].isalnum() or text[end] == "_"):
        return None
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "[IP]"


# A bare run of digits is a phone number or an SSN only when the words before it say so.
_PHONE_CUES = (
    "phone", "mobile", "cell", "tel", "telephone", "call", "text me", "whatsapp",
    "전화", "휴대폰", "연락처", "電話", "携帯", "电话", "手机",
    "teléfono", "téléphone", "telefon", "telefone", "telefono", "telefoon", "handy", "móvil", "celular", "portable",
)  # fmt: skip
_SSN_CUES = ("ssn", "social security")
_CUE_GAP = r"[^\d\n]{0,20}"
_CUED_PHONE = linear.compile(
    r"(?i)(?:\b(?:phone|mobile|cell|tel|telephone|call|text me|whatsapp|handy|portable|celular)\b"
    r"|전화|휴대폰|연락처|電話|携帯|电话|手机|tel[eé]f|téléphone|telefoon|móvil)"
    + _CUE_GAP
    + r"(\+?\d[\d \-.]{5,16}\d)"
)
_CUED_SSN = linear.compile(r"(?i)\b(?:ssn|social security)\b" + _CUE_GAP + r"(\d[\d \-.]{5,16}\d)")


def _cued(replacement: str, low: int, high: int) -> Callable[[Match, Budget], str | None]:
    def replace(match: Match, _budget: Budget) -> str | None:
        text, end = match.string, match.end()
        if _in_a_decimal(text, match.start(1), end) or (end < len(text) and _is_ascii_digit(text[end])):
            return None
        digits = [ch for ch in match.group(1) if ch.isdigit()]
        if not low <= len(digits) <= high or len(set(digits)) == 1:
            return None  # too short or long, or a dummy value an earlier rule put there
        whole = match.group()
        return whole[: match.start(1) - match.start()] + replacement

    return replace


# Earlier rules run first, so a key or an e-mail address is gone before the number patterns look.
RULES: list[Rule] = [
    Rule("secret", "secret", _SECRET, _always("[SECRET]"), "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123 ok"),
    Rule("keyed_secret", "secret", _KEYED_SECRET, _keyed_secret, "password=hunter2hunter2"),
    Rule("email", "email", _EMAIL, _always(EMAIL_DUMMY), "mail jane.roe@example.net now"),
    Rule("iban", "iban", _IBAN, _iban, "IBAN DE89 3704 0044 0532 0130 00"),
    Rule("card", "card", _CARD, _card, "card 4539 1488 0343 6467!"),
    Rule("ssn", "ssn", _SSN, _ssn, "ssn 123-45-6789."),
    Rule("uk_ni", "uk_ni", _NI, _ni, "NI AB123456C"),
    Rule("ipv4", "ip", _IPV4, _ipv4, "from 192.168.10.24 today"),
    Rule("ipv6", "ip", _IPV6, _ipv6, "from 2001:db8::8a2e:370:7334 today"),
    Rule("phone", "phone", _PHONE_CANDIDATE, replace_phone, "call +44 20 7946 0958 today"),
    # Run last, on what the rules above left.
    Rule("cued_phone", "phone", _CUED_PHONE, _cued("[PHONE]", 7, 15), "my phone is 4155552671"),
    Rule("cued_ssn", "ssn", _CUED_SSN, _cued(SSN_DUMMY, 9, 9), "SSN: 123456789"),
]
RULE_NAMES = {rule.name for rule in RULES}
assert len(RULE_NAMES) == len(RULES)
CUES = _PHONE_CUES + _SSN_CUES

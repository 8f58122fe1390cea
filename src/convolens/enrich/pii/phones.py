"""Phone numbers, judged by the numbering plans of libphonenumber (the ``phonenumbers`` package).

RE2 finds candidates (digit groups with the separators people write), and the numbering plan decides:
a ``+country`` number must have a possible length for its country; a national one must be valid in one
of the expected regions (``CONVOLENS_PHONE_REGIONS``, ``config.phone_regions``). A national number that starts with
neither a trunk prefix ("0") nor an area code in parentheses must also be grouped as that region
groups its numbers, so that a part number such as ``3127-884-905`` (valid digits for the US, but the
US writes ``312-788-4905``) is left alone.

Parsing costs ~20 µs a region, so each message gets a budget of numbering-plan checks (``Budget``,
shared by its fields); past it, what is left is judged by shape alone (7 to 15 digits with a "+" or
separators), which scrubs too much rather than too little, and one message costs bounded time whatever
it holds. Nothing is cached: a cache would keep raw phone numbers in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from convolens.config import phone_regions
from convolens.enrich.pii import linear

REGIONS = phone_regions()
# Numbering-plan checks one text may use; a chat message rarely holds more than two or three numbers.
CHECKS_PER_TEXT = 32

# A "+" (with an optional area code in parentheses), an area code in parentheses, or a digit at an
# ASCII word start; then at least seven digits, groups joined by one separator each or by a group in
# parentheses (Russia's "8 (495) 739-22-18", or the "(0)" of "+44 (0)20 …"). Shorter numbers never
# reach Python.
CANDIDATE = linear.compile(
    r"(?:\+ ?(?:\(\d{1,5}\)[ \-.]?)?|\(\d{1,5}\)[ \-.]?|\b)\d(?:(?:[ \-./]| ?\(\d{1,5}\) ?)?\d){6,}"
)
_NON_DIGIT = linear.compile(r"\D+")


@dataclass
class Budget:
    """Numbering-plan checks left for the text being scrubbed."""

    checks: int = CHECKS_PER_TEXT


def _groups_from_end(text: str) -> frozenset[int]:
    """Where a written number breaks between groups, counted in digits from its end (so that a
    national prefix present in one spelling and not the other does not matter)."""
    lengths = [len(part) for part in _NON_DIGIT.split(text) if part]
    out, total = set(), 0
    for length in reversed(lengths[1:]):
        total += length
        out.add(total)
    return frozenset(out)


def _written_as_there(candidate: str, number: phonenumbers.PhoneNumber) -> bool:
    """A number written without a trunk prefix or "(": its digits and groups must be those the region
    itself writes, nationally (US "415-555-2671", Spain "612 34 56 78", China "138 1234 5678") or, for a
    mobile, internationally without the country code (India "98765 43210"). So a French "09 00 45 11
    22" is not found in "900-45-1122", nor a US number in the part number "3127-884-905"."""
    digits = "".join(ch for ch in candidate if ch.isdigit())
    breaks = _groups_from_end(candidate)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    if "".join(ch for ch in national if ch.isdigit()) == digits:
        if breaks <= _groups_from_end(national):
            return True
        # Spaced in groups of its own but starting with the region's first group (Madrid's "913 582 047"
        # for "913 58 20 47"): people space numbers as they read them aloud.
        first = candidate.split(" ", 1)[0]
        if first.isdigit() and " " in candidate and national.lstrip("(").startswith(first):
            return True
    if phonenumbers.number_type(number) != phonenumbers.PhoneNumberType.MOBILE or len(digits) < 10:
        return False
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL).split(" ", 1)[-1]
    return breaks <= _groups_from_end(international)


def is_phone(candidate: str, regions: tuple[str, ...] = REGIONS) -> bool:
    """Whether a candidate is a phone number: of a possible length for its country if it has
    "+country" (the "+" says enough: a plan's list of valid ranges lags reality, and leaves out the
    ranges kept for fiction, which people also type), else valid in one of ``regions``."""
    candidate = candidate.replace("(0)", "")  # "+44 (0)20 …": the trunk prefix, for national callers
    if candidate.startswith("+"):
        try:
            return phonenumbers.is_possible_number(phonenumbers.parse(candidate, None))
        except NumberParseException:
            return False
    # "0" and a digit, and a phone number's length: a trunk prefix, as in "010-…", "020 …", "06 …"
    # ("0-306-…" is an ISBN); an area code in parentheses. Other shapes must match the region's own.
    trusted_shape = candidate.startswith("(") or (
        candidate[:1] == "0" and candidate[1:2].isdigit() and _digits(candidate) >= 9
    )
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except NumberParseException:
            continue
        if candidate.startswith("00") and phonenumbers.is_possible_number(number):
            return True  # "0044 7700 …": an international call prefix, as good as a "+"
        # Valid for this region (cheaper than is_valid_number, which looks for the region among all
        # those that share the country code: some twenty for +1).
        valid = phonenumbers.is_valid_number_for_region(number, region)
        if valid and (trusted_shape or _written_as_there(candidate, number)):
            return True
    return False


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _shape_alone(candidate: str) -> bool:
    """The judgement without a numbering plan: a "+" or separators, and a phone number's length."""
    return 7 <= _digits(candidate) <= 15 and (candidate.startswith(("+", "(")) or not candidate.isdigit())


def _glued(text: str, start: int, end: int) -> bool:
    """True when the candidate is part of something longer: a word, a decimal, a version, a date."""
    if end < len(text):
        after = text[end]
        if after.isascii() and after.isalnum():
            return True
        if after in ".,-/" and end + 1 < len(text) and text[end + 1].isascii() and text[end + 1].isdigit():
            return True
    # "1.…", "1-…", "2024/…": continues a number; "AA1 01 2345 6784": the tail of a tracking number.
    if start < 2 or not text[start - 2].isascii():
        return False
    before = text[start - 1]
    return (before in ".-/+" and text[start - 2].isalnum()) or (before == " " and text[start - 2].isdigit())


# Words that say the number after them is something else. Looked for in the few characters before a
# candidate (a bounded window, so the search costs constant time), unless a phone cue is there too.
# (RE2's \b is ASCII: words that begin or end with another letter are listed without it.)
_NOT_A_PHONE = linear.compile(
    r"(?i)(?:\b(?:order|pedido|commande|bestel\w*|bestell\w*|auftrag\w*|ordine|zamówieni\w*|"
    r"part|item|article|artikel\w*|sku|serial|model|lot|batch|invoice|factura|facture|rechnung\w*|fattura|"
    r"receipt|tracking|shipment|parcel|package|awb|ticket|case|ref|reference|id|isbn|ean|zip|postal|plz|"
    r"booking|buchung\w*|reserva\w*|réservation|prenotazione|reservation|confirmation|policy|contract|"
    r"vertrag\w*|customer|kunden\w*|member|account|acct|transaction|txn|voucher|coupon|licen[cs]e|"
    r"registration|iban|iso|version|código postal|code postal|đơn hàng)\b"
    r"|sipariş|\bmã|заказ|#|№|\bn[°º]|\bn\.º|\bnr\b|주문|송장|예약|회원|注文|伝票|追跡|予約|会員|订单|单号|运单|发票)"
)
_PHONE_CUE = linear.compile(
    r"(?i)\b(?:phone|call|tel|mobile|cell|fax|whatsapp|handy|celular|cep|telefon\w*|telefoon|telefone)\b"
    r"|tel[eé]f|téléphone|móvil|телефон|電話|电话|전화|연락처|携帯|手机|휴대"
)
_CUE_WINDOW = 32


_CURRENCIES = "€$£¥₩₫₽₹₺₴₱฿元円원"


def _named_otherwise(text: str, start: int, end: int) -> bool:
    """The words before the candidate say it is an order, a reference, a postcode…; or it is a price."""
    after = text[end : end + 2].strip()[:1]
    before = text[max(0, start - 2) : start].strip()[-1:]
    if (after and after in _CURRENCIES) or (before and before in _CURRENCIES):
        return True
    window = text[max(0, start - _CUE_WINDOW) : start]
    return _NOT_A_PHONE.search(window) is not None and _PHONE_CUE.search(window) is None


def _bare_run_may_be_phone(candidate: str) -> bool:
    """A run of digits without separators is an order number, an amount or a year far more often than
    a phone; it counts only when it starts with a trunk prefix ("010…", "090…", "06…"), or has the
    shape of China's mobiles, which their users write as eleven bare digits ("15812345678")."""
    if candidate.startswith("0"):
        return _digits(candidate) >= 9
    return len(candidate) == 11 and candidate[0] == "1" and candidate[1] in "3456789"


def _is_chinese_mobile(candidate: str) -> bool:
    try:
        number = phonenumbers.parse(candidate, "CN")
    except NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE


def _variants(candidate: str) -> list[tuple[int, int]]:
    """Spans of the candidate worth judging: all of it, then without a last group set off by a space (a
    number followed by "2 times"). Nothing is cut off the front: "845 2210 9931" is a meeting id, not
    "845" and a phone number, and groups joined by "." or "-" (a version, an ISBN) are one thing."""
    spans = [(0, len(candidate))]
    last_space = candidate.rfind(" ")
    if last_space > 0 and candidate[last_space - 1].isdigit() and candidate[last_space + 1 :].isdigit():
        spans.append((0, last_space))
    return spans


def replace_phone(match, budget: Budget) -> str | None:  # type: ignore[no-untyped-def]
    """``[PHONE]`` in place of the phone number in a candidate, or None to leave it."""
    text, start, end = match.string, match.start(), match.end()
    if _glued(text, start, end):
        return None
    candidate = match.group()
    if _digits(candidate) < 7 or (not candidate.startswith("+") and _named_otherwise(text, start, end)):
        return None
    for a, b in _variants(candidate):
        part = candidate[a:b].strip(" -./")
        if not 7 <= _digits(part) <= 17 or len({ch for ch in part if ch.isdigit()}) == 1:
            continue  # not a phone number's length, or a dummy value an earlier rule put there
        bare = part.isdigit()
        if bare and not _bare_run_may_be_phone(part):
            continue
        if budget.checks <= 0:
            found = bare or _shape_alone(part)
        else:
            budget.checks -= 1
            found = _is_chinese_mobile(part) if bare and part[0] == "1" else is_phone(part)
        if found:
            offset = candidate.index(part, a)
            return candidate[:offset] + "[PHONE]" + candidate[offset + len(part) :]
    return None

"""The numbers, amounts, times and dates a text states, normalised so that two spellings of one fact
compare equal: "5" / "five" / "５", "18:00" / "6pm", "1,000" / "1.000", "48 hours" / "two days",
"2 kg" / "2000 g", "100 °C" / "212 °F", "Thursday" / "jeudi" / "木曜日".

``semantic_match`` uses it for what sentence embeddings cannot see: "5 to 7 days" and "2 to 3 days"
embed almost identically. Everything here is a linear scan with linear-time regexes over a bounded
prefix of the text (``MAX_CHARS``): the texts are the tested responses of a model, hostile.

Number words are English plus small explicit lists for fr/de/es/it/pt/nl (two to twelve and the
tens up to thirty); Chinese/Japanese numerals only right before a counter ("三日", "九点"). Words that
are also common words in another language ("due", "dos", "sei", "once") count only before a unit.
"""

# ruff: noqa: RUF001, RUF002  (full-width digits, CJK numerals and counters are the point)

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_CHARS = 4000
MAX_ITEMS = 100

# word → value; multilingual lists kept small on purpose (see the module docstring)
_WORDS: dict[str, float] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "twice": 2,
    # fr
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "onze": 11, "douze": 12, "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50,
    # de
    "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9,
    "zehn": 10, "zwölf": 12, "zwanzig": 20, "dreißig": 30, "vierzig": 40, "fünfzig": 50,
    # es
    "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9, "diez": 10,
    "doce": 12, "veinte": 20, "treinta": 30, "cuarenta": 40, "cincuenta": 50,
    # it
    "quattro": 4, "cinque": 5, "sette": 7, "otto": 8, "nove": 9, "dieci": 10, "undici": 11,
    "dodici": 12, "trenta": 30, "quaranta": 40, "cinquanta": 50, "tre": 3,
    # pt
    "dois": 2, "duas": 2, "três": 3, "sete": 7, "oito": 8, "dez": 10, "doze": 12, "vinte": 20,
    "trinta": 30, "quarenta": 40, "cinquenta": 50,
    # nl
    "twee": 2, "drie": 3, "vijf": 5, "zes": 6, "zeven": 7, "negen": 9, "tien": 10, "twaalf": 12,
    "twintig": 20, "dertig": 30, "veertig": 40, "vijftig": 50,
}  # fmt: skip
# Also ordinary words elsewhere ("due" in English, "dos" in Portuguese): a number only before a unit.
_ONLY_BEFORE_UNIT: dict[str, float] = {"due": 2, "dos": 2, "sei": 6, "once": 11, "elf": 11, "venti": 20}

# unit word → (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {}
for _dimension, _factor, _names in (
    ("time", 1, "s sec secs second seconds seconde secondes sekunde sekunden segundo segundos secondo secondi "
                "seconden 秒 초"),
    ("time", 60, "min mins minute minutes minuten minuto minutos minuti minuut 分 分钟 分鐘 분"),
    ("time", 3600, "h hr hrs hour hours heure heures stunde stunden hora horas ora ore uur 時間 小时 小時 시간"),
    ("time", 86400, "day days jour jours tag tage tagen werktag werktage werktagen día días dia dias giorno giorni "
                    "dag dagen 日 天 일"),
    ("time", 604800, "week weeks semaine semaines woche wochen semana semanas settimana settimane weken 週 週間 周 주"),
    ("time", 2629800, "month months mois monat monate monaten mes meses mese mesi maand maanden "
                      "か月 ヶ月 カ月 个月 개월"),
    ("time", 31557600, "year years an ans année années jahr jahre jahren año años ano anos anno anni jaar jaren 年 년"),
    ("mass", 1, "g gram grams gramme grammes gramm gramos grammi gramas"),
    ("mass", 1000, "kg kilo kilos kilogram kilograms kilogramme kilogrammes kilogramm kilogramos"),
    ("length", 0.01, "cm centimeter centimeters centimetre centimetres"),
    ("length", 1, "m meter meters metre metres mètre mètres metro metros"),
    ("length", 1000, "km kilometer kilometers kilometre kilometres"),
    ("data", 1, "gb gigabyte gigabytes"),
    ("data", 1000, "tb terabyte terabytes"),
    ("celsius", 1, "°c celsius"),
    ("fahrenheit", 1, "°f fahrenheit"),
):  # fmt: skip
    for _name in _names.split():
        _UNITS[_name] = (_dimension, _factor)

# weekdays and months in the languages above → one id each ("mon", "m03")
_NAMES: dict[str, str] = {}
for _id, _names in (
    ("mon", "monday mondays lundi montag lunes lunedì lunedi segunda maandag 月曜日 星期一 周一 월요일"),
    ("tue", "tuesday tuesdays mardi dienstag martes martedì martedi terça dinsdag 火曜日 星期二 周二 화요일"),
    ("wed", "wednesday wednesdays mercredi mittwoch miércoles mercoledì mercoledi quarta woensdag "
            "水曜日 星期三 周三 수요일"),
    ("thu", "thursday thursdays jeudi donnerstag jueves giovedì giovedi quinta donderdag 木曜日 星期四 周四 목요일"),
    ("fri", "friday fridays vendredi freitag viernes venerdì venerdi sexta vrijdag 金曜日 星期五 周五 금요일"),
    ("sat", "saturday saturdays samedi samstag sábado sabato sabado zaterdag 土曜日 星期六 周六 토요일"),
    ("sun", "sunday sundays dimanche sonntag domingo domenica zondag 日曜日 星期日 星期天 周日 일요일"),
    ("m01", "january janvier januar enero gennaio janeiro januari"),
    ("m02", "february février februar febrero febbraio fevereiro februari"),
    ("m03", "march mars märz marzo março maart"),
    ("m04", "april avril abril aprile"),
    ("m05", "may mai mayo maggio maio mei"),
    ("m06", "june juin juni junio giugno junho"),
    ("m07", "july juillet juli julio luglio julho"),
    ("m08", "august août agosto augustus"),
    ("m09", "september septembre septiembre settembre setembro"),
    ("m10", "october octobre oktober octubre ottobre outubro"),
    ("m11", "november novembre noviembre novembro"),
    ("m12", "december décembre dezember diciembre dicembre dezembro"),
):  # fmt: skip
    for _name in _names.split():
        _NAMES[_name] = _id
_CJK_ONLY = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_CJK_NAMES = sorted((n for n in _NAMES if _CJK_ONLY.search(n)), key=len, reverse=True)

_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
               "八": 8, "九": 9}  # fmt: skip
_CJK_COUNTERS = "日天年月时時小分秒周週回次个個人名件点點号號歳岁倍円元度か ヶカ営工至到~〜～、"

_NUMBER_WORDS = frozenset(_WORDS) | frozenset(_ONLY_BEFORE_UNIT) | frozenset(_UNITS)
_PM = ("pm", "p.m.", "p.m")
_AM = ("am", "a.m.", "a.m")

_TOKEN = re.compile(
    r"(?P<clock>\d{1,2}[:h.]\d{2})(?!\d)"  # 18:00, 9h30, 9.30 (a clock only with am/pm or "h"/":")
    r"|(?P<num>\d+(?:[.,]\d+)*)"
    r"|(?P<cjk>[零〇一二两兩三四五六七八九十百千]+)"
    r"|(?P<word>[^\W\d_零〇一二两兩三四五六七八九十百千]+(?:'[^\W\d_]+)?)",
)


@dataclass(frozen=True)
class Quantity:
    """One stated fact: ``dimension`` is None for a bare number, "clock" for a time of day (hours since
    midnight), "name" for a weekday/month id, or a unit's dimension with ``base`` in its base unit."""

    text: str
    value: float
    dimension: str | None = None
    base: float = 0.0
    name: str = ""

    def same(self, other: Quantity) -> bool:
        if self.dimension in ("name", "version") or other.dimension in ("name", "version"):
            month, number = (self, other) if self.dimension == "name" else (other, self)
            if month.dimension == "name" and number.dimension is None and month.name[1:].isdigit():  # "3/14"
                return int(month.name[1:]) == number.value
            return self.name == other.name
        if self.dimension == "clock" or other.dimension == "clock":
            return _clock_same(self, other)
        if {self.dimension, other.dimension} == {"celsius", "fahrenheit"}:
            c, f = (self, other) if self.dimension == "celsius" else (other, self)
            return abs(c.value * 9 / 5 + 32 - f.value) < 0.6
        if self.dimension and other.dimension:
            if self.dimension != other.dimension:
                return False
            return abs(self.base - other.base) <= 0.01 * max(abs(self.base), abs(other.base))
        return abs(self.value - other.value) < 1e-9


def _clock_same(a: Quantity, b: Quantity) -> bool:
    if a.dimension == b.dimension == "clock":
        if "12h" in (a.name, b.name):  # "2 o'clock" / "19h" without am/pm: either half of the day
            return abs(a.value % 12 - b.value % 12) < 1e-6
        return abs(a.value % 24 - b.value % 24) < 1e-6
    clock, other = (a, b) if a.dimension == "clock" else (b, a)
    # "from 9 to 5" states the same hours as "9am to 5pm"; "à 19 heures" is the clock time "19h"
    hours = other.dimension is None or (other.dimension == "time" and abs(other.base - other.value * 3600) < 1e-6)
    return hours and abs(other.value % 12 - clock.value % 12) < 1e-6


def _number(text: str) -> float | None:
    """'1,000' / '1.000' / '1 000' → 1000; '1.08' / '1,5' → decimals; a version '3.2.1' → None."""
    groups = re.split(r"[.,]", text)
    if len(groups) == 1:
        return float(text)
    separators = set(re.findall(r"[.,]", text))
    if len(separators) == 1 and len(groups) > 2:
        if all(len(g) == 3 for g in groups[1:]):
            return float("".join(groups))
        return None  # 3.2.1: a version, compared as written elsewhere
    if len(separators) == 2:  # 1,000.50 or 1.000,50: the last separator is the decimal point
        last = max(text.rfind("."), text.rfind(","))
        return float(re.sub(r"[.,]", "", text[:last]) + "." + text[last + 1 :])
    whole, fraction = groups
    if len(fraction) == 3 and whole != "0":
        return float(whole + fraction)  # 5,000 / 1.000 (thousands)
    return float(whole + "." + fraction)


def _cjk_number(text: str) -> float | None:
    total, current = 0, 0
    for ch in text:
        if ch in _CJK_DIGITS:
            current = _CJK_DIGITS[ch]
        elif ch in "十百千":
            total += (current or 1) * {"十": 10, "百": 100, "千": 1000}[ch]
            current = 0
    return float(total + current)


def _prepare(text: str) -> str:
    text = re.sub(r"(?<=\d)[\u00a0\u202f](?=\d{3}\b)", "", text[:MAX_CHARS])  # 5 000 € (thin space)
    return unicodedata.normalize("NFKC", text).lower().replace("’", "'")


def _unit_after(text: str, end: int) -> tuple[str, tuple[str, float]] | None:
    """The unit right after a number: '5 days', '5-day', '2kg', '3営業日', '20 °C'."""
    rest = text[end : end + 24]
    rest = text[end : end + 40]
    match = re.match(r"[\s-]?(?:(?:degrees?|degrés?|grad|grados?|gradi|graus?)\s)?(°\s?[cf]\b|[^\W\d_]+)", rest)
    if match is None:
        return None
    word = match.group(1).replace(" ", "")
    if word in _UNITS:
        return word, _UNITS[word]
    if _CJK_ONLY.match(word):  # no spaces in CJK: the longest unit the run starts with
        for size in range(min(4, len(word)), 0, -1):
            if word[:size] in _UNITS:
                return word[:size], _UNITS[word[:size]]
        if word.startswith("営業日"):
            return "営業日", _UNITS["日"]
    return None


def quantities(text: str) -> list[Quantity]:
    """The facts ``text`` states that can be compared across spellings, in order."""
    text = _prepare(text)
    found: list[tuple[int, int, Quantity]] = []
    for name in _CJK_NAMES:  # weekday names written without spaces
        start = text.find(name)
        while start != -1 and len(found) < MAX_ITEMS:
            found.append((start, start + len(name), Quantity(name, 0, "name", name=_NAMES[name])))
            start = text.find(name, start + len(name))
    words: list[tuple[int, int, float]] = []  # number words, to join "twenty five" / "one and a half"
    for match in _TOKEN.finditer(text):
        if len(found) + len(words) >= MAX_ITEMS:  # compare() is quadratic in the items: bounded
            break
        kind, token, start, end = match.lastgroup, match.group(), match.start(), match.end()
        if kind == "word":
            if token in _NAMES and not (token == "may" and not _near_number(text, start, end)):
                found.append((start, end, Quantity(token, 0, "name", name=_NAMES[token])))
            elif token in ("noon", "midday", "midi", "mittag"):
                found.append((start, end, Quantity(token, 12, "clock")))
            elif token in ("midnight", "minuit", "mitternacht", "medianoche", "mezzanotte", "meia-noite"):
                found.append((start, end, Quantity(token, 0, "clock")))
            elif token in _WORDS or (token in _ONLY_BEFORE_UNIT and _unit_after(text, end)):
                words.append((start, end, _WORDS.get(token, _ONLY_BEFORE_UNIT.get(token, 0))))
            continue
        if kind == "cjk":
            if end < len(text) and text[end] in _CJK_COUNTERS:
                words.append((start, end, _cjk_number(token) or 0.0))
            continue
        if kind == "clock":
            hours, minutes = int(token[:-3] if token[-3] in ":h." else token), int(token[-2:])
            after = text[end : end + 6].lstrip()
            if token[-3] == "." and not after.startswith(_AM + _PM):
                value = _number(token)  # 9.30 without am/pm: a decimal
                if value is not None:
                    found.append((start, end, _with_unit(text, token, value, end)))
                continue
            found.append((start, end, Quantity(token, _twelve(hours, after, text, start) + minutes / 60, "clock")))
            continue
        value = _number(token)
        if value is None:
            found.append((start, end, Quantity(token, -1.0, "version", name=token)))
            continue
        words.append((start, end, value))
    for start, end, value in _join_words(text, words):
        found.append((start, end, _with_unit(text, text[start:end], value, end)))
    found.sort(key=lambda item: item[0])
    return _merge_durations(text, found)


def _near_number(text: str, start: int, end: int) -> bool:
    """'May 15' / '15 may' is a month; 'you may' is not."""
    return bool(re.match(r"\s\d", text[end : end + 2]) or re.search(r"\d\s$", text[max(0, start - 2) : start]))


def _twelve(hours: int, after: str, text: str, start: int) -> float:
    before = text[max(0, start - 4) : start]
    if after.startswith(_PM) or re.search(r"(下午|晚上|午後|夜|오후|저녁)\s*$", before):
        return hours % 12 + 12
    if after.startswith(_AM):
        return hours % 12
    return hours


def _join_words(text: str, words: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """'twenty five' → 25, 'one and a half' → 1.5, 'two hundred' → 200; numbers stay as they are."""
    joined: list[tuple[int, int, float]] = []
    for start, end, value in words:
        if joined:
            p_start, p_end, p_value = joined[-1]
            gap = text[p_end:start]
            if (
                gap in (" ", "-", " y ", " e ", " et ")
                and p_value >= 20
                and p_value % 10 == 0
                and value < 10
                and p_value < 100
            ):
                joined[-1] = (p_start, end, p_value + value)
                continue
            if gap == " " and value == 100 and p_value < 10:
                joined[-1] = (p_start, end, p_value * 100)
                continue
        joined.append((start, end, value))
    result = []
    for start, end, value in joined:
        tail = re.match(r" and a half\b| et demie?\b| y medio\b| e mezzo\b| e meio\b|半", text[end : end + 12])
        if tail:
            value, end = value + 0.5, end + tail.end()
        result.append((start, end, value))
    # "half an hour", "meio minuto", "半年": half of the unit that follows
    for match in re.finditer(
        r"\b(?:half an?|meio|meia|medio|media|mezzo|mezza|demi-?)\s?(?=[^\W\d_])|半(?=[年日])", text
    ):
        if _unit_after(text, match.end() - 1 if text[match.end() - 1] in " -" else match.end()):
            result.append((match.start(), match.end(), 0.5))
        if len(result) > MAX_ITEMS:
            break
    return result


def _with_unit(text: str, written: str, value: float, end: int) -> Quantity:
    after = text[end : end + 8].lstrip()
    if after.startswith(_AM + _PM) and value <= 12 and value == int(value):
        marker = "pm" if after.startswith(_PM) else "am"
        return Quantity(written + marker, _twelve(int(value), after, text, end), "clock")
    if value < 24 and re.match(r"\s?(h|uhr|o'clock|시(?!간)|点|點|時(?!間))(?![^\W\d_])", text[end : end + 9]):
        hours = _twelve(int(value), "", text, text.rfind(written, 0, end))
        return Quantity(written, hours, "clock", name="12h" if hours <= 12 else "")
    unit = _unit_after(text, end)
    if unit is None:
        return Quantity(written, value)
    word, (dimension, factor) = unit
    after_unit = text.find(word, end) + len(word)
    if re.match(r"半| and a half\b| et demie?\b| y medio\b| e mezzo\b| e meio\b| und ein halb", text[after_unit:]):
        value += 0.5  # "2時間半", "two hours and a half"
    return Quantity(f"{written} {word}", value, dimension, value * factor)


def _merge_durations(text: str, found: list[tuple[int, int, Quantity]]) -> list[Quantity]:
    """'2 hours 30 minutes' / '2時間30分' is one duration: 2.5 hours."""
    merged: list[tuple[int, int, Quantity]] = []
    for start, end, q in found:
        if merged:
            p_start, p_end, p = merged[-1]
            gap = text[p_end:start]
            if (p.dimension == q.dimension == "time" and q.base < p.base and len(gap) <= 16
                    and re.fullmatch(r"[\s-]?[^\W\d_]+\s*(?:and\s+|et\s+|und\s+|y\s+|e\s+|,\s*)?", gap)):  # fmt: skip
                total = p.base + q.base
                merged[-1] = (p_start, end, Quantity(f"{p.text} {q.text}", total, "time", total))
                continue
        merged.append((start, end, q))
    return [q for _, _, q in merged]


def is_date_word(word: str) -> bool:
    """A weekday or month name this module compares (entities.py leaves them to it)."""
    return word in _NAMES


def number_words() -> frozenset[str]:
    """The words this module reads as numbers and units (wording.py leaves them to it)."""
    return _NUMBER_WORDS


def describe(items: list[Quantity]) -> str:
    written = list(dict.fromkeys(q.text for q in items))
    return ", ".join(written[:8]) + (f" and {len(written) - 8} more" if len(written) > 8 else "")


_IMPLIED_UNIT = re.compile(r"\b(?:a|an|one|per|each|every|un|une|ein|eine|einen|uno|una|um|uma|een)\s([^\W\d_]+)")
_IMPLIED_ADVERB = {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year", "annually": "year",
                   "hourly": "hour", "fortnight": "week"}  # fmt: skip


def _implied(text: str) -> list[Quantity]:
    """What a response may say without a digit: "within a day" (24 hours), "monthly" (1 month), "a
    fortnight" (14 days). Only used to find the golden response's facts, never to name a difference:
    "a" is far more often an article than a count."""
    found = []
    for match in _IMPLIED_UNIT.finditer(text):
        unit = _UNITS.get(match.group(1))
        if unit is not None and unit[0] == "time":
            found.append(Quantity(match.group(), 1, "time", unit[1]))
        if len(found) > MAX_ITEMS:
            break
    for word in dict.fromkeys(_WORD_RUN.findall(text)):  # each word once: bounded by the vocabulary
        if word in _WEEKDAYS or word in _WEEKEND:  # "weekdays" states Monday to Friday
            found.extend(Quantity(word, 0, "name", name=day) for day in _WEEKDAYS.get(word, _WEEKEND.get(word, ())))
        if word in _IMPLIED_ADVERB:
            count = 2 if word == "fortnight" else 1
            found.append(Quantity(word, count, "time", count * _UNITS[_IMPLIED_ADVERB[word]][1]))
    return found[: MAX_ITEMS * 2]


_WORD_RUN = re.compile(r"[^\W\d_]+")
_FIVE = ("mon", "tue", "wed", "thu", "fri")
_WEEKDAYS = dict.fromkeys(("weekdays", "weekday", "semaine", "werktags", "wochentags", "feriales", "úteis", "feriali",
                           "werkdagen", "平日", "工作日", "평일", "주중"), _FIVE)  # fmt: skip
_WEEKEND = dict.fromkeys(("weekend", "weekends", "wochenende", "finde", "fim"), ("sat", "sun"))


def compare(golden: str, response: str) -> str | None:
    """Why the response's facts differ from the golden response's, or None when each number, time,
    weekday and month of the golden response is in the response (spelled any way).

    Numbers the response adds are allowed (an answer may say more) unless the golden response's own
    ones are missing: then they are named as what it says instead."""
    expected, stated = quantities(golden), quantities(response)
    written = _prepare(response)
    implied = _implied(written)
    missing = [
        g for g in expected
        if not any(g.same(r) for r in stated + implied)
        and not (g.dimension == "name" and len(g.text) > 3 and g.text in written)  # "Oktobermontag"
    ]  # fmt: skip
    instead = [r for r in stated if not any(r.same(g) for g in expected)]
    if not instead:
        # a lone "one"/"1" is as often an article as a count ("one at a time", "one EUR buys...")
        missing = [g for g in missing if not (g.dimension is None and g.value == 1)]
    if not missing:
        return None
    if instead:
        return f"the golden response says {describe(missing)} where the response says {describe(instead)}"
    return f"the response leaves out {describe(missing)} of the golden response"

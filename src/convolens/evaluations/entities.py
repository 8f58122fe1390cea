"""Names swapped for other names: "The office in Madrid opens at 8" / "The office in Barcelona ...",
"The CEO is ..." / "The CFO is ...", "pay with PayPal" / "pay with Klarna". Embeddings score such pairs
~0.7–0.9; ``semantic_match`` asks this module too.

A name is a word written as one: capitalised inside a sentence ("Madrid"), all capitals ("CEO"), a
capital inside the word ("iPhone"), code (``append()``), or Latin letters inside CJK text. Only a
*substitution* is flagged — a name of the golden response absent from the response while the
response has a name the golden one lacks — because a correct answer often drops the subject the
question already named ("How tall is the Eiffel Tower?" / "It stands 330 m high"). Texts where most
nouns are capitalised (German) use only the unambiguous forms (capitals, camel case, code).
Presence is checked on the other text's lowercased letters by a prefix (4+ letters), so
"Lisbon"/"Lisboa" and "Canada's"/"Canada" are one name. Linear scans over ``MAX_CHARS``.
"""

# ruff: noqa: RUF001, RUF002  (full-width digits and punctuation, CJK words: the texts compared are multilingual)

from __future__ import annotations

import re
import unicodedata

from convolens.evaluations import quantities

MAX_CHARS = 4000
MAX_NAMES = 50

_WORD = re.compile(r"[^\W\d_][\w-]*(?:\(\))?")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_UNITS = frozenset(("celsius", "fahrenheit", "kelvin"))  # capitalised, but a unit (quantities.py)
_NOT_NAMES = frozenset(("am", "pm", "ok", "okay", "hi", "hello", "thanks", "please", "sorry"))  # capitalised, not names
_SENTENCE = re.compile(r"[.!?。！？:\n]\s*|[\"'«“(]\s*")


def names(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).replace("’", "'")
    cjk = bool(_CJK.search(text))
    title: list[str] = []
    strong: list[str] = []
    inside = 0
    words = 0
    starts = {m.end() for m in _SENTENCE.finditer(text)} | {0}
    for match in _WORD.finditer(text):
        word = re.sub(r"'s$", "", match.group())
        if _CJK.search(word) or quantities.is_date_word(word.lower()) or word.lower() in _NOT_NAMES:
            continue  # CJK has no capitals; weekdays and months are compared by quantities.py
        words += 1
        code = word.endswith("()") or (cjk and word.isascii() and len(word) > 1)
        if code or (len(word) > 1 and word.isupper()) or re.search(r"[a-z][A-Z]", word):
            strong.append(word.lower())
        elif len(word) > 1 and word[0].isupper() and match.start() not in starts and word.lower() not in _UNITS:
            inside += 1
            title.append(word.lower())
        if len(strong) + len(title) > MAX_NAMES:
            break
    # German capitalises every noun: there, a capital says nothing about a name
    if words and inside / words > 0.25:
        title = []
    return list(dict.fromkeys(strong + title))


def _present(name: str, text: str) -> bool:
    stem = name.removesuffix("()")
    prefix = stem[: max(4, len(stem) - 2)] if len(stem) > 4 else stem
    return re.search(r"(?<![^\W\d_])" + re.escape(prefix), text) is not None


def swapped(golden: str, response: str) -> str | None:
    """Why the response names something else than the golden response did, or None."""
    g_lower = unicodedata.normalize("NFKC", golden[:MAX_CHARS]).lower()
    r_lower = unicodedata.normalize("NFKC", response[:MAX_CHARS]).lower()
    missing = [n for n in names(golden) if not _present(n, r_lower)]
    if not missing:
        return None
    instead = [n for n in names(response) if not _present(n, g_lower)]
    if not instead:
        return None
    return f"the golden response names {', '.join(missing[:8])} where the response names {', '.join(instead[:8])}"

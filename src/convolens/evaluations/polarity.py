"""Negation flips: "You can return it" / "You can't return it", "Haustiere sind erlaubt" / "nicht
erlaubt", "支持" / "不支持". Sentence embeddings put such pairs close together (~0.9), so
``semantic_match`` asks this module as well.

A flip is flagged when one text has a negation cue the other lacks AND the rest of the two texts is
mostly the same words: a paraphrase that says the same with other words ("No, it can't be combined" /
"that code isn't stackable") keeps its meaning while its cues move, and is not flagged. Cue lists are
small and explicit per language; matching is a linear scan over words (bounded by ``MAX_CHARS``).
"""

# ruff: noqa: RUF001, SIM905  (CJK cues and full-width punctuation are the point; word lists read as text)

from __future__ import annotations

import re
import unicodedata
from collections import Counter

MAX_CHARS = 4000
# How much of the shorter text's remaining words must appear in the other for a cue change to count
# as the same statement negated (0.6: measured on the seen pair sets, see bench/evaluator_quality.py).
MIN_OVERLAP = 0.6

_CUES = frozenset(
    # en ("no" only as an answer: "No, ...", see _words), fr, de, es, it, pt, nl
    "not never cannot nobody nothing none neither nor "
    "ne pas jamais aucun aucune rien personne "
    "nicht kein keine keinen keinem keiner keines nie niemals "
    "nunca ningún ninguna ninguno nada tampoco "
    "non mai nessun nessuna nessuno niente "
    "não nenhum nenhuma "
    "niet geen nooit".split()
)
# Spanish/Italian "no" negates; Portuguese "no" is "in the": it counts only as an answer ("No, ...").
_CJK_CUES = ("不", "没", "沒", "无", "無", "未", "非", "ない", "ません", "なし", "不可",
             "않", "못", "없", "불가", "안 ")  # fmt: skip
# "No problem! Your order ships today" answers yes
_NOT_A_NO = frozenset(("problem", "problemo", "worries", "prob", "doubt"))
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower().replace("’", "'")
    # can't / won't / isn't → not; n'importe / l'heure keep their word
    text = re.sub(r"\b(can|won|shan)'t\b", r"\1 not", text)
    text = re.sub(r"n't\b", " not", text)
    return re.sub(r"\bn'", "ne ", text)


def _words(text: str) -> tuple[Counter[str], set[str]]:
    """(the negation cues, the other words stemmed to 5 letters; CJK: characters)."""
    cues: Counter[str] = Counter()
    rest: set[str] = set()
    for sentence in re.split(r"[.!?;。！？\n]", text):
        words = _WORD.findall(sentence)
        for i, word in enumerate(words):
            answer_no = i == 0 and (i + 1 >= len(words) or words[i + 1] not in _NOT_A_NO)
            if word in _CUES or (word == "no" and (answer_no or (not _CJK.search(sentence) and _spanish_no(words, i)))):
                cues[word] += 1
            elif _CJK.search(word):
                rest.update(ch for ch in word if not ch.isdigit())
            else:
                rest.add(word[:5])
    for cue in _CJK_CUES:
        if cue in text:
            cues[cue] += text.count(cue)
            rest.discard(cue)
    return cues, rest


def _spanish_no(words: list[str], i: int) -> bool:
    """'no' before a verb ('no pueden', 'no es'): Spanish/Italian negation; 'no hotel' (pt) is not."""
    return i + 1 < len(words) and words[i + 1][-2:] in ("en", "an", "es", "as", "ar", "er", "ir", "ía", "ió", "ha")


# Antonyms (5-letter stems) a negation turns into a paraphrase: "closed" / "not open", "free" / "costs
# nothing", "chiuso" / "non è aperto". A cue on one side with its antonym on the other is no flip.
_ANTONYMS = (
    ("close", "open"), ("clos", "open"), ("chius", "apert"), ("fermé", "ouver"), ("cerra", "abier"),
    ("fecha", "abert"), ("gesch", "geöff"), ("gesch", "offen"), ("geslo", "open"), ("free", "charg"),
    ("free", "cost"), ("free", "pay"), ("gratu", "coût"), ("gratu", "pay"), ("mutab", "chang"),
    ("allow", "forbi"), ("allow", "prohi"), ("same", "diffe"), ("until", "yet"), ("until", "has"),
)  # fmt: skip


def _antonym(a: set[str], b: set[str]) -> bool:
    def has(words: set[str], stem: str) -> bool:
        return any(w.startswith(stem) for w in words)

    return any((has(a, x) and has(b, y)) or (has(a, y) and has(b, x)) for x, y in _ANTONYMS)


def negated(text: str) -> bool:
    """Whether ``text`` has a negation cue."""
    return bool(_words(_text(text))[0])


def flip(golden: str, response: str) -> str | None:
    """Why the response looks like the golden response negated (naming the cue), or None."""
    g_cues, g_rest = _words(_text(golden))
    r_cues, r_rest = _words(_text(response))
    if bool(g_cues) == bool(r_cues) or _antonym(g_rest - r_rest, r_rest - g_rest):
        return None
    shorter = min(len(g_rest), len(r_rest))
    if not shorter or len(g_rest & r_rest) / shorter < MIN_OVERLAP:
        return None
    side, cues = ("response", r_cues) if r_cues else ("golden response", g_cues)
    other = "golden response" if side == "response" else "response"
    return f"the {side} negates what the {other} states ({', '.join(repr(c.strip()) for c in cues)})"

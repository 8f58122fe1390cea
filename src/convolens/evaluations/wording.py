"""A near copy of the golden response with a word swapped: "The stock rose 5%" / "The stock fell 5%",
"including sale items" / "excluding sale items", "use git merge" / "use git rebase". Embeddings score
such pairs 0.9+ and no cue list can know every antonym, but the shape is telling: when a response
repeats nearly all of the golden response's words, the few it changes are the point of the answer.

Flagged when at least ``MIN_SHARED`` of the shorter text's content words (stopwords dropped, words
cut to 4 letters so "ship"/"ships" are one) are in the other, in the same order, and the only
differences are one or two words replaced in place (not an addition: "unopened items" / "opened or
unopened items"; not a reordering). Numbers and units are left to quantities.py. Scripts written
without spaces (CJK) are not checked. A response that rewords freely moves, adds or changes more
words and is not flagged; a synonym swapped into an otherwise copied sentence is (the reason names
both words, so a tester sees it at once).
"""

# ruff: noqa: SIM905  (the stopword lists read better as text)

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

from convolens.evaluations import polarity, quantities

MAX_CHARS = 4000
MIN_SHARED = 0.8
MAX_SWAPPED = 2
MAX_WORDS = 300  # SequenceMatcher is quadratic at worst: bounded

_WORD = re.compile(r"[^\W\d_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_STOP = frozenset(
    "a an the of to in on at for from by with and or but is are was were be been it its this that these "
    "those you your we our they their he she his her i me my as so if then than there here will would "
    "can could may might shall should do does did has have had not no yes please also just very "
    "le la les un une des de du et ou est sont à au aux en pour par sur dans ce cette vous votre nous "
    "der die das ein eine einen und oder ist sind zu im am mit von für auf sie ihr ihre wir "
    "el los las unos y o es son al del con por para su sus usted "
    "il lo gli uno e è di da con per su suo sua "
    "o os um uma é são ao do da dos das em no na com para seu sua você "
    "het een en of is zijn te op met voor van uw je".split()
)


def _content(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower()
    return [w for w in _WORD.findall(text) if w not in _STOP and len(w) > 1]


def _meaningful(word: str) -> bool:
    """Not a number word (quantities.py compares those) and not a fragment ("re-renders" → "re")."""
    return len(word) > 2 and word not in quantities.number_words() and word not in ("degrees", "degree")


def swapped(golden: str, response: str) -> str | None:
    """Why the response reads as the golden response with words changed in place, or None."""
    if _CJK.search(golden[:MAX_CHARS]) or _CJK.search(response[:MAX_CHARS]):
        return None
    g_words = [w for w in _content(golden) if _meaningful(w)][:MAX_WORDS]
    r_words = [w for w in _content(response) if _meaningful(w)][:MAX_WORDS]
    g_stems, r_stems = [w[:4] for w in g_words], [w[:4] for w in r_words]
    shorter = min(len(set(g_stems)), len(set(r_stems)))
    if shorter < 3 or len(set(g_stems) & set(r_stems)) / shorter < MIN_SHARED:
        return None
    # Only replacements in place, of one or two words: a rewording moves words around or adds some,
    # which shows as insertions and deletions ("until the order ships" / "as long as it hasn't shipped").
    changes = [op for op in SequenceMatcher(None, g_stems, r_stems, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not changes or any(op[0] != "replace" for op in changes):
        return None
    g_set, r_set = set(g_stems), set(r_stems)
    for _, g_from, g_to, r_from, r_to in changes:  # a word found elsewhere in the other text moved: a rewording
        if any(x in r_set for x in g_stems[g_from:g_to]) or any(x in g_set for x in r_stems[r_from:r_to]):
            return None
    g_only = list(dict.fromkeys(w for w in g_words if w[:4] not in r_stems))
    r_only = list(dict.fromkeys(w for w in r_words if w[:4] not in g_stems))
    if not 0 < len(g_only) <= MAX_SWAPPED or not 0 < len(r_only) <= MAX_SWAPPED:
        return None
    return (
        f"the response repeats the golden response with {', '.join(map(repr, r_only))}"
        f" in place of {', '.join(map(repr, g_only))}"
    )


# Words whose swap for their counterpart reverses a statement that otherwise stays the same ("pay
# before" / "pay after", "at least 12" / "at most 12", "flights depart" / "flights arrive"). Small and
# explicit per language; a pair counts only when each text has its own word and not the other's.
_OPPOSITES = tuple(
    tuple(pair.split("/"))
    for pair in (
        "before/after including/excluding include/exclude includes/excludes with/without least/most "
        "more/less minimum/maximum above/below increase/decrease increased/decreased rise/fall rose/fell "
        "risen/fallen opens/closes open/closed arrive/depart arrives/departs arrival/departure early/late "
        "earlier/later first/last allowed/forbidden allowed/prohibited required/optional mandatory/optional "
        "approved/rejected approved/denied accepted/rejected available/unavailable enabled/disabled "
        "enable/disable upload/download push/pull import/export send/receive credit/debit buy/sell "
        "appear/disappear appears/disappears fixed/introduced inside/outside "
        "avant/après avec/sans plus/moins ouvre/ferme ouvert/fermé arrivée/départ gratuit/payant "
        "vor/nach mit/ohne mehr/weniger öffnet/schließt geöffnet/geschlossen "
        "antes/después con/sin más/menos abre/cierra abierto/cerrado "
        "prima/dopo con/senza più/meno apre/chiude aperto/chiuso "
        "antes/depois com/sem mais/menos abre/fecha aberto/fechado "
        "voor/na met/zonder meer/minder opent/sluit"
    ).split()
)
_CONTRAST_OVERLAP = 0.6


def opposite(golden: str, response: str) -> str | None:
    """Why the response reads as the golden response with a word turned into its opposite, or None."""
    if _CJK.search(golden[:MAX_CHARS]) or _CJK.search(response[:MAX_CHARS]):
        return None
    if polarity.negated(golden) != polarity.negated(response):
        return None  # "closed" / "doesn't open": the opposite and a negation cancel out
    g_all = set(_WORD.findall(unicodedata.normalize("NFKC", golden[:MAX_CHARS]).lower()))
    r_all = set(_WORD.findall(unicodedata.normalize("NFKC", response[:MAX_CHARS]).lower()))
    for a, b in _OPPOSITES:
        for mine, theirs in ((a, b), (b, a)):
            if mine in g_all and mine not in r_all and theirs in r_all and theirs not in g_all:
                g_rest = {w[:4] for w in _content(golden) if w not in (a, b)}
                r_rest = {w[:4] for w in _content(response) if w not in (a, b)}
                shorter = min(len(g_rest), len(r_rest))
                if shorter and len(g_rest & r_rest) / shorter >= _CONTRAST_OVERLAP:
                    return f"the response says {theirs!r} where the golden response says {mine!r}"
    return None

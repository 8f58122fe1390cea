"""Names a person would write for a cluster of messages ("Password reset", "Refunds for double charges"),
without an LLM.

Candidates are the word sequences (2 to 4 words, no stop word at either end) that several member
messages in the project's main language share. Each candidate is embedded with the same multilingual
encoder as the messages, and ranked by how close it is to its cluster's centre against how close it is
to the nearest other centre (distinctiveness), with a small bonus for how many members use it. Members
in other languages shape the centre through the shared embedding space, so they pull the choice towards
the phrase that also says what they say, without their words ending up in the name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np

# Members read per cluster (the closest to the centre) and candidates embedded per cluster: enough for
# a stable choice, and bounded so that naming 100 clusters costs about as much as embedding 3,000 texts.
MEMBERS_READ = 300
CANDIDATES = 24
MAX_WORDS = 4
MAX_CHARS = 300  # of each member: long messages say their subject early
# Weights of the ranking: closeness to the own centre, minus closeness to the nearest other centre, plus
# the log of the share of members using the phrase. Tuned on tests/data/topics.jsonl and topics_tune2.jsonl:
# a lighter distinctiveness weight picks narrower phrases ("Card got" for lost and blocked cards).
DISTINCT = 0.8
COVERAGE = 0.08
# A phrase the members wrote reads better than two of their words joined by "and".
PHRASE_BONUS = 0.1
PAIR_WORDS = 4  # pairs are made of the most distinctive words, this many
_WORD = re.compile(r"[^\W\d_][^\W_]*(?:'[a-z]+)?")
_LATIN = re.compile(r"[a-zA-Z]")
# Words that end no name: on top of scikit-learn's English stop words, the chat verbs and fillers.
_CHAT = {"please", "thanks", "thank", "hi", "hello", "hey", "want", "need", "does", "did", "just", "like", "know",
         "tell", "help", "make", "way", "good", "best", "use", "using", "get", "ok", "okay", "can't", "don't",
         "i'm", "it's", "what's", "doesn't", "isn't", "won't", "i've", "anyone", "someone", "really", "actually",
         "possible", "there", "trying", "try", "going", "able", "quick", "question", "guys", "ya", "yes",
         "keeps", "keep", "vs", "says", "ago", "still", "since"}  # fmt: skip


# Words that may stand between two distinctive words in a name ("Refund for my flight", "Card got blocked"):
# articles, possessives and prepositions; "Wall can just paint" is no name.
_JOINS = {"a", "an", "the", "my", "our", "your", "his", "her", "their", "for", "of", "to", "in", "on", "at", "from",
          "with", "by", "about", "got", "is", "was", "not", "after", "into", "per"}  # fmt: skip


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS | _CHAT)


def _words(text: str, english: bool) -> list[str]:
    words = _WORD.findall(text[:MAX_CHARS].lower())
    # In English, a word with no Latin letter is a foreign word, not part of an English name.
    return [w for w in words if _LATIN.search(w)] if english else words


def candidates(texts: list[str], english: bool) -> Counter[str]:
    """How many of ``texts`` contain each candidate phrase: every 2- to 4-word sequence with no stop word
    at either end ("account is locked"), every 2- or 3-word sequence of the words left once stop words are
    dropped ("reset my password" gives "reset password"), and every single word that is no stop word."""
    stop = _stop_words() if english else frozenset()
    found: Counter[str] = Counter()
    for text in texts:
        words = [w for w in _words(text, english) if len(w) > 1]
        seen = set()
        for i, first in enumerate(words):
            if first in stop:
                continue
            for j in range(i, min(i + MAX_WORDS, len(words))):
                if words[j] not in stop:
                    seen.add(" ".join(words[i : j + 1]))
        content = [w for w in words if w not in stop]
        for size in (2, 3):
            seen.update(" ".join(content[i : i + size]) for i in range(len(content) - size + 1))
        found.update(seen)
    return found


def name_clusters(
    members: list[list[str]],
    centres: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
    language: str | None,
) -> list[str | None]:
    """A 2- to 5-word name for each cluster; ``members[k]`` are cluster k's texts in the project's
    language, closest to the centre first; ``centres`` are unit vectors. None where no word repeats."""
    english = language in (None, "en")
    counted = [candidates(texts[:MEMBERS_READ], english) for texts in members]
    overall: Counter[str] = Counter()
    for c in counted:
        overall.update(c)
    shortlists: list[list[tuple[str, float]]] = []
    for texts, c in zip(members, counted, strict=True):
        size = max(1, min(len(texts), MEMBERS_READ))
        floor = max(2, int(0.03 * size))

        def distinctive(phrase: str, c: Counter[str] = c, size: int = size) -> float:
            # a phrase's share in its cluster against its share in all clusters (c-TF-IDF)
            return c[phrase] / size * float(np.log(1 + len(members) * c[phrase] / overall[phrase]))

        phrases = sorted((p for p, n in c.items() if n >= floor and " " in p), key=lambda p: (-distinctive(p), p))
        words = sorted((p for p, n in c.items() if n >= floor and " " not in p), key=lambda p: (-distinctive(p), p))
        if len(words) < 2:  # a loose cluster where few words repeat: its most distinctive words, even once
            words = sorted((p for p in c if " " not in p), key=lambda p: (-distinctive(p), p))
        shortlist = [(p, c[p] / size) for p in phrases[:CANDIDATES]]
        # Two of the most distinctive words also make a name ("Login and password") where no phrase repeats.
        top = words[:PAIR_WORDS]
        shortlist += [
            (_window(texts[:MEMBERS_READ], a, b, english) or f"{a} and {b}", min(c[a], c[b]) / size)
            for i, a in enumerate(top)
            for b in top[i + 1 :]
            if a[:4] != b[:4]  # "pipe and pipes" says one thing twice
        ]
        shortlists.append(shortlist)
    flat = [phrase for shortlist in shortlists for phrase, _ in shortlist]
    vectors = embed(flat) if flat else np.zeros((0, centres.shape[1]), dtype=np.float32)
    similarity = vectors @ centres.T if len(flat) else np.zeros((0, len(centres)))
    names: list[str | None] = []
    row = 0
    for k, shortlist in enumerate(shortlists):
        best: tuple[float, str] | None = None
        for phrase, share in shortlist:
            own = similarity[row, k]
            others = np.delete(similarity[row], k)
            score = own - DISTINCT * (others.max() if len(others) else 0.0) + COVERAGE * np.log(share)
            if " and " not in phrase:
                score += PHRASE_BONUS
            row += 1
            if best is None or score > best[0]:
                best = (float(score), phrase)
        names.append(None if best is None else _label(best[1], _spellings(members[k][:MEMBERS_READ])))
    return names


def _window(texts: list[str], a: str, b: str, english: bool) -> str | None:
    """How the members put two distinctive words together: the most common shortest run that holds both
    with at most two joining words (_JOINS) between them ("refund for my flight" for refund and flight,
    "card got blocked" for card and blocked), None where no member has both close together. A name in the members' own
    words reads as a person wrote it; "Refund and flight" reads as two keywords."""
    found: Counter[str] = Counter()
    for text in texts:
        words = [w for w in _words(text, english) if len(w) > 1]
        at_a = [i for i, w in enumerate(words) if w == a]
        at_b = [i for i, w in enumerate(words) if w == b]
        # at most two words between them, joining ones: "card got blocked", "ticket for the train"
        spans = [
            (min(i, j), max(i, j))
            for i in at_a
            for j in at_b
            if abs(i - j) <= 3 and all(w in _JOINS for w in words[min(i, j) + 1 : max(i, j)])
        ]
        if spans:
            first, last = min(spans, key=lambda s: s[1] - s[0])
            found[" ".join(words[first : last + 1])] += 1
    return found.most_common(1)[0][0] if found else None


def _spellings(texts: list[str]) -> dict[str, str]:
    """How the members wrote each word, by its lower-case form: the most common spelling that is not all
    lower case ("London", "ModuleNotFoundError", "SQL"), so a name keeps the case people gave it."""
    seen: dict[str, Counter[str]] = {}
    for text in texts:
        for word in _WORD.findall(text[:MAX_CHARS]):
            if word != word.lower():
                seen.setdefault(word.lower(), Counter())[word] += 1
    lower: Counter[str] = Counter(w for text in texts for w in _WORD.findall(text[:MAX_CHARS].lower()))
    # Written in capitals by at least half of those who wrote it: a name, not the first word of a sentence.
    return {w: c.most_common(1)[0][0] for w, c in seen.items() if c.total() * 2 >= lower[w]}


def _label(phrase: str, spellings: dict[str, str] | None = None) -> str:
    words = [(spellings or {}).get(w, w) for w in phrase.split()[:5]]
    label = " ".join(words)
    return label[:1].upper() + label[1:]

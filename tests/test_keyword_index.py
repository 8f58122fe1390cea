"""The one-pass keyword matcher (``enrich.topics.KeywordIndex``) against the per-topic regex loop it
replaced, kept here as the reference: same topics, same reported text, on the labelled fixture texts and
on random keywords and texts."""

from __future__ import annotations

import json
import random
import re
import time
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from convolens.enrich import topics
from convolens.enrich.topics import ProjectTopics, compile_topic

TEXTS = [json.loads(line)["text"] for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]


def _script_of(text: str, prefixes: tuple[str, ...]) -> bool:
    return any(unicodedata.name(ch, "").startswith(prefixes) for ch in text)


def reference_pattern(keywords: list[str]) -> re.Pattern[str] | None:
    """The matcher before the automaton, as it was: one regex per topic."""
    parts = []
    for keyword in keywords:
        words = keyword.split()
        if not words:
            continue
        body = r"\s+".join(re.escape(w) for w in words)
        if _script_of(keyword, ("CJK", "HIRAGANA", "KATAKANA", "THAI")):
            parts.append(body)
        elif _script_of(keyword, ("HANGUL",)):
            parts.append(rf"(?<!\w){body}")
        else:
            parts.append(rf"(?<!\w){body}(?!\w)")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def reference_match(text: str, patterns: list[tuple[int, re.Pattern[str] | None]]) -> dict[int, str]:
    found = {}
    for pk, pattern in patterns:
        hit = pattern.search(text) if pattern else None
        if hit:
            found[pk] = hit.group(0)
    return found


def compiled(keyword_sets: list[list[str]]) -> ProjectTopics:
    return ProjectTopics.of(
        [compile_topic(pk, f"t{pk}", "keyword", {"keywords": k}) for pk, k in enumerate(keyword_sets)]
    )


def new_match(text: str, project: ProjectTopics) -> dict[int, str]:
    return {m.topic_pk: m.reason[len("contains ") :] for m in topics.match(text, None, project)}


def old_match(text: str, patterns: list[tuple[int, re.Pattern[str] | None]]) -> dict[int, str]:
    return {pk: repr(hit) for pk, hit in reference_match(text, patterns).items()}


def fixture_keyword_sets(seed: int = 7) -> list[list[str]]:
    """Words and two-word phrases of the fixture texts in changed case, with the CJK and Korean words
    the scripts rules are about."""
    rng = random.Random(seed)
    words = [w.strip("?.,!¿¡") for text in TEXTS for w in text.split()]
    words = [w for w in words if w]
    sets = []
    for _ in range(60):
        chosen = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.3:
                i = rng.randrange(len(words) - 1)
                chosen.append(f"{words[i]}  {words[i + 1]}")
            else:
                w = rng.choice(words)
                chosen.append(rng.choice([w, w.upper(), w.lower(), w[:3]]))
        sets.append(chosen)
    sets += [
        ["환불", "결제"],
        ["退款", "发票"],
        ["パスワード"],
        ["refund", "charged twice", "환불"],
        ["  "],
        ["ß", "\u017f", "\u212a"],
    ]
    return sets


def test_the_automaton_finds_what_the_regex_loop_found_on_the_fixture_texts() -> None:
    sets = fixture_keyword_sets()
    project = compiled(sets)
    patterns = [(pk, reference_pattern(k)) for pk, k in enumerate(sets)]
    matched = 0
    rng = random.Random(1)
    spaced = [re.sub(" ", lambda _: rng.choice([" ", "  ", " \t ", "\n"]), text) for text in TEXTS]
    for text in TEXTS + spaced:
        expected = old_match(text, patterns)
        assert new_match(text, project) == expected, text
        matched += len(expected)
    assert matched > 1000  # the comparison is about matches, not about texts no keyword is in


# Letters chosen to meet every rule: word edges (letters, digits, _ and punctuation), case (ASCII, ß, the
# equal lowercase pairs: dotless and dotted i, long s, Kelvin sign; Greek sigmas), spaces of several
# kinds, CJK, Korean, Thai.
ALPHABET = "abcAB_1 -.\t\n\u3000i\u0131\u0130s\u017fSKk\u212a\u03c3\u03c2\u03a3ß退款환불은ไทย"
keyword = st.text(alphabet=ALPHABET, min_size=0, max_size=6)
keyword_sets = st.lists(st.lists(keyword, min_size=0, max_size=5), min_size=1, max_size=6)


SPACES = st.text(alphabet=" \t\n\u3000", min_size=1, max_size=3)


@st.composite
def keywords_and_texts(draw: st.DrawFn) -> tuple[list[list[str]], list[str]]:
    """Keyword sets, and texts made of their keywords (words apart by runs of spaces, case changed)
    between random letters: random text alone would seldom contain a keyword."""
    sets = draw(keyword_sets)
    pieces = [k for keywords in sets for k in keywords if k.split()]
    texts = []
    for _ in range(draw(st.integers(1, 4))):
        parts = []
        for _ in range(draw(st.integers(0, 6))):
            if pieces and draw(st.booleans()):
                words = draw(st.sampled_from(pieces)).split()
                phrase = "".join(w + draw(SPACES) for w in words[:-1]) + words[-1]
                parts.append(draw(st.sampled_from([phrase, phrase.upper(), phrase.lower(), phrase.swapcase()])))
            else:
                parts.append(draw(st.text(alphabet=ALPHABET, max_size=8)))
        texts.append("".join(parts))
    return sets, texts


@settings(max_examples=500, deadline=None)
@given(case=keywords_and_texts())
def test_random_keywords_and_texts_match_as_the_regex_loop_did(case: tuple[list[list[str]], list[str]]) -> None:
    sets, texts = case
    project = compiled(sets)
    patterns = [(pk, reference_pattern(k)) for pk, k in enumerate(sets)]
    for text in texts:
        assert new_match(text, project) == old_match(text, patterns)


def test_one_project_at_the_caps_costs_a_few_times_one_topic() -> None:
    """100 topics of 50 keywords each (the default caps) cost about what one topic does: the text is
    read once, not once a topic. The regex loop it replaced took ~100 times one topic's time."""
    rng = random.Random(3)
    vocabulary = sorted({w.strip("?.,!¿¡").lower() for text in TEXTS for w in text.split()} - {""})
    filler = [f"{w}{i}" for i in range(60) for w in ("zorb", "quell", "mav", "tesk", "plom", "vrin", "dask", "hult")]
    many = [[*rng.sample(filler, 49), rng.choice(vocabulary)] for _ in range(100)]
    texts = [rng.choice(TEXTS) + " " + " ".join(rng.choices(vocabulary, k=40)) for _ in range(200)]

    def cost(project: ProjectTopics) -> float:
        runs = []
        for _ in range(5):
            started = time.thread_time()
            for text in texts:
                topics.match(text, None, project)
            runs.append(time.thread_time() - started)
        return sorted(runs)[2]

    one = cost(compiled([many[0]]))
    at_caps = cost(compiled(many))
    assert at_caps <= 3 * one + 0.005, (one, at_caps)
    patterns = [(pk, reference_pattern(k)) for pk, k in enumerate(many)]
    started = time.thread_time()
    for text in texts:
        reference_match(text, patterns)
    assert time.thread_time() - started > 3 * at_caps  # the loop this replaced: the test can tell them apart

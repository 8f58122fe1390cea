"""Were users helped: a conversation's outcome (resolved, unresolved, abandoned, unknown) and the signals
behind it, read from the structure of its transcript and from the embeddings its user turns already have.

Signals:
- per user turn, a logistic regression over its stored embedding, trained when first used on the examples
  of ``outcome_examples``: ``thanks``, ``gives_up``, ``correction``, ``off_target``, ``sarcasm``, and two
  that steer the outcome without being signals, ``success`` ("works now") and ``greeting``; plus words
  that say thanks or giving up in several languages;
- ``rephrase``: a user turn whose embedding is close to the user's previous turn (or fairly close, and
  unhappy), with an assistant reply in between (the user asks the same thing again in other words);
- ``repeated_answer``: two assistant replies with nearly the same words (replies have no embedding: the
  pipeline embeds only user turns, so this compares word shingles, which is cheaper anyway);
- the explicit client events ``copy``, ``share`` (for the reply they follow) and ``regenerate``, ``edit``
  (against it), sent as events of those names (``client.event(cid, "copy")``).

The outcome rule weighs the end of the conversation most: what the user's last turn says, whether the
assistant spoke last and what it asked. ``bench/outcome_quality.py`` measures it on the labelled sets.
All of it is linear in the transcript, which the store bounds (its last 40 messages, 2,000 characters each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import numpy as np

from convolens.enrich import embedding, outcome_examples
from convolens.enrich.compute import compute_lock
from convolens.store.enrichment import Turn
from convolens.store.outcome_fields import FEEDBACK_EVENTS

# Goes up whenever a rule, a threshold or the examples change (stored in conversation.outcome_version).
VERSION = 1

# The classifier's classes, sorted. success and greeting steer the outcome but are not signals.
KINDS = ("correction", "gives_up", "greeting", "off_target", "other", "sarcasm", "success", "thanks")
SIGNAL_KINDS = ("correction", "gives_up", "off_target", "sarcasm", "thanks")
# A turn has a kind when the classifier gives it at least this probability (a turn may have several:
# "amazing. very vegetarian. thanks." is sarcasm and thanks); with none, it is "other".
KIND_AT = 0.2
# ... and is reported as a signal from this probability on (tune set: accuracy is best with the outcome
# reading kinds at 0.2, the signals' mean F1 with reporting them at 0.25).
SIGNAL_AT = 0.25
# Words that say thanks or giving up whatever surrounds them (case-folded substrings: linear time).
THANKS_WORDS = (
    "thank", "thx", "merci", "gracias", "danke", "grazie", "obrigad", "спасибо", "ありがと", "감사", "고마",
    "谢谢", "多谢", "感谢",
)  # fmt: skip
GIVES_UP_WORDS = (
    "forget it", "never mind", "nevermind", "give up", "call support", "email support", "contact support",
    "google it", "a human", "real person", "olvídalo", "laisse tomber", "vergiss es", "lascia perdere",
    "esquece", "もういい", "그만할게요", "算了",
    # Thanks that close a conversation that did not help: polite giving up.
    "thanks anyway", "thank you anyway", "thanks for trying", "for your time", "de todos modos",
    "de todas formas", "quand même", "trotzdem", "mesmo assim", "comunque", "问问客服", "找客服",
)  # fmt: skip
# Cosine of two consecutive user turns above which the second asks the first again; lower, when the
# second is unhappy.
REPHRASE_AT = 0.65
REPHRASE_UNHAPPY_AT = 0.3
# Share of word shingles two assistant replies have in common above which one repeats the other.
REPEAT_AT = 0.4
SHINGLE_CHARS = 1000
# A last user turn of at least this many words that is no complaint tells the answer was taken up.
CARRIES_ON_WORDS = 4
POSITIVE_EVENTS = ("copy", "share")
NEGATIVE_EVENTS = ("regenerate", "edit")


@cache
def _classifier():  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    examples = {
        "correction": outcome_examples.CORRECTION,
        "gives_up": outcome_examples.GIVES_UP,
        "greeting": outcome_examples.GREETING,
        "off_target": outcome_examples.OFF_TARGET,
        "other": outcome_examples.OTHER,
        "sarcasm": outcome_examples.SARCASM,
        "success": outcome_examples.SUCCESS,
        "thanks": outcome_examples.THANKS,
    }
    texts = [t for kind in KINDS for t in examples[kind]]
    labels = [kind for kind in KINDS for _ in examples[kind]]
    model = LogisticRegression(C=4.0, max_iter=3000)
    model.fit(embedding.embed(texts), labels)
    assert tuple(model.classes_) == KINDS
    return model


def other_probability(vectors: np.ndarray) -> np.ndarray:
    """For each row of ``vectors`` (unit message embeddings), how likely the classifier finds it a message
    with a subject rather than a reaction (thanks, a correction, giving up, a greeting)."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.float32)
    with compute_lock:
        probabilities = _classifier().predict_proba(np.asarray(vectors, dtype=np.float32))
    return probabilities[:, KINDS.index("other")].astype(np.float32)


# A turn of fewer words than this is a success only when the classifier is this sure of it.
SHORT_WORDS = 3
SHORT_SUCCESS_AT = 0.5
POSITIVE_KINDS = ("success", "thanks")
NEGATIVE_KINDS = ("correction", "gives_up", "off_target", "sarcasm")


def turn_kinds(texts: list[str], vectors: np.ndarray) -> list[tuple[frozenset[str], frozenset[str], float]]:
    """The kinds of reaction of each user turn (row of ``vectors``; a zero row has only its words), and its
    valence: how much likelier the classifier finds it content than unhappy (in [-1, 1]). Returns (kinds,
    the kinds sure enough to be signals, valence) per turn."""
    if len(vectors) == 0:
        return []
    with compute_lock:
        probabilities = _classifier().predict_proba(vectors)
    out = []
    for text, row, vector in zip(texts, probabilities, vectors, strict=True):
        kinds = {KINDS[i] for i in range(len(KINDS)) if row[i] >= KIND_AT} if vector.any() else set()
        sure = {KINDS[i] for i in range(len(KINDS)) if row[i] >= SIGNAL_AT} if vector.any() else set()
        if len(text.split()) < SHORT_WORDS and row[KINDS.index("success")] < SHORT_SUCCESS_AT:
            kinds.discard("success")  # "ok", "hmm", "d'accord": an acknowledgement, not a success
        folded = text[:500].casefold()
        if any(w in folded for w in THANKS_WORDS):
            kinds.add("thanks")
            sure.add("thanks")
        if any(w in folded for w in GIVES_UP_WORDS):
            kinds.add("gives_up")
            sure.add("gives_up")
        valence = sum(row[KINDS.index(k)] for k in POSITIVE_KINDS) - sum(row[KINDS.index(k)] for k in NEGATIVE_KINDS)
        out.append((frozenset(kinds - {"other"}), frozenset(sure & kinds), float(valence) if vector.any() else 0.0))
    return out


def _shingles(text: str) -> set[tuple[str, str, str]]:
    words = text[:SHINGLE_CHARS].lower().split()
    return {tuple(words[i : i + 3]) for i in range(max(0, len(words) - 2))} or {(w, "", "") for w in words}


def _repeats(first: set[tuple[str, str, str]], second: set[tuple[str, str, str]]) -> bool:
    """Whether two replies (their shingles) say nearly the same thing."""
    if not first or not second:
        return False
    return len(first & second) / min(len(first), len(second)) >= REPEAT_AT


def _asks(text: str) -> bool:
    """Whether an assistant reply ends by asking the user something."""
    tail = text.rstrip()[-200:]
    marks = ("?", "\uff1f")  # and the full-width question mark of Chinese and Japanese
    return any(mark in tail[-60:] for mark in marks)


@dataclass(frozen=True)
class _Step:
    role: str  # user, assistant, event
    text: str
    kinds: frozenset[str] = frozenset()  # user turns: their reactions
    valence: float = 0.0  # user turns: content (> 0) or unhappy (< 0)
    vector: np.ndarray | None = None
    sure: frozenset[str] = frozenset()  # user turns: the reactions sure enough to report as signals


def _steps(turns: Sequence[Turn]) -> list[_Step]:
    steps = []
    for t in turns:
        if t.kind == "event":
            name = (t.name or t.content or "").strip().lower()
            if name in FEEDBACK_EVENTS:
                steps.append(_Step("event", name))
        elif t.kind == "message" and t.role in ("user", "assistant") and t.content.strip():
            vector = embedding.from_bytes(t.vector) if t.role == "user" and t.vector else None
            steps.append(_Step(t.role, t.content, vector=vector))
    return steps


def _asks_again(first: _Step, second: _Step) -> bool:
    """Whether ``second`` asks ``first`` again: nearly the same meaning, or close and unhappy ("I want to
    CANCEL, not upgrade"). A follow-up on the same subject is as close as a rephrase is, in cosine alone."""
    assert first.vector is not None and second.vector is not None
    similarity = float(first.vector @ second.vector)
    return similarity >= REPHRASE_AT or (similarity >= REPHRASE_UNHAPPY_AT and second.valence < 0)


def assess(steps: list[_Step]) -> tuple[str, list[str]]:
    """The outcome and signals of one transcript whose user steps already carry their kinds."""
    signals: set[str] = set()
    users = [i for i, s in enumerate(steps) if s.role == "user"]
    replies = [i for i, s in enumerate(steps) if s.role == "assistant"]
    rephrased_last = False
    for before, after in pairwise(users):
        first, second = steps[before], steps[after]
        answered = any(steps[j].role == "assistant" for j in range(before + 1, after))
        if (
            answered
            and first.vector is not None
            and second.vector is not None
            and not second.kinds & {"thanks", "gives_up", "success", "greeting"}
            and _asks_again(first, second)
        ):
            signals.add("rephrase")
            rephrased_last = after == users[-1]
    for i in users:
        signals.update(steps[i].sure & set(SIGNAL_KINDS))
    shingles = [_shingles(steps[i].text) for i in replies]  # once a reply: each is in two pairs
    repeats = [_repeats(a, b) for a, b in pairwise(shingles)]
    if any(repeats):
        signals.add("repeated_answer")
    events = [s.text for s in steps if s.role == "event"]
    signals.update(events)
    if not users or not replies:
        return "unknown", sorted(signals)
    last_user = steps[users[-1]]
    after_last_user = steps[users[-1] + 1 :]
    replied = any(s.role == "assistant" for s in after_last_user)
    late_events = [s.text for s in after_last_user if s.role == "event"]
    said = last_user.kinds
    found = sorted(signals)
    if "gives_up" in said or any(e in NEGATIVE_EVENTS for e in late_events):
        return "unresolved", found
    if replied and repeats and repeats[-1]:
        return "unresolved", found  # the user left after hearing the same answer again
    # Words of both kinds ("finally. took you long enough, but it works"): the classifier's balance decides.
    content = last_user.valence > 0
    # Thanks after the assistant only repeated itself is politeness, not success.
    if said & {"thanks", "success"} and content and ("success" in said or "repeated_answer" not in signals):
        return "resolved", found
    if said & {"correction", "off_target", "sarcasm"} and not content:
        return "unresolved", found
    if any(e in POSITIVE_EVENTS for e in late_events):
        return "resolved", found
    if rephrased_last:
        return "unresolved", found
    if all(steps[i].kinds == {"greeting"} for i in users):
        return "unknown", found
    if not replied:
        # The user carries on with a statement after an answer ("mulching them tonight"): it landed;
        # a bare "ok" or "hmm" says too little.
        return ("resolved" if len(last_user.text.split()) >= CARRIES_ON_WORDS else "unknown"), found
    if _asks(steps[replies[-1]].text):
        return "abandoned", found
    return "unknown", found


def assess_many(transcripts: Mapping[int, list[Turn]]) -> dict[int, tuple[str, list[str]]]:
    """Outcome and signals of each transcript (by key): one classifier call for all their user turns."""
    steps = {key: _steps(turns) for key, turns in transcripts.items()}
    user_steps = [(key, i) for key, ss in steps.items() for i, s in enumerate(ss) if s.role == "user"]
    vectors = np.zeros((len(user_steps), embedding.DIMENSIONS), dtype=np.float32)
    for row, (key, i) in enumerate(user_steps):
        vector = steps[key][i].vector
        if vector is not None and vector.shape == (embedding.DIMENSIONS,):
            vectors[row] = vector
    texts = [steps[key][i].text for key, i in user_steps]
    for (key, i), (kinds, sure, valence) in zip(user_steps, turn_kinds(texts, vectors), strict=True):
        old = steps[key][i]
        good = old.vector is not None and old.vector.shape == (embedding.DIMENSIONS,)
        steps[key][i] = _Step(old.role, old.text, kinds, valence, old.vector if good else None, sure)
    return {key: assess(ss) for key, ss in steps.items()}

"""Sentiment of a user's message: a score in [-1, 1] and a label (negative, neutral, positive).

Three signals, because each fails where another is good:
- a logistic regression over an RBF kernel of multilingual sentence embeddings (``enrich.embedding``),
  trained when first used on the example messages of ``sentiment_examples`` and ``complaint_examples``
  and the labelled messages of the complaint training sets (``complaint_training``, exported from
  tests/data; chosen by leave-one-set-out cross-validation, ``bench/sentiment_cv.py``): it
  catches implicit complaints with no sentiment word ("it still crashes", "I asked for Python") in any
  of the encoder's languages;
- blended with it, a logistic regression over the message's character n-grams, trained on the same
  messages (``sentiment_wording``): the encoder reads what a message is about, the wording how it is said
  ("wait, it can do that?!", "I requested June 21.");
- VADER (the ``vaderSentiment`` package, lexicon inside the wheel), an English lexicon with rules for
  negation, intensifiers and emoji: where its compound score is strong it is rarely wrong, so it
  decides the label there and is averaged into the score.
The turn around a message moves the odds too. A user message that answers a reply which stated
something (rather than asked) and is no question of its own is feedback on that reply far more often
than a neutral remark ("7 AM. In the morning.", "I'm in Dallas.": corrections), so its neutral
chance is cut; after a reply that asked a question, the user's statement is most likely the answer,
so its neutral chance is raised (``_turn_prior``). It costs no model call: the previous reply is read
for a question mark only.
Sarcasm defeats both ("Wonderful, the build is red again. Great help.": praise words everywhere), so a
message that would be positive is read clause by clause too: a failure stated as a fact between
praise words, and no success stated as a fact, makes it negative (``_sarcastic``).
``bench/sentiment_quality.py`` measures the blend on ``tests/data/sentiment.jsonl`` and the complaint sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from convolens.enrich import (
    complaint_examples,
    complaint_training,
    embedding,
    sentiment_examples,
    sentiment_wording,
    trained_cache,
)
from convolens.enrich.compute import compute_lock

PREVIOUS_CHARS = 600  # the store's bound on the reply before a message (store.enrichment.PREVIOUS_CHARS)

LABELS = sentiment_wording.LABELS  # negative, neutral, positive: both classifiers' chances in this order
# The classifier: a logistic regression over an RBF kernel of the embeddings, approximated on
# KERNEL_COMPONENTS training messages (Nystroem: one matrix product against them per message). Chosen by
# leave-one-set-out cross-validation over the complaint training sets (bench/sentiment_cv.py,
# bench/README.md): the kernel reads meanings a linear model of the embedding cannot separate (+2-3
# points over the logistic regression on the embedding alone).
# Since stop 36 every training message is a component (3,000 is more than the ~2,700 rows): leave-one-set-out
# over the ten complaint sets, 1,000 components 0.855 / negative recall 0.878, 2,000 0.860 / 0.891, all of
# them 0.865 / 0.893. It costs ~46 µs of CPU a message (the embedding ~1 ms) and 9.5 s to train, once
# (enrich/trained_cache.py).
KERNEL_GAMMA = 1.0
KERNEL_COMPONENTS = 3000
CLASSIFIER_C = 10.0
# The classifier's negative chance is multiplied by this (a shift of its intercept: every use of the
# classifier, the sarcasm check's clauses too). Chosen by leave-one-set-out cross-validation over the five
# complaint sets (bench/README.md, stop 32; the rule, set beforehand: the best accuracy among the settings
# whose negative recall is at least 0.88): 1.2 gave 0.865 / 0.895, 1.0 0.863 / 0.866, 1.4 0.858 / 0.911.
NEGATIVE_WEIGHT = 1.2
# The weight of the wording classifier's chances (enrich/sentiment_wording.py) against the embedding
# classifier's, in a geometric mean. Leave-one-set-out over the ten complaint sets (bench/README.md, stop 37):
# 0 (embedding alone) 0.865 / 0.893, 0.2 0.873 / 0.904, 0.35 0.877 / 0.908, 0.5 0.882 / 0.913, 0.6
# 0.883 / 0.914, 0.7 0.879 / 0.920, 0.8 0.874 / 0.919; chosen by the rule of NEGATIVE_WEIGHT below.
WORDING_WEIGHT = 0.6
# VADER's label replaces the classifiers' where its compound is at least this strong... Once 0.6 (two points
# of accuracy over the classifier of then on sentiment.jsonl); the classifier of seventeen sets no longer
# needs it, and its words read "thanks for nothing, it still says..." or "Danke, aber das liefert wieder
# #NV" as praise. Leave-one-set-out over the seventeen sets (stop 38, bench/README.md): 0.6 / 0.1 0.8877 /
# negative recall 0.9101, 0.8 / 0.35 0.8942 / 0.9188, never 0.8945 / 0.9195 (one message more);
# sentiment.jsonl, in no fit, 0.950 -> 0.942 with either.
VADER_DECIDES_AT = 0.8
# ... unless the classifier gives VADER's label less than this chance: VADER reads words, and "how do I
# kill a stuck process?" or "best way to get rid of mold?" are strong words in a neutral question.
VADER_NEEDS = 0.35
# The neutral chance of a user message is multiplied by these, by what the turn is (see the docstring).
# Chosen on tests/data/complaints_tune.jsonl and followups.jsonl (bench/README.md): 0.3 and 0.4 tie on
# the first; 0.4 keeps more follow-up requests ("now do chapter three") neutral after a statement. After a
# question, 2.0 scores three messages better than 3.0 over the six sets (leave-one-set-out, stop 33) but
# reads "The flight number is LH 402." after "What's your flight number?" as a complaint: 3.0 kept.
NEUTRAL_AFTER_STATEMENT = 0.4
NEUTRAL_QUESTION_AFTER_STATEMENT = 0.5
NEUTRAL_AFTER_QUESTION = 3.0
# Where a reply asks its question: its last characters (the claim brings the reply's end).
QUESTION_WITHIN = 150
# A user message that states a number the reply before it did not, after a reply that stated numbers
# ("Volgens de app is het 14:35" after "... om 14:05", "3月15日では?" after "... 4月15日です"), contradicts
# it far more often than not: over the six complaint sets, 84 such messages are negative, 12 neutral (most
# of them questions: "how much is an extra 5 GB?"), 1 positive. Its neutral chance is multiplied by these
# instead of the statement priors above (chosen by leave-one-set-out cross-validation, bench/sentiment_cv.py:
# 0.15/0.3, 0.1/0.2 and 0.05/0.3 tie, 0.2/0.5 gains nothing).
NEUTRAL_NUMBER_CONFLICT = 0.15
NEUTRAL_QUESTION_NUMBER_CONFLICT = 0.3
# A user message that takes up the reply's own words ("ground beef. in the vegetarian lasagna.", "« color »,
# « apartment »… vraiment britannique ?") quotes it back, mostly to object: over the six complaint sets, of
# the messages after a statement that share at least ECHO_AT of their character trigrams with it, 40 are
# negative and 4 not. Their neutral and positive chances are multiplied by these (leave-one-set-out over the
# six sets, stop 33: pooled accuracy 0.8602 without, 0.8618 at 0.5/0.5, 0.8627 at 0.3/0.3, 0.8627 at 0.2/0.2;
# ECHO_AT 0.3 scores lower).
ECHO_AT = 0.4
NEUTRAL_ECHO = 0.3
POSITIVE_ECHO = 0.3
ECHO_CHARS = 300
# A bare acknowledgement ("Ok.", "Noted.", "Alles klar.", "好的。", "了解です。") takes note of a reply and
# says nothing of it: the statement prior above, which reads a statement after a statement as feedback, is
# wrong for it, and the classifier alone leans negative or positive on so few words. Its neutral chance is
# multiplied by this instead. Leave-one-set-out over the seven complaint sets (bench/sentiment_cv.py): pooled
# accuracy 0.8565 without, 0.8585 at 1.0, 0.8620 at 3.0, 0.8640 at 10.0; most of it on fresh5, whose misses
# showed the class (its figure is therefore not blind: fresh3's "noted" is the one unseen gain). Whole
# messages only, case-folded without punctuation or spaces: a closed class of words that take note, none
# that praise ("perfect", "great") or complain.
NEUTRAL_ACKNOWLEDGED = 10.0
ACKNOWLEDGEMENTS = frozenset((
    "ok", "okay", "okey", "k", "kk", "noted", "understood", "gotit", "alright", "allright", "roger",
    "allesklar", "verstanden", "notiert", "daccord", "compris", "entendu", "noté", "vale", "entendido",
    "deacuerdo", "beleza", "entendi", "certo", "tábom", "tabom", "anotado", "vabene", "capito", "dacordo",
    "jasne", "rozumiem", "zrozumiałem", "zrozumiałam", "oké", "begrepen", "genoteerd", "tamam",
    "tamamdır", "anladım",  # noqa: RUF001 (Turkish: the dotless i is the word's)
    "好的", "好", "知道了", "明白了", "收到", "行", "了解", "了解です", "了解しました", "わかりました",
    "分かりました", "承知しました", "はい", "알겠어요", "알겠습니다", "네", "넵", "확인했습니다", "확인했어요",
    "хорошо", "понял", "понятно",
))  # fmt: skip
ACKNOWLEDGEMENT_CHARS = 20
# Numbers: runs of digits (any script's), compared as integers ("4,5" is 4 and 5). The first ones only.
_NUMBER = re.compile(r"\d{1,12}")
MAX_NUMBERS = 40
# Clauses: what lies between punctuation (Latin and CJK) or around "but" in a few languages. A
# character class with ``+`` and an alternation of literals: linear time.
_CLAUSE_BREAK = re.compile(
    r"[.!?;:,\n\u3002\uff01\uff1f\uff1b\uff0c\u3001]+|\b(?:but|pero|mais|aber|mas|ma|\u043d\u043e)\b|\u4f46\u662f?",
    re.IGNORECASE,
)
MAX_CLAUSES = 8
# A clause this positive to VADER is a praise word ("great help"), not a statement of what happened.
PRAISE_AT = 0.3
# A message is read for sarcasm only if the classifier gives it at least this chance of negative.
# Leave-one-set-out (bench/sentiment_cv.py, stop 36): 0.05, 0.12 and 0.25 scored alike. 0.25 sent fewer
# clauses to the encoder, but the 25-set classifier gives "Oh great, it crashed again. Thanks a lot."
# 0.24-0.25 (it moves by ~0.01 with the CPU's BLAS kernels), so 0.25 read sarcasm on one machine and not
# on another. At 0.1, 0.15 and 0.2 every labelled set scores the same (one message better than 0.25).
SARCASM_FROM = 0.15
# A clause is a failure stated as a fact from this chance of negative (and more negative than positive).
FAILURE_AT = 0.45
# Sarcasm praises twice ("Wonderful, ... Great help."); one praise word beside a bad fact is as often
# sincere ("no sugar, no problem, this looks great"; measured on the tune sets: 2 beats 1).
MIN_PRAISE = 2


@dataclass(frozen=True)
class Sentiment:
    score: float
    label: str


@cache
def _vader():  # type: ignore[no-untyped-def]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def training_examples(labelled: bool = True) -> tuple[list[str], list[str]]:
    """The classifier's training messages and their labels: the hand-written examples and (``labelled``)
    the rows of the complaint training sets."""
    texts: list[str] = []
    labels: list[str] = []
    for label, examples in zip(
        LABELS,
        (sentiment_examples.NEGATIVE, sentiment_examples.NEUTRAL, sentiment_examples.POSITIVE),
        strict=True,
    ):
        examples = examples + getattr(complaint_examples, label.upper())
        if labelled:
            examples = examples + getattr(complaint_training, label.upper())
        texts += examples
        labels += [label] * len(examples)
    return texts, labels


def train_classifier(vectors: np.ndarray, labels: list[str]) -> KernelClassifier:
    """A logistic regression over an RBF kernel's features of the embeddings (``KERNEL_*``): the
    training messages' vectors, ``labels`` in ``LABELS``. Deterministic: the same rows give the same
    model. ``bench/sentiment_cv.py`` trains it per fold the same way."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        Nystroem(gamma=KERNEL_GAMMA, n_components=min(KERNEL_COMPONENTS, len(labels)), random_state=0),
        LogisticRegression(C=CLASSIFIER_C, max_iter=5000, class_weight="balanced"),
    )
    model.fit(np.asarray(vectors, dtype=np.float64), labels)
    assert tuple(model.classes_) == LABELS  # sorted alphabetically, which is also negative < neutral < positive
    kernel, regression = model.steps[0][1], model.steps[1][1]
    # Nystroem's features are the kernel row times a normalisation matrix, and the regression is linear
    # in them: folding that matrix into the regression's weights leaves one matrix product a message.
    # Fitted in float64 (the normalisation is ill-conditioned), applied in float32: chances within 1e-5
    # of the pipeline's, at a third of the CPU of float64 and a tenth of the pipeline's predict_proba.
    weights = kernel.normalization_.T @ regression.coef_.T
    intercept = regression.intercept_ + np.log([NEGATIVE_WEIGHT, 1.0, 1.0])  # softmax: x NEGATIVE_WEIGHT
    return KernelClassifier(kernel.components_, weights, intercept, KERNEL_GAMMA)


class KernelClassifier:
    """``predict_proba`` of the trained classifier: softmax(exp(-gamma |x - c|^2) @ weights + intercept)
    over the kernel's components ``c`` (training messages' vectors)."""

    classes_ = np.array(LABELS)

    def __init__(self, components: np.ndarray, weights: np.ndarray, intercept: np.ndarray, gamma: float) -> None:
        self.components = np.asarray(components, dtype=np.float32)
        self.norms = np.einsum("ij,ij->i", self.components, self.components)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.gamma = np.float32(gamma)

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        distances = np.einsum("ij,ij->i", x, x)[:, None] + self.norms[None, :] - 2.0 * (x @ self.components.T)
        scores = np.exp(-self.gamma * np.maximum(distances, 0.0)) @ self.weights + self.intercept
        scores = np.exp(scores - scores.max(axis=1, keepdims=True)).astype(np.float64)
        return scores / scores.sum(axis=1, keepdims=True)


@cache
def _classifier():  # type: ignore[no-untyped-def]
    texts, labels = training_examples()
    settings = repr((KERNEL_GAMMA, KERNEL_COMPONENTS, CLASSIFIER_C, NEGATIVE_WEIGHT, LABELS))
    of = trained_cache.key(settings, "\x1f".join(texts), "\x1f".join(labels), embedding.fingerprint())
    kept = trained_cache.load(
        "sentiment",
        of,
        {"components": (None, embedding.DIMENSIONS), "weights": (None, len(LABELS)), "intercept": (len(LABELS),)},
    )
    if kept is not None and len(kept["components"]) == len(kept["weights"]):
        return KernelClassifier(kept["components"], kept["weights"], kept["intercept"], KERNEL_GAMMA)
    model = train_classifier(embedding.embed(texts), labels)
    trained_cache.save(
        "sentiment", of, {"components": model.components, "weights": model.weights, "intercept": model.intercept}
    )
    return model


def blend(chances: np.ndarray, wording: sentiment_wording.WordingClassifier, texts: list[str]) -> np.ndarray:
    """The embedding classifier's ``chances`` of ``texts`` and the wording classifier's, in a geometric
    mean weighted by ``WORDING_WEIGHT``, normalised."""
    if WORDING_WEIGHT == 0 or not texts:
        return chances
    mixed = np.exp(
        (1 - WORDING_WEIGHT) * np.log(chances + 1e-9) + WORDING_WEIGHT * np.log(wording.predict_proba(texts) + 1e-9)
    )
    return mixed / mixed.sum(axis=1, keepdims=True)


def lexicon_scores(texts: list[str]) -> list[float]:
    """VADER's compound score of each text (pure Python: it can run while the encoder works)."""
    vader = _vader()
    return [vader.polarity_scores(t[:2000])["compound"] for t in texts]


def probabilities_in_turn(
    texts: list[str], vectors: np.ndarray, previous: list[str | None] | None = None
) -> np.ndarray:
    """The classifiers' (negative, neutral, positive) chances of each text given its embedding and its
    wording, moved by the turn it answers (``previous[i]``: the assistant reply before it, or None); no
    lexicon, no sarcasm reading. The outcome model reads these for its user turns (``enrich/outcomes.py``)."""
    return _in_turn(texts, vectors, previous)[1]


def _in_turn(texts: list[str], vectors: np.ndarray, previous: list[str | None] | None) -> tuple[np.ndarray, np.ndarray]:
    """The embedding classifier's chances alone and blended with the wording classifier's, each moved by
    the turn. The sarcasm check starts from the first: its praise words are what the wording reads as
    praise, so the wording's chances can hide the failure between them."""
    if not texts:
        return np.zeros((0, len(LABELS))), np.zeros((0, len(LABELS)))
    with compute_lock:
        own = np.array(_classifier().predict_proba(vectors))
        blended = blend(own, sentiment_wording.classifier(), texts)
    moves = _turn_moves(texts, previous)  # read once, applied to both
    return _moved_by_turn(own, moves), _moved_by_turn(blended, moves)


def _turn_moves(texts: list[str], previous: list[str | None] | None) -> list[tuple[int, float, bool]]:
    """For each text that answers a reply: its index, the factor on its neutral chance (``_turn_prior``)
    and whether it echoes the reply."""
    if previous is None:
        return []
    return [
        (i, _turn_prior(text, reply), echoes(text, reply))
        for i, (text, reply) in enumerate(zip(texts, previous, strict=True))
        if reply is not None and reply.strip()  # an empty reply stated nothing and asked nothing
    ]


def _moved_by_turn(chances: np.ndarray, moves: list[tuple[int, float, bool]]) -> np.ndarray:
    probabilities = np.array(chances, dtype=np.float64)
    for i, prior, echoed in moves:
        probabilities[i, 1] *= prior
        if echoed:
            probabilities[i, 1] *= NEUTRAL_ECHO
            probabilities[i, 2] *= POSITIVE_ECHO
        probabilities[i] /= probabilities[i].sum()
    return probabilities


def score(
    texts: list[str],
    vectors: np.ndarray,
    compounds: list[float] | None = None,
    previous: list[str | None] | None = None,
) -> list[Sentiment]:
    """Sentiment of each text, given its embedding (row ``i`` of ``vectors``), if already computed its
    ``lexicon_scores``, and the assistant reply it answers (``previous[i]``, None where there is none)."""
    if not texts:
        return []
    own, probabilities = _in_turn(texts, vectors, previous)
    if compounds is None:
        compounds = lexicon_scores(texts)
    compounds = list(compounds)
    maybe = [
        i
        for i, (p, c) in enumerate(zip(probabilities, compounds, strict=True))
        if (c >= VADER_DECIDES_AT or np.argmax(p) == 2) and own[i, 0] >= SARCASM_FROM
    ]
    for i in _sarcastic([texts[i] for i in maybe]):
        # Negative, about as sure as the praise was: the score says how unhappy, not how sarcastic. (A
        # message the classifier already leant negative on, turned positive by VADER's praise words,
        # keeps its own negative chance: swapping would make it positive again.)
        negative, neutral, positive = probabilities[maybe[i]]
        probabilities[maybe[i]] = (max(negative, positive), neutral, min(negative, positive))
        compounds[maybe[i]] = 0.0
    out = []
    for (negative, neutral, positive), compound in zip(probabilities, compounds, strict=True):
        value = float(positive - negative)
        label = LABELS[int(np.argmax((negative, neutral, positive)))]
        if abs(compound) >= VADER_DECIDES_AT and (positive if compound > 0 else negative) >= VADER_NEEDS:
            label = "positive" if compound > 0 else "negative"
            value = (value + compound) / 2
            # The label is VADER's: keep the score on its side of zero so that they never disagree.
            value = max(value, 0.05) if label == "positive" else min(value, -0.05)
        out.append(Sentiment(round(max(-1.0, min(1.0, value)), 4), label))
    return out


def _clauses(text: str) -> list[str]:
    parts = (part.strip() for part in _CLAUSE_BREAK.split(text[: embedding.MAX_CHARS]))
    return [part for part in parts if part][:MAX_CLAUSES]


def _sarcastic(texts: list[str]) -> list[int]:
    """Indices of the ``texts`` (each one that would be positive) that praise around a failure: two
    clauses or more are praise words (VADER finds them positive), some other clause states a failure
    (the classifier finds it negative) and none states a success."""
    # VADER first (pure Python, cheap): only a message with enough praise clauses has its other
    # clauses embedded, so sincere messages cost no model call.
    flat: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        parts = _clauses(text)
        compounds = lexicon_scores(parts)
        if sum(c >= PRAISE_AT for c in compounds) >= MIN_PRAISE:
            flat += [(i, part) for part, c in zip(parts, compounds, strict=True) if c < PRAISE_AT]
    if not flat:
        return []
    vectors = embedding.embed([clause for _, clause in flat])
    with compute_lock:
        probabilities = _classifier().predict_proba(vectors)
    failures: set[int] = set()
    successes: set[int] = set()
    for (i, _), (negative, neutral, positive) in zip(flat, probabilities, strict=True):
        if negative >= FAILURE_AT and negative > positive:
            failures.add(i)
        elif positive > max(negative, neutral):
            successes.add(i)
    return sorted(failures - successes)


def _asks(text: str) -> bool:
    return "?" in text or "\uff1f" in text


def _numbers(text: str) -> set[int]:
    found: set[int] = set()
    for match in _NUMBER.finditer(text[: embedding.MAX_CHARS]):
        found.add(int(match.group()))
        if len(found) >= MAX_NUMBERS:
            break
    return found


def contradicts_numbers(text: str, reply: str) -> bool:
    """Whether ``text`` states a number that ``reply`` (which states some) does not."""
    mine = _numbers(text)
    if not mine:
        return False
    theirs = _numbers(reply)
    return bool(theirs) and not mine <= theirs


def _trigrams(text: str) -> set[str]:
    folded = " ".join(text[:ECHO_CHARS].casefold().split())
    return {folded[i : i + 3] for i in range(len(folded) - 2)}


def echoes(text: str, reply: str) -> bool:
    """Whether ``text`` takes up ``reply``'s words (ECHO_AT of its character trigrams), ``reply`` stating
    rather than asking."""
    if _asks(reply[-QUESTION_WITHIN:]):
        return False
    mine = _trigrams(text)
    return bool(mine) and len(mine & _trigrams(reply[-PREVIOUS_CHARS:])) >= ECHO_AT * len(mine)


def acknowledges(text: str) -> bool:
    """Whether ``text`` is a bare acknowledgement (``ACKNOWLEDGEMENTS``) and nothing more."""
    if len(text) > ACKNOWLEDGEMENT_CHARS:
        return False
    folded = "".join(ch for ch in text.casefold() if ch.isalnum())
    return folded in ACKNOWLEDGEMENTS


def _turn_prior(text: str, reply: str) -> float:
    """The factor on a user message's neutral chance given the assistant reply before it."""
    if acknowledges(text):
        return NEUTRAL_ACKNOWLEDGED
    if _asks(reply[-QUESTION_WITHIN:]):
        return NEUTRAL_AFTER_QUESTION
    question = _asks(text)
    if contradicts_numbers(text, reply):
        return NEUTRAL_QUESTION_NUMBER_CONFLICT if question else NEUTRAL_NUMBER_CONFLICT
    return NEUTRAL_QUESTION_AFTER_STATEMENT if question else NEUTRAL_AFTER_STATEMENT

"""Were users helped: a conversation's outcome (resolved, unresolved, abandoned, unknown) and the signals
behind it, read from the structure of its transcript and from the embeddings its user turns already have.

Three parts, so that what is learned from labelled conversations is a few dozen weights, not rules:
- per user turn, what it says: the chances of a logistic regression over its stored embedding, trained
  when first used on the example turns of ``outcome_examples`` (``thanks``, ``gives_up``, ``correction``,
  ``off_target``, ``sarcasm``, ``success``, ``greeting``, ``other``); words that say thanks or giving up
  in several languages; the sentiment classifier's chances for it in its turn (``enrich/sentiment``);
  and the "ending" model's chance that a thread whose user had the last word with this turn was resolved:
  a logistic regression over the embedding, trained on the last user turns of the labelled training
  conversations (it learns "ok, I'll call them then" is no success in any language);
- per conversation, a fixed vector of structural features (``FEATURES``): who spoke last, how many user
  turns, what the last user turn says when the user had the last word, whether the last reply asks a
  question or repeats the one before it when the assistant had it, the cosine between consecutive user
  turns (the user asking the same thing again in other words), the overlap of word shingles between
  consecutive replies (the assistant saying the same thing twice: the pipeline embeds user turns only),
  and the worst of the earlier turns;
- per conversation, its last reply, embedded here (one short embedding a conversation): whether it answers
  or deflects (a classifier trained on ``outcome_examples.ANSWERS`` and ``NON_ANSWERS``), and how close it
  is to the question. A polite "thanks anyway" after "please see our website" was no help; "makes sense,
  I'll buy it elsewhere" after a clear "no, because ..." was.
A multinomial logistic regression over them gives the outcome, and one binary logistic regression per
signal gives the signals. Their weights are in ``outcome_weights`` (constants written by
``bench/train_outcomes.py`` from the labelled conversations of ``tests/data``, all but the newest, which
measured them once).
The explicit client events ``copy``, ``share`` (for the reply they follow) and ``regenerate``, ``edit``
(against it), sent as events of those names (``client.event(cid, "copy")``), are signals as sent and
decide the outcome where they follow the last user turn: the client saw what the user did.
All of it is linear in the transcript, which the store bounds (its last 40 messages, 2,000 characters each).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import numpy as np

from convolens.enrich import embedding, outcome_examples, sentiment
from convolens.enrich.compute import compute_lock
from convolens.store.enrichment import PREVIOUS_CHARS, Turn
from convolens.store.outcome_fields import FEEDBACK_EVENTS

# Goes up whenever a feature, the examples or the weights change (stored in conversation.outcome_version).
VERSION = 6

# The turn classifier's classes, sorted (scikit-learn's order).
KINDS = ("correction", "gives_up", "greeting", "off_target", "other", "sarcasm", "success", "thanks")
COMPLAINTS = ("correction", "off_target", "sarcasm")
# A last user turn whose likeliest kind is a complaint at this chance or more, and which the ending model
# finds more likely unresolved, makes the thread unresolved (``_complains_last``).
COMPLAINT_AT = 0.4
# The signals read from the transcript (the rest are client events), and the outcomes, in the order of
# the weights' rows.
TRANSCRIPT_SIGNALS = ("rephrase", "correction", "thanks", "gives_up", "sarcasm", "repeated_answer", "off_target")
CLASSES = ("abandoned", "resolved", "unknown", "unresolved")
# Words that say thanks or giving up whatever surrounds them (case-folded substrings: linear time).
THANKS_WORDS = (
    "thank", "thx", "merci", "gracias", "danke", "grazie", "obrigad", "valeu", "спасибо", "ありがと", "감사",
    "고마", "谢谢", "多谢", "感谢",
)  # fmt: skip
GIVES_UP_WORDS = (
    "forget it", "never mind", "nevermind", "give up", "call support", "email support", "contact support",
    "google it", "a human", "real person", "olvídalo", "laisse tomber", "laissez tomber", "vergiss es",
    "lascia perdere", "esquece", "もういい", "그만할게요", "算了",
    # Thanks that close a conversation that did not help: polite giving up.
    "thanks anyway", "thank you anyway", "thanks for trying", "for your time", "de todos modos",
    "de todas formas", "quand même", "trotzdem", "mesmo assim", "comunque", "问问客服", "找客服",
)  # fmt: skip
WORDS_CHARS = 500
# Replies are compared by their first characters' word shingles (the same words again), and by the
# character trigrams of a shorter start (nearly the same words, or a language written without spaces).
SHINGLE_CHARS = 1000
TRIGRAM_CHARS = 120
# A turn's length in words enters as log(1 + words) / log(1 + this), capped at 1.
LONG_WORDS = 40
# A reply is judged (answer or deflection) by its first characters: what it gives comes first.
REPLY_CHARS = 150
REPLY_KINDS = ("answer", "dodge")
# User turns counted up to this many.
MANY_TURNS = 6
POSITIVE_EVENTS = ("copy", "share")
NEGATIVE_EVENTS = ("regenerate", "edit")

FEATURES = (
    "user_last",  # the user had the last word (else the assistant did)
    "user_turns",
    # The last user turn, when the user had the last word (zero otherwise).
    *(f"last_{kind}" for kind in KINDS),
    "last_thanks_words",
    "last_gives_up_words",
    "last_negative",
    "last_positive",
    "last_short",
    "last_words",
    "last_asks_again",  # its cosine with the user's turn before it (a reply between)
    "last_ends_well",  # the ending model's chance that a thread ending on this turn was resolved
    # The assistant had the last word (zero otherwise): what its last reply does and what it answered.
    "reply_asks",
    "reply_repeats",
    "reply_echoes",  # the same, in character trigrams: a paraphrase, and languages written without spaces
    "reply_words",
    "before_negative",
    "before_complaint",
    "before_asks_again",
    "single_exchange",
    # The last reply, judged by the reply classifier (``_reply_classifier``): its chance of giving the user
    # nothing ("please see our website", "it depends", "I don't have that information"). When the user had
    # the last word it is the reply that word answers, and two products say how the user took it: content
    # with an answer (resolved, even when the answer was "no"), or thanking a deflection ("thanks anyway",
    # or sarcasm: not helped). Without it, a polite ending read resolved whatever it thanked.
    "reply_dodges",
    "reply_fits",  # the last reply's cosine with the user turn it answers (an answer is about the question)
    "before_dodges",
    "settled_on_answer",
    "thanked_a_dodge",
    # The whole transcript.
    "max_asks_again",
    "max_asks_again_unhappy",  # the cosine times the second turn's chance of being negative
    "max_asks_first",  # the cosine of a later user turn with the first one (a reply between)
    # The cosine when the later turn is a request again: times its chance of having a subject ("other"),
    # and only where it asks a question. A correction of the reply ("no, it's 408") is as close to the turn
    # before it as a rephrase is, but is no new request.
    "max_asks_again_request",
    "max_asks_again_question",
    "max_repeats",
    "max_echoes",
    # The same two, times how content the user's last word is (1 - its negative chance; zero when the
    # assistant had it): a user who corrected the reply ("it's Canberra, isn't it?"), got the fix (worded
    # like the wrong answer) and ends on "ok" or "9 sounds right" was helped, one still unhappy was not. The
    # model is linear: without the product it reads any rephrase or repeated wording as unresolved.
    # Leave-one-set-out over the seven sets (bench/README.md, issue 24): resolved/unresolved/abandoned rows
    # 0.8658 -> 0.8702 pooled, resolved read unresolved 50 -> 46.
    "settled_asks_again",
    "settled_echoes",
    "earlier_negative",
    "earlier_complaint",
    "all_greetings",
    *(f"max_{kind}" for kind in ("correction", "gives_up", "off_target", "sarcasm", "thanks")),
    "any_thanks_words",
    "any_gives_up_words",
)

# What the outcome model reads: the end of the conversation, and of what came before only what went wrong
# (a thanks halfway through says nothing of how the thread ended; a rephrase or a repeated answer does).
# Not the last turn's "correction" chance either: there, the turn classifier takes the user confirming the
# corrected figure ("36, right") for a correction, so the training threads taught it to mean resolved
# (cross-validated accuracy without it 0.861 against 0.864, one conversation; the signal still reads it).
OUTCOME_FEATURES = tuple(
    f
    for f in FEATURES
    if (not f.startswith(("max_", "any_")) or f in ("max_asks_again", "max_repeats", "max_echoes"))
    and f != "last_correction"
)

# What each signal's model reads: the evidence of that signal, not what merely goes with it in the training
# conversations (a user who gives up has often heard the same answer twice, but "repeated_answer" must
# rest on replies that repeat).
SIGNAL_FEATURES = {
    "rephrase": (
        "max_asks_again", "last_asks_again", "before_asks_again", "max_asks_again_unhappy", "max_asks_first",
        "max_asks_again_request", "max_asks_again_question", "user_turns", "last_negative", "earlier_negative",
        "earlier_complaint", "max_off_target",
    ),
    "correction": (
        "max_correction", "last_correction", "before_complaint", "earlier_complaint", "last_negative",
        "earlier_negative", "max_off_target", "max_sarcasm",
    ),
    "thanks": ("max_thanks", "last_thanks", "any_thanks_words", "last_thanks_words", "last_positive"),
    "gives_up": ("max_gives_up", "last_gives_up", "any_gives_up_words", "last_gives_up_words", "last_negative"),
    "sarcasm": (
        "max_sarcasm", "last_sarcasm", "last_negative", "last_positive", "max_thanks", "earlier_negative",
        "thanked_a_dodge",
    ),
    "repeated_answer": ("max_repeats", "reply_repeats", "max_echoes", "reply_echoes", "user_turns"),
    # That a reply missed the question: the user saying so, and the last reply read as a deflection.
    "off_target": (
        "max_off_target", "last_off_target", "before_complaint", "earlier_complaint", "max_asks_again",
        "max_asks_again_request", "max_asks_again_question", "before_dodges",
    ),
}  # fmt: skip
assert set(SIGNAL_FEATURES) == set(TRANSCRIPT_SIGNALS) and {f for fs in SIGNAL_FEATURES.values() for f in fs} <= set(
    FEATURES
)


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


@cache
def _reply_classifier():  # type: ignore[no-untyped-def]
    """What a reply does (``REPLY_KINDS``): a logistic regression over the embedding of the examples of
    ``outcome_examples.ANSWERS`` and ``NON_ANSWERS``."""
    from sklearn.linear_model import LogisticRegression

    examples = (outcome_examples.ANSWERS, outcome_examples.NON_ANSWERS)
    texts = [t for kind in examples for t in kind]
    labels = [k for k, kind in enumerate(examples) for _ in kind]
    return LogisticRegression(C=4.0, max_iter=3000).fit(embedding.embed(texts), labels)


# Replies judged lately, by their first REPLY_CHARS: the worker assesses a batch's conversations before its
# save's transaction and again inside it for any that changed meanwhile (store/enrichment.save_outcomes),
# and there, under the write lock, a reply must not be embedded again.
REPLIES_KEPT = 4096
_judged: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_judged_lock = threading.Lock()


def judge_replies(replies: list[str], embed: bool = True) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Each assistant reply's embedding (of its first ``REPLY_CHARS``), and its chances of each of
    ``REPLY_KINDS``: it answers, it deflects. ``embed=False`` (under the write lock): only replies judged
    lately are known, the others have no embedding and even chances."""
    heads = [r[:REPLY_CHARS] for r in replies]
    with _judged_lock:
        known = {h: _judged[h] for h in heads if h in _judged}
    missing = [h for h in dict.fromkeys(heads) if h not in known]
    if missing and embed:
        vectors = embedding.embed(missing)
        with compute_lock:
            chances = _reply_classifier().predict_proba(vectors).astype(np.float32)
        with _judged_lock:
            for h, vector, chance in zip(missing, vectors, chances, strict=True):
                known[h] = _judged[h] = (vector, chance)
            while len(_judged) > REPLIES_KEPT:
                _judged.popitem(last=False)
    unjudged = (None, np.full(len(REPLY_KINDS), 1.0 / len(REPLY_KINDS), dtype=np.float32))
    found = [known.get(h, unjudged) for h in heads]
    return [vector for vector, _ in found], np.array([chance for _, chance in found]).reshape(-1, len(REPLY_KINDS))


def other_probability(vectors: np.ndarray) -> np.ndarray:
    """For each row of ``vectors`` (unit message embeddings), how likely the classifier finds it a message
    with a subject rather than a reaction (thanks, a correction, giving up, a greeting)."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.float32)
    with compute_lock:
        probabilities = _classifier().predict_proba(np.asarray(vectors, dtype=np.float32))
    return probabilities[:, KINDS.index("other")].astype(np.float32)


@dataclass(frozen=True)
class _Model:
    mean: np.ndarray
    scale: np.ndarray
    outcome_coef: np.ndarray  # (classes, features)
    outcome_intercept: np.ndarray
    signal_coef: np.ndarray  # (signals, features)
    signal_intercept: np.ndarray
    signal_at: np.ndarray
    ending_coef: np.ndarray  # (embedding dimensions,)
    ending_intercept: float


@cache
def _model() -> _Model:
    from convolens.enrich import outcome_weights as w

    # Weights trained on another feature list would be read against the wrong columns.
    assert tuple(w.STANDARD) == FEATURES, "the features changed: retrain (python bench/train_outcomes.py)"
    assert tuple(w.CLASSES) == CLASSES and tuple(w.SIGNALS) == TRANSCRIPT_SIGNALS
    return _Model(
        np.array([w.STANDARD[f][0] for f in FEATURES]),
        np.array([w.STANDARD[f][1] for f in FEATURES]),
        np.array([w.OUTCOME_COEF[f] for f in FEATURES]).T,
        np.array(w.OUTCOME_INTERCEPT),
        np.array([w.SIGNAL_COEF[f] for f in FEATURES]).T,
        np.array(w.SIGNAL_INTERCEPT),
        np.array(w.SIGNAL_AT),
        np.array(w.ENDING_COEF, dtype=np.float32),
        float(w.ENDING_INTERCEPT),
    )


@dataclass(frozen=True)
class _Step:
    role: str  # user, assistant, event
    text: str
    vector: np.ndarray | None = None  # user turns with a stored embedding, and the last reply
    kinds: np.ndarray | None = None  # user turns: the turn classifier's chances, in KINDS order
    mood: np.ndarray | None = None  # user turns: sentiment (negative, neutral, positive) in its turn
    thanks_words: bool = False
    gives_up_words: bool = False
    ends_well: float = 0.0  # user turns: the ending model's chance that a thread ending on it was resolved
    dodges: float = 0.0  # the last reply: the reply classifier's chance that it deflects


def _steps(turns: Sequence[Turn]) -> list[_Step]:
    steps = []
    for t in turns:
        if t.kind == "event":
            name = (t.name or t.content or "").strip().lower()
            if name in FEEDBACK_EVENTS:
                steps.append(_Step("event", name))
        elif t.kind == "message" and t.role in ("user", "assistant") and t.content.strip():
            vector = embedding.from_bytes(t.vector) if t.role == "user" and t.vector else None
            if vector is not None and vector.shape != (embedding.DIMENSIONS,):
                vector = None
            steps.append(_Step(t.role, t.content, vector=vector))
    return steps


# Both are sets of zipped tuples: three times cheaper than slicing (the step runs on every saved batch).
def _shingles(text: str) -> set[tuple[str, str, str]]:
    words = text[:SHINGLE_CHARS].lower().split()
    return set(zip(words, words[1:], words[2:], strict=False)) or {(w, "", "") for w in words}


def _trigrams(text: str) -> set[tuple[str, str, str]]:
    folded = " ".join(text[:TRIGRAM_CHARS].casefold().split())
    return set(zip(folded, folded[1:], folded[2:], strict=False))


def _overlap(first: set, second: set) -> float:  # type: ignore[type-arg]
    """How much of the shorter of two replies (their shingles) the other one repeats, in [0, 1]."""
    if not first or not second:
        return 0.0
    return len(first & second) / min(len(first), len(second))


def _asks(text: str) -> bool:
    """Whether an assistant reply ends by asking the user something."""
    tail = text.rstrip()[-60:]
    return "?" in tail or "\uff1f" in tail  # and the full-width question mark of Chinese and Japanese


def _user_asks(text: str) -> bool:
    """Whether a user turn asks something (a question mark anywhere in its first characters)."""
    head = text[:WORDS_CHARS]
    return "?" in head or "\uff1f" in head


def _words(text: str) -> float:
    return min(1.0, math.log1p(len(text.split())) / math.log1p(LONG_WORDS))


def _kind(step: _Step, *kinds: str) -> float:
    assert step.kinds is not None
    return float(sum(step.kinds[KINDS.index(k)] for k in kinds))


def features(steps: list[_Step]) -> np.ndarray:
    """The ``FEATURES`` of one transcript whose user steps carry their chances (see ``assess_many``)."""
    out = dict.fromkeys(FEATURES, 0.0)
    users = [i for i, s in enumerate(steps) if s.role == "user"]
    replies = [i for i, s in enumerate(steps) if s.role == "assistant"]
    if not users:
        return np.zeros(len(FEATURES))
    # Cosine between consecutive user turns with a reply between them: the second asks the first again.
    asks_again = {}
    for before, after in pairwise(users):
        a, b = steps[before].vector, steps[after].vector
        if a is not None and b is not None and any(steps[j].role == "assistant" for j in range(before + 1, after)):
            asks_again[after] = max(0.0, float(a @ b))
    shingles = [_shingles(steps[i].text) for i in replies]  # once a reply: each is in two pairs
    repeats = [_overlap(a, b) for a, b in pairwise(shingles)]
    trigrams = [_trigrams(steps[i].text) for i in replies]
    echoes = [_overlap(a, b) for a, b in pairwise(trigrams)]
    last = steps[users[-1]]
    user_last = not any(s.role == "assistant" for s in steps[users[-1] + 1 :])
    out["user_turns"] = min(len(users), MANY_TURNS) / MANY_TURNS
    negative = float(last.mood[0]) if last.mood is not None else 0.0
    complaint = _kind(last, *COMPLAINTS, "gives_up")
    if user_last:
        out["user_last"] = 1.0
        for kind in KINDS:
            out[f"last_{kind}"] = _kind(last, kind)
        out["last_thanks_words"] = float(last.thanks_words)
        out["last_gives_up_words"] = float(last.gives_up_words)
        out["last_negative"] = negative
        out["last_positive"] = float(last.mood[2]) if last.mood is not None else 0.0
        out["last_short"] = float(len(last.text.split()) < 3)
        out["last_words"] = _words(last.text)
        out["last_asks_again"] = asks_again.get(users[-1], 0.0)
        out["last_ends_well"] = last.ends_well
    elif replies:
        out["reply_asks"] = float(_asks(steps[replies[-1]].text))
        out["reply_repeats"] = repeats[-1] if repeats else 0.0
        out["reply_echoes"] = echoes[-1] if echoes else 0.0
        out["reply_words"] = _words(steps[replies[-1]].text)
        out["before_negative"] = negative
        out["before_complaint"] = complaint
        out["before_asks_again"] = asks_again.get(users[-1], 0.0)
        out["single_exchange"] = float(len(users) == 1)
        out["reply_dodges"] = steps[replies[-1]].dodges
        reply, asked = steps[replies[-1]].vector, last.vector
        out["reply_fits"] = max(0.0, float(reply @ asked)) if reply is not None and asked is not None else 0.0
    if user_last and replies:
        dodges = steps[replies[-1]].dodges
        out["before_dodges"] = dodges
        out["settled_on_answer"] = (1.0 - negative) * (1.0 - dodges)
        thanked = max(_kind(last, "thanks"), float(last.mood[2]) if last.mood is not None else 0.0)
        out["thanked_a_dodge"] = thanked * dodges
    out["max_asks_again"] = max(asks_again.values(), default=0.0)
    out["max_asks_again_unhappy"] = max(
        (cosine * float(steps[i].mood[0]) for i, cosine in asks_again.items() if steps[i].mood is not None),
        default=0.0,
    )
    first = steps[users[0]].vector
    if first is not None and len(users) > 1 and replies and replies[0] < users[-1]:
        later = [steps[i].vector for i in users[1:] if i > replies[0] and steps[i].vector is not None]
        out["max_asks_first"] = max((max(0.0, float(first @ v)) for v in later), default=0.0)
    out["max_asks_again_request"] = max(
        (cosine * _kind(steps[i], "other") for i, cosine in asks_again.items() if steps[i].kinds is not None),
        default=0.0,
    )
    out["max_asks_again_question"] = max(
        (cosine for i, cosine in asks_again.items() if _user_asks(steps[i].text)), default=0.0
    )
    out["max_repeats"] = max(repeats, default=0.0)
    out["max_echoes"] = max(echoes, default=0.0)
    if user_last:
        content = 1.0 - negative
        out["settled_asks_again"] = out["max_asks_again"] * content
        out["settled_echoes"] = out["max_echoes"] * content
    earlier = [steps[i] for i in users[:-1]]
    out["earlier_negative"] = max((float(s.mood[0]) for s in earlier if s.mood is not None), default=0.0)
    out["earlier_complaint"] = max((_kind(s, *COMPLAINTS) for s in earlier), default=0.0)
    out["all_greetings"] = float(all(_kind(steps[i], "greeting") >= 0.5 for i in users))
    for kind in ("correction", "gives_up", "off_target", "sarcasm", "thanks"):
        out[f"max_{kind}"] = max(_kind(steps[i], kind) for i in users)
    out["any_thanks_words"] = float(any(steps[i].thanks_words for i in users))
    out["any_gives_up_words"] = float(any(steps[i].gives_up_words for i in users))
    return np.array([out[name] for name in FEATURES])


def _with_chances(
    transcripts: Mapping[int, Sequence[Turn]],
    ending: tuple[np.ndarray, float] | None = None,
    embed_replies: bool = True,
) -> dict[int, list[_Step]]:
    """Each transcript's steps, its user steps with their chances: one classifier call for all of them.
    ``ending``: the ending model's (weights, intercept), else the trained one's."""
    steps = {key: _steps(turns) for key, turns in transcripts.items()}
    _judge_last_replies(steps, embed_replies)
    user_steps = [(key, i) for key, ss in steps.items() for i, s in enumerate(ss) if s.role == "user"]
    if not user_steps:
        return steps
    vectors = np.zeros((len(user_steps), embedding.DIMENSIONS), dtype=np.float32)
    previous: list[str | None] = []
    for row, (key, i) in enumerate(user_steps):
        vector = steps[key][i].vector
        if vector is not None:
            vectors[row] = vector
        reply = next((s.text for s in reversed(steps[key][:i]) if s.role == "assistant"), None)
        previous.append(reply[-PREVIOUS_CHARS:] if reply is not None else None)
    texts = [steps[key][i].text for key, i in user_steps]
    with compute_lock:
        kinds = _classifier().predict_proba(vectors)
    moods = sentiment.probabilities_in_turn(texts, vectors, previous)
    weights, intercept = ending if ending is not None else (_model().ending_coef, _model().ending_intercept)
    ends_well = 1 / (1 + np.exp(-(vectors @ weights + intercept)))
    for row, (key, i) in enumerate(user_steps):
        old = steps[key][i]
        embedded = old.vector is not None
        folded = old.text[:WORDS_CHARS].casefold()
        steps[key][i] = _Step(
            old.role,
            old.text,
            old.vector,
            kinds[row] if embedded else np.zeros(len(KINDS)),
            moods[row] if embedded else None,
            any(w in folded for w in THANKS_WORDS),
            any(w in folded for w in GIVES_UP_WORDS),
            float(ends_well[row]) if embedded else 0.0,
        )
    return steps


def _judge_last_replies(steps: dict[int, list[_Step]], embed: bool = True) -> None:
    """Each transcript's last reply with its chance of deflecting: one embedding a transcript (replies are
    not embedded by the pipeline, which embeds user turns); ``embed``: see ``judge_replies``."""
    last = {}
    for key, ss in steps.items():
        i = next((j for j in range(len(ss) - 1, -1, -1) if ss[j].role == "assistant"), None)
        if i is not None:
            last[key] = i
    vectors, chances = judge_replies([steps[key][i].text for key, i in last.items()], embed)
    for (key, i), vector, chance in zip(last.items(), vectors, chances, strict=True):
        old = steps[key][i]
        steps[key][i] = _Step(old.role, old.text, vector=vector, dodges=float(chance[REPLY_KINDS.index("dodge")]))


def features_many(
    transcripts: Mapping[int, Sequence[Turn]], ending: tuple[np.ndarray, float] | None = None
) -> dict[int, np.ndarray]:
    """The ``FEATURES`` of each transcript (by key): what ``bench/train_outcomes.py`` trains on, with the
    ending model it gives (``ending``: weights over the embedding, intercept)."""
    return {key: features(ss) for key, ss in _with_chances(transcripts, ending).items()}


def _complains_last(steps: list[_Step], last: int) -> str | None:
    """The complaint (its kind, a signal) of the user's last word where the turn classifier reads it as one
    (its likeliest kind a correction, an off-target or sarcasm, sure enough) and another model agrees: the
    ending model (more likely unresolved) or the sentiment in its turn (more likely negative); else None.
    Few training threads end on such a turn after a thanks earlier on, so the linear model alone can call
    "That's wrong, the button is right there" after an earlier "thanks" resolved. The sentiment's word
    counts since the ending model learned from every labelled set (stop 36), where corrections the assistant
    then fixed and the user confirmed ("Ja, 27 april.") end well, and it reads a bare "that's wrong" at 0.53."""
    step = steps[last]
    if step.kinds is None or any(s.role == "assistant" for s in steps[last + 1 :]):
        return None
    top = int(np.argmax(step.kinds))
    unhappy = step.ends_well < 0.5 or (step.mood is not None and float(step.mood[0]) >= 0.5)
    sure = KINDS[top] in COMPLAINTS and step.kinds[top] >= COMPLAINT_AT and unhappy
    return KINDS[top] if sure else None


def reassess_many(transcripts: Mapping[int, list[Turn]]) -> dict[int, tuple[str, list[str]]]:
    """``assess_many`` for a save's transaction (the conversations that changed since their assessment):
    no reply is embedded there, under the write lock; one not judged lately counts as unjudged, until the
    message that changed the conversation is enriched and its save assesses it again."""
    return assess_many(transcripts, embed_replies=False)


def assess_many(transcripts: Mapping[int, list[Turn]], embed_replies: bool = True) -> dict[int, tuple[str, list[str]]]:
    """Outcome and signals of each transcript (by key)."""
    steps = _with_chances(transcripts, embed_replies=embed_replies)
    keys = list(steps)
    if not keys:
        return {}
    model = _model()
    rows = (np.array([features(steps[key]) for key in keys]) - model.mean) / model.scale
    outcome_logits = rows @ model.outcome_coef.T + model.outcome_intercept
    signal_chances = 1 / (1 + np.exp(-(rows @ model.signal_coef.T + model.signal_intercept)))
    out = {}
    for row, key in enumerate(keys):
        ss = steps[key]
        events = [s.text for s in ss if s.role == "event"]
        users = [i for i, s in enumerate(ss) if s.role == "user"]
        if not users or not any(s.role == "assistant" for s in ss):
            out[key] = ("unknown", sorted(set(events)))
            continue
        chances = zip(TRANSCRIPT_SIGNALS, signal_chances[row], model.signal_at, strict=True)
        signals = {s for s, p, at in chances if p >= at}
        outcome = CLASSES[int(np.argmax(outcome_logits[row]))]
        late = [s.text for s in ss[users[-1] + 1 :] if s.role == "event"]
        complaint = _complains_last(ss, users[-1])
        if complaint is not None:
            signals.add(complaint)
        if any(e in NEGATIVE_EVENTS for e in late) or complaint is not None:
            outcome = "unresolved"
        elif any(e in POSITIVE_EVENTS for e in late) and outcome in ("abandoned", "unknown"):
            outcome = "resolved"
        out[key] = (outcome, sorted(signals | set(events)))
    return out

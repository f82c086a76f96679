"""Small files processed together: one embedding call and one Chroma write for several.

A worker child that takes a small upsert (at most ``INGEST_GROUP_MAX_BYTES`` by its entry's
``size_bytes``) also claims up to ``INGEST_GROUP_FILES - 1`` other small upserts waiting in
the outbox (``enqueued``), oldest first, skipping rows another worker is claiming and
taking at most one event per document. Nothing waits to fill a group: it takes what is
already queued, and a lone file runs alone.

Each file keeps its own claim, lease, stage rows, batch join, download, extraction and
outcome, so a bad file fails alone. Only the embedding is one call for all of them, and the
Chroma write one batch, made while each file's transaction holds its document's lock. The
files run in document order, so those locks are taken in that order and two groups cannot
wait for each other. If the shared call fails, each file embeds or writes on its own, and
only the file at fault fails.

The other files' own messages are still on the broker: when they arrive, their claim finds
the file finished (or leased) and does nothing. A co-claimed file that meets an error that
is not its own fault (S3, Chroma or the CMS unavailable, its object not there yet) ends its
attempt and is handed back as ``released``: the caller publishes it again, and it is then
retried like any other file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import BigInteger, Integer, Text, bindparam, case, cast, exists, func, select

from ingest import metrics
from ingest.db import Prebuilt, session_scope
from ingest.errors import PermanentError
from ingest.events import UPSERT_EVENTS, event_kind
from ingest.leases import heartbeat
from ingest.log_context import binds, bound
from ingest.models import FileEvent
from ingest.pipeline.run import (
    SKIPPED,
    ClaimedEvent,
    Embed,
    Outcome,
    Services,
    UpsertSteps,
    Write,
    check_losses,
    claim_bound,
    claiming,
    default_services,
    end_attempt,
    failed,
    report,
    run_claimed,
    serve_alone,
    take,
    upsert_steps,
)
from ingest.settings import Settings

log = logging.getLogger(__name__)

#: Called with the outcome of each file processed together with the one asked for.
OnOther = Callable[[Outcome], None]


@binds(event_id="event_id")
def process_with_others(event_id: int, on_other: OnOther,
                        svc: Services | None = None) -> Outcome:
    """Process one stored event like :func:`ingest.pipeline.run.process_event`, together
    with the small upserts waiting behind it when it is one; ``on_other`` gets each of
    their outcomes (``released`` ones must be published again). Raises what processing
    the event itself raises, after the others are handed over."""
    svc = svc or default_services()
    ev = claim_bound(event_id, svc)
    if ev is None:
        return SKIPPED
    others = co_claim(ev, svc.settings)
    if not others:
        with heartbeat([ev.id], svc.settings.event_lease_seconds):
            return run_claimed(ev, svc)
    runs = [Run(held, upsert_steps(held, svc), svc.settings)
            for held in sorted((ev, *others), key=lambda e: (e.document_id, e.id))]
    try:
        with heartbeat([run.ev.id for run in runs], svc.settings.event_lease_seconds):
            run_together(runs, svc)
    finally:
        for run in runs:
            if run.ev.id == ev.id:
                continue
            try:
                on_other(run.released() if run.error is not None else run.outcome())
            except Exception as exc:  # noqa: BLE001 - the relay and the sweeper cover it
                log.warning("handing over event %s failed (%s: %s); the beat relay "
                            "publishes it again and the sweeper checks its batch",
                            run.ev.id, type(exc).__name__, exc)
    return next(run for run in runs if run.ev.id == ev.id).outcome()


def entry_size(payload: dict[str, Any]) -> int | None:
    """The file's size by its entry's ``size_bytes`` (None when absent or not a number)."""
    size = ((payload or {}).get("entry") or {}).get("size_bytes")
    if isinstance(size, str) and size.isdigit() and len(size) <= 15:
        size = int(size)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def co_claim(ev: ClaimedEvent, settings: Settings) -> list[ClaimedEvent]:
    """Claim the small upserts waiting in the outbox to go with ``ev`` (none unless ``ev``
    is a small upsert that will run): oldest first, one per document, none of ``ev``'s, at
    most ``INGEST_GROUP_FILES`` files and ``INGEST_GROUP_MAX_BYTES`` in all (a group then
    keeps a worker child about as long as one file of that size would, so the e-mails and
    checks queued behind it do not wait longer)."""
    first_size = entry_size(ev.payload)
    if (settings.ingest_group_files < 2 or event_kind(ev.event) != "upsert" or ev.stale
            or first_size is None or first_size >= settings.ingest_group_max_bytes):
        return []
    with session_scope() as s:
        return take(s, _CO_CLAIM, settings.event_lease_seconds, doc=ev.document_id,
                    budget=settings.ingest_group_max_bytes - first_size,
                    others=settings.ingest_group_files - 1)


def _co_claim() -> Any:
    """The claim of :func:`co_claim`, built once: the oldest small upserts waiting that are
    not of document ``doc`` and fit ``budget`` bytes together, at most ``others`` of them."""
    events = FileEvent.__table__
    ev = events.c
    budget = bindparam("budget", type_=BigInteger)
    size = ev.payload["entry"]["size_bytes"].astext
    size_bytes = case((size.regexp_match(r"^[0-9]{1,15}$"), cast(size, BigInteger)),
                      else_=None)
    older = events.alias("older")
    # Only the oldest live event of a document: two events of one document in a group
    # would wait for each other's document lock.
    first_of_document = ~exists().where(
        older.c.document_id == ev.document_id, older.c.id < ev.id,
        older.c.status.in_(("received", "enqueued", "processing")))
    # Chosen once, in a materialized CTE: as a plain subquery of the UPDATE, PostgreSQL
    # re-runs it to re-check a row that changed meanwhile, and with SKIP LOCKED a re-run
    # picks other rows, so the LIMIT did not hold (make bench: a group of 29).
    waiting = (
        select(ev.id, size_bytes.label("size"))
        .where(ev.status == "enqueued", ev.event.in_(UPSERT_EVENTS), size_bytes <= budget,
               ev.document_id != bindparam("doc", type_=Text), first_of_document)
        .order_by(ev.id)
        .limit(bindparam("others", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("waiting")
        .prefix_with("MATERIALIZED")
    )
    # The oldest that fit the budget together (the rest stay enqueued, for their messages).
    running = select(waiting.c.id, func.sum(waiting.c.size).over(order_by=waiting.c.id)
                     .label("total")).subquery()
    within = select(running.c.id).where(running.c.total <= budget)
    return claiming(ev.id.in_(within))


_CO_CLAIM = Prebuilt(_co_claim())


@dataclass
class Run:
    """One file of a group: its steps, what it asks for next, and how it ended."""

    ev: ClaimedEvent
    steps: UpsertSteps
    settings: Settings
    request: Embed | Write | None = None
    ended: Outcome | None = None
    error: BaseException | None = None

    def advance(self, move: Callable[[UpsertSteps], Any]) -> None:
        """Run the file's steps on to its next request, or to its end (its log lines carry
        its own event and document)."""
        with bound(event_id=self.ev.id, document_id=self.ev.document_id):
            self._advance(move)

    def _advance(self, move: Callable[[UpsertSteps], Any]) -> None:
        try:
            self.request = move(self.steps)
        except StopIteration as stop:
            self.request, self.ended = None, stop.value
        except PermanentError as exc:
            self.request, self.ended = None, failed(self.ev, exc, self.settings)
        except Exception as exc:  # noqa: BLE001 - released, and retried on its own
            self.request, self.error = None, exc
            end_attempt(self.ev.id)

    def outcome(self) -> Outcome:
        """How the file ended; raises the error of a file that did not."""
        if self.error is not None:
            raise self.error
        assert self.ended is not None
        return replace(self.ended, event_id=self.ev.id)

    def released(self) -> Outcome:
        """The outcome handed over for a co-claimed file whose attempt ended in an error."""
        assert self.error is not None
        return Outcome("released", detail=f"{type(self.error).__name__}: {self.error}",
                       event_id=self.ev.id, retry_in=getattr(self.error, "retry_in", None))


def run_together(runs: list[Run], svc: Services) -> None:
    """Process the runs' claimed upserts together, in their order (see the module's
    docstring); each one's outcome or error is left on its :class:`Run`."""
    started = time.perf_counter()
    try:
        for run in runs:
            try:
                check_losses(run.ev, svc.settings)
            except PermanentError as exc:
                run.steps.close()
                run.ended = failed(run.ev, exc, svc.settings)
                continue
            run.advance(next)
        _embed_together([run for run in runs if isinstance(run.request, Embed)], svc)
        _write_together([run for run in runs if isinstance(run.request, Write)], svc)
        for run in runs:  # not expected: a request after the write
            while run.request is not None:
                _serve(run, svc)
    except BaseException as exc:
        for run in runs:
            if run.ended is None and run.error is None:
                run.steps.close()  # rolls back its open transaction
                run.error = exc
                end_attempt(run.ev.id)
        raise
    for run in runs:
        if run.error is None and run.ended is not None:
            with bound(event_id=run.ev.id, document_id=run.ev.document_id,
                       batch_id=run.ended.batch_id):
                report(run.ev, run.ended, started, together=len(runs))


def _serve(run: Run, svc: Services) -> None:
    """Answer one request of a run on its own."""
    try:
        answer = serve_alone(run.request, svc)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the file's own stage records it
        run.advance(lambda steps, exc=exc: steps.throw(exc))
    else:
        run.advance(lambda steps: steps.send(answer))


def _embed_together(runs: list[Run], svc: Services) -> None:
    texts = [text for run in runs for text in run.request.texts]  # type: ignore[union-attr]
    try:
        with metrics.timed("embed"):
            vectors = svc.embedder.embed(texts)
    except Exception:  # noqa: BLE001 - each file embeds alone; only a file at fault fails
        for run in runs:
            _serve(run, svc)
        return
    start = 0
    for run in runs:
        count = len(run.request.texts)  # type: ignore[union-attr]
        mine = vectors[start:start + count]
        start += count
        run.advance(lambda steps, mine=mine: steps.send(mine))


def _write_together(runs: list[Run], svc: Services) -> None:
    if not runs:
        return
    try:
        with metrics.timed("store"):
            counts: list[int | None] = list(svc.vectors.replace_documents(
                [run.request.replacement for run in runs]))  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - each file writes alone; only a file at fault fails
        counts = [None] * len(runs)
    for run, count in zip(runs, counts, strict=True):
        run.advance(lambda steps, count=count: steps.send(count))

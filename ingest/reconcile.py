"""Reconciliation: find the CMS file entries whose webhook never reached us (DESIGN §4).

Strapi sends each webhook once and never retries, so a beat job polls
``GET /api/files?filters[updatedAt][$gt]=…`` and stores every entry it finds exactly as if
its webhook had arrived. The rules:

- **Where to start.** The row ``reconciliation_checkpoints(name='cms-files')`` holds the
  greatest ``updatedAt`` seen so far. The first run starts ``RECONCILIATION_LOOKBACK_HOURS``
  back. Every run reads from the checkpoint minus ``RECONCILIATION_OVERLAP_SECONDS``: an
  entry whose transaction committed after a newer one was already visible (the CMS sets
  ``updatedAt`` before its commit) is still found by the next run.
- **One event per version.** Each valid entry is stored with :func:`store_file_event` as an
  ``entry.update`` whose payload is shaped like a Strapi webhook (plus ``"source":
  "reconciliation"``). Its dedupe key ``upsert:{documentId}:{updatedAt}`` is the one the
  webhook of that version has, so an entry whose webhook did arrive (or that an earlier run
  found) meets its stored event and is not processed twice. Only the ids of *new* events
  are returned, for the caller to publish; they stay ``received`` until published, so the
  outbox relay publishes them if the caller cannot.
- **Paging.** Pages are read oldest first (``sort=updatedAt:asc,documentId:asc``). Rather
  than walking page numbers over one fixed filter — where an entry edited or deleted during
  the walk shifts the later entries down a page, so one is skipped and then left behind by
  the checkpoint for good — each next page is asked for with the filter moved to the last
  ``updatedAt`` read minus one millisecond (page 1 again). Entries of that last millisecond
  are read twice and recognised (this run remembers what it stored). Only when a whole page
  shares one millisecond (the filter cannot move) does the next request take the next page
  number with the same filter. The walk ends at a short or empty page or at the last page
  (``page >= pageCount``), and after at most ``max_pages`` requests per run (the next run
  goes on from the checkpoint).
- **Bad entries** (failing :class:`FileEntry` validation, or not objects) are logged and
  skipped; they never stop the run.
- **Commits.** Each page's events and the checkpoint advance are written in one
  transaction, so the checkpoint is never ahead of committed events. The checkpoint is an
  UPSERT that keeps the greater value (``GREATEST``): it never moves backwards. Each run
  also records ``last_run_at``; ``entries_seen`` and ``events_created`` are running totals.
- **CMS failures** (connection, timeout, 5xx, a malformed answer) end the run with the
  pages committed so far; the result carries ``error``, the checkpoint stays where the last
  committed page left it, and the next scheduled run tries again.
- **One run at a time.** The advisory lock ``LOCK_NAME``, held for the whole run without
  waiting for it (:func:`ingest.db.held_lock`), keeps two runs (two beat instances, a manual
  run) from overlapping; a second run returns at once with ``skipped=True`` and zero
  results.

Limitation: a deletion whose webhook was lost cannot be found by polling, since the entry
is gone from the CMS; its chunks stay until the document is deleted again or cleaned up by
hand.

This module is part of the domain: it imports neither Celery nor Flask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest.adapters.cms import CmsClient
from ingest.db import held_lock, session_scope
from ingest.errors import IngestError, TransientError
from ingest.events import FILE_MODEL, FileEntry, Stored, store_file_event
from ingest.models import ReconciliationCheckpoint
from ingest.settings import Settings

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "cms-files"
LOCK_NAME = "kb-ingest:reconcile"  # the advisory lock that serialises runs
MAX_PAGES_PER_RUN = 1000
EVENT = "entry.update"
SOURCE = "reconciliation"
_ONE_MS = timedelta(milliseconds=1)


@dataclass
class ReconcileResult:
    """What one run did.

    ``pages``: listing requests answered; ``entries_seen``: distinct entry versions read
    (invalid ones included); ``events_created``: new ``file_events`` rows, whose ids are in
    ``event_ids`` (to publish); ``new_checkpoint``: the checkpoint after the run (None when
    skipped); ``skipped``: another run held the lock; ``invalid``: entries skipped as
    invalid; ``error``: why the run stopped early (a CMS failure), else None.
    """

    pages: int = 0
    entries_seen: int = 0
    events_created: int = 0
    new_checkpoint: datetime | None = None
    event_ids: list[int] = field(default_factory=list)
    skipped: bool = False
    invalid: int = 0
    error: str | None = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso_ms(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_checkpoint(session: Session, name: str = CHECKPOINT_NAME) -> datetime | None:
    """The stored checkpoint, or None before the first run."""
    return session.execute(
        select(ReconciliationCheckpoint.last_updated_at).where(
            ReconciliationCheckpoint.name == name
        )
    ).scalar_one_or_none()


def advance_checkpoint(
    session: Session,
    updated_at: datetime,
    run_at: datetime,
    entries_seen: int = 0,
    events_created: int = 0,
    name: str = CHECKPOINT_NAME,
) -> datetime:
    """UPSERT the checkpoint, never backwards; add to the totals; return the stored value."""
    stmt = insert(ReconciliationCheckpoint).values(
        name=name,
        last_updated_at=_utc(updated_at),
        last_run_at=_utc(run_at),
        entries_seen=entries_seen,
        events_created=events_created,
    )
    table = ReconciliationCheckpoint
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.name],
        set_={
            "last_updated_at": func.greatest(table.last_updated_at,
                                             stmt.excluded.last_updated_at),
            "last_run_at": stmt.excluded.last_run_at,
            "entries_seen": table.entries_seen + stmt.excluded.entries_seen,
            "events_created": table.events_created + stmt.excluded.events_created,
        },
    ).returning(table.last_updated_at)
    return session.execute(stmt).scalar_one()


def _payload(entry: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A Strapi-webhook-shaped payload for a polled entry."""
    return {
        "event": EVENT,
        "model": FILE_MODEL,
        "uid": f"api::{FILE_MODEL}.{FILE_MODEL}",
        "createdAt": _iso_ms(now),
        "entry": entry,
        "source": SOURCE,
    }


def store_current_entry(session: Session, raw: dict[str, Any],
                        newer_than: datetime) -> Stored | None:
    """Store the CMS's current version of an entry as an event, as a poll would.

    Used when a check finds the CMS ahead of the event at hand: the newer version is then
    processed even if its webhook never arrives. The event stays ``received``, so the outbox
    relay publishes it; an existing event of that version is met by its dedupe key. Returns
    None for an entry that does not validate or is not newer than ``newer_than``.
    """
    try:
        entry = FileEntry.model_validate(raw)
    except ValidationError as exc:
        log.warning("the CMS's entry %r is invalid: %s", raw.get("documentId"),
                    str(exc).replace("\n", " ")[:500])
        return None
    if _utc(entry.updatedAt) <= _utc(newer_than):
        return None
    return store_file_event(session, EVENT, entry, _payload(raw, datetime.now(UTC)))


def _updated_at(raw: Any) -> datetime | None:
    """The entry's ``updatedAt`` if it is readable (used for paging even if invalid)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("updatedAt"), str):
        return None
    try:
        return _utc(datetime.fromisoformat(raw["updatedAt"].replace("Z", "+00:00")))
    except ValueError:
        return None


@dataclass
class _Page:
    """What storing one page produced."""

    seen: int = 0
    invalid: int = 0
    new_ids: list[int] = field(default_factory=list)
    last_updated_at: datetime | None = None  # of the page's last readable entry
    max_updated_at: datetime | None = None


def _store_page(
    session: Session, data: list[Any], now: datetime, stored_keys: set[tuple[str, datetime]]
) -> _Page:
    page = _Page()
    for raw in data:
        moment = _updated_at(raw)
        if moment is not None:
            page.last_updated_at = moment
            page.max_updated_at = max(page.max_updated_at or moment, moment)
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"not an object: {type(raw).__name__}")
            entry = FileEntry.model_validate(raw)
        except (ValidationError, TypeError) as exc:
            doc = raw.get("documentId") if isinstance(raw, dict) else None
            key_invalid = (str(doc), moment or datetime.min.replace(tzinfo=UTC))
            if key_invalid not in stored_keys:
                stored_keys.add(key_invalid)
                page.seen += 1
                page.invalid += 1
                log.warning("reconciliation skips an invalid CMS file entry %r: %s", doc,
                            str(exc).replace("\n", " ")[:500])
            continue
        key = (entry.documentId, _utc(entry.updatedAt))
        if key in stored_keys:  # read again at a page boundary (same millisecond)
            continue
        stored_keys.add(key)
        page.seen += 1
        stored = store_file_event(session, EVENT, entry, _payload(raw, now))
        if stored.created:
            page.new_ids.append(stored.event_id)
    return page


def _walk(cms: CmsClient, settings: Settings, start: datetime, now: datetime,
          max_pages: int, result: ReconcileResult) -> None:
    """Read and store every page after ``start``; update ``result`` as pages commit."""
    after, page_number = start, 1
    stored_keys: set[tuple[str, datetime]] = set()
    size = settings.reconciliation_page_size
    while result.pages < max_pages:
        data, pagination = cms.list_files(after, page_number, size)
        result.pages += 1
        with session_scope() as s:
            page = _store_page(s, data, now, stored_keys)
            if page.max_updated_at is not None:
                result.new_checkpoint = advance_checkpoint(
                    s, page.max_updated_at, now, page.seen, len(page.new_ids)
                )
        result.entries_seen += page.seen
        result.invalid += page.invalid
        result.events_created += len(page.new_ids)
        result.event_ids.extend(page.new_ids)
        page_count = pagination.get("pageCount")
        last_page = isinstance(page_count, int) and page_number >= page_count
        if not data or len(data) < size or last_page:
            return
        moved = page.last_updated_at - _ONE_MS if page.last_updated_at else None
        if moved is not None and moved > after:
            after, page_number = moved, 1
        else:  # the whole page shares one millisecond: page on with the same filter
            page_number += 1
    log.warning("reconciliation stopped after %d pages; the next run goes on", max_pages)


def _run(cms: CmsClient, settings: Settings, now: datetime, max_pages: int,
         result: ReconcileResult, since: timedelta | None = None) -> None:
    """The run itself, under the lock."""
    with session_scope() as s:
        checkpoint = read_checkpoint(s)
    if checkpoint is None:
        checkpoint = now - timedelta(hours=settings.reconciliation_lookback_hours)
    result.new_checkpoint = checkpoint
    start = checkpoint - timedelta(seconds=settings.reconciliation_overlap_seconds)
    if since is not None:  # an operator's window; the checkpoint still never moves back
        start = now - since
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)  # the filter's precision
    try:
        _walk(cms, settings, start, now, max_pages, result)
    except IngestError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        level = logging.WARNING if isinstance(exc, TransientError) else logging.ERROR
        log.log(level, "reconciliation stopped after %d page(s): %s", result.pages, result.error)
    with session_scope() as s:  # record the run (and create the row on a first run)
        result.new_checkpoint = advance_checkpoint(s, checkpoint, now)


def reconcile(
    cms: CmsClient,
    settings: Settings,
    now: datetime | None = None,
    *,
    max_pages: int = MAX_PAGES_PER_RUN,
    since: timedelta | None = None,
) -> ReconcileResult:
    """Poll the CMS for file entries changed since the checkpoint and store them as events.

    Returns the ids of the new events (still ``received``: the caller publishes them). A CMS
    failure ends the run early with ``result.error`` set, never with an exception; a second
    run while one holds the lock returns at once with ``skipped=True``. ``since`` reads the
    entries changed within that window instead of from the checkpoint (``ingest reconcile
    --now --since 2h``).
    """
    now = _utc(now or datetime.now(UTC))
    result = ReconcileResult()
    with held_lock(LOCK_NAME, wait=False) as locked:
        if not locked:
            log.info("reconciliation already running elsewhere; skipped")
            result.skipped = True
            return result
        _run(cms, settings, now, max_pages, result, since)
    log.info(
        "reconciliation: %d page(s), %d entries, %d new event(s), %d invalid, checkpoint %s",
        result.pages, result.entries_seen, result.events_created, result.invalid,
        result.new_checkpoint.isoformat() if result.new_checkpoint else None,
    )
    return result

"""The processing of one file event: the stages of DESIGN §4, each recorded.

``process_event`` is a plain function (no Celery): claim the event → drop it if a newer
event of the same document exists → resolve metadata (payload, else CMS) → download →
extract, chunk, embed → store in Chroma → done. Sessions are short: nothing holds a
database connection across S3, embedding or Chroma work, except the final store, which
runs under a per-document advisory lock so that two events of one document can never
interleave their writes (the newer ``updatedAt`` always wins).

Safety (DESIGN §8):

- The storage key must lie under ``S3_KEY_PREFIX_TEMPLATE`` for the entry's company and
  bot; otherwise nothing is read and the file fails as ``invalid_key`` (no correction).
- What the download saw (key, ETag, size) is recorded on the event: a later correction
  deletes only that object.
- A missing object is re-checked for ``S3_MISSING_GRACE_SECONDS`` (re-reading the CMS entry
  each time) before it is ``file_not_found``.
- Per-file caps: ``MAX_FILE_BYTES``, ``MAX_UNZIPPED_BYTES``, ``MAX_EXTRACTED_CHARS``,
  ``MAX_CHUNKS_PER_FILE`` (over a cap: ``processing_error``, "too large"), and an
  extraction deadline (``resource_limit``).
- An attempt marks ``running_since``; a claim that finds it still set counts a worker
  loss, and after ``MAX_WORKER_LOSSES`` the file fails as ``resource_limit`` instead of
  killing the next worker process.

Errors: :class:`TransientError` propagates to the caller (the task retries it);
:class:`PermanentError` fails the event once with a ``processing_errors`` row; only a
failure that is a property of the file plans a correction, the others alert the operator.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import case, func, select, true, update
from sqlalchemy.orm import Session

from ingest import metrics
from ingest.adapters.cms import CmsClient
from ingest.adapters.s3 import ObjectInfo, S3Store
from ingest.adapters.vectors import VectorStore
from ingest.addresses import usable_address
from ingest.batches import (
    NO_RECIPIENT,
    batch_of_event,
    join_batch,
    leave_batch,
    record_file_outcome,
)
from ingest.corrections import plan_correction
from ingest.db import lock_xact, session_scope
from ingest.errors import (
    CORRECTABLE,
    INTERNAL_ERROR,
    OPERATOR_CATEGORIES,
    FileNotFound,
    IngestError,
    InvalidKey,
    ObjectNotYetThere,
    PermanentError,
    ProcessingError,
    ResourceLimit,
)
from ingest.events import FileEntry, event_kind
from ingest.leases import heartbeat, owner, owner_dead
from ingest.log_context import bind, binds
from ingest.mail.alerts import FILE_NEEDS_OPERATOR, raise_alert
from ingest.models import FileEvent, FileProcessingStatus
from ingest.models import ProcessingError as ProcessingErrorRow
from ingest.pipeline.chunking import Chunk, chunk_blocks, chunk_blocks_by_chars
from ingest.pipeline.embedding import Embedder, get_embedder
from ingest.pipeline.extract import ExtractLimits, extract_blocks
from ingest.preferences import Preferences, PreferenceStore
from ingest.reconcile import store_current_entry
from ingest.redis_client import get_redis
from ingest.retry import backoff_seconds
from ingest.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The adapters one worker process uses (built once per process)."""

    settings: Settings
    cms: CmsClient
    s3: S3Store
    vectors: VectorStore
    embedder: Embedder
    preferences: PreferenceStore


@lru_cache(maxsize=1)
def default_services() -> Services:
    """The process's adapters, built from the settings on first use."""
    settings = get_settings()
    cms = CmsClient.from_settings(settings)
    return Services(
        settings=settings,
        cms=cms,
        s3=S3Store(settings),
        vectors=VectorStore(settings),
        embedder=get_embedder(settings.embedding_backend),
        preferences=PreferenceStore(settings, get_redis(), cms,
                                    ttl_seconds=settings.preferences_cache_ttl_seconds),
    )


@dataclass(frozen=True)
class Outcome:
    """What became of an event: ``done``, ``ignored`` (stale), ``failed`` or ``skipped``."""

    status: str
    chunks: int = 0
    detail: str = ""
    batch_id: uuid.UUID | None = None
    correction_id: int | None = None


@dataclass(frozen=True)
class ClaimedEvent:
    """The fields of a claimed ``file_events`` row the stages need."""

    id: int
    event: str
    document_id: str
    entry_updated_at: datetime
    payload: dict[str, Any]
    attempts: int
    worker_losses: int


#: What ending an attempt clears: it is no longer running, and holds no lease.
ATTEMPT_ENDED: dict[str, Any] = {"running_since": None, "lease_until": None, "claimed_by": None}


def _now() -> datetime:
    return datetime.now(UTC)


def claim(event_id: int, lease_seconds: float = 60.0) -> ClaimedEvent | None:
    """received/enqueued/processing → processing, with a lease owned by this process.

    None if the event already ended, or if another attempt holds a live lease on it (a
    duplicate delivery: never run one event twice at once). Taking over an attempt that
    still had ``running_since`` set (its owner died) counts one worker loss. The common case,
    an event nobody runs, is one conditional UPDATE; the row is read (locked) only when that
    finds nothing, to tell an ended event from a held one and a held one from a dead owner's.
    """
    with session_scope() as s:
        free = (FileEvent.running_since.is_(None) | FileEvent.lease_until.is_(None)
                | (FileEvent.lease_until <= func.now()))
        row = _take(s, event_id, lease_seconds, free)
        if row is not None:
            return ClaimedEvent(*row)
        current = s.execute(
            select(FileEvent.status, FileEvent.running_since, FileEvent.lease_until,
                   FileEvent.claimed_by, func.now().label("now"))
            .where(FileEvent.id == event_id).with_for_update()
        ).one_or_none()
        if current is None or current.status not in ("received", "enqueued", "processing"):
            return None
        if (current.running_since is not None and current.lease_until is not None
                and current.lease_until > current.now
                and not owner_dead(current.claimed_by)):
            log.info("event %s is held by %s until %s; not run twice", event_id,
                     current.claimed_by, current.lease_until)
            return None
        row = _take(s, event_id, lease_seconds, true())
    return None if row is None else ClaimedEvent(*row)


def _take(s: Session, event_id: int, lease_seconds: float, condition: Any) -> Any:
    """The claiming UPDATE of a live event that meets ``condition``; its row, or None."""
    return s.execute(
        update(FileEvent)
        .where(FileEvent.id == event_id,
               FileEvent.status.in_(("received", "enqueued", "processing")), condition)
        .values(status="processing", attempts=FileEvent.attempts + 1, updated_at=_now(),
                # still set = the previous attempt died with its worker process
                worker_losses=FileEvent.worker_losses + case(
                    (FileEvent.running_since.is_not(None), 1), else_=0),
                running_since=func.now(),
                lease_until=func.now() + timedelta(seconds=lease_seconds),
                claimed_by=owner())
        .returning(
            FileEvent.id, FileEvent.event, FileEvent.document_id,
            FileEvent.entry_updated_at, FileEvent.payload, FileEvent.attempts,
            FileEvent.worker_losses,
        )
    ).one_or_none()


def is_stale(s: Session, ev: ClaimedEvent) -> bool:
    """Whether a newer event of the same document supersedes ``ev`` (DESIGN §7).

    Any event loses to one with a later ``updatedAt``; an upsert also loses to a delete with
    the same ``updatedAt`` (a delete wins over an older or equal create).
    """
    newer = (FileEvent.entry_updated_at > ev.entry_updated_at) & (FileEvent.status != "ignored")
    if event_kind(ev.event) == "upsert":
        newer = newer | (
            FileEvent.event.in_(("entry.delete", "entry.unpublish"))
            & (FileEvent.entry_updated_at >= ev.entry_updated_at)
        )
    found = s.execute(
        select(FileEvent.id)
        .where(FileEvent.document_id == ev.document_id, FileEvent.id != ev.id, newer)
        .limit(1)
    ).first()
    return found is not None


def finish(s: Session, event_id: int, status: str, error: str | None = None) -> bool:
    """processing → a terminal status; False if another run finished it first."""
    done = s.execute(
        update(FileEvent)
        .where(FileEvent.id == event_id, FileEvent.status == "processing")
        .values(status=status, last_error=error, updated_at=_now(), **ATTEMPT_ENDED)
        .returning(FileEvent.id)
    ).first()
    return done is not None


def end_attempt(event_id: int) -> None:
    """The attempt ended without a terminal status (a retry follows): not a worker loss."""
    with session_scope() as s:
        s.execute(update(FileEvent)
                  .where(FileEvent.id == event_id, FileEvent.claimed_by == owner())
                  .values(**ATTEMPT_ENDED))


@dataclass
class StageRow:
    """The ``file_processing_status`` row of a running stage, and writes that commit with
    its end, whichever way it ends (what the download saw, say)."""

    row_id: int
    ended: bool = False
    end_writes: list[Callable[[Session], object]] = field(default_factory=list)

    def succeed_in(self, s: Session) -> None:
        """End the stage as a success inside ``s``, so it commits with what follows it: the
        next stage's start, or the outcome it led to (no reader sees a finished event whose
        last stage still runs)."""
        s.execute(update(FileProcessingStatus).where(FileProcessingStatus.id == self.row_id)
                  .values(status="success", stage_end_time=func.now(), updated_at=_now()))
        for write in self.end_writes:
            write(s)
        self.ended = True


def start_stage(s: Session, ev: ClaimedEvent, name: str) -> StageRow:
    """Write the stage's ``processing`` row in ``s``."""
    row = FileProcessingStatus(file_event_id=ev.id, file_document_id=ev.document_id,
                               processing_stage=name, status="processing")
    s.add(row)
    s.flush()
    return StageRow(row.id)


@contextmanager
def stage(ev: ClaimedEvent, name: str, *, started: StageRow | None = None,
          after: StageRow | None = None, hand_on: bool = False) -> Iterator[StageRow]:
    """Record a stage in ``file_processing_status``: processing → success | failed.

    The row is written in a transaction of its own, which also ends the stage ``after``
    (one transaction from one stage to the next), unless the caller ``started`` it in one
    of its own. A failed stage is ended at once; a stage that succeeds is ended on leaving
    the block, or, with ``hand_on``, by the next stage (``after=``) or ``succeed_in``.
    """
    current = started
    if current is None:
        with session_scope() as s:
            if after is not None and not after.ended:
                after.succeed_in(s)
            current = start_stage(s, ev, name)
    try:
        yield current
    except Exception as exc:
        if isinstance(exc, IngestError) and not hasattr(exc, "stage"):
            exc.stage = name  # type: ignore[attr-defined]
        _end_stage(current, "failed", exc)  # also after succeed_in: it rolled back
        raise
    if not current.ended and not hand_on:
        _end_stage(current, "success", None)


def _end_stage(row: StageRow, status: str, exc: BaseException | None) -> None:
    with session_scope() as s:
        s.execute(
            update(FileProcessingStatus)
            .where(FileProcessingStatus.id == row.row_id)
            .values(
                status=status,
                stage_end_time=func.now(),
                updated_at=_now(),
                error_message=str(exc) if exc else None,
                error_details={"exception": type(exc).__name__} if exc else None,
            )
        )
        for write in row.end_writes:
            write(s)
    row.ended = True


def resolve_entry(ev: ClaimedEvent, cms: CmsClient) -> FileEntry:
    """The file's metadata: the webhook's entry when complete, else the CMS's."""
    entry = FileEntry.model_validate(ev.payload.get("entry") or {})
    if entry.is_complete():
        return entry
    data = cms.get_file(ev.document_id)
    try:
        fetched = FileEntry.model_validate(data)
    except ValueError as exc:
        raise ProcessingError(f"CMS entry {ev.document_id!r} is incomplete: {exc}") from exc
    if not fetched.is_complete():
        raise ProcessingError(f"CMS entry {ev.document_id!r} lacks name, storage_key or ids")
    return fetched


def _chunk_metadata(entry: FileEntry, index: int, chunk: Chunk) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "document_id": entry.documentId,
        "company_id": entry.company_id,
        "bot_id": entry.bot_id,
        "file_name": entry.name,
        "chunk_index": index,
    }
    # Chroma takes str/int/float/bool values only: a missing section or page is left out.
    if chunk.section is not None:
        metadata["section"] = chunk.section
    if chunk.page is not None:
        metadata["page"] = chunk.page
    return metadata


def _ignore(ev: ClaimedEvent, why: str) -> Outcome:
    """End a superseded event; its file leaves the batch (the newer version reports it)."""
    with session_scope() as s:
        finish(s, ev.id, "ignored", why)
        batch_id = leave_batch(s, ev.id)
    log.info("event %s ignored: %s", ev.id, why)
    return Outcome("ignored", detail=why, batch_id=batch_id)


class Superseded(Exception):
    """The CMS holds another version than the event's (or none): the event is stale."""


def tenant_prefix(entry: FileEntry, settings: Settings) -> str | None:
    """The key prefix the entry's company and bot own (None: the check is off)."""
    if not settings.s3_key_prefix_template:
        return None
    return settings.s3_key_prefix_template.format(company_id=entry.company_id,
                                                  bot_id=entry.bot_id)


def check_key(entry: FileEntry, settings: Settings) -> None:
    """Raise :class:`InvalidKey` unless the storage key lies under the tenant's prefix."""
    key = entry.storage_key or ""
    parts = key.replace("\\", "/").split("/")
    if ".." in parts or "." in parts or key.startswith("/"):
        raise InvalidKey(f"storage_key {key!r} contains a relative path segment")
    prefix = tenant_prefix(entry, settings)
    if prefix is not None and not key.startswith(prefix):
        raise InvalidKey(f"storage_key {key!r} lies outside the prefix {prefix!r} of company "
                         f"{entry.company_id}, bot {entry.bot_id}")


def check_cms_version(ev: ClaimedEvent, entry: FileEntry, cms: CmsClient) -> None:
    """Raise :class:`Superseded` unless the CMS still holds this event's version.

    A newer version found this way is stored as an event, so it is processed even if its
    webhook never arrives.
    """
    try:
        current = cms.get_file(ev.document_id)
    except FileNotFound as exc:
        raise Superseded("the CMS entry was deleted") from exc
    try:
        now = FileEntry.model_validate(current)
    except ValueError as exc:
        raise Superseded(f"the CMS entry no longer validates: {exc}") from exc
    if now.updatedAt != ev.entry_updated_at or now.storage_key != entry.storage_key:
        with session_scope() as s:
            store_current_entry(s, current, newer_than=ev.entry_updated_at)
        raise Superseded("the CMS holds another version of the document")


def _object_missing(ev: ClaimedEvent, entry: FileEntry, svc: Services) -> ObjectNotYetThere:
    """A NoSuchKey: wait inside the grace period, else fail as verified not found."""
    check_cms_version(ev, entry, svc.cms)
    with session_scope() as s:
        since, now = s.execute(
            update(FileEvent).where(FileEvent.id == ev.id)
            .values(object_missing_since=func.coalesce(FileEvent.object_missing_since,
                                                       func.now()))
            .returning(FileEvent.object_missing_since, func.now())
        ).one()
    grace = svc.settings.s3_missing_grace_seconds
    left = grace - (now - since).total_seconds()
    if left <= 0:
        raise FileNotFound(f"S3 object {entry.storage_key!r} is still missing {grace:g}s after "
                           "it was first looked for, and the CMS entry still points at it")
    wait = min(left, max(1.0, backoff_seconds(2.0, ev.attempts)))
    return ObjectNotYetThere(f"S3 object {entry.storage_key!r} is not there yet; "
                             f"looking again in {wait:.1f}s ({left:.0f}s of grace left)",
                             retry_in=wait)


def _record_object(event_id: int, info: ObjectInfo) -> Callable[[Session], object]:
    return lambda s: s.execute(
        update(FileEvent).where(FileEvent.id == event_id)
        .values(object_key=info.key, object_etag=info.etag, object_size=info.size))


def _download(ev: ClaimedEvent, entry: FileEntry, svc: Services, download: StageRow) -> bytes:
    """The object's bytes; what was opened (key, ETag, size) is recorded with the end of the
    download stage, also when reading fails, so it is there before any failure is."""
    assert entry.storage_key is not None
    try:
        obj = svc.s3.open(entry.storage_key)
    except FileNotFound:
        raise _object_missing(ev, entry, svc) from None
    download.end_writes.append(_record_object(ev.id, obj.info))
    return obj.read(svc.settings.max_file_bytes)


def _extract_chunks(data: bytes, entry: FileEntry, settings: Settings,
                    backend: str) -> list[Chunk]:
    """Extract the file's blocks and cut them into chunks: by the model's tokens for the
    ``minilm`` backend (the embedder in use, set by EMBEDDING_BACKEND), by characters for
    ``hashing`` (which has no tokenizer)."""
    assert entry.name is not None
    limits = ExtractLimits(max_unzipped_bytes=settings.max_unzipped_bytes,
                           max_chars=settings.max_extracted_chars,
                           timeout_seconds=settings.extract_timeout_seconds,
                           ocr_languages=settings.ocr_languages,
                           ocr_max_pages=settings.ocr_max_pages, ocr_dpi=settings.ocr_dpi,
                           tesseract_cmd=settings.tesseract_cmd)
    with metrics.timed("extract"):
        blocks = extract_blocks(data, entry.name, entry.mime_type, limits=limits)
    with metrics.timed("chunk"):
        if backend == "minilm":
            from ingest.pipeline.tokens import minilm_tokenizer

            chunks = chunk_blocks(blocks, minilm_tokenizer(), settings.chunk_tokens,
                                  settings.chunk_overlap_tokens, settings.chunk_record_tokens)
        else:
            chunks = chunk_blocks_by_chars(blocks, settings.chunk_size, settings.chunk_overlap)
    if not chunks:
        raise ProcessingError("no text could be extracted")
    if len(chunks) > settings.max_chunks_per_file:
        raise ProcessingError(f"the file is too large: {len(chunks):,} chunks, above the "
                              f"{settings.max_chunks_per_file:,} limit (MAX_CHUNKS_PER_FILE)")
    return chunks


def _process_upsert(ev: ClaimedEvent, svc: Services) -> Outcome:
    with session_scope() as s:
        stale = is_stale(s, ev)
        first = None if stale else start_stage(s, ev, "download")
        joined_before = None if stale else batch_of_event(s, ev.id)
    if first is None:
        return _ignore(ev, "superseded by a newer event of the document")
    try:
        with stage(ev, "download", started=first, hand_on=True) as download:
            entry = resolve_entry(ev, svc.cms)
            batch_id = joined_before or _join(ev, entry, svc)
            bind(batch_id=batch_id)
            check_key(entry, svc.settings)
            with metrics.timed("download"):
                data = _download(ev, entry, svc, download)
    except Superseded as exc:
        return _ignore(ev, f"superseded: {exc}")
    with stage(ev, "processing", after=download, hand_on=True) as processing:
        chunks = _extract_chunks(data, entry, svc.settings, svc.embedder.name)
        with metrics.timed("embed"):
            embeddings = svc.embedder.embed([chunk.text for chunk in chunks])
    with stage(ev, "storage", after=processing) as storage, session_scope() as s:
        lock_xact(s, ev.document_id)
        if is_stale(s, ev):
            finish(s, ev.id, "ignored", "superseded while processing")
            return Outcome("ignored", detail="superseded while processing",
                           batch_id=leave_batch(s, ev.id))
        with metrics.timed("store"):
            stored = svc.vectors.replace_document(
                ev.document_id, embeddings, [chunk.text for chunk in chunks],
                [_chunk_metadata(entry, n, chunk) for n, chunk in enumerate(chunks)],
            )
        finish(s, ev.id, "done")
        record_file_outcome(s, ev.id, succeeded=True, chunks=stored)
        storage.succeed_in(s)
        s.add(FileProcessingStatus(file_event_id=ev.id, file_document_id=ev.document_id,
                                   processing_stage="completed", status="success",
                                   stage_end_time=func.now()))
    return Outcome("done", chunks=stored, batch_id=batch_id)


def _join(ev: ClaimedEvent, entry: FileEntry, svc: Services) -> uuid.UUID | None:
    """Join the uploader's open batch; the caller made sure this event has not joined one
    yet (once per event, also across retries)."""
    assert entry.company_id is not None and entry.bot_id is not None and entry.name
    address = usable_address(entry.user_email)
    if address is not None:
        prefs = svc.preferences.get(entry.company_id, entry.bot_id, address)
    else:
        # Not the uploader's mailbox: the fallback (or nobody) gets the service's defaults.
        address = svc.settings.fallback_notification_email or NO_RECIPIENT
        prefs = Preferences.defaults(svc.settings)
        log.warning("event %s: user_email %r is missing or not an address; the summary goes "
                    "to %s", ev.id, entry.user_email,
                    "FALLBACK_NOTIFICATION_EMAIL" if address else "nobody (recorded as skipped)")
    return join_batch(
        event_id=ev.id, document_id=ev.document_id, file_name=entry.name,
        size_bytes=entry.size_bytes, company_id=entry.company_id, bot_id=entry.bot_id,
        user_email=address, prefs=prefs, settings=svc.settings,
    ).batch_id


def _process_delete(ev: ClaimedEvent, svc: Services) -> Outcome:
    with session_scope() as s:
        lock_xact(s, ev.document_id)
        if is_stale(s, ev):
            finish(s, ev.id, "ignored", "superseded by a newer event of the document")
            return Outcome("ignored", detail="superseded")
        removed = svc.vectors.delete_document(ev.document_id)
        finish(s, ev.id, "done")
    return Outcome("done", detail=f"removed {removed} chunks")


@binds(event_id="event_id")
def process_event(event_id: int, svc: Services | None = None) -> Outcome:
    """Process one stored event; raises :class:`TransientError` for the caller to retry.

    Any other exception also propagates, after ``running_since`` is cleared (the caller
    fails the event): only a dead worker leaves it set.
    """
    svc = svc or default_services()
    lease = svc.settings.event_lease_seconds
    ev = claim(event_id, lease)
    if ev is None:
        return Outcome("skipped", detail="already finished, or running elsewhere")
    bind(document_id=ev.document_id)
    with heartbeat(event_id, lease):
        return _run_claimed(ev, svc)


def _run_claimed(ev: ClaimedEvent, svc: Services) -> Outcome:
    event_id = ev.id
    started = time.perf_counter()
    handler: Callable[[ClaimedEvent, Services], Outcome] = (
        _process_delete if event_kind(ev.event) == "delete" else _process_upsert
    )
    try:
        if ev.worker_losses >= svc.settings.max_worker_losses:
            raise ResourceLimit(
                f"the worker processing this file was lost {ev.worker_losses} times (killed "
                "or out of memory); it is not tried again (MAX_WORKER_LOSSES)")
        outcome = handler(ev, svc)
    except PermanentError as exc:
        failure = fail_event(event_id, exc, retries=ev.attempts - 1, settings=svc.settings)
        return Outcome("failed", detail=f"{exc.category}: {exc}", batch_id=failure.batch_id,
                       correction_id=failure.correction_id)
    except BaseException:
        end_attempt(event_id)
        raise
    deleted = outcome.status == "done" and handler is _process_delete
    metrics.FILES.labels("deleted" if deleted else outcome.status, "none").inc()
    log.info(
        "event %s (%s %s) %s in %.2fs, %d chunks", ev.id, ev.event, ev.document_id,
        outcome.status, time.perf_counter() - started, outcome.chunks,
    )
    return outcome


@dataclass(frozen=True)
class Failure:
    """What failing an event created: its batch (if any) and its correction (if planned)."""

    batch_id: uuid.UUID | None = None
    correction_id: int | None = None


@binds(event_id="event_id")
def fail_event(event_id: int, exc: BaseException, retries: int = 0,
               settings: Settings | None = None) -> Failure:
    """Fail the event once: status, a ``failed`` stage row, a ``processing_errors`` row, the
    file's outcome in its batch and, for a failure that is a property of the file, the
    correction plan (else an operator alert) — all in one transaction. Writes nothing if the
    event already ended. An exception that is not an :class:`IngestError` is a bug:
    ``internal_error``.
    """
    settings = settings or get_settings()
    category = exc.category if isinstance(exc, IngestError) else INTERNAL_ERROR
    failed_stage = getattr(exc, "stage", None)
    with session_scope() as s:
        row = s.execute(
            update(FileEvent)
            # not yet claimed too: an exception before the claim must not strand the event
            .where(FileEvent.id == event_id,
                   FileEvent.status.in_(("received", "enqueued", "processing")))
            .values(status="failed", last_error=f"{category}: {exc}", updated_at=_now(),
                    **ATTEMPT_ENDED)
            .returning(FileEvent)
        ).scalar_one_or_none()
        if row is None:
            return Failure()
        batch_id = record_file_outcome(
            s, event_id, succeeded=False, error_category=category, error_message=str(exc)
        ) or batch_of_event(s, event_id)
        bind(document_id=row.document_id, batch_id=batch_id)
        s.add(
            FileProcessingStatus(
                file_event_id=event_id, file_document_id=row.document_id,
                processing_stage="failed", status="failed", stage_end_time=func.now(),
                error_message=str(exc), error_details={"category": category},
            )
        )
        s.add(
            ProcessingErrorRow(
                file_event_id=event_id,
                file_document_id=row.document_id,
                batch_id=batch_id,
                error_category=category,
                error_message=str(exc) or type(exc).__name__,
                error_details={"exception": type(exc).__name__, "stage": failed_stage},
                stack_trace="".join(traceback.format_exception(exc)),
                processing_stage=failed_stage,
                retry_count=max(0, retries),
                auto_correction_triggered=category in CORRECTABLE,
            )
        )
        entry = (row.payload or {}).get("entry") or {}
        correction_id = plan_correction(s, event=row, batch_id=batch_id, category=category,
                                        message=str(exc), entry=entry, settings=settings)
        if category in OPERATOR_CATEGORIES:
            raise_alert(s, FILE_NEEDS_OPERATOR, f"{category}:{batch_id or event_id}",
                        f"{category}, event {event_id}", _operator_body(row, category, exc),
                        batch_id=batch_id, document_id=row.document_id)
    metrics.FILES.labels("failed", category).inc()
    log.warning("event %s failed (%s): %s", event_id, category, exc)
    return Failure(batch_id, correction_id)


def _operator_body(row: FileEvent, category: str, exc: BaseException) -> str:
    return "\n".join([
        f"A file failed with {category}: the cause is on our side, not in the file, so",
        "nothing was deleted. Fix the cause, then re-send the file's webhook or update its",
        "CMS entry to process it again.",
        "",
        f"Event:     {row.id}",
        f"Document:  {row.document_id}",
        f"Error:     {type(exc).__name__}: {exc}",
        "",
        "Further files of the same batch and category are not alerted again; see",
        "processing_errors for all of them.",
    ]) + "\n"

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
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Interval,
    Select,
    Text,
    bindparam,
    case,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from ingest import metrics
from ingest.adapters.cms import CmsClient
from ingest.adapters.s3 import ObjectInfo, S3Store
from ingest.adapters.vectors import Replacement, VectorStore
from ingest.addresses import usable_address
from ingest.batches import (
    NO_RECIPIENT,
    batch_of_event,
    file_outcome,
    join_batch,
    leave_batch,
    record_file_outcome,
    recount,
)
from ingest.corrections import plan_correction
from ingest.db import Prebuilt, advisory_xact_lock, session_scope
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
from ingest.events import DELETE_EVENTS, UPSERT_EVENTS, FileEntry, event_kind
from ingest.leases import heartbeat, owner, owner_dead
from ingest.log_context import bind, binds
from ingest.mail.alerts import FILE_NEEDS_OPERATOR, raise_alert
from ingest.models import BatchFile, BatchProcessingSession, FileEvent, FileProcessingStatus
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


def warm_up() -> Services:
    """Build the process's adapters and run its embedder (and tokenizer) once, so that the
    first file a new process takes does not pay for them. Touches no remote system: S3,
    Chroma and the CMS are reached on first use, as before."""
    svc = default_services()
    svc.embedder.embed(["warm-up"])
    if svc.embedder.name == "minilm":
        from ingest.pipeline.tokens import minilm_tokenizer

        minilm_tokenizer()
    return svc


@dataclass(frozen=True)
class Outcome:
    """What became of an event: ``done``, ``ignored`` (stale), ``failed`` or ``skipped``."""

    status: str
    chunks: int = 0
    detail: str = ""
    batch_id: uuid.UUID | None = None
    correction_id: int | None = None
    #: The batch is still open and not due before this time: nothing to check yet.
    batch_open_until: datetime | None = None
    #: The event, and for ``released`` (a file processed with others that must run again
    #: on its own: ``ingest.pipeline.together``) when to run it again.
    event_id: int | None = None
    retry_in: float | None = None


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
    #: Upserts only, read by the claiming statement itself: superseded already, the
    #: ``download`` stage row it opened (None when stale), the batch an earlier attempt joined.
    stale: bool = False
    download_stage: int | None = None
    batch_id: uuid.UUID | None = None


#: What ending an attempt clears: it is no longer running, and holds no lease.
ATTEMPT_ENDED: dict[str, Any] = {"running_since": None, "lease_until": None, "claimed_by": None}


def _now() -> datetime:
    return datetime.now(UTC)


# The statements every file runs are built once (``Prebuilt``), on the tables (Core): what
# changes per call is a bind parameter. ``now`` is this process's clock (``updated_at``, as
# before); ``func.now()`` the transaction's.
_EVENTS = FileEvent.__table__
_EV = _EVENTS.c
_STAGES = FileProcessingStatus.__table__
_FILES = BatchFile.__table__
_BATCHES = BatchProcessingSession.__table__
_NOW = bindparam("now", type_=DateTime(timezone=True))
_EVENT_ID = bindparam("event_id", type_=Integer)
_DOC = bindparam("doc", type_=Text)
_LIVE = ("received", "enqueued", "processing")


def claim(event_id: int, lease_seconds: float = 60.0) -> ClaimedEvent | None:
    """received/enqueued/processing → processing, with a lease owned by this process.

    None if the event already ended, or if another attempt holds a live lease on it (a
    duplicate delivery: never run one event twice at once). Taking over an attempt that
    still had ``running_since`` set (its owner died) counts one worker loss. The common case,
    an event nobody runs, is one conditional UPDATE; the row is read (locked) only when that
    finds nothing, to tell an ended event from a held one and a held one from a dead owner's.
    """
    with session_scope() as s:
        row = _CLAIM.run(s, event_id=event_id, **claim_params(lease_seconds)).one()
        if row[0] is not None:
            return ClaimedEvent(*row[:-1])
        if row[-1] not in _LIVE:
            return None
        current = s.execute(
            select(FileEvent.status, FileEvent.running_since, FileEvent.lease_until,
                   FileEvent.claimed_by, func.now().label("now"))
            .where(FileEvent.id == event_id).with_for_update()
        ).one_or_none()
        if current is None or current.status not in _LIVE:
            return None
        if (current.running_since is not None and current.lease_until is not None
                and current.lease_until > current.now
                and not owner_dead(current.claimed_by)):
            log.info("event %s is held by %s until %s; not run twice", event_id,
                     current.claimed_by, current.lease_until)
            return None
        rows = take(s, _TAKE_ONE, lease_seconds, event_id=event_id)
    return rows[0] if rows else None


def claim_params(lease_seconds: float) -> dict[str, Any]:
    """The bind parameters of a :func:`claiming` statement but for its condition's."""
    return {"lease": timedelta(seconds=lease_seconds), "now": _now(), "owner": owner()}


def take(s: Session, claiming: Prebuilt, lease_seconds: float,
         **params: Any) -> list[ClaimedEvent]:
    """Run a :func:`claiming` statement (``params`` bind its condition); what it claimed."""
    return [ClaimedEvent(*row)
            for row in claiming.run(s, **claim_params(lease_seconds), **params)]


def claiming(condition: Any) -> Select[Any]:
    """The claiming UPDATE of the live events that meet ``condition``, as a SELECT of the
    :class:`ClaimedEvent` fields (binds ``lease``, ``now`` and ``owner``:
    :func:`claim_params`).

    For an upsert the same statement checks whether it is superseded already, opens its
    ``download`` stage row unless it is, and reads the batch an earlier attempt joined:
    one round trip where there were two transactions.
    """
    taken = (
        update(_EVENTS)
        .where(_EV.status.in_(_LIVE), condition)
        .values(status="processing", attempts=_EV.attempts + 1, updated_at=_NOW,
                # still set = the previous attempt died with its worker process
                worker_losses=_EV.worker_losses + case(
                    (_EV.running_since.is_not(None), 1), else_=0),
                running_since=func.now(),
                lease_until=func.now() + bindparam("lease", type_=Interval),
                claimed_by=bindparam("owner", type_=Text))
        .returning(_EV.id, _EV.event, _EV.document_id, _EV.entry_updated_at, _EV.payload,
                   _EV.attempts, _EV.worker_losses)
        .cte("taken")
    )
    stale = taken.c.event.in_(UPSERT_EVENTS) & exists().where(
        _supersedes(_EV, taken.c.id, taken.c.document_id, taken.c.entry_updated_at,
                    upsert=True))
    opened = (
        insert(_STAGES)
        .from_select(["file_event_id", "file_document_id", "processing_stage", "status"],
                     select(taken.c.id, taken.c.document_id, literal("download"),
                            literal("processing"))
                     .where(taken.c.event.in_(UPSERT_EVENTS), ~stale))
        .returning(_STAGES.c.id, _STAGES.c.file_event_id)
        .cte("opened")
    )
    joined = (select(_FILES.c.batch_id).where(_FILES.c.file_event_id == taken.c.id)
              .scalar_subquery())
    return (select(*taken.c, stale, opened.c.id, joined)
            .select_from(taken.outerjoin(opened, opened.c.file_event_id == taken.c.id)))


def _claim_by_id() -> Select[Any]:
    """:func:`claiming` of event ``event_id`` unless a live attempt holds it, beside the
    event's status (read in the statement's snapshot, before the claim: only looked at when
    it took nothing), which is all a duplicate message of a finished event costs."""
    free = (_EV.running_since.is_(None) | _EV.lease_until.is_(None)
            | (_EV.lease_until <= func.now()))
    picked = claiming((_EV.id == _EVENT_ID) & free).subquery()
    state = select(_EV.status).where(_EV.id == _EVENT_ID).scalar_subquery()
    return select(picked, state).select_from(
        select(literal(1)).subquery().outerjoin(picked, true()))


def _supersedes(other: Any, event_id: Any, document_id: Any, updated_at: Any, *,
                upsert: bool) -> Any:
    """The condition on a row ``other`` of ``file_events`` (its columns) that supersedes the
    event (DESIGN §7): any event loses to one with a later ``updatedAt``; an upsert also
    loses to a delete with the same ``updatedAt`` (a delete wins over an older or equal
    create)."""
    newer = (other.entry_updated_at > updated_at) & (other.status != "ignored")
    if upsert:
        newer = newer | (other.event.in_(DELETE_EVENTS) & (other.entry_updated_at >= updated_at))
    return (other.document_id == document_id) & (other.id != event_id) & newer


def _lock_document(upsert: bool) -> Prebuilt:
    superseded = exists().where(_supersedes(
        _EV, _EVENT_ID, _DOC, bindparam("updated", type_=DateTime(timezone=True)),
        upsert=upsert))
    return Prebuilt(select(advisory_xact_lock(_DOC), superseded))


_CLAIM = Prebuilt(_claim_by_id())
_TAKE_ONE = Prebuilt(claiming(_EV.id == _EVENT_ID))
_LOCK_DOCUMENT = {upsert: _lock_document(upsert) for upsert in (True, False)}
_FINISH = Prebuilt(
    update(_EVENTS)
    .where(_EV.id == _EVENT_ID, _EV.status == "processing")
    .values(status=bindparam("to_status", type_=Text), last_error=bindparam("error", type_=Text),
            updated_at=_NOW, **ATTEMPT_ENDED)
    .returning(_EV.id)
)


def lock_document(s: Session, ev: ClaimedEvent) -> bool:
    """Take the document's advisory lock for the transaction; return whether ``ev`` is
    superseded by a newer event of the same document (one statement).

    The check reads the snapshot of before the lock was granted. That is enough: the rows
    it reads are events, which are stored before any worker takes the lock for them, so a
    newer event whose holder we waited for was already there when we asked.
    """
    locking = _LOCK_DOCUMENT[event_kind(ev.event) == "upsert"]
    return bool(locking.run(s, event_id=ev.id, doc=ev.document_id,
                            updated=ev.entry_updated_at).one()[1])


def finish(s: Session, event_id: int, status: str, error: str | None = None) -> bool:
    """processing → a terminal status; False if another run finished it first."""
    return _FINISH.run(s, event_id=event_id, to_status=status, error=error,
                       now=_now()).first() is not None


def end_attempt(event_id: int) -> None:
    """The attempt ended without a terminal status (a retry follows): not a worker loss."""
    with session_scope() as s:
        s.execute(update(FileEvent)
                  .where(FileEvent.id == event_id, FileEvent.claimed_by == owner())
                  .values(**ATTEMPT_ENDED))


@dataclass
class StageRow:
    """The ``file_processing_status`` row of a running stage, and what the attempt saw
    meanwhile, recorded on the event with the stage's end, whichever way it ends."""

    row_id: int
    ended: bool = False
    saw: ObjectInfo | None = None


def _ending(saw: bool) -> list[Any]:
    """The writes that end a stage row, as CTEs: they run in the statement that follows them
    (the next stage's start, the outcome it led to), so no reader sees a finished event whose
    last stage still runs, nor a stage whose successor is missing. Binds
    :func:`_ending_params`; with ``saw``, also what the attempt saw, on the event."""
    ctes = [update(_STAGES).where(_STAGES.c.id == bindparam("row_id", type_=Integer))
            .values(status=bindparam("end_status", type_=Text), stage_end_time=func.now(),
                    updated_at=_NOW, error_message=bindparam("error", type_=Text),
                    error_details=bindparam("details", type_=JSONB))
            .returning(_STAGES.c.id).cte("ended")]
    if saw:
        ctes.append(update(_EVENTS).where(_EV.id == _EVENT_ID)
                    .values(object_key=bindparam("saw_key", type_=Text),
                            object_etag=bindparam("saw_etag", type_=Text),
                            object_size=bindparam("saw_size", type_=BigInteger))
                    .returning(_EV.id).cte("saw"))
    return ctes


def _ending_params(ev_id: int, row: StageRow, status: str,
                   exc: BaseException | None = None) -> dict[str, Any]:
    """The bind parameters of :func:`_ending` that end ``row`` with ``status`` (use the
    ``saw`` variant when ``row.saw`` is set); ``row`` counts as ended from here on."""
    row.ended = True
    params = {"row_id": row.row_id, "end_status": status, "now": _now(),
              "error": str(exc) if exc else None,
              "details": {"exception": type(exc).__name__} if exc else None}
    if row.saw is not None:
        params |= {"event_id": ev_id, "saw_key": row.saw.key, "saw_etag": row.saw.etag,
                   "saw_size": row.saw.size}
    return params


def _stage_row(status: str) -> Any:
    """The INSERT of a stage row of event ``event_id`` (binds also ``doc`` and ``stage``),
    returning its id."""
    values: dict[str, Any] = {"file_event_id": _EVENT_ID, "file_document_id": _DOC,
                              "processing_stage": bindparam("stage", type_=Text),
                              "status": status}
    if status != "processing":
        values["stage_end_time"] = func.now()
    return insert(_STAGES).values(**values).returning(_STAGES.c.id)


_OPEN_STAGE = Prebuilt(_stage_row("processing"))
#: A stage's row, with the end of the stage before it (and of what that one saw, or not).
_NEXT_STAGE = {saw: Prebuilt(_stage_row("processing").add_cte(*_ending(saw)))
               for saw in (False, True)}
_END_STAGE = {saw: Prebuilt(select(literal(1)).add_cte(*_ending(saw))) for saw in (False, True)}


@contextmanager
def stage(ev: ClaimedEvent, name: str, *, started: StageRow | None = None,
          after: StageRow | None = None, hand_on: bool = False) -> Iterator[StageRow]:
    """Record a stage in ``file_processing_status``: processing → success | failed.

    The row is written by one statement of its own, which also ends the stage ``after`` (one
    statement from one stage to the next), unless the caller ``started`` it. A failed stage
    is ended at once; a stage that succeeds is ended on leaving the block, or, with
    ``hand_on``, by the next stage (``after=``) or by the outcome (:func:`_ending`).
    """
    current = started
    if current is None:
        opening, params = _OPEN_STAGE, {"event_id": ev.id, "doc": ev.document_id, "stage": name}
        if after is not None and not after.ended:
            opening = _NEXT_STAGE[after.saw is not None]
            params |= _ending_params(ev.id, after, "success")
        with session_scope() as s:
            current = StageRow(opening.run(s, **params).scalar_one())
    try:
        yield current
    except Exception as exc:
        if isinstance(exc, IngestError) and not hasattr(exc, "stage"):
            exc.stage = name  # type: ignore[attr-defined]
        _end_stage(ev, current, "failed", exc)  # also after _ending: it rolled back
        raise
    if not current.ended and not hand_on:
        _end_stage(ev, current, "success", None)


def _end_stage(ev: ClaimedEvent, row: StageRow, status: str,
               exc: BaseException | None) -> None:
    ending = _END_STAGE[row.saw is not None]
    with session_scope() as s:
        ending.run(s, **_ending_params(ev.id, row, status, exc))


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


def _download(ev: ClaimedEvent, entry: FileEntry, svc: Services, download: StageRow) -> bytes:
    """The object's bytes; what was opened (key, ETag, size) is recorded with the end of the
    download stage, also when reading fails, so it is there before any failure is."""
    assert entry.storage_key is not None
    try:
        obj = svc.s3.open(entry.storage_key)
    except FileNotFound:
        raise _object_missing(ev, entry, svc) from None
    download.saw = obj.info
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


@dataclass(frozen=True)
class Embed:
    """What an upsert asks its driver for: the embeddings of these texts."""

    texts: list[str]


@dataclass(frozen=True)
class Write:
    """What an upsert asks its driver for while it holds its document's lock: write these
    chunks (the driver answers with their number), or None to write them itself."""

    replacement: Replacement


#: The steps of an upsert: it yields its requests and returns its outcome.
UpsertSteps = Generator[Embed | Write, Any, Outcome]


def upsert_steps(ev: ClaimedEvent, svc: Services) -> UpsertSteps:
    """Process an upsert, handing its embedding and its Chroma write to the driver (see
    :func:`run_steps` for one file, :func:`run_together` for several at once)."""
    if ev.stale:
        return _ignore(ev, "superseded by a newer event of the document")
    assert ev.download_stage is not None  # the claim opened it
    try:
        with stage(ev, "download", started=StageRow(ev.download_stage),
                   hand_on=True) as download:
            entry = resolve_entry(ev, svc.cms)
            joined = ev.batch_id or _join(ev, entry, svc)
            bind(batch_id=joined)
            check_key(entry, svc.settings)
            with metrics.timed("download"):
                data = _download(ev, entry, svc, download)
    except Superseded as exc:
        return _ignore(ev, f"superseded: {exc}")
    with stage(ev, "processing", after=download, hand_on=True) as processing:
        chunks = _extract_chunks(data, entry, svc.settings, svc.embedder.name)
        embeddings = yield Embed([chunk.text for chunk in chunks])
    with stage(ev, "storage", after=processing) as storage, session_scope() as s:
        if lock_document(s, ev):
            finish(s, ev.id, "ignored", "superseded while processing")
            return Outcome("ignored", detail="superseded while processing",
                           batch_id=leave_batch(s, ev.id))
        replacement = Replacement(
            ev.document_id, embeddings, [chunk.text for chunk in chunks],
            [_chunk_metadata(entry, n, chunk) for n, chunk in enumerate(chunks)])
        stored = yield Write(replacement)
        if stored is None:
            with metrics.timed("store"):
                stored = svc.vectors.replace_documents([replacement])[0]
        counted = _STORED.run(s, event_id=ev.id, doc=ev.document_id, stage="completed",
                              chunks=stored, **_ending_params(ev.id, storage, "success")
                              ).scalars().first()
        due = recount(s, counted) if counted is not None else None
    return Outcome("done", chunks=stored, batch_id=counted or joined, batch_open_until=due)


def _stored() -> Select[Any]:
    """The end of an upsert that stored its chunks, in one statement: the event done, the
    storage stage ended and the completed one written, the file's outcome in its batch with
    the batch row locked for its count; returns the batch and that count."""
    outcome = file_outcome(succeeded=True).cte("outcome")
    locked = (select(_BATCHES.c.id)
              .where(_BATCHES.c.batch_id.in_(select(outcome.c.batch_id)))
              .with_for_update().cte("locked"))
    done = (update(_EVENTS)
            .where(_EV.id == _EVENT_ID, _EV.status == "processing")
            .values(status="done", last_error=None, updated_at=_NOW, **ATTEMPT_ENDED)
            .returning(_EV.id).cte("done"))
    completed = _stage_row("success").cte("completed")
    return (select(outcome.c.batch_id, select(func.count()).select_from(locked)
                   .scalar_subquery())  # a SELECT in WITH runs only where it is used
            .add_cte(*_ending(saw=False), done, completed))  # storage sees no object


_STORED = Prebuilt(_stored())


def run_steps(steps: UpsertSteps, svc: Services) -> Outcome:
    """Drive one upsert alone: embed its texts, let it write its chunks itself."""
    answer: Any = None
    try:
        request = next(steps)
        while True:
            try:
                answer = serve_alone(request, svc)
            except Exception as exc:  # noqa: BLE001 - the upsert's own stage records it
                request = steps.throw(exc)
            else:
                request = steps.send(answer)
    except StopIteration as stop:
        return stop.value


def serve_alone(request: Embed | Write, svc: Services) -> Any:
    if isinstance(request, Embed):
        with metrics.timed("embed"):
            return svc.embedder.embed(request.texts)
    return None  # Write: the upsert writes its chunks itself


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
        if lock_document(s, ev):
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
    ev = claim_bound(event_id, svc)
    if ev is None:
        return SKIPPED
    with heartbeat(event_id, svc.settings.event_lease_seconds):
        return run_claimed(ev, svc)


#: The outcome of a message whose event is finished, or running elsewhere.
SKIPPED = Outcome("skipped", detail="already finished, or running elsewhere")


def claim_bound(event_id: int, svc: Services) -> ClaimedEvent | None:
    """:func:`claim` with the services' lease; binds the document for the log lines."""
    ev = claim(event_id, svc.settings.event_lease_seconds)
    if ev is not None:
        bind(document_id=ev.document_id)
    return ev


def run_claimed(ev: ClaimedEvent, svc: Services) -> Outcome:
    started = time.perf_counter()
    is_delete = event_kind(ev.event) == "delete"
    try:
        check_losses(ev, svc.settings)
        outcome = (_process_delete(ev, svc) if is_delete
                   else run_steps(upsert_steps(ev, svc), svc))
    except PermanentError as exc:
        return failed(ev, exc, svc.settings)
    except BaseException:
        end_attempt(ev.id)
        raise
    report(ev, outcome, started, deleted=is_delete and outcome.status == "done")
    return outcome


def check_losses(ev: ClaimedEvent, settings: Settings) -> None:
    """Raise :class:`ResourceLimit` once the event's workers were lost too often."""
    if ev.worker_losses >= settings.max_worker_losses:
        raise ResourceLimit(
            f"the worker processing this file was lost {ev.worker_losses} times (killed "
            "or out of memory); it is not tried again (MAX_WORKER_LOSSES)")


def failed(ev: ClaimedEvent, exc: PermanentError, settings: Settings) -> Outcome:
    """Fail the event for good (:func:`fail_event`); its outcome."""
    failure = fail_event(ev.id, exc, retries=ev.attempts - 1, settings=settings)
    return Outcome("failed", detail=f"{exc.category}: {exc}", batch_id=failure.batch_id,
                   correction_id=failure.correction_id, event_id=ev.id)


def report(ev: ClaimedEvent, outcome: Outcome, started: float, *, deleted: bool = False,
           together: int = 1) -> None:
    """Count and log how an event ended."""
    metrics.FILES.labels("deleted" if deleted else outcome.status, "none").inc()
    log.info("event %s (%s %s) %s in %.2fs, %d chunks%s", ev.id, ev.event, ev.document_id,
             outcome.status, time.perf_counter() - started, outcome.chunks,
             f" (with {together - 1} other files)" if together > 1 else "")


@dataclass(frozen=True)
class Failure:
    """What failing an event created: its batch (if any) and its correction (if planned)."""

    batch_id: uuid.UUID | None = None
    correction_id: int | None = None
    #: Always None: a failure is rare, its batch is checked (it may have been the last file).
    batch_open_until: datetime | None = None


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

"""Batches: join, seal, close — with conditional updates only (DESIGN §4).

A batch gathers the files of one uploader (company, bot, user e-mail, case-insensitive).
Rules:

- **Join**: a processed file joins the uploader's open batch (``sealed_at IS NULL``); the
  partial unique index allows only one open batch per uploader, so concurrent joins that
  race to create it meet on the same row (``INSERT … ON CONFLICT DO NOTHING`` then lock).
- **Seal**: at ``batch_size_threshold`` files, when no file joined for
  ``notification_delay_minutes``, or at ``MAX_BATCH_AGE_HOURS`` — whichever first. The due
  time lives in ``close_at``; whoever checks (a countdown hint of at most five minutes, the
  beat sweeper, the last file's task) only compares it with the database clock.
- **Close**: a sealed batch closes when every file and every correction is terminal; files
  stuck longer than ``BATCH_FILE_TIMEOUT_MINUTES`` fail as ``timeout``. The closing UPDATE
  is conditional (``WHERE status = 'processing'``), so two checks close it once, and the
  same transaction writes the one ``email_notification_log`` row (unique per batch and type).
- **Quiet hours**: a batch that closes inside the user's quiet window (its preference
  snapshot, so the decision is stable) still closes now; its e-mail row carries
  ``send_not_before`` = the window's end (``ingest.quiet_hours``) and no send task is
  published: the beat sweeper publishes it once that instant has passed (a countdown of
  hours on the Redis broker would be redelivered after the visibility timeout).
- **Daily digest**: a batch of a ``frequency: daily`` snapshot closes on time too; its row
  is ``skipped`` with the reason "in the daily digest" and ``for_digest``, so nothing sends
  it (only ``pending`` rows are claimed or re-driven) and the next daily digest
  (``ingest.digests``) covers it. Its bot's channels are notified at close as for anyone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Text,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest import metrics
from ingest.db import Prebuilt, session_scope
from ingest.digests import DIGEST_REASON
from ingest.errors import TIMEOUT
from ingest.log_context import binds
from ingest.models import (
    AutoCorrectionTask,
    BatchFile,
    BatchProcessingSession,
    EmailNotificationLog,
)
from ingest.preferences import Preferences
from ingest.quiet_hours import deferred_until
from ingest.settings import Settings

log = logging.getLogger(__name__)

BATCH_EMAIL = "batch_completion"
HINT_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class Joined:
    """The batch a file joined."""

    batch_id: uuid.UUID
    created: bool
    sealed: bool
    close_at: datetime


@dataclass(frozen=True)
class Check:
    """The result of checking a batch: closed now (with status), or when to look again.

    ``email_pending``: its e-mail may be sent now; ``email_deferred_until``: not before then
    (quiet hours; the beat sweeper sends it).
    """

    batch_id: uuid.UUID
    closed_status: str | None = None
    email_pending: bool = False
    next_check_at: datetime | None = None
    email_deferred_until: datetime | None = None


def subject_for(succeeded: int, failed: int) -> str:
    """The summary e-mail's subject (DESIGN §4)."""
    return f"File Processing Complete - {succeeded} Success, {failed} Failed"


def _db_now(s: Session) -> datetime:
    return s.execute(select(func.now())).scalar_one()


def _due(start: datetime, now: datetime, prefs: Preferences, settings: Settings) -> datetime:
    quiet = now + timedelta(minutes=prefs.notification_delay_minutes)
    return min(quiet, start + timedelta(hours=settings.max_batch_age_hours))


_BATCHES = BatchProcessingSession.__table__
_FILES = BatchFile.__table__
_B, _F = _BATCHES.c, _FILES.c
_NOW = bindparam("now", type_=DateTime(timezone=True))
_BATCH = bindparam("batch", type_=_B.batch_id.type)
_EVENT_ID = bindparam("event_id", type_=Integer)

#: The uploader's open batch, locked, with the database clock.
_OPEN_BATCH = Prebuilt(
    select(_B.batch_id, _B.batch_start_time, _B.user_preferences_snapshot,
           func.now().label("now"))
    .where(_B.company_id == bindparam("company", type_=Integer),
           _B.bot_id == bindparam("bot", type_=Integer),
           _B.user_email == bindparam("email", type_=Text), _B.sealed_at.is_(None))
    .with_for_update(of=_BATCHES)
)


def _open_batch(s: Session, company_id: int, bot_id: int, email: str) -> Any:
    """The uploader's open batch, locked, with the database clock (``now``); None if none."""
    return _OPEN_BATCH.run(s, company=company_id, bot=bot_id, email=email).one_or_none()


def _create_open_batch(
    s: Session, company_id: int, bot_id: int, email: str, prefs: Preferences,
    settings: Settings,
) -> bool:
    """Open the uploader's batch now (the database clock) unless one is open already."""
    first_due = min(timedelta(minutes=prefs.notification_delay_minutes),
                    timedelta(hours=settings.max_batch_age_hours))  # :func:`_due` at the start
    created = s.execute(
        insert(BatchProcessingSession)
        .values(
            batch_id=uuid.uuid4(), company_id=company_id, bot_id=bot_id, user_email=email,
            batch_start_time=func.now(), last_file_at=func.now(),
            close_at=func.now() + first_due,
            user_preferences_snapshot=prefs.model_dump(mode="json"),
        )
        .on_conflict_do_nothing(
            index_elements=["company_id", "bot_id", "user_email"],
            index_where=BatchProcessingSession.sealed_at.is_(None),
        )
        .returning(BatchProcessingSession.id)
    ).first()
    return created is not None


#: What the record of a file says when it succeeded after the batch reported it timed out.
LATE_SUCCESS = "succeeded after the batch was reported: it had been counted as timed out"

#: The batch address of files whose uploader has no usable address and no fallback is set:
#: their batch closes as usual and its e-mail is recorded as skipped, with the reason.
NO_RECIPIENT = ""


def join_batch(
    *, event_id: int, document_id: str, file_name: str, size_bytes: int | None,
    company_id: int, bot_id: int, user_email: str, prefs: Preferences, settings: Settings,
) -> Joined:
    """Add the file to the uploader's open batch (creating it), and seal it if full."""
    email = user_email.strip().lower()
    with session_scope() as s:
        created = False
        found = _open_batch(s, company_id, bot_id, email)
        if found is None:
            created = _create_open_batch(s, company_id, bot_id, email, prefs, settings)
            found = _open_batch(s, company_id, bot_id, email)  # ours, or the racing winner's
        assert found is not None
        batch, now = found.batch_id, found.now
        snapshot = Preferences.model_validate(found.user_preferences_snapshot or {})
        total_now, close_at = _JOIN.run(
            s, batch=batch, event_id=event_id, doc=document_id, name=file_name,
            size=size_bytes, now=now, threshold=snapshot.batch_size_threshold,
            due=_due(found.batch_start_time, now, snapshot, settings)).one()
        return Joined(batch, created, total_now >= snapshot.batch_size_threshold, close_at)


def _file_count(batch_id: Any) -> Any:
    """The number of files of a batch, as a scalar subquery (counted by the statement that
    uses it, in its own snapshot)."""
    return select(func.count()).where(_F.batch_id == batch_id).scalar_subquery()


def _join() -> Any:
    """One statement: the file's row in batch ``batch`` (locked by the caller), and the
    count (the rows of the snapshot, taken after that lock, plus the one just inserted) with
    the decision it leads to: at ``threshold`` files sealed ``now``, else due at ``due``."""
    row = {"file_event_id": _EVENT_ID, "file_name": bindparam("name", type_=Text),
           "file_size_bytes": bindparam("size", type_=BigInteger),
           "processing_status": "processing", "processing_start_time": _NOW}
    added = (
        insert(_FILES)
        .values(batch_id=_BATCH, file_document_id=bindparam("doc", type_=Text), **row)
        .on_conflict_do_update(
            constraint="uq_batch_files_document",
            set_=row | {"processing_end_time": None, "error_message": None,
                        "error_category": None, "updated_at": _NOW},
        )
        .returning(literal_column("xmax = 0").label("inserted"))  # not a conflict
        .cte("added")
    )
    total = _file_count(_BATCH) + (
        select(func.count()).select_from(added).where(added.c.inserted).scalar_subquery())
    full = total >= bindparam("threshold", type_=Integer)
    return (
        update(_BATCHES)
        .where(_B.batch_id == _BATCH)
        .values(total_files=total, last_file_at=_NOW,
                close_at=case((full, _NOW),
                              else_=bindparam("due", type_=DateTime(timezone=True))),
                sealed_at=case((full, _NOW), else_=None), updated_at=_NOW)
        .returning(_B.total_files, _B.close_at)
        .add_cte(added)
    )


_JOIN = Prebuilt(_join())


def file_outcome(*, succeeded: bool) -> Any:
    """The UPDATE (returning ``batch_id``) that writes the outcome of event ``event_id`` on
    its batch row: ``chunks``, and for a failure ``category`` and ``message`` (bind
    parameters; :func:`record_file_outcome` passes them).

    It changes the row only while this event owns a live one — or, for a success, a row the
    batch already reported as timed out: the record then says the file succeeded late. The
    batch's counters are brought up to date by :func:`recount` after it.
    """
    now = func.now()  # the transaction's start, as SELECT now() would return it
    live = _F.processing_status.in_(("pending", "processing"))
    late = (_F.processing_status == "failed") & (_F.error_category == TIMEOUT)
    if succeeded:
        owned, category, message = live | late, None, case((late, LATE_SUCCESS), else_=None)
    else:
        owned = live
        category = bindparam("category", type_=Text)
        message = bindparam("message", type_=Text)
    return (
        update(_FILES)
        .where(_F.file_event_id == _EVENT_ID, owned)
        .values(
            processing_status="success" if succeeded else "failed",
            chunks_created=bindparam("chunks", type_=Integer), error_category=category,
            error_message=message, processing_end_time=now,
            processing_time_seconds=func.greatest(
                0, func.extract("epoch", now - _F.processing_start_time)
            ).cast(_F.processing_time_seconds.type),
            updated_at=now,
        )
        .returning(_F.batch_id)
    )


_FILE_OUTCOME = {succeeded: Prebuilt(file_outcome(succeeded=succeeded))
                 for succeeded in (True, False)}
_LOCK_BATCH = Prebuilt(select(_B.id).where(_B.batch_id == _BATCH).with_for_update())


def record_file_outcome(
    s: Session, event_id: int, *, succeeded: bool, chunks: int = 0,
    error_category: str | None = None, error_message: str | None = None,
) -> uuid.UUID | None:
    """Write the file's outcome on its batch row (:func:`file_outcome`) and the batch's
    live counters; the batch's id, or None when the event owns no row."""
    params: dict[str, Any] = {"event_id": event_id, "chunks": chunks}
    if not succeeded:
        params |= {"category": error_category, "message": (error_message or "")[:2000] or None}
    row = _FILE_OUTCOME[succeeded].run(s, **params).first()
    if row is None:
        return None
    _LOCK_BATCH.run(s, batch=row.batch_id)
    recount(s, row.batch_id)
    return row.batch_id


def _recount() -> Any:
    now = func.now()
    ok, failed = (select(func.count()).where(_F.batch_id == _BATCH,
                                             _F.processing_status == outcome)
                  .scalar_subquery() for outcome in ("success", "failed"))
    status = case((_B.status == "processing", "processing"), else_=_status_sql(ok, failed))
    open_until = case(
        ((_B.sealed_at.is_(None)) & (_B.close_at > now) & (_B.status == "processing"),
         _B.close_at),
        else_=None)
    return (
        update(_BATCHES)
        .where(_B.batch_id == _BATCH)
        .values(total_files=_file_count(_BATCH), successful_files=ok, failed_files=failed,
                status=status, updated_at=now)
        .returning(open_until)
    )


def recount(s: Session, batch_id: uuid.UUID) -> datetime | None:
    """Counters (and, once closed, the status) of a batch, derived from its files again;
    returns its ``close_at`` while it is open and not yet due (nothing to check before),
    else None.

    The caller has locked the batch row in an earlier statement, so two files finishing at
    once count each other (this UPDATE, whose counts run in its own snapshot, starts after
    the other's commit) instead of overwriting each other's count. An UPDATE alone would not
    do: waiting for the row lock, it would keep the counts of the snapshot it started with.
    Counts are derived from the files, not incremented: a newer version of a document takes
    over its file's row, so a count kept by increments would count that document twice.
    """
    return _RECOUNT.run(s, batch=batch_id).scalar_one_or_none()


def _status_sql(ok: Any, failed: Any) -> Any:
    """:func:`_status_of` in SQL."""
    return case((failed == 0, "completed"), (ok == 0, "failed"), else_="partially_completed")


_RECOUNT = Prebuilt(_recount())


def _status_of(succeeded: int, failed: int) -> str:
    return "completed" if failed == 0 else ("failed" if succeeded == 0 else
                                            "partially_completed")


def batch_of_event(s: Session, event_id: int) -> uuid.UUID | None:
    """The batch a file event joined, if any."""
    return s.execute(
        select(BatchFile.batch_id).where(BatchFile.file_event_id == event_id)
    ).scalar_one_or_none()


def leave_batch(s: Session, event_id: int) -> uuid.UUID | None:
    """Remove a superseded event's file from its batch (the newer version reports it)."""
    row = s.execute(
        delete(BatchFile)
        .where(BatchFile.file_event_id == event_id,
               BatchFile.processing_status.in_(("pending", "processing")))
        .returning(BatchFile.batch_id)
    ).first()
    if row is None:
        return None
    total = s.execute(select(func.count()).where(BatchFile.batch_id == row.batch_id)).scalar_one()
    s.execute(update(BatchProcessingSession)
              .where(BatchProcessingSession.batch_id == row.batch_id)
              .values(total_files=total))
    return row.batch_id


def _timeout_stuck_files(s: Session, batch_id: uuid.UUID, now: datetime,
                         settings: Settings) -> None:
    limit = now - timedelta(minutes=settings.batch_file_timeout_minutes)
    s.execute(
        update(BatchFile)
        .where(BatchFile.batch_id == batch_id,
               BatchFile.processing_status.in_(("pending", "processing")),
               BatchFile.updated_at < limit)
        .values(processing_status="failed", error_category=TIMEOUT,
                error_message="processing did not finish in time", processing_end_time=now,
                updated_at=now)
    )


def _unfinished(s: Session, batch_id: uuid.UUID) -> int:
    """Files and corrections of the batch not yet terminal (one statement)."""
    files = select(func.count()).where(
        BatchFile.batch_id == batch_id,
        BatchFile.processing_status.in_(("pending", "processing"))).scalar_subquery()
    corrections = select(func.count()).where(
        AutoCorrectionTask.batch_id == batch_id,
        AutoCorrectionTask.status.in_(("pending", "processing"))).scalar_subquery()
    return int(s.execute(select(files + corrections)).scalar_one())


def _close(s: Session, batch: Any, now: datetime, settings: Settings) -> Check:
    counts = s.execute(
        select(
            func.count(),
            func.count().filter(BatchFile.processing_status == "success"),
            func.count().filter(BatchFile.processing_status == "failed"),
        ).where(BatchFile.batch_id == batch.batch_id)
    ).one()
    total, succeeded, failed = int(counts[0]), int(counts[1]), int(counts[2])
    status = _status_of(succeeded, failed)
    closed = s.execute(
        update(BatchProcessingSession)
        .where(BatchProcessingSession.batch_id == batch.batch_id,
               BatchProcessingSession.status == "processing")
        .values(status=status, total_files=total, successful_files=succeeded,
                failed_files=failed, batch_end_time=now, updated_at=now)
        .returning(BatchProcessingSession.id)
    ).first()
    if closed is None:  # another check closed it first
        return Check(batch.batch_id)
    prefs = Preferences.model_validate(batch.user_preferences_snapshot or {})
    if batch.user_email == NO_RECIPIENT:
        why = ("no usable recipient: user_email was missing or not an address, and "
               "FALLBACK_NOTIFICATION_EMAIL is not set")
    elif not (prefs.notification_enabled and settings.enable_email_notifications):
        why = "notifications disabled for this user"
    else:
        why = None
    daily = why is None and total > 0 and prefs.frequency == "daily"
    wanted = why is None and total > 0 and not daily
    later = deferred_until(now, prefs) if wanted else None
    s.execute(
        insert(EmailNotificationLog)
        .values(batch_id=batch.batch_id, recipient_email=batch.user_email,
                company_id=batch.company_id, bot_id=batch.bot_id, email_type=BATCH_EMAIL,
                email_subject=subject_for(succeeded, failed),
                send_status="pending" if wanted else "skipped",
                error_message=DIGEST_REASON if daily else why, send_not_before=later,
                for_digest=daily)
        .on_conflict_do_nothing(constraint="uq_email_batch_type")
    )
    if daily:
        metrics.EMAIL_OUTCOMES.labels("digest").inc()
    elif not wanted:
        metrics.EMAIL_OUTCOMES.labels("skipped").inc()
    elif later is not None:
        metrics.EMAIL_OUTCOMES.labels("deferred").inc()
        log.info("batch %s closed in the user's quiet hours: e-mail deferred until %s",
                 batch.batch_id, later.isoformat())
    return Check(batch.batch_id, closed_status=status, email_pending=wanted and later is None,
                 email_deferred_until=later)


@binds(batch_id="batch_id")
def check_batch(batch_id: uuid.UUID, settings: Settings) -> Check:
    """Seal the batch if due, fail stuck files, close it if finished. Safe to run twice."""
    with session_scope() as s:
        s.execute(
            update(BatchProcessingSession)
            .where(BatchProcessingSession.batch_id == batch_id,
                   BatchProcessingSession.sealed_at.is_(None),
                   BatchProcessingSession.close_at <= func.now())
            .values(sealed_at=func.now(), updated_at=func.now())
        )
        found = s.execute(
            select(BatchProcessingSession, func.now())
            .where(BatchProcessingSession.batch_id == batch_id)
            .with_for_update(of=BatchProcessingSession)
        ).one_or_none()
        batch, now = found if found is not None else (None, None)
        if batch is None or batch.status != "processing":
            return Check(batch_id)
        if batch.sealed_at is None:
            return Check(batch_id, next_check_at=batch.close_at)
        _timeout_stuck_files(s, batch_id, now, settings)
        if _unfinished(s, batch_id):
            return Check(batch_id, next_check_at=now + timedelta(
                minutes=settings.batch_file_timeout_minutes))
        return _close(s, batch, now, settings)


def batches_to_check(limit: int = 500) -> list[uuid.UUID]:
    """Open batches past their due time, and sealed batches not yet closed (for the sweeper)."""
    with session_scope() as s:
        now = _db_now(s)
        rows = s.execute(
            select(BatchProcessingSession.batch_id)
            .where(
                BatchProcessingSession.status == "processing",
                (BatchProcessingSession.sealed_at.is_not(None))
                | (BatchProcessingSession.close_at <= now),
            )
            .order_by(BatchProcessingSession.close_at)
            .limit(limit)
        ).scalars()
        return list(rows)


def hint_delay_seconds(next_check_at: datetime, now: datetime) -> float:
    """The countdown of the next hint: until the due time, but never more than 5 minutes."""
    return max(0.0, min((next_check_at - now).total_seconds(), HINT_MAX_SECONDS))

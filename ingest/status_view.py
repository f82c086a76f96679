"""The operator's read model: what happened to which batch, file, e-mail and correction.

Plain SQLAlchemy queries that return dataclasses; the ``/status`` pages
(``webhooks.status``) and ``ingest status`` (``ingest.cli.status``) both read through here.
Every view runs a fixed number of statements, whatever the number of files: one query per
table, joined in Python (no N+1). Suggestions and labels come from the e-mail's own tables
(``ingest.mail.render``), so the operator reads what the uploader was told.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import Session

from ingest.errors import TIMEOUT
from ingest.mail.render import (
    CATEGORY_LABELS,
    DEFAULT_CATEGORY_LABEL,
    DEFAULT_SUGGESTION,
    SUGGESTIONS,
)
from ingest.models import (
    BATCH_STATUSES,
    AutoCorrectionTask,
    BatchFile,
    BatchProcessingSession,
    ChannelDelivery,
    ChannelDeliveryAttempt,
    CorrectionBreaker,
    EmailDigest,
    EmailNotificationLog,
    FileEvent,
    FileProcessingStatus,
    NotificationRetryLog,
    ProcessingError,
)
from ingest.quiet_hours import describe

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 200
MAX_FAILURE_HOURS = 24 * 90
BUCKETS = ("hour", "day")


class BadParameter(ValueError):
    """A filter value is invalid; ``name`` is the parameter at fault."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def suggestion_for(category: str | None) -> str:
    """What the uploader was told to do about a failure of this category."""
    return SUGGESTIONS.get(category or "", DEFAULT_SUGGESTION)


def label_for(category: str | None) -> str:
    """The short label of a failure category (as in the e-mail)."""
    return CATEGORY_LABELS.get(category or "", DEFAULT_CATEGORY_LABEL)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


# --- recent batches ----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchFilter:
    """Which batches to list; ``None`` means any."""

    company_id: int | None = None
    bot_id: int | None = None
    user_email: str | None = None
    status: str | None = None

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters."""
        return {k: str(v) for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BatchRow:
    """One batch as listed."""

    batch_id: uuid.UUID
    company_id: int
    bot_id: int
    user_email: str
    status: str
    total_files: int
    successful_files: int
    failed_files: int
    started_at: datetime
    sealed_at: datetime | None
    close_at: datetime | None
    ended_at: datetime | None
    notification_sent: bool
    notification_sent_at: datetime | None
    #: "deferred until <local time, zone (UTC)>" while its e-mail waits for quiet hours to end
    email_deferred: str | None = None
    #: "in the daily digest of <date> (<its status>)", or waiting for it (:func:`digest_note`)
    digest: str | None = None


@dataclass(frozen=True)
class BatchPage:
    """One page of batches, newest first."""

    items: list[BatchRow]
    page: int
    per_page: int
    total: int
    filter: BatchFilter

    @property
    def pages(self) -> int:
        """How many pages the filter yields (at least 1)."""
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.page > 1


def _int_param(params: Mapping[str, str], name: str, *, low: int, high: int | None = None,
               default: int | None = None) -> int | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, "must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadParameter(name, f"must be {bound}")
    return value


def parse_batch_query(params: Mapping[str, str]) -> tuple[BatchFilter, int, int]:
    """The filter, page and per_page of a query string; :class:`BadParameter` names a bad one."""
    status = (params.get("status") or "").strip() or None
    if status is not None and status not in BATCH_STATUSES:
        raise BadParameter("status", "must be one of " + ", ".join(BATCH_STATUSES))
    email = (params.get("user_email") or "").strip().lower() or None
    if email is not None and len(email) > 255:
        raise BadParameter("user_email", "is longer than 255 characters")
    if email is not None and "\x00" in email:  # PostgreSQL refuses it in a query
        raise BadParameter("user_email", "holds a NUL character")
    flt = BatchFilter(
        company_id=_int_param(params, "company_id", low=0, high=2**31 - 1),
        bot_id=_int_param(params, "bot_id", low=0, high=2**31 - 1),
        user_email=email,
        status=status,
    )
    page = _int_param(params, "page", low=1, high=1_000_000, default=1)
    per_page = _int_param(params, "per_page", low=1, high=MAX_PER_PAGE, default=DEFAULT_PER_PAGE)
    assert page is not None and per_page is not None
    return flt, page, per_page


def deferral(status: str, send_not_before: datetime | None, timezone: str | None,
             now: datetime | None = None) -> str | None:
    """``deferred until 2026-03-29 07:00 CEST Europe/Berlin (05:00 UTC)`` for a pending
    e-mail held for the user's quiet hours (``timezone`` from the batch's snapshot), else
    None (once the instant has passed, the next sweep sends it: plain ``pending``)."""
    if status != "pending" or send_not_before is None:
        return None
    if send_not_before <= (now or datetime.now(UTC)):
        return None
    return f"deferred until {describe(send_not_before, timezone)}"


def digest_note(for_digest: bool, digest_date: Any, digest_status: str | None) -> str | None:
    """What became of a daily user's batch e-mail: ``in the daily digest of 2026-03-29
    (sent)``, ``waiting for the daily digest``, or None for anyone else's."""
    if not for_digest:
        return None
    if digest_date is None:
        return "waiting for the daily digest"
    return f"in the daily digest of {digest_date.isoformat()} ({digest_status})"


def _email_columns() -> tuple[Any, ...]:
    """A batch e-mail's digest, by an outer join of ``email_digests`` (no extra statement)."""
    return (EmailDigest.digest_date, EmailDigest.send_status.label("digest_status"))


@dataclass(frozen=True)
class _EmailState:
    """What a batch's row shows of its summary e-mail."""

    send_status: str
    send_not_before: datetime | None
    for_digest: bool
    digest_date: date | None
    digest_status: str | None


def _timezone_of(b: BatchProcessingSession) -> str | None:
    snapshot = b.user_preferences_snapshot
    return snapshot.get("timezone") if isinstance(snapshot, dict) else None


def _batch_row(b: BatchProcessingSession, email: Any = None) -> BatchRow:
    """The batch as listed; ``email``: its summary e-mail's row (``send_status``,
    ``send_not_before``, ``for_digest`` and :func:`_email_columns`), if it has one."""
    return BatchRow(
        batch_id=b.batch_id, company_id=b.company_id, bot_id=b.bot_id,
        user_email=b.user_email, status=b.status, total_files=b.total_files,
        successful_files=b.successful_files, failed_files=b.failed_files,
        started_at=b.batch_start_time, sealed_at=b.sealed_at, close_at=b.close_at,
        ended_at=b.batch_end_time, notification_sent=b.notification_sent,
        notification_sent_at=b.notification_sent_at,
        email_deferred=None if email is None else deferral(
            email.send_status, email.send_not_before, _timezone_of(b)),
        digest=None if email is None else digest_note(email.for_digest, email.digest_date,
                                                      email.digest_status),
    )


def recent_batches(s: Session, flt: BatchFilter = BatchFilter(), page: int = 1,
                   per_page: int = DEFAULT_PER_PAGE) -> BatchPage:
    """Batches matching ``flt``, newest first (three statements: a count, the page and
    its summary e-mails)."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    B = BatchProcessingSession
    where = []
    if flt.company_id is not None:
        where.append(B.company_id == flt.company_id)
    if flt.bot_id is not None:
        where.append(B.bot_id == flt.bot_id)
    if flt.user_email is not None:
        # stored lower-cased (ingest.batches.join_batch), so the index on user_email serves
        where.append(B.user_email == flt.user_email.strip().lower())
    if flt.status is not None:
        where.append(B.status == flt.status)
    total = s.execute(select(func.count()).select_from(B).where(*where)).scalar_one()
    rows = s.execute(
        select(B).where(*where)
        # id breaks ties of equal start times, so pages never repeat or skip a batch
        .order_by(B.batch_start_time.desc(), B.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
    ).scalars().all()
    E = EmailNotificationLog
    emails = {e.batch_id: e for e in s.execute(
        select(E.batch_id, E.send_status, E.send_not_before, E.for_digest, *_email_columns())
        .outerjoin(EmailDigest, EmailDigest.id == E.digest_id)
        .where(E.batch_id.in_([b.batch_id for b in rows]), E.email_type == "batch_completion"))
    } if rows else {}
    return BatchPage([_batch_row(b, emails.get(b.batch_id)) for b in rows], page, per_page,
                     total, flt)


# --- one batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRow:
    """One stage of one processing attempt."""

    stage: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    error_message: str | None


@dataclass(frozen=True)
class ErrorRow:
    """A file's final failure with what the uploader was told to do."""

    id: int
    document_id: str
    event_id: int | None
    category: str
    label: str
    message: str
    stage: str | None
    retry_count: int
    resolution_status: str
    created_at: datetime
    suggestion: str


@dataclass(frozen=True)
class CorrectionRow:
    """An auto-correction and its execution log."""

    id: int
    document_id: str
    file_name: str | None
    batch_id: uuid.UUID | None
    category: str
    status: str
    actions: list[str]
    attempts: int
    s3_cleanup_completed: bool
    cms_cleanup_completed: bool
    chroma_cleanup_completed: bool
    created_at: datetime
    act_after: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    original_error: str
    log: list[dict[str, Any]]


@dataclass(frozen=True)
class RetryRow:
    """One attempt to send a batch's e-mail or post it to a channel."""

    attempt: int
    at: datetime
    success: bool
    error: str | None
    next_retry_at: datetime | None


@dataclass(frozen=True)
class EmailRow:
    """A batch's e-mail with its attempts."""

    type: str
    recipient: str
    subject: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    message_id: str | None
    error: str | None
    smtp_response: str | None
    retries: list[RetryRow]
    send_not_before: datetime | None = None
    deferred: str | None = None  # see :func:`deferral`
    digest: str | None = None  # see :func:`digest_note`


@dataclass(frozen=True)
class DeliveryRow:
    """A batch summary posted to one bot channel, with its attempts (URL masked)."""

    id: int
    channel: str
    target: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    error: str | None
    retries: list[RetryRow]


@dataclass(frozen=True)
class FileRow:
    """One file of a batch with its stages (every attempt, in order)."""

    document_id: str
    event_id: int | None
    name: str
    size_bytes: int | None
    status: str
    chunks: int
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    error_category: str | None
    error_message: str | None
    suggestion: str | None
    stages: list[StageRow] = field(default_factory=list)


@dataclass(frozen=True)
class BatchDetail:
    """One batch: its files, errors, corrections and e-mails."""

    batch: BatchRow
    files: list[FileRow]
    errors: list[ErrorRow]
    corrections: list[CorrectionRow]
    emails: list[EmailRow]
    deliveries: list[DeliveryRow] = field(default_factory=list)


_F = FileProcessingStatus
# Columns, not entities: a large batch has thousands of stage rows.
_STAGE_COLUMNS = (_F.file_event_id, _F.processing_stage, _F.status, _F.stage_start_time,
                  _F.stage_end_time, _F.error_message)


def _stages_by_event(s: Session, event_ids: Any) -> dict[int, list[StageRow]]:
    """Every stage row of the events, grouped by event, in the order they were written."""
    by_event: dict[int, list[StageRow]] = {}
    for event_id, stage, status, start, end, error in s.execute(
            select(*_STAGE_COLUMNS).where(_F.file_event_id.in_(event_ids)).order_by(_F.id)):
        by_event.setdefault(event_id, []).append(
            StageRow(stage, status, start, end, _seconds(start, end), error))
    return by_event


def _error_row(e: ProcessingError) -> ErrorRow:
    return ErrorRow(
        id=e.id, document_id=e.file_document_id, event_id=e.file_event_id,
        category=e.error_category, label=label_for(e.error_category), message=e.error_message,
        stage=e.processing_stage, retry_count=e.retry_count,
        resolution_status=e.resolution_status, created_at=e.created_at,
        suggestion=suggestion_for(e.error_category),
    )


def _correction_row(t: AutoCorrectionTask) -> CorrectionRow:
    return CorrectionRow(
        id=t.id, document_id=t.file_document_id, file_name=t.file_name, batch_id=t.batch_id,
        category=t.failure_category, status=t.status, actions=list(t.correction_actions),
        attempts=t.attempts, s3_cleanup_completed=t.s3_cleanup_completed,
        cms_cleanup_completed=t.cms_cleanup_completed,
        chroma_cleanup_completed=t.chroma_cleanup_completed, created_at=t.created_at,
        act_after=t.act_after, started_at=t.started_at, completed_at=t.completed_at,
        error=t.error_during_correction, original_error=t.original_error_message,
        log=[entry for entry in (t.execution_log or []) if isinstance(entry, dict)],
    )


def _file_row(f: BatchFile, stages: list[StageRow]) -> FileRow:
    failed = f.processing_status == "failed"
    return FileRow(
        document_id=f.file_document_id, event_id=f.file_event_id, name=f.file_name,
        size_bytes=f.file_size_bytes, status=f.processing_status, chunks=f.chunks_created,
        started_at=f.processing_start_time, ended_at=f.processing_end_time,
        duration_seconds=_seconds(f.processing_start_time, f.processing_end_time),
        error_category=f.error_category, error_message=f.error_message,
        suggestion=suggestion_for(f.error_category) if failed else None, stages=stages,
    )


def batch_detail(s: Session, batch_id: uuid.UUID) -> BatchDetail | None:
    """One batch in nine statements, whatever its size; None if there is no such batch."""
    batch = s.execute(select(BatchProcessingSession)
                      .where(BatchProcessingSession.batch_id == batch_id)).scalar_one_or_none()
    if batch is None:
        return None
    files = s.execute(select(BatchFile).where(BatchFile.batch_id == batch_id)
                      .order_by(BatchFile.id)).scalars().all()
    by_event = _stages_by_event(
        s, select(BatchFile.file_event_id).where(BatchFile.batch_id == batch_id))
    errors = s.execute(select(ProcessingError).where(ProcessingError.batch_id == batch_id)
                       .order_by(ProcessingError.id)).scalars().all()
    corrections = s.execute(select(AutoCorrectionTask)
                            .where(AutoCorrectionTask.batch_id == batch_id)
                            .order_by(AutoCorrectionTask.id)).scalars().all()
    emails = s.execute(select(EmailNotificationLog, *_email_columns())
                       .outerjoin(EmailDigest, EmailDigest.id == EmailNotificationLog.digest_id)
                       .where(EmailNotificationLog.batch_id == batch_id)
                       .order_by(EmailNotificationLog.id)).all()
    retries = s.execute(select(NotificationRetryLog)
                        .where(NotificationRetryLog.batch_id == batch_id)
                        .order_by(NotificationRetryLog.retry_attempt,
                                  NotificationRetryLog.id)).scalars().all()
    # The retry log is per batch; every e-mail of a batch today is its one summary.
    attempts = [RetryRow(r.retry_attempt, r.retry_at, r.success, r.error_message,
                         r.next_retry_at) for r in retries]
    summary = next((_EmailState(e.send_status, e.send_not_before, e.for_digest, day, status)
                    for e, day, status in emails if e.email_type == "batch_completion"), None)
    return BatchDetail(
        batch=_batch_row(batch, summary),
        files=[_file_row(f, by_event.get(f.file_event_id or -1, [])) for f in files],
        errors=[_error_row(e) for e in errors],
        corrections=[_correction_row(t) for t in corrections],
        emails=[
            EmailRow(type=e.email_type, recipient=e.recipient_email, subject=e.email_subject,
                     status=e.send_status, attempts=e.send_attempts, created_at=e.created_at,
                     sent_at=e.sent_at, message_id=e.message_id, error=e.error_message,
                     smtp_response=e.smtp_response,
                     retries=attempts if e.email_type == "batch_completion" else [],
                     send_not_before=e.send_not_before,
                     deferred=deferral(e.send_status, e.send_not_before, _timezone_of(batch)),
                     digest=digest_note(e.for_digest, digest_date, digest_status))
            for e, digest_date, digest_status in emails
        ],
        deliveries=_deliveries(s, batch_id),
    )


def _deliveries(s: Session, batch_id: uuid.UUID) -> list[DeliveryRow]:
    """The batch's channel deliveries and their attempts (two statements)."""
    rows = s.execute(select(ChannelDelivery).where(ChannelDelivery.batch_id == batch_id)
                     .order_by(ChannelDelivery.id)).scalars().all()
    tries: dict[int, list[RetryRow]] = {}
    attempts = (select(ChannelDeliveryAttempt)
                .join(ChannelDelivery, ChannelDelivery.id == ChannelDeliveryAttempt.delivery_id)
                .where(ChannelDelivery.batch_id == batch_id).order_by(ChannelDeliveryAttempt.id))
    for a in s.execute(attempts).scalars():
        tries.setdefault(a.delivery_id, []).append(
            RetryRow(a.attempt, a.attempted_at, a.success, a.error_message, a.next_attempt_at))
    return [DeliveryRow(id=d.id, channel=d.channel, target=d.target_label, status=d.status,
                        attempts=d.attempts, next_attempt_at=d.next_attempt_at,
                        sent_at=d.sent_at, error=d.error_message, retries=tries.get(d.id, []))
            for d in rows]


# --- daily digests -----------------------------------------------------------------------


@dataclass(frozen=True)
class DigestRow:
    """One daily digest as listed."""

    id: int
    recipient: str
    company_id: int
    bot_id: int
    digest_date: date
    timezone: str
    batches: int
    total_files: int
    successful_files: int
    failed_files: int
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    error: str | None
    deferred: str | None = None  # held for the user's quiet hours (see :func:`deferral`)


def recent_digests(s: Session, user_email: str | None = None,
                   limit: int = DEFAULT_PER_PAGE) -> list[DigestRow]:
    """The newest daily digests (of one recipient), one statement."""
    D = EmailDigest
    query = select(D).order_by(D.created_at.desc(), D.id.desc()).limit(limit)
    if user_email:
        query = query.where(D.recipient_email == user_email.strip().lower())
    return [DigestRow(d.id, d.recipient_email, d.company_id, d.bot_id, d.digest_date,
                      d.timezone, d.batch_count, d.total_files, d.successful_files,
                      d.failed_files, d.send_status, d.send_attempts, d.created_at,
                      d.sent_at, d.error_message,
                      deferral(d.send_status, d.send_not_before, d.timezone))
            for d in s.execute(query).scalars()]


# --- failures over time ------------------------------------------------------------------


@dataclass(frozen=True)
class FailureCount:
    """Failures of one category in one time bucket."""

    bucket: datetime
    category: str
    count: int


@dataclass(frozen=True)
class FailureReport:
    """Final failures of every uploader, by category, per hour or day."""

    since: datetime
    hours: int
    bucket: str
    counts: list[FailureCount]

    @property
    def categories(self) -> list[str]:
        """Categories seen, most failures first."""
        totals = self.totals
        return sorted(totals, key=lambda c: (-totals[c], c))

    @property
    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.counts:
            out[c.category] = out.get(c.category, 0) + c.count
        return out

    @property
    def table(self) -> list[tuple[datetime, dict[str, int]]]:
        """(bucket, {category: count}) for the buckets that had failures, newest first."""
        rows: dict[datetime, dict[str, int]] = {}
        for c in self.counts:
            rows.setdefault(c.bucket, {})[c.category] = c.count
        return sorted(rows.items(), key=lambda item: item[0], reverse=True)


def parse_failure_query(params: Mapping[str, str]) -> tuple[int, str]:
    """``hours`` (default 24) and ``bucket`` (hour|day) of a query string."""
    hours = _int_param(params, "hours", low=1, high=MAX_FAILURE_HOURS, default=24)
    bucket = (params.get("bucket") or "").strip() or ("hour" if (hours or 24) <= 72 else "day")
    if bucket not in BUCKETS:
        raise BadParameter("bucket", "must be hour or day")
    assert hours is not None
    return hours, bucket


def failures_by_category(s: Session, hours: int = 24, bucket: str = "hour",
                         now: datetime | None = None) -> FailureReport:
    """Final failures of the last ``hours`` per ``bucket`` and category (one statement).

    A file's final failure is its ``processing_errors`` row; a file the batch stopped
    waiting for (``timeout``) has only its ``batch_files`` row, so both are counted.
    """
    if bucket not in BUCKETS:
        raise BadParameter("bucket", "must be hour or day")
    since = (now or datetime.now(UTC)) - timedelta(hours=hours)
    errors = select(ProcessingError.created_at.label("at"),
                    ProcessingError.error_category.label("category")
                    ).where(ProcessingError.created_at >= since)
    timeouts = select(func.coalesce(BatchFile.processing_end_time, BatchFile.updated_at
                                    ).label("at"),
                      literal(TIMEOUT).label("category")
                      ).where(BatchFile.processing_status == "failed",
                              BatchFile.error_category == TIMEOUT,
                              BatchFile.updated_at >= since)
    failures = union_all(errors, timeouts).subquery()
    slot = func.date_trunc(bucket, func.timezone("UTC", failures.c.at)).label("slot")
    rows = s.execute(
        select(slot, failures.c.category, func.count())
        .group_by(slot, failures.c.category).order_by(slot.desc(), failures.c.category)
    ).all()
    return FailureReport(since, hours, bucket, [
        FailureCount(r[0].replace(tzinfo=UTC), r[1], r[2]) for r in rows])


# --- held corrections --------------------------------------------------------------------


@dataclass(frozen=True)
class HeldCorrections:
    """The breaker's state and the corrections it holds."""

    tripped_at: datetime | None
    reason: str | None
    total: int
    items: list[CorrectionRow]


def held_corrections(s: Session, limit: int = 100) -> HeldCorrections:
    """The breaker and up to ``limit`` held corrections, oldest first (three statements)."""
    # Read here rather than through ingest.corrections, which would pull the S3 and Chroma
    # clients into the web process; a tripped row is one with tripped_at set.
    breaker = s.execute(select(CorrectionBreaker).where(CorrectionBreaker.tripped_at.is_not(None))
                        .order_by(CorrectionBreaker.tripped_at.desc()).limit(1)
                        ).scalar_one_or_none()
    total = s.execute(select(func.count()).select_from(AutoCorrectionTask)
                      .where(AutoCorrectionTask.status == "held")).scalar_one()
    rows = s.execute(select(AutoCorrectionTask).where(AutoCorrectionTask.status == "held")
                     .order_by(AutoCorrectionTask.id).limit(limit)).scalars().all()
    return HeldCorrections(breaker.tripped_at if breaker else None,
                           breaker.reason if breaker else None, total,
                           [_correction_row(t) for t in rows])


# --- one document ------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    """One webhook (or reconciled) event of a document."""

    id: int
    event: str
    status: str
    attempts: int
    entry_updated_at: datetime
    received_at: datetime
    updated_at: datetime
    last_error: str | None
    stages: list[StageRow]


@dataclass(frozen=True)
class DocumentHistory:
    """Everything kb-ingest knows about one CMS document."""

    document_id: str
    events: list[EventRow]
    batches: list[tuple[uuid.UUID, FileRow]]
    errors: list[ErrorRow]
    corrections: list[CorrectionRow]

    @property
    def found(self) -> bool:
        return bool(self.events or self.batches)


def document_history(s: Session, document_id: str, limit: int = 50) -> DocumentHistory:
    """The document's latest events with stages, its batch files, errors and corrections."""
    events = s.execute(select(FileEvent).where(FileEvent.document_id == document_id)
                       .order_by(FileEvent.id.desc()).limit(limit)).scalars().all()
    by_event = _stages_by_event(s, [e.id for e in events] or [-1])
    files = s.execute(select(BatchFile).where(BatchFile.file_document_id == document_id)
                      .order_by(BatchFile.id.desc()).limit(limit)).scalars().all()
    errors = s.execute(select(ProcessingError)
                       .where(ProcessingError.file_document_id == document_id)
                       .order_by(ProcessingError.id.desc()).limit(limit)).scalars().all()
    corrections = s.execute(select(AutoCorrectionTask)
                            .where(AutoCorrectionTask.file_document_id == document_id)
                            .order_by(AutoCorrectionTask.id.desc()).limit(limit)
                            ).scalars().all()
    return DocumentHistory(
        document_id=document_id,
        events=[EventRow(e.id, e.event, e.status, e.attempts, e.entry_updated_at,
                         e.received_at, e.updated_at, e.last_error, by_event.get(e.id, []))
                for e in events],
        batches=[(f.batch_id, _file_row(f, by_event.get(f.file_event_id or -1, [])))
                 for f in files],
        errors=[_error_row(e) for e in errors],
        corrections=[_correction_row(t) for t in corrections],
    )


# --- JSON --------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Dataclasses, datetimes, dates and UUIDs as JSON-ready values (ISO 8601, str UUIDs)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("pages", "categories", "totals", "found"):  # derived, but useful
            if hasattr(type(value), name):
                out[name] = to_jsonable(getattr(value, name))
        return out
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value

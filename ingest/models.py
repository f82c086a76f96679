"""SQLAlchemy 2.0 tables (DESIGN §3).

Seed 000's tables with their CHECK constraints and indexes, merged with seed 001's extra
columns, plus ``file_events`` (the webhook outbox), the batch due-time columns with the
partial unique index that lets only one batch per uploader be open, and the e-mail
idempotency key. Alembic owns the schema; this module must match the migration.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EVENT_STATUSES = ("received", "enqueued", "processing", "done", "ignored", "failed")
STAGES = ("download", "processing", "storage", "completed", "failed")
STAGE_STATUSES = ("pending", "processing", "success", "failed")
BATCH_STATUSES = ("processing", "completed", "partially_completed", "failed")
FILE_STATUSES = ("pending", "processing", "success", "failed")
SEND_STATUSES = ("pending", "sending", "sent", "failed", "skipped")
# held: the breaker stopped it for an operator; skipped: a newer version or no proof;
# discarded: an operator decided against it.
CORRECTION_STATUSES = ("pending", "processing", "completed", "failed", "held", "skipped",
                       "discarded")
ALERT_STATUSES = ("pending", "sent", "failed", "skipped")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class FileEvent(Base):
    """One received webhook (or reconciled CMS entry): the outbox row of DESIGN §4."""

    __tablename__ = "file_events"
    __table_args__ = (
        CheckConstraint(_in("status", EVENT_STATUSES), name="chk_event_status"),
        CheckConstraint("attempts >= 0", name="chk_event_attempts"),
        CheckConstraint("worker_losses >= 0", name="chk_event_worker_losses"),
        Index("idx_file_events_document", "document_id", "entry_updated_at"),
        Index("idx_file_events_status", "status", "updated_at"),
        Index("idx_file_events_lease", "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(50), nullable=False)
    model: Mapped[str] = mapped_column(String(100), nullable=False, server_default="file")
    document_id: Mapped[str] = mapped_column(Text, nullable=False)
    entry_updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    dedupe_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="received")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # What the latest attempt saw in S3: a correction deletes only this exact object.
    object_key: Mapped[str | None] = mapped_column(Text)
    object_etag: Mapped[str | None] = mapped_column(Text)
    object_size: Mapped[int | None] = mapped_column(BigInteger)
    # First NoSuchKey of this version: the grace period runs from here.
    object_missing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while an attempt runs; still set at the next claim = that attempt died.
    running_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_losses: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # The running attempt's lease (renewed by a heartbeat) and owner ("host:pid").
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(Text)


class BatchProcessingSession(Base):
    """A batch of one uploader's files; the unit of one summary e-mail."""

    __tablename__ = "batch_processing_sessions"
    __table_args__ = (
        CheckConstraint(_in("status", BATCH_STATUSES), name="chk_batch_status"),
        CheckConstraint(
            "batch_end_time IS NULL OR batch_end_time >= batch_start_time",
            name="chk_batch_time_order",
        ),
        CheckConstraint(
            "total_files >= 0 AND successful_files >= 0 AND failed_files >= 0 "
            "AND successful_files + failed_files <= total_files",
            name="chk_file_counts",
        ),
        Index("idx_batch_sessions_batch_id", "batch_id"),
        Index("idx_batch_sessions_company_bot", "company_id", "bot_id"),
        Index("idx_batch_sessions_user_email", "user_email"),
        Index("idx_batch_sessions_status", "status"),
        Index("idx_batch_sessions_notification_sent", "notification_sent"),
        Index("idx_batch_sessions_created_at", "created_at"),
        Index("idx_batch_sessions_close_at", "close_at"),
        Index(
            "uq_batch_sessions_open_per_user",
            "company_id",
            "bot_id",
            "user_email",
            unique=True,
            postgresql_where=text("sealed_at IS NULL"),
        ),
        Index("idx_batches_unplanned", "batch_end_time",
              postgresql_where=text("channels_planned_at IS NULL AND status <> 'processing'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, unique=True)
    company_id: Mapped[int] = mapped_column(Integer, nullable=False)
    bot_id: Mapped[int] = mapped_column(Integer, nullable=False)
    user_email: Mapped[str] = mapped_column(String(255), nullable=False)
    batch_start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    batch_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    successful_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    failed_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    status: Mapped[str] = mapped_column(String(20), server_default="processing", nullable=False)
    notification_sent: Mapped[bool] = mapped_column(
        Boolean, server_default="false", nullable=False
    )
    notification_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    user_preferences_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_file_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    close_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the bot's chat/webhook channels got their delivery rows (ingest.notify.deliveries);
    # a closed batch without it is planned by the sweeper (idx_batches_unplanned).
    channels_planned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class BatchFile(Base):
    """One file of a batch and its outcome."""

    __tablename__ = "batch_files"
    __table_args__ = (
        CheckConstraint(_in("processing_status", FILE_STATUSES), name="chk_file_status"),
        CheckConstraint(
            "processing_start_time IS NULL OR processing_end_time IS NULL "
            "OR processing_end_time >= processing_start_time",
            name="chk_file_time_order",
        ),
        CheckConstraint("processing_time_seconds >= 0", name="chk_processing_time"),
        CheckConstraint("chunks_created >= 0", name="chk_chunks_created"),
        CheckConstraint("file_size_bytes >= 0", name="chk_file_size"),
        UniqueConstraint("batch_id", "file_document_id", name="uq_batch_files_document"),
        Index("idx_batch_files_batch_id", "batch_id"),
        Index("idx_batch_files_document_id", "file_document_id"),
        Index("idx_batch_files_status", "processing_status"),
        Index("idx_batch_files_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("batch_processing_sessions.batch_id", ondelete="CASCADE"),
        nullable=False,
    )
    file_document_id: Mapped[str] = mapped_column(Text, nullable=False)
    file_event_id: Mapped[int | None] = mapped_column(ForeignKey("file_events.id"))
    file_name: Mapped[str] = mapped_column(Text, nullable=False)
    file_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    processing_status: Mapped[str] = mapped_column(
        String(20), server_default="pending", nullable=False
    )
    processing_start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_time_seconds: Mapped[int | None] = mapped_column(Integer)
    chunks_created: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_category: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class FileProcessingStatus(Base):
    """One row per stage of one processing run of a file event."""

    __tablename__ = "file_processing_status"
    __table_args__ = (
        CheckConstraint(_in("processing_stage", STAGES), name="chk_stage"),
        CheckConstraint(_in("status", STAGE_STATUSES), name="chk_stage_status"),
        CheckConstraint(
            "stage_end_time IS NULL OR stage_end_time >= stage_start_time",
            name="chk_processing_time_order",
        ),
        Index("idx_file_processing_status_event_id", "file_event_id"),
        Index("idx_file_processing_status_document_id", "file_document_id"),
        Index("idx_file_processing_status_batch_id", "batch_id"),
        Index("idx_file_processing_status_stage", "processing_stage"),
        Index("idx_file_processing_status_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_event_id: Mapped[int] = mapped_column(ForeignKey("file_events.id"), nullable=False)
    file_document_id: Mapped[str] = mapped_column(Text, nullable=False)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id")
    )
    processing_stage: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    stage_start_time: Mapped[datetime] = _now()
    stage_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class AutoCorrectionTask(Base):
    """The clean-up plan and progress for one finally failed file."""

    __tablename__ = "auto_correction_tasks"
    __table_args__ = (
        CheckConstraint(
            _in("status", CORRECTION_STATUSES),
            name="chk_correction_status",
        ),
        CheckConstraint(
            "started_at IS NULL OR completed_at IS NULL OR completed_at >= started_at",
            name="chk_correction_time_order",
        ),
        CheckConstraint("attempts >= 0", name="chk_correction_attempts"),
        Index("idx_auto_correction_tasks_document_id", "file_document_id"),
        Index("idx_auto_correction_tasks_status", "status"),
        Index("idx_auto_correction_tasks_batch_id", "batch_id"),
        Index("idx_auto_correction_tasks_company_bot", "company_id", "bot_id"),
        Index("idx_auto_correction_tasks_failure_category", "failure_category"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_document_id: Mapped[str] = mapped_column(Text, nullable=False)
    file_event_id: Mapped[int | None] = mapped_column(ForeignKey("file_events.id"))
    file_name: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(Text)
    company_id: Mapped[int | None] = mapped_column(Integer)
    bot_id: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id")
    )
    failure_category: Mapped[str] = mapped_column(String(50), nullable=False)
    original_error_message: Mapped[str] = mapped_column(Text, nullable=False)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    correction_actions: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(String(20), server_default="pending", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    s3_cleanup_completed: Mapped[bool] = mapped_column(
        Boolean, server_default="false", nullable=False
    )
    cms_cleanup_completed: Mapped[bool] = mapped_column(
        Boolean, server_default="false", nullable=False
    )
    chroma_cleanup_completed: Mapped[bool] = mapped_column(
        Boolean, server_default="false", nullable=False
    )
    execution_log: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), nullable=False
    )
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_during_correction: Mapped[str | None] = mapped_column(Text)
    # The object the failed attempt saw: S3 is deleted only if it is still this one.
    object_etag: Mapped[str | None] = mapped_column(Text)
    object_size: Mapped[int | None] = mapped_column(BigInteger)
    # No destructive action before this moment (AUTO_CORRECTION_DELAY_SECONDS).
    act_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProcessingError(Base):
    """A file's final failure, with category, message and stack trace."""

    __tablename__ = "processing_errors"
    __table_args__ = (
        CheckConstraint(
            _in("resolution_status", ("unresolved", "auto_corrected", "manual_fix", "ignored")),
            name="chk_error_resolution",
        ),
        CheckConstraint("retry_count >= 0", name="chk_retry_count"),
        CheckConstraint(
            "resolution_action IS NULL OR "
            + _in("resolution_action", ("auto_correction", "manual_fix", "ignored")),
            name="chk_resolution_action",
        ),
        Index("idx_processing_errors_document_id", "file_document_id"),
        Index("idx_processing_errors_category", "error_category"),
        Index("idx_processing_errors_batch_id", "batch_id"),
        Index("idx_processing_errors_status", "resolution_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_event_id: Mapped[int | None] = mapped_column(ForeignKey("file_events.id"))
    file_document_id: Mapped[str] = mapped_column(Text, nullable=False)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id")
    )
    error_category: Mapped[str] = mapped_column(String(50), nullable=False)
    error_message: Mapped[str] = mapped_column(Text, nullable=False)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    processing_stage: Mapped[str | None] = mapped_column(String(50))
    retry_count: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    auto_correction_triggered: Mapped[bool] = mapped_column(
        Boolean, server_default="false", nullable=False
    )
    resolution_status: Mapped[str] = mapped_column(
        String(20), server_default="unresolved", nullable=False
    )
    resolution_action: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EmailNotificationLog(Base):
    """One e-mail per (batch, type): the row is claimed before SMTP is spoken."""

    __tablename__ = "email_notification_log"
    __table_args__ = (
        CheckConstraint(
            _in("email_type", ("batch_completion", "error_alert", "summary")),
            name="chk_email_type",
        ),
        CheckConstraint(_in("send_status", SEND_STATUSES), name="chk_email_send_status"),
        CheckConstraint("send_attempts >= 0", name="chk_email_attempts"),
        UniqueConstraint("batch_id", "email_type", name="uq_email_batch_type"),
        Index("idx_email_notification_log_batch_id", "batch_id"),
        Index("idx_email_notification_log_recipient", "recipient_email"),
        Index("idx_email_notification_log_status", "send_status"),
        Index("idx_email_notification_log_company_bot", "company_id", "bot_id"),
        Index("idx_email_notification_log_digest", "digest_id"),
        # The sweeper's question: whose batches wait for a daily digest?
        Index("idx_email_notification_log_awaiting_digest", "company_id", "bot_id",
              "recipient_email", postgresql_where=text("for_digest AND digest_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id"), nullable=False
    )
    recipient_email: Mapped[str] = mapped_column(String(255), nullable=False)
    company_id: Mapped[int] = mapped_column(Integer, nullable=False)
    bot_id: Mapped[int] = mapped_column(Integer, nullable=False)
    email_type: Mapped[str] = mapped_column(
        String(50), server_default="batch_completion", nullable=False
    )
    email_subject: Mapped[str] = mapped_column(Text, nullable=False)
    email_content_html: Mapped[str | None] = mapped_column(Text)
    email_content_text: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    send_status: Mapped[str] = mapped_column(String(20), server_default="pending", nullable=False)
    send_attempts: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    # Seed 000's column; no longer read: SMTP_RETRY_WINDOW_MINUTES bounds the retries.
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3", nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set just before DATA by the attempt that holds the row ``sending`` (cleared by each
    # claim): a ``sending`` row without it cannot have been delivered.
    body_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The end of the user's quiet hours when the batch closed inside them (written with the
    # row, from the batch's preference snapshot): not claimed before. NULL: at once.
    send_not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A daily user's summary (``skipped``, "in the daily digest"): left to the digest that
    # ``digest_id`` names once one covers it (set in the transaction creating that digest).
    for_digest: Mapped[bool] = mapped_column(Boolean, server_default="false", nullable=False)
    digest_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("email_digests.id"))
    error_message: Mapped[str | None] = mapped_column(Text)
    smtp_response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


DIGEST_STATUSES = ("pending", "sending", "sent", "failed")


class EmailDigest(Base):
    """One daily digest per (company, bot, recipient, local date): claimed like a batch
    e-mail (same column names, so :mod:`ingest.mail.outbox` sends both)."""

    __tablename__ = "email_digests"
    __table_args__ = (
        CheckConstraint(_in("send_status", DIGEST_STATUSES), name="chk_digest_send_status"),
        CheckConstraint("send_attempts >= 0", name="chk_digest_attempts"),
        UniqueConstraint("company_id", "bot_id", "recipient_email", "digest_date",
                         name="uq_digest_user_day"),
        Index("idx_email_digests_status", "send_status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(Integer, nullable=False)
    bot_id: Mapped[int] = mapped_column(Integer, nullable=False)
    recipient_email: Mapped[str] = mapped_column(String(255), nullable=False)  # lower-cased
    digest_date: Mapped[date] = mapped_column(Date, nullable=False)  # in ``timezone``
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    # Covers the batches closed after the previous digest's cut-off (NULL: the first) and at
    # or before its own (the instant it was created).
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cut_off: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    batch_count: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    total_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    successful_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    failed_files: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    email_subject: Mapped[str] = mapped_column(Text, nullable=False)
    email_content_html: Mapped[str | None] = mapped_column(Text)
    email_content_text: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    send_status: Mapped[str] = mapped_column(String(20), server_default="pending", nullable=False)
    send_attempts: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    send_not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    body_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_message: Mapped[str | None] = mapped_column(Text)
    smtp_response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class NotificationRetryLog(Base):
    """One row per attempt to send a batch's e-mail."""

    __tablename__ = "notification_retry_log"
    __table_args__ = (
        CheckConstraint("retry_attempt > 0", name="chk_retry_attempt"),
        Index("idx_notification_retry_log_batch_id", "batch_id"),
        Index("idx_notification_retry_log_retry_at", "retry_at"),
        Index("idx_notification_retry_log_success", "success"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id"), nullable=False
    )
    retry_attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime] = _now()
    success: Mapped[bool] = mapped_column(Boolean, server_default="false", nullable=False)
    next_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


DELIVERY_STATUSES = ("pending", "sending", "sent", "failed")
CHANNEL_KINDS = ("slack", "teams", "webhook")


class ChannelDelivery(Base):
    """One batch summary to one bot channel; claimed ``pending → sending`` before the POST."""

    __tablename__ = "channel_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="chk_delivery_status"),
        CheckConstraint(_in("channel", CHANNEL_KINDS), name="chk_delivery_channel"),
        CheckConstraint("attempts >= 0", name="chk_delivery_attempts"),
        UniqueConstraint("idempotency_key", name="uq_delivery_idempotency_key"),
        Index("idx_channel_deliveries_batch", "batch_id"),
        Index("idx_channel_deliveries_status", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("batch_processing_sessions.batch_id"), nullable=False
    )
    channel: Mapped[str] = mapped_column(String(20), nullable=False)
    # The Apprise URL holds the channel's secret: never shown; target_label is its
    # privacy-masked form for pages, logs and the CLI.
    target_url: Mapped[str] = mapped_column(Text, nullable=False)
    target_label: Mapped[str] = mapped_column(Text, nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(20), server_default="pending", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_message: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ChannelDeliveryAttempt(Base):
    """One row per attempt of a channel delivery (its retry log)."""

    __tablename__ = "channel_delivery_attempts"
    __table_args__ = (
        CheckConstraint("attempt > 0", name="chk_delivery_attempt"),
        Index("idx_channel_delivery_attempts_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("channel_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    success: Mapped[bool] = mapped_column(Boolean, server_default="false", nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempted_at: Mapped[datetime] = _now()


class ReconciliationCheckpoint(Base):
    """How far the CMS poll for missed webhooks has read (one row per poll name)."""

    __tablename__ = "reconciliation_checkpoints"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    last_updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    entries_seen: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    events_created: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)


class CorrectionBreaker(Base):
    """The correction circuit breaker: tripped (holding every correction) until released."""

    __tablename__ = "correction_breaker"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    tripped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OperatorAlert(Base):
    """One alert to ``ADMIN_EMAIL`` and ``ALERT_URLS``; ``dedupe_key`` makes each alert
    happen once; repeated (``rounds``) until acknowledged, at most ``ALERT_MAX_REPEATS``."""

    __tablename__ = "operator_alerts"
    __table_args__ = (
        CheckConstraint(_in("status", ALERT_STATUSES), name="chk_alert_status"),
        CheckConstraint("attempts >= 0", name="chk_alert_attempts"),
        UniqueConstraint("dedupe_key", name="uq_alert_dedupe_key"),
        Index("idx_operator_alerts_status", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    dedupe_key: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    document_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Escalation: how many times it reached someone, when last, and who acknowledged it.
    rounds: Mapped[int] = mapped_column(Integer, server_default="0", nullable=False)
    last_round_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_by: Mapped[str | None] = mapped_column(String(100))

"""Sending a batch's summary e-mail: claim → render → SMTP → record (DESIGN §4).

The ``email_notification_log`` row (one per batch and type) is claimed with a conditional
UPDATE ``pending → sending`` that is committed before SMTP is spoken, so two tasks for one
batch can never both deliver. Every attempt writes a ``notification_retry_log`` row.
Transient failures put the row back to ``pending`` and ask the caller to retry after an
exponential backoff with full jitter; permanent ones (5xx, or an unknown outcome after the
message body was sent) fail it at once; so does running out of attempts.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from ingest.batches import BATCH_EMAIL
from ingest.db import session_scope
from ingest.mail.render import BatchSummary, FileLine, render_batch_summary
from ingest.mail.smtp import SmtpPermanent, SmtpTransient, deliver
from ingest.models import (
    AutoCorrectionTask,
    BatchFile,
    BatchProcessingSession,
    EmailNotificationLog,
    NotificationRetryLog,
)
from ingest.preferences import Preferences
from ingest.retry import backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """``sent``, ``failed``, ``retry`` (after ``retry_in`` seconds) or ``nothing`` to do."""

    status: str
    retry_in: float = 0.0
    detail: str = ""


def _claim(batch_id: uuid.UUID) -> tuple[int, int, int] | None:
    with session_scope() as s:
        row = s.execute(
            update(EmailNotificationLog)
            .where(EmailNotificationLog.batch_id == batch_id,
                   EmailNotificationLog.email_type == BATCH_EMAIL,
                   EmailNotificationLog.send_status == "pending")
            .values(send_status="sending", send_attempts=EmailNotificationLog.send_attempts + 1,
                    updated_at=func.now())
            .returning(EmailNotificationLog.id, EmailNotificationLog.send_attempts,
                       EmailNotificationLog.max_attempts)
        ).first()
    return (row.id, row.send_attempts, row.max_attempts) if row else None


def _correction_sentence(task: AutoCorrectionTask | None) -> str | None:
    """What auto-correction did about a failed file, in the user's words."""
    if task is None:
        return None
    if task.status == "failed":
        return ("We could not remove this file automatically; an operator has been alerted "
                "and will clean it up.")
    if task.status in ("held", "discarded"):
        return ("Kept: automatic clean-up is paused for an operator's review, so nothing "
                "was deleted.")
    if task.status == "skipped":
        return ("Kept: the file changed after this attempt (or could not be verified), so "
                "nothing was deleted.")
    removed = [name for flag, name in (
        (task.s3_cleanup_completed, "file storage"), (task.cms_cleanup_completed, "the CMS"),
        (task.chroma_cleanup_completed, "the search index")) if flag]
    if task.status != "completed" or not removed:
        return None
    listed = removed[0] if len(removed) == 1 else ", ".join(removed[:-1]) + " and " + removed[-1]
    return f"Removed automatically from {listed}, so no partial copy remains."


def load_summary(batch_id: uuid.UUID) -> tuple[BatchSummary, Preferences]:
    """The batch's summary as the e-mail shows it, and the preferences snapshotted on it."""
    with session_scope() as s:
        batch = s.execute(select(BatchProcessingSession)
                          .where(BatchProcessingSession.batch_id == batch_id)).scalar_one()
        files = s.execute(select(BatchFile).where(BatchFile.batch_id == batch_id)
                          .order_by(BatchFile.file_name, BatchFile.id)).scalars().all()
        corrections = {
            t.file_document_id: t for t in s.execute(
                select(AutoCorrectionTask).where(AutoCorrectionTask.batch_id == batch_id)
            ).scalars()
        }
    lines = [
        FileLine(
            name=f.file_name, succeeded=f.processing_status == "success",
            chunks=f.chunks_created, error_category=f.error_category,
            error_message=f.error_message,
            correction=_correction_sentence(corrections.get(f.file_document_id)),
        )
        for f in files
    ]
    summary = BatchSummary(
        batch_id=batch.batch_id, user_email=batch.user_email, company_id=batch.company_id,
        bot_id=batch.bot_id, status=batch.status, total=batch.total_files,
        succeeded=batch.successful_files, failed=batch.failed_files,
        started_at=batch.batch_start_time, finished_at=batch.batch_end_time or batch.updated_at,
        files=lines,
    )
    return summary, Preferences.model_validate(batch.user_preferences_snapshot or {})


def _record_attempt(log_id: int, batch_id: uuid.UUID, attempt: int, *, success: bool,
                    error: str | None, next_retry_at: datetime | None,
                    values: dict[str, object]) -> None:
    with session_scope() as s:
        s.add(NotificationRetryLog(batch_id=batch_id, retry_attempt=attempt, success=success,
                                   error_message=error, next_retry_at=next_retry_at))
        s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == log_id)
                  .values(updated_at=func.now(), **values))
        if success:
            s.execute(update(BatchProcessingSession)
                      .where(BatchProcessingSession.batch_id == batch_id)
                      .values(notification_sent=True, notification_sent_at=func.now()))


def send_batch_email(batch_id: uuid.UUID, settings: Settings) -> SendOutcome:
    """Send the batch's summary once; safe to call again (a second call finds no claim)."""
    claim = _claim(batch_id)
    if claim is None:
        return SendOutcome("nothing", detail="no pending e-mail for this batch")
    log_id, attempt, max_attempts = claim
    summary, prefs = load_summary(batch_id)
    try:
        rendered = render_batch_summary(
            summary, prefs, from_email=settings.from_email, from_name=settings.from_name,
            unsubscribe_url=settings.unsubscribe_url, list_cap=settings.email_list_cap,
        )
    except ValueError as exc:  # an address or header value that cannot be sent safely
        _record_attempt(log_id, batch_id, attempt, success=False, error=str(exc),
                        next_retry_at=None,
                        values={"send_status": "failed", "error_message": str(exc)})
        log.warning("batch %s e-mail cannot be built: %s", batch_id, exc)
        return SendOutcome("failed", detail=str(exc))
    with session_scope() as s:
        s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == log_id).values(
            email_subject=rendered.subject, email_content_text=rendered.text,
            email_content_html=rendered.html, message_id=rendered.message["Message-ID"]))
    try:
        response = deliver(rendered.message, settings, timeout=settings.smtp_timeout_seconds)
    except SmtpTransient as exc:
        if attempt >= max_attempts:
            _record_attempt(log_id, batch_id, attempt, success=False, error=str(exc),
                            next_retry_at=None,
                            values={"send_status": "failed", "error_message": str(exc),
                                    "smtp_response": exc.response or None})
            log.warning("batch %s e-mail failed after %d attempts: %s", batch_id, attempt, exc)
            return SendOutcome("failed", detail=str(exc))
        delay = backoff_seconds(settings.smtp_retry_base_seconds, attempt - 1)
        _record_attempt(log_id, batch_id, attempt, success=False, error=str(exc),
                        next_retry_at=datetime.now().astimezone() + timedelta(seconds=delay),
                        values={"send_status": "pending", "error_message": str(exc),
                                "smtp_response": exc.response or None})
        log.info("batch %s e-mail attempt %d failed (%s); retry in %.1fs",
                 batch_id, attempt, exc, delay)
        return SendOutcome("retry", retry_in=delay, detail=str(exc))
    except SmtpPermanent as exc:
        _record_attempt(log_id, batch_id, attempt, success=False, error=str(exc),
                        next_retry_at=None,
                        values={"send_status": "failed", "error_message": str(exc),
                                "smtp_response": exc.response or None})
        log.warning("batch %s e-mail refused permanently: %s", batch_id, exc)
        return SendOutcome("failed", detail=str(exc))
    _record_attempt(log_id, batch_id, attempt, success=True, error=None, next_retry_at=None,
                    values={"send_status": "sent", "sent_at": func.now(),
                            "smtp_response": response, "error_message": None})
    log.info("batch %s e-mail sent (attempt %d)", batch_id, attempt)
    return SendOutcome("sent", detail=response)


def emails_to_redrive(new_after: timedelta, retry_after: timedelta, sending_after: timedelta,
                      limit: int = 200) -> list[uuid.UUID]:
    """Batches whose e-mail task was lost, for the sweeper to publish again.

    A never-tried ``pending`` row older than ``new_after`` lost its first task (the closing
    process died before publishing); a tried one older than ``retry_after`` (longer than
    any backoff) lost its retry. A ``sending`` row older than ``sending_after`` belongs to a
    worker that died during SMTP; it is put back to ``pending`` (the deterministic
    Message-ID lets mail systems collapse the rare duplicate this can cause). Publishing
    twice is harmless: only one task can claim the row.
    """
    with session_scope() as s:
        now = s.execute(select(func.now())).scalar_one()
        s.execute(
            update(EmailNotificationLog)
            .where(EmailNotificationLog.send_status == "sending",
                   EmailNotificationLog.updated_at < now - sending_after)
            .values(send_status="pending", updated_at=now)
        )
        rows = s.execute(
            select(EmailNotificationLog.batch_id)
            .where(
                EmailNotificationLog.send_status == "pending",
                ((EmailNotificationLog.send_attempts == 0)
                 & (EmailNotificationLog.updated_at < now - new_after))
                | (EmailNotificationLog.updated_at < now - retry_after),
            )
            .limit(limit)
        ).scalars()
        return list(rows)

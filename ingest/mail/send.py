"""Sending a batch's summary e-mail: claim → render → SMTP → record (DESIGN §4, §8).

The ``email_notification_log`` row (one per batch and type) goes through the send path
every user e-mail shares, :mod:`ingest.mail.outbox` (claim ``pending → sending`` committed
with the rendered message before SMTP, the rate limit, retries within
``SMTP_RETRY_WINDOW_MINUTES``, the 250 remembered in Redis and committed with retries,
``body_started_at`` before ``DATA``, and the sweeper's rules for a worker that died during
SMTP). What is the batch's own: every attempt writes a ``notification_retry_log`` row
(whose first row since the e-mail fell due starts the retry window), a sent e-mail marks
the batch ``notification_sent``, and a final failure's alert names
``ingest email resend BATCH_ID``. A daily user's row is ``skipped`` (``for_digest``): the
daily digest (:mod:`ingest.mail.digest`) reports the batch instead.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ingest.batches import BATCH_EMAIL, NO_RECIPIENT
from ingest.db import session_scope
from ingest.log_context import binds
from ingest.mail.outbox import (
    Claim,
    Outbox,
    SendOutcome,
    claim_values,
    send_claimed,
    to_claim,
    to_redrive,
)
from ingest.mail.render import BatchSummary, FileLine, RenderedEmail, render_batch_summary
from ingest.models import (
    AutoCorrectionTask,
    BatchFile,
    BatchProcessingSession,
    EmailNotificationLog,
    NotificationRetryLog,
)
from ingest.preferences import Preferences
from ingest.settings import Settings

__all__ = ["SENT_MARKER", "SendOutcome", "emails_to_redrive", "load_summary", "resend",
           "send_batch_email", "summaries_of"]

log = logging.getLogger(__name__)

SENT_MARKER = "kb-ingest:email-sent:{}"


class BatchOutbox(Outbox):
    """The batch summary's row: attempts in ``notification_retry_log``."""

    model = EmailNotificationLog
    marker = SENT_MARKER
    noun = "batch"

    def ref_column(self) -> Any:
        return EmailNotificationLog.batch_id

    def retry_due(self) -> Any:
        return (select(func.max(NotificationRetryLog.next_retry_at))
                .where(NotificationRetryLog.batch_id == EmailNotificationLog.batch_id)
                .scalar_subquery())

    def write_attempt(self, s: Session, claim: Claim, *, success: bool, error: str | None,
                      next_retry_at: datetime | None, values: dict[str, object]) -> None:
        s.add(NotificationRetryLog(batch_id=claim.ref, retry_attempt=claim.attempt,
                                   success=success, error_message=error,
                                   next_retry_at=next_retry_at))
        if success:
            s.execute(update(BatchProcessingSession)
                      .where(BatchProcessingSession.batch_id == claim.ref)
                      .values(notification_sent=True, notification_sent_at=func.now()))

    def log_settled(self, s: Session, row: Any, *, success: bool, error: str | None) -> None:
        s.add(NotificationRetryLog(batch_id=row.ref, retry_attempt=row.send_attempts,
                                   success=success, error_message=error))

    def title(self, ref: Any) -> str:
        return f"The summary e-mail of batch {ref}"


BATCHES = BatchOutbox()


def _claim(s: Session, batch_id: uuid.UUID, settings: Settings) -> Claim | None:
    # Not while held for the user's quiet hours (``send_not_before``); such a row falls due
    # when they end: the due → sent latency counts from then.
    not_before = EmailNotificationLog.send_not_before
    # The retry window starts at the first attempt since the e-mail fell due (a resend moves
    # created_at), so waiting for the rate limit does not use it up.
    first_attempt = (select(func.min(NotificationRetryLog.retry_at))
                     .where(NotificationRetryLog.batch_id == EmailNotificationLog.batch_id,
                            NotificationRetryLog.retry_at >= EmailNotificationLog.created_at)
                     .correlate(EmailNotificationLog).scalar_subquery())
    row = s.execute(
        update(EmailNotificationLog)
        .where(EmailNotificationLog.batch_id == batch_id,
               EmailNotificationLog.email_type == BATCH_EMAIL,
               EmailNotificationLog.send_status == "pending",
               not_before.is_(None) | (not_before <= func.now()))
        .values(send_attempts=EmailNotificationLog.send_attempts + 1, **claim_values())
        .returning(EmailNotificationLog.id, EmailNotificationLog.send_attempts,
                   EmailNotificationLog.recipient_email,
                   func.greatest(EmailNotificationLog.created_at, not_before).label("due_at"),
                   func.coalesce(first_attempt, func.now()).label("first_attempt"),
                   func.now().label("now"))
    ).first()
    return None if row is None else to_claim(row, batch_id, settings)


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
        return summary_in(s, batch_id)


def summary_in(s: Session, batch_id: uuid.UUID) -> tuple[BatchSummary, Preferences]:
    """:func:`load_summary` in the caller's transaction."""
    batch = s.execute(select(BatchProcessingSession)
                      .where(BatchProcessingSession.batch_id == batch_id)).scalar_one()
    (summary,) = summaries_of(s, [batch])
    return summary, Preferences.model_validate(batch.user_preferences_snapshot or {})


def summaries_of(s: Session, batches: Sequence[BatchProcessingSession]) -> list[BatchSummary]:
    """The summaries of closed batches, in their order: two statements whatever their
    number (their files, their corrections)."""
    ids = [b.batch_id for b in batches]
    lines: dict[uuid.UUID, list[FileLine]] = {batch_id: [] for batch_id in ids}
    corrections = {
        (t.batch_id, t.file_document_id): t for t in s.execute(
            select(AutoCorrectionTask).where(AutoCorrectionTask.batch_id.in_(ids))
        ).scalars()
    }
    for f in s.execute(select(BatchFile).where(BatchFile.batch_id.in_(ids))
                       .order_by(BatchFile.file_name, BatchFile.id)).scalars():
        lines[f.batch_id].append(FileLine(
            name=f.file_name, succeeded=f.processing_status == "success",
            chunks=f.chunks_created, error_category=f.error_category,
            error_message=f.error_message,
            correction=_correction_sentence(corrections.get((f.batch_id, f.file_document_id))),
        ))
    return [
        BatchSummary(
            batch_id=b.batch_id, user_email=b.user_email, company_id=b.company_id,
            bot_id=b.bot_id, status=b.status, total=b.total_files,
            succeeded=b.successful_files, failed=b.failed_files,
            started_at=b.batch_start_time, finished_at=b.batch_end_time or b.updated_at,
            files=lines[b.batch_id],
        )
        for b in batches
    ]


@binds(batch_id="batch_id")
def send_batch_email(batch_id: uuid.UUID, settings: Settings) -> SendOutcome:
    """Send the batch's summary once; safe to call again (a second call finds no claim)."""
    def build(s: Session, claim: Claim) -> RenderedEmail:
        summary, prefs = summary_in(s, batch_id)
        return render_batch_summary(
            summary, prefs, from_email=settings.from_email, from_name=settings.from_name,
            unsubscribe_url=settings.unsubscribe_url, list_cap=settings.email_list_cap)

    return send_claimed(BATCHES, batch_id, settings, lambda s: _claim(s, batch_id, settings),
                        build)


@binds(batch_id="batch_id")
def resend(batch_id: uuid.UUID, settings: Settings) -> SendOutcome:
    """``ingest email resend``: send a failed or skipped batch e-mail once more, now (not
    one left to a daily digest: ``ingest email resend-digest`` re-sends that)."""
    with session_scope() as s:
        row = s.execute(
            update(EmailNotificationLog)
            .where(EmailNotificationLog.batch_id == batch_id,
                   EmailNotificationLog.email_type == BATCH_EMAIL,
                   EmailNotificationLog.send_status.in_(("failed", "skipped")),
                   EmailNotificationLog.recipient_email != NO_RECIPIENT,
                   EmailNotificationLog.for_digest.is_(False))
            .values(send_status="pending", error_message=None, created_at=func.now(),
                    updated_at=func.now())
            .returning(EmailNotificationLog.id)
        ).first()
    if row is None:
        return SendOutcome("nothing", detail="no failed or skipped e-mail with a recipient "
                                             "for this batch")
    log.warning("batch %s e-mail re-sent by an operator", batch_id)
    return send_batch_email(batch_id, settings)


def emails_to_redrive(new_after: timedelta, retry_after: timedelta, sending_after: timedelta,
                      limit: int = 200) -> list[uuid.UUID]:
    """Batches whose e-mail task was lost, for the sweeper to publish again (the rules of
    :func:`ingest.mail.outbox.to_redrive`; a retry's due time is in the retry log)."""
    return to_redrive(BATCHES, new_after, retry_after, sending_after, limit)

"""Sending a daily digest (``email_digests``, created by :mod:`ingest.digests`).

A digest goes through the send path every user e-mail shares (:mod:`ingest.mail.outbox`):
the claim commits with the rendered message before SMTP, the rate limit, retries within
``SMTP_RETRY_WINDOW_MINUTES`` of its first attempt (``first_attempt_at``), the 250
remembered in Redis, ``body_started_at`` before ``DATA``, and the sweeper's settling of a
worker that died during SMTP. Its attempts are counted and described on its own row
(``send_attempts``, ``next_attempt_at``, ``error_message``). Rendering reads the covered
batches, their files and their corrections in three statements, whatever their number.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ingest.db import session_scope
from ingest.mail.outbox import (
    Claim,
    Outbox,
    SendOutcome,
    claim_values,
    send_claimed,
    to_claim,
    to_redrive,
)
from ingest.mail.render import DigestSummary, RenderedEmail, render_digest
from ingest.mail.send import summaries_of
from ingest.models import BatchProcessingSession, EmailDigest, EmailNotificationLog
from ingest.preferences import Preferences
from ingest.settings import Settings

log = logging.getLogger(__name__)

DIGEST_SENT_MARKER = "kb-ingest:digest-sent:{}"


class DigestOutbox(Outbox):
    """The daily digest's row: its attempts are described on the row itself."""

    model = EmailDigest
    marker = DIGEST_SENT_MARKER
    noun = "digest"

    def ref_column(self) -> Any:
        return EmailDigest.id

    def retry_due(self) -> Any:
        return EmailDigest.next_attempt_at

    def write_attempt(self, s: Session, claim: Claim, *, success: bool, error: str | None,
                      next_retry_at: datetime | None, values: dict[str, object]) -> None:
        s.execute(update(EmailDigest).where(EmailDigest.id == claim.log_id)
                  .values(next_attempt_at=next_retry_at))

    def log_settled(self, s: Session, row: Any, *, success: bool, error: str | None) -> None:
        """Nothing beyond the row's new values."""

    def title(self, ref: Any) -> str:
        return f"The daily digest e-mail {ref}"

    def resend_command(self, ref: Any) -> str:
        return f"ingest email resend-digest {ref}"


DIGESTS = DigestOutbox()


def _claim(s: Session, digest_id: int, settings: Settings) -> Claim | None:
    """``pending → sending`` unless held for quiet hours; the retry window runs from the
    first attempt (a resend clears it)."""
    D = EmailDigest
    not_before = D.send_not_before
    row = s.execute(
        update(D)
        .where(D.id == digest_id, D.send_status == "pending",
               not_before.is_(None) | (not_before <= func.now()))
        .values(send_attempts=D.send_attempts + 1,
                first_attempt_at=func.coalesce(D.first_attempt_at, func.now()),
                **claim_values())
        .returning(D.id, D.send_attempts, D.recipient_email,
                   func.greatest(D.created_at, not_before).label("due_at"),
                   func.coalesce(D.first_attempt_at, func.now()).label("first_attempt"),
                   func.now().label("now"))
    ).first()
    return None if row is None else to_claim(row, digest_id, settings)


def load_digest(s: Session, digest_id: int) -> tuple[DigestSummary, Preferences]:
    """The digest with its batches (oldest first), and the newest batch's preferences
    (its ``email_format``); three statements."""
    digest = s.execute(select(EmailDigest).where(EmailDigest.id == digest_id)).scalar_one()
    batches = s.execute(
        select(BatchProcessingSession)
        .join(EmailNotificationLog,
              EmailNotificationLog.batch_id == BatchProcessingSession.batch_id)
        .where(EmailNotificationLog.digest_id == digest_id)
        .order_by(BatchProcessingSession.batch_end_time, BatchProcessingSession.id)
    ).scalars().all()
    prefs = [Preferences.model_validate(b.user_preferences_snapshot or {}) for b in batches]
    summary = DigestSummary(
        digest_id=digest.id, user_email=digest.recipient_email,
        digest_date=digest.digest_date, period_start=digest.period_start,
        cut_off=digest.cut_off, batches=list(zip(summaries_of(s, batches), prefs, strict=True)))
    return summary, prefs[-1] if prefs else Preferences()


def send_digest(digest_id: int, settings: Settings) -> SendOutcome:
    """Send the digest once; safe to call again (a second call finds no claim)."""
    def build(s: Session, claim: Claim) -> RenderedEmail:
        digest, prefs = load_digest(s, digest_id)
        return render_digest(digest, prefs, from_email=settings.from_email,
                             from_name=settings.from_name,
                             unsubscribe_url=settings.unsubscribe_url,
                             list_cap=settings.email_list_cap)

    return send_claimed(DIGESTS, digest_id, settings, lambda s: _claim(s, digest_id, settings),
                        build)


def resend_digest(digest_id: int, settings: Settings) -> SendOutcome:
    """``ingest email resend-digest``: send a failed digest once more, now."""
    with session_scope() as s:
        row = s.execute(
            update(EmailDigest)
            .where(EmailDigest.id == digest_id, EmailDigest.send_status == "failed")
            .values(send_status="pending", error_message=None, first_attempt_at=None,
                    next_attempt_at=None, send_not_before=None, updated_at=func.now())
            .returning(EmailDigest.id)
        ).first()
    if row is None:
        return SendOutcome("nothing", detail="no failed digest with this id")
    log.warning("digest %s re-sent by an operator", digest_id)
    return send_digest(digest_id, settings)


def digests_to_redrive(new_after: timedelta, retry_after: timedelta, sending_after: timedelta,
                       limit: int = 200) -> list[int]:
    """Digests whose send task was lost (the rules of :func:`ingest.mail.outbox.to_redrive`)."""
    return to_redrive(DIGESTS, new_after, retry_after, sending_after, limit)

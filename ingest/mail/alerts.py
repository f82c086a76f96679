"""Operator alerts: plain-text e-mails to ``ADMIN_EMAIL`` about what only an operator can fix.

An alert is a row of ``operator_alerts``, written by :func:`raise_alert` in the same
transaction as the state it reports (a failed correction, a tripped breaker, a file that
failed for an infrastructure, resource or key reason). Its ``dedupe_key`` makes each alert
happen once however often the cause is seen. :func:`send_pending_alerts` (called by the beat
sweeper) mails the pending rows; a transient SMTP failure leaves the row pending for the next
sweep, up to ``ALERT_MAX_ATTEMPTS``. The subject names only the kind and an id, never user
text; every alert is also logged at ERROR level when raised.

An alert is an e-mail type of the registry (:class:`~ingest.mail.render.EmailType`
``OPERATOR_ALERT``, folder ``templates/email/operator_alert/``): its subject and text are
rendered when it is raised (so the row holds what will be sent) and the message is built
by the same :func:`~ingest.mail.render.build_message` as the batch summary.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest.db import session_scope
from ingest.mail.render import EmailType, build_message, render_templates
from ingest.mail.smtp import SmtpError, SmtpTransient, deliver
from ingest.models import OperatorAlert
from ingest.settings import Settings

log = logging.getLogger(__name__)
ALERT_MAX_ATTEMPTS = 5

CORRECTION_FAILED = "correction_failed"
BREAKER_TRIPPED = "breaker_tripped"
FILE_NEEDS_OPERATOR = "file_needs_operator"
EMAIL_FAILED = "email_failed"
CHANNEL_FAILED = "channel_failed"

#: Alert kind → what happened, for the subject (``operator_alert/subject.txt``).
HEADLINES: dict[str, str] = {
    CORRECTION_FAILED: "auto-correction failed",
    BREAKER_TRIPPED: "corrections held by the circuit breaker",
    FILE_NEEDS_OPERATOR: "a file failed for a reason on our side",
    EMAIL_FAILED: "a summary e-mail could not be delivered",
    CHANNEL_FAILED: "a summary could not be posted to a bot's channel",
}


def raise_alert(s: Session, kind: str, key: str, ref: str, body: str, *,
                batch_id: uuid.UUID | None = None, document_id: str | None = None) -> bool:
    """Record an alert once per ``key`` in the caller's transaction; True if it is new.

    ``ref`` (ids only) goes into the subject, ``body`` (the details) into the text.
    """
    subject, text, _ = render_templates(
        EmailType.OPERATOR_ALERT,
        {"kind": kind, "headline": HEADLINES[kind], "ref": ref, "details": body.rstrip()},
        html=False,
    )
    new = s.execute(
        insert(OperatorAlert)
        .values(kind=kind, dedupe_key=f"{kind}:{key}", subject=subject, body=text,
                batch_id=batch_id, document_id=document_id)
        .on_conflict_do_nothing(constraint="uq_alert_dedupe_key")
        .returning(OperatorAlert.id)
    ).scalar_one_or_none()
    if new is not None:
        log.error("operator alert %s (%s): %s", kind, ref, body.splitlines()[0] if body else "")
    return new is not None


def correction_failed_body(task: Any) -> str:
    """The body of a failed-correction alert."""
    return "\n".join([
        "An automatic clean-up of a failed file did not complete.",
        "",
        f"Correction: {task.id}",
        f"Batch:      {task.batch_id}",
        f"Document:   {task.file_document_id}",
        f"File name:  {task.file_name!r}",
        f"Category:   {task.failure_category}",
        f"Actions:    {', '.join(task.correction_actions)}",
        f"Done:       s3={task.s3_cleanup_completed} cms={task.cms_cleanup_completed} "
        f"chroma={task.chroma_cleanup_completed}",
        "",
        "Inspect auto_correction_tasks.execution_log for this document and remove what is",
        "left by hand (S3 object, CMS entry, Chroma chunks).",
    ]) + "\n"


def alert_correction_failed(task: Any) -> bool:
    """Raise the alert of a correction that gave up (one per batch: never a flood)."""
    with session_scope() as s:
        return raise_alert(s, CORRECTION_FAILED, str(task.batch_id or f"task-{task.id}"),
                           f"correction {task.id}",
                           correction_failed_body(task), batch_id=task.batch_id,
                           document_id=task.file_document_id)


def alert_message(alert: OperatorAlert, settings: Settings) -> EmailMessage:
    """The e-mail of an alert row (text only), to ``ADMIN_EMAIL``."""
    headers = {"Auto-Submitted": "auto-generated", "X-Alert-Kind": alert.kind}
    if alert.batch_id is not None:
        headers["X-Batch-ID"] = str(alert.batch_id)
    domain = settings.from_email.rsplit("@", 1)[-1]
    return build_message(subject=alert.subject, text=alert.body, html=None,
                         to=settings.admin_email or "", from_email=settings.from_email,
                         from_name=settings.from_name,
                         message_id=f"<alert-{alert.id}@{domain}>",
                         date=datetime.now(UTC), extra_headers=headers)


def send_pending_alerts(settings: Settings, limit: int = 50) -> int:
    """Mail pending alerts (one attempt each); returns how many were sent.

    Each alert is claimed with ``FOR UPDATE SKIP LOCKED`` and its outcome committed before
    the next, so two sweepers never mail one alert and a mailed alert is never mailed again.
    """
    if not settings.admin_email:
        with session_scope() as s:
            s.execute(update(OperatorAlert).where(OperatorAlert.status == "pending")
                      .values(status="skipped", error="ADMIN_EMAIL is not set"))
        return 0
    sent = 0
    for _ in range(limit):
        with session_scope() as s:
            alert = s.execute(
                select(OperatorAlert).where(OperatorAlert.status == "pending")
                .order_by(OperatorAlert.id).limit(1).with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if alert is None:
                break
            values: dict[str, Any] = {"attempts": alert.attempts + 1}
            try:
                deliver(alert_message(alert, settings), settings,
                        timeout=settings.smtp_timeout_seconds)
                values.update(status="sent", sent_at=func.now(), error=None)
                sent += 1
            except (SmtpError, ValueError) as exc:  # ValueError: ADMIN_EMAIL is not one address
                last = not isinstance(exc, SmtpTransient) or alert.attempts + 1 >= (
                    ALERT_MAX_ATTEMPTS)
                values.update(status="failed" if last else "pending", error=str(exc))
                log.warning("operator alert %s not sent: %s", alert.id, exc)
                if not last:
                    s.execute(update(OperatorAlert).where(OperatorAlert.id == alert.id)
                              .values(**values))
                    break  # the mail server is unwell: the next sweep tries again
            s.execute(update(OperatorAlert).where(OperatorAlert.id == alert.id).values(**values))
    return sent

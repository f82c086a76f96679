"""Operator alerts: an ``error_alert`` e-mail to ``ADMIN_EMAIL`` when a correction fails.

One alert per batch (the log's unique key on batch and type); the subject carries only the
batch id, never user text. Sent in one attempt: the failed correction is also logged at
ERROR level and stays visible in ``auto_correction_tasks`` and ``/metrics``.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert

from ingest.db import session_scope
from ingest.mail.smtp import SmtpError, deliver
from ingest.models import EmailNotificationLog
from ingest.settings import Settings

log = logging.getLogger(__name__)
ALERT = "error_alert"


def _body(task: Any) -> str:
    lines = [
        "An automatic clean-up of a failed file did not complete.",
        "",
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
    ]
    return "\n".join(lines) + "\n"


def alert_operator(task: Any, settings: Settings) -> bool:
    """Send the batch's one operator alert; True if it was sent now."""
    if not settings.admin_email or task.batch_id is None:
        log.error("correction %s failed; no ADMIN_EMAIL (or no batch) to alert", task.id)
        return False
    subject = f"kb-ingest: auto-correction failed (batch {task.batch_id})"
    body = _body(task)
    with session_scope() as s:
        log_id = s.execute(
            insert(EmailNotificationLog)
            .values(batch_id=task.batch_id, recipient_email=settings.admin_email,
                    company_id=task.company_id or 0, bot_id=task.bot_id or 0,
                    email_type=ALERT, email_subject=subject, email_content_text=body,
                    send_status="sending", send_attempts=1, max_attempts=1)
            .on_conflict_do_nothing(constraint="uq_email_batch_type")
            .returning(EmailNotificationLog.id)
        ).scalar_one_or_none()
    if log_id is None:
        return False  # this batch's operator was already alerted
    message = EmailMessage()
    message["From"] = formataddr((settings.from_name, settings.from_email))
    message["To"] = settings.admin_email
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["X-Batch-ID"] = str(task.batch_id)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    try:
        response, status, error = deliver(message, settings,
                                          timeout=settings.smtp_timeout_seconds), "sent", None
    except SmtpError as exc:
        response, status, error = exc.response or None, "failed", str(exc)
    with session_scope() as s:
        s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == log_id).values(
            send_status=status, smtp_response=response, error_message=error,
            sent_at=func.now() if status == "sent" else None, updated_at=func.now()))
    return status == "sent"

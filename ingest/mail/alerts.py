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
import re
import uuid
from datetime import UTC, datetime, timedelta
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


def alert_message(alert: OperatorAlert, settings: Settings, round_no: int = 1) -> EmailMessage:
    """The e-mail of an alert row (text only), to ``ADMIN_EMAIL``; a repeat says so."""
    headers = {"Auto-Submitted": "auto-generated", "X-Alert-Kind": alert.kind}
    if alert.batch_id is not None:
        headers["X-Batch-ID"] = str(alert.batch_id)
    domain = settings.from_email.rsplit("@", 1)[-1]
    suffix = "" if round_no == 1 else f"-r{round_no}"
    return build_message(subject=_round_subject(alert, settings, round_no), text=alert.body,
                         html=None, to=settings.admin_email or "",
                         from_email=settings.from_email, from_name=settings.from_name,
                         message_id=f"<alert-{alert.id}{suffix}@{domain}>",
                         date=datetime.now(UTC), extra_headers=headers)


def _round_subject(alert: OperatorAlert, settings: Settings, round_no: int) -> str:
    if round_no == 1:
        return alert.subject
    return (f"[not acknowledged, reminder {round_no - 1} of {settings.alert_max_repeats}] "
            f"{alert.subject}")


def alert_urls(settings: Settings) -> list[str]:
    """``ALERT_URLS`` as a list (comma- or space-separated Apprise URLs)."""
    return [u for u in re.split(r"[\s,]+", settings.alert_urls or "") if u]


def _post_to_urls(alert: OperatorAlert, settings: Settings, round_no: int) -> str | None:
    """Post the alert to every ``ALERT_URLS`` channel; None if all took it, else why not."""
    import apprise

    from ingest.notify.channels import quiet_apprise

    targets = apprise.Apprise()
    for url in alert_urls(settings):
        if not targets.add(url):
            return "ALERT_URLS holds a URL Apprise cannot use"
    body = f"{alert.body.rstrip()}\n\nAcknowledge: ingest alerts ack {alert.id}\n"
    with quiet_apprise() as captured:
        ok = targets.notify(title=_round_subject(alert, settings, round_no), body=body,
                            body_format=apprise.NotifyFormat.TEXT,
                            notify_type=apprise.NotifyType.FAILURE)
    if ok:
        return None
    lines = captured.getvalue().strip().splitlines() or ["not delivered"]
    return f"ALERT_URLS: {lines[-1].split(' - ', 2)[-1][:300]}"


def _due(settings: Settings, now: datetime) -> Any:
    """Alerts due a round: never sent (``pending``), or unacknowledged and due a repeat."""
    repeat = now - timedelta(minutes=settings.alert_repeat_minutes)
    return (OperatorAlert.acked_at.is_(None)) & (
        (OperatorAlert.status == "pending")
        | ((OperatorAlert.status == "sent") & (OperatorAlert.rounds >= 1)
           & (OperatorAlert.rounds <= settings.alert_max_repeats)
           & (OperatorAlert.last_round_at < repeat)))


def send_pending_alerts(settings: Settings, limit: int = 50) -> int:
    """Send the alerts due a round (one attempt each); returns how many rounds went out.

    A round is the e-mail to ``ADMIN_EMAIL`` and a post to each ``ALERT_URLS`` channel; it
    counts when either reached someone. An alert not acknowledged within
    ``ALERT_REPEAT_MINUTES`` of its last round gets another, at most ``ALERT_MAX_REPEATS``
    more. Each alert is claimed with ``FOR UPDATE SKIP LOCKED`` and its outcome committed
    before the next, so two sweepers never send one round twice.
    """
    urls = alert_urls(settings)
    if not settings.admin_email and not urls:
        with session_scope() as s:
            s.execute(update(OperatorAlert).where(OperatorAlert.status == "pending")
                      .values(status="skipped", error="neither ADMIN_EMAIL nor ALERT_URLS is set"))
        return 0
    sent = 0
    for _ in range(limit):
        with session_scope() as s:
            now = s.execute(select(func.now())).scalar_one()
            alert = s.execute(
                select(OperatorAlert).where(_due(settings, now))
                .order_by(OperatorAlert.id).limit(1).with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if alert is None:
                break
            round_no = alert.rounds + 1
            values: dict[str, Any] = {"attempts": alert.attempts + 1}
            mail_error: SmtpError | ValueError | None = None
            if settings.admin_email:
                try:
                    deliver(alert_message(alert, settings, round_no), settings,
                            timeout=settings.smtp_timeout_seconds)
                except (SmtpError, ValueError) as exc:  # ValueError: not one address
                    mail_error = exc
                    log.warning("operator alert %s not mailed: %s", alert.id, exc)
            url_error = _post_to_urls(alert, settings, round_no) if urls else None
            if url_error:
                log.warning("operator alert %s not posted: %s", alert.id, url_error)
            reached = (settings.admin_email and mail_error is None) or (urls and not url_error)
            errors = "; ".join(str(e) for e in (mail_error, url_error) if e) or None
            if reached:
                values.update(status="sent", rounds=round_no, last_round_at=now, error=errors)
                if round_no == 1:
                    values["sent_at"] = now
                sent += 1
            elif round_no > 1:  # a repeat that reached no one: tried again next sweep
                values["error"] = errors
            else:
                last = not isinstance(mail_error, SmtpTransient) or alert.attempts + 1 >= (
                    ALERT_MAX_ATTEMPTS)
                values.update(status="failed" if last else "pending", error=errors)
            s.execute(update(OperatorAlert).where(OperatorAlert.id == alert.id).values(**values))
            if not reached:
                break  # the mail server and the channels are unwell: the next sweep tries again
    return sent


def acknowledge(alert_id: int, by: str) -> bool:
    """``ingest alerts ack``: stop the alert's repeats; False if unknown or acked already."""
    with session_scope() as s:
        done = s.execute(
            update(OperatorAlert)
            .where(OperatorAlert.id == alert_id, OperatorAlert.acked_at.is_(None))
            .values(acked_at=func.now(), acked_by=by[:100])
            .returning(OperatorAlert.id)
        ).first()
    if done is not None:
        log.info("operator alert %s acknowledged by %s", alert_id, by[:100])
    return done is not None

"""Sending a batch's summary e-mail: claim → render → SMTP → record (DESIGN §4, §8).

The ``email_notification_log`` row (one per batch and type) is claimed with a conditional
UPDATE ``pending → sending`` that is committed before SMTP is spoken, so two tasks for one
batch can never both deliver. The claim commits in one transaction with the rendered
message, so a failure before SMTP rolls it back; once SMTP has answered, the outcome is
written through a database outage of up to two minutes. Every attempt writes a
``notification_retry_log`` row.

- Over the rate limit (:mod:`ingest.ratelimit`, checked right after the claim), the claim
  is rolled back: the row stays ``pending``, no attempt is counted or logged, and the caller
  is asked to come back when the e-mail's turn comes (``deferred``).
- Transient failures put the row back to ``pending`` and ask the caller to retry after an
  exponential backoff with full jitter, capped at ten minutes, for
  ``SMTP_RETRY_WINDOW_MINUTES`` after the first attempt (default a day, as mail servers do;
  time spent waiting for the rate limit does not count).
- Permanent ones (5xx, or an unknown outcome after the message body was sent) fail it at
  once. A final failure alerts the operator (``operator_alerts``, an ERROR log line;
  ``kb_ingest_emails{send_status="failed"}`` counts it); ``ingest email resend`` re-sends.
- A 250 is recorded as soon as it arrives, before ``QUIT``: at once in Redis
  (``kb-ingest:email-sent:{log id}``), then committed to PostgreSQL with retries; if the
  database stays away, the sweeper that would re-send a ``sending`` row finds the marker and
  records the send instead: never a second e-mail.

A worker that dies during SMTP leaves its row ``sending``; ``body_started_at``, committed
just before ``DATA``, tells the sweeper what it may do with it after ``sending_after``:

- no ``body_started_at``: the body never left, so nothing was delivered: sent again;
- a 250 remembered in Redis: recorded as sent;
- the body started and no reply is on record: the outcome is unknown (the server may have
  queued it). As with a live "outcome unknown", it is not sent again automatically, which
  could deliver it twice: the row fails as ``outcome unknown`` and the operator is alerted,
  with ``ingest email resend`` to send it if the user did not get it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from ingest import metrics
from ingest.batches import BATCH_EMAIL, NO_RECIPIENT
from ingest.db import DB_CONNECTION_ERRORS, session_scope
from ingest.log_context import binds
from ingest.mail.alerts import EMAIL_FAILED, raise_alert
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
from ingest.ratelimit import Turn, email_turn
from ingest.redis_client import get_redis
from ingest.retry import MAX_BACKOFF_SECONDS, backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """``sent``, ``failed``, ``retry`` (after ``retry_in`` seconds), ``deferred`` by the rate
    limit (not an attempt; come back after ``retry_in`` seconds) or ``nothing`` to do."""

    status: str
    retry_in: float = 0.0
    detail: str = ""


SENT_MARKER = "kb-ingest:email-sent:{}"
SENT_MARKER_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class _Claim:
    log_id: int
    attempt: int
    recipient: str
    window_left: float  # seconds of SMTP_RETRY_WINDOW_MINUTES left
    due_for: float  # seconds since the e-mail fell due (its row was created), at the claim
    claimed: float  # time.monotonic() of the claim


def _claim(s: Session, batch_id: uuid.UUID, settings: Settings) -> _Claim | None:
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
        .values(send_status="sending", send_attempts=EmailNotificationLog.send_attempts + 1,
                body_started_at=None, updated_at=func.now())
        .returning(EmailNotificationLog.id, EmailNotificationLog.send_attempts,
                   EmailNotificationLog.recipient_email,
                   func.greatest(EmailNotificationLog.created_at, not_before).label("due_at"),
                   func.coalesce(first_attempt, func.now()).label("first_attempt"),
                   func.now().label("now"))
    ).first()
    if row is None:
        return None
    window = settings.smtp_retry_window_minutes * 60
    trying_for = (row.now - row.first_attempt).total_seconds()
    due_for = (row.now - row.due_at).total_seconds()
    return _Claim(row.id, row.send_attempts, row.recipient_email, window - trying_for, due_for,
                  time.monotonic())


def _defer(s: Session, batch_id: uuid.UUID, claim: _Claim, turn: Turn) -> SendOutcome:
    """Over the rate limit: undo the claim (not an attempt) and come back at the e-mail's
    turn. ``updated_at`` moves to that time, so the sweeper re-drives the row only when its
    task is overdue, not once every ``new_after`` of a long wait."""
    s.rollback()
    s.execute(update(EmailNotificationLog)
              .where(EmailNotificationLog.id == claim.log_id,
                     EmailNotificationLog.send_status == "pending")
              .values(updated_at=func.now() + timedelta(seconds=turn.wait)))
    limit = turn.refused_by.name if turn.refused_by else "unknown"
    metrics.EMAIL_DEFERRED.labels(limit).inc()
    log.info("batch %s e-mail waits %.1fs for its turn under the %s rate limit", batch_id,
             turn.wait, limit)
    return SendOutcome("deferred", retry_in=turn.wait,
                       detail=f"{limit} rate limit: its turn comes in {turn.wait:.0f}s")


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
    """Write an attempt's outcome, through a database outage of up to two minutes: SMTP has
    spoken, so a lost record would leave the row ``sending`` (a 250 lost could even cause a
    second e-mail)."""
    for attempt_state in Retrying(stop=stop_after_delay(120),
                                  wait=wait_exponential_jitter(initial=0.5, max=10),
                                  retry=retry_if_exception_type(DBAPIError), reraise=True,
                                  before_sleep=before_sleep_log(log, logging.WARNING)):
        with attempt_state:
            _write_attempt(log_id, batch_id, attempt, success=success, error=error,
                           next_retry_at=next_retry_at, values=values)


def _write_attempt(log_id: int, batch_id: uuid.UUID, attempt: int, *, success: bool,
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


def _failed(claim: _Claim, batch_id: uuid.UUID, error: str, response: str | None) -> SendOutcome:
    """The e-mail finally failed: record it and alert the operator."""
    _record_attempt(claim.log_id, batch_id, claim.attempt, success=False, error=error,
                    next_retry_at=None,
                    values={"send_status": "failed", "error_message": error,
                            "smtp_response": response})
    metrics.EMAIL_OUTCOMES.labels("failed").inc()
    log.error("batch %s e-mail failed for good after %d attempt(s): %s", batch_id,
              claim.attempt, error)
    with session_scope() as s:
        raise_alert(s, EMAIL_FAILED, str(batch_id), f"batch {batch_id}",
                    f"The summary e-mail of batch {batch_id} could not be delivered after "
                    f"{claim.attempt} attempt(s):\n\n  {error}\n\nFix the cause, then:\n\n"
                    f"  ingest email resend {batch_id}\n", batch_id=batch_id)
    return SendOutcome("failed", detail=error)


@binds(batch_id="batch_id")
def send_batch_email(batch_id: uuid.UUID, settings: Settings) -> SendOutcome:
    """Send the batch's summary once; safe to call again (a second call finds no claim)."""
    # Claim, load, render and store the message in one transaction: if any of it fails (a
    # database outage), the claim is rolled back with it and the task's retry claims again.
    unbuildable: ValueError | None = None
    with session_scope() as s:
        claim = _claim(s, batch_id, settings)
        if claim is None:
            return SendOutcome("nothing", detail="no pending e-mail for this batch")
        turn = email_turn(get_redis(), claim.recipient, settings)
        if turn.wait > 0:
            return _defer(s, batch_id, claim, turn)
        summary, prefs = summary_in(s, batch_id)
        try:
            rendered = render_batch_summary(
                summary, prefs, from_email=settings.from_email, from_name=settings.from_name,
                unsubscribe_url=settings.unsubscribe_url, list_cap=settings.email_list_cap,
            )
        except ValueError as exc:  # an address or header value that cannot be sent safely
            unbuildable = exc
        else:
            s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == claim.log_id)
                      .values(email_subject=rendered.subject, email_content_text=rendered.text,
                              email_content_html=rendered.html,
                              message_id=rendered.message["Message-ID"]))
    if unbuildable is not None:
        return _failed(claim, batch_id, f"the e-mail cannot be built: {unbuildable}", None)
    log_id, attempt = claim.log_id, claim.attempt

    def record_sent(reply: str) -> None:  # before QUIT: the 250 is a fact from here on
        _mark_sent(log_id)
        _record_attempt(log_id, batch_id, attempt, success=True, error=None,
                        next_retry_at=None,
                        values={"send_status": "sent", "sent_at": func.now(),
                                "smtp_response": reply, "error_message": None})

    try:
        response = deliver(rendered.message, settings, timeout=settings.smtp_timeout_seconds,
                           before_body=lambda: _note_body_started(log_id),
                           on_accepted=record_sent)
    except SmtpTransient as exc:
        if claim.window_left <= 0:
            return _failed(claim, batch_id, f"{exc} (still failing after the retry window, "
                           "SMTP_RETRY_WINDOW_MINUTES)", exc.response or None)
        delay = min(backoff_seconds(settings.smtp_retry_base_seconds, attempt - 1,
                                    MAX_BACKOFF_SECONDS), claim.window_left)
        _record_attempt(log_id, batch_id, attempt, success=False, error=str(exc),
                        next_retry_at=datetime.now().astimezone() + timedelta(seconds=delay),
                        values={"send_status": "pending", "error_message": str(exc),
                                "smtp_response": exc.response or None})
        metrics.EMAIL_OUTCOMES.labels("retry").inc()
        log.info("batch %s e-mail attempt %d failed (%s); retry in %.1fs",
                 batch_id, attempt, exc, delay)
        return SendOutcome("retry", retry_in=delay, detail=str(exc))
    except SmtpPermanent as exc:
        return _failed(claim, batch_id, str(exc), exc.response or None)
    metrics.EMAIL_OUTCOMES.labels("sent").inc()
    metrics.EMAIL_DUE_TO_SENT.observe(claim.due_for + time.monotonic() - claim.claimed)
    log.info("batch %s e-mail sent (attempt %d)", batch_id, attempt)
    return SendOutcome("sent", detail=response)


def _note_body_started(log_id: int) -> None:
    """Commit, just before ``DATA``, that the body is about to leave; if that cannot be
    written, nothing is sent (a crash after an unrecorded DATA would look undelivered)."""
    try:
        with session_scope() as s:
            s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == log_id)
                      .values(body_started_at=func.now()))
    except DB_CONNECTION_ERRORS as exc:
        raise SmtpTransient("not sent: the database could not record that the message was "
                            f"about to go out ({type(exc).__name__})") from None


def _mark_sent(log_id: int) -> None:
    """Remember the 250 outside PostgreSQL, in case PostgreSQL cannot take it now."""
    try:
        get_redis().set(SENT_MARKER.format(log_id), "1", ex=SENT_MARKER_TTL_SECONDS)
    except RedisError as exc:
        log.warning("could not record e-mail %s as sent in Redis: %s", log_id, exc)


def _was_sent(log_id: int) -> bool:
    try:
        return bool(get_redis().exists(SENT_MARKER.format(log_id)))
    except RedisError:
        return False


@binds(batch_id="batch_id")
def resend(batch_id: uuid.UUID, settings: Settings) -> SendOutcome:
    """``ingest email resend``: send a failed or skipped batch e-mail once more, now."""
    with session_scope() as s:
        row = s.execute(
            update(EmailNotificationLog)
            .where(EmailNotificationLog.batch_id == batch_id,
                   EmailNotificationLog.email_type == BATCH_EMAIL,
                   EmailNotificationLog.send_status.in_(("failed", "skipped")),
                   EmailNotificationLog.recipient_email != NO_RECIPIENT)
            .values(send_status="pending", error_message=None, created_at=func.now(),
                    updated_at=func.now())
            .returning(EmailNotificationLog.id)
        ).first()
    if row is None:
        return SendOutcome("nothing", detail="no failed or skipped e-mail with a recipient "
                                             "for this batch")
    log.warning("batch %s e-mail re-sent by an operator", batch_id)
    return send_batch_email(batch_id, settings)


def _settle_abandoned(s: Session, row: Any, now: datetime) -> dict[str, object]:
    """The new values of a ``sending`` row whose worker died during SMTP."""
    if _was_sent(row.id):  # delivered; only the record was lost
        s.add(NotificationRetryLog(batch_id=row.batch_id, retry_attempt=row.send_attempts,
                                   success=True,
                                   error_message="recorded after a database outage"))
        return {"send_status": "sent", "sent_at": now}
    if row.body_started_at is None:  # the body never left: nothing was delivered
        return {"send_status": "pending"}
    error = ("SMTP outcome unknown: the worker stopped after the message body started to go "
             f"out (at {row.body_started_at:%Y-%m-%d %H:%M:%S %Z}) and before the server's "
             "reply was recorded; it may have been delivered, so it is not sent again "
             "automatically")
    s.add(NotificationRetryLog(batch_id=row.batch_id, retry_attempt=row.send_attempts,
                               success=False, error_message=error))
    metrics.EMAIL_OUTCOMES.labels("failed").inc()
    log.error("batch %s e-mail outcome unknown after attempt %d: not sent again",
              row.batch_id, row.send_attempts)
    raise_alert(s, EMAIL_FAILED, str(row.batch_id), f"batch {row.batch_id}",
                f"The summary e-mail of batch {row.batch_id} may or may not have been "
                f"delivered:\n\n  {error}.\n\nIf the uploader did not get it:\n\n"
                f"  ingest email resend {row.batch_id}\n", batch_id=row.batch_id)
    return {"send_status": "failed", "error_message": error}


def emails_to_redrive(new_after: timedelta, retry_after: timedelta, sending_after: timedelta,
                      limit: int = 200) -> list[uuid.UUID]:
    """Batches whose e-mail task was lost, for the sweeper to publish again.

    A never-tried ``pending`` row older than ``new_after`` lost its first task (the closing
    process died before publishing); a tried one whose retry is overdue by ``new_after``
    (its ``next_retry_at`` in the retry log) lost its retry — with the worker that held the
    countdown, or with the broker — and one untouched for ``retry_after`` (longer than any
    backoff) is re-driven in any case. A re-driven row's ``updated_at`` is moved to now, so
    a busy queue gets one more copy per ``new_after``, not one per sweep. A ``sending`` row
    older than ``sending_after`` belongs to a worker that died during SMTP: recorded as
    sent if its 250 is remembered in Redis; put back to ``pending`` if its body never
    started (nothing was delivered); else failed as "outcome unknown", with an operator
    alert (see the module docstring). A row held for the user's quiet hours
    (``send_not_before``) is left alone until then, and re-driven by the first sweep after
    it: nothing else publishes it. Publishing twice is harmless: only one task can claim
    the row.
    """
    with session_scope() as s:
        now = s.execute(select(func.now())).scalar_one()
        stale = s.execute(
            select(EmailNotificationLog.id, EmailNotificationLog.batch_id,
                   EmailNotificationLog.send_attempts, EmailNotificationLog.body_started_at)
            .where(EmailNotificationLog.send_status == "sending",
                   EmailNotificationLog.updated_at < now - sending_after)
            .with_for_update(skip_locked=True)
        ).all()
        undelivered = []  # abandoned before their body left: re-driven in this sweep
        for row in stale:
            values = _settle_abandoned(s, row, now)
            s.execute(update(EmailNotificationLog).where(EmailNotificationLog.id == row.id)
                      .values(updated_at=now, **values))
            if values["send_status"] == "pending":
                undelivered.append(row.batch_id)
        retry_due = (select(func.max(NotificationRetryLog.next_retry_at))
                     .where(NotificationRetryLog.batch_id == EmailNotificationLog.batch_id)
                     .scalar_subquery())
        not_before = EmailNotificationLog.send_not_before
        rows = s.execute(
            select(EmailNotificationLog.id, EmailNotificationLog.batch_id)
            .where(
                EmailNotificationLog.send_status == "pending",
                not_before.is_(None) | (not_before <= now),
                # a row held for quiet hours goes at the first sweep after they end
                (EmailNotificationLog.updated_at < now - new_after)
                | (EmailNotificationLog.updated_at < not_before),
                (EmailNotificationLog.send_attempts == 0)
                | (retry_due < now - new_after)
                | (EmailNotificationLog.updated_at < now - retry_after),
            )
            .limit(limit).with_for_update(skip_locked=True)
        ).all()
        if rows:
            s.execute(update(EmailNotificationLog)
                      .where(EmailNotificationLog.id.in_([r.id for r in rows]))
                      .values(updated_at=now))
        return undelivered + [r.batch_id for r in rows]

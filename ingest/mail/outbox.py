"""Claim → render → SMTP → record: the send path every user e-mail shares (DESIGN §4, §8).

A user e-mail is one row — a batch's ``email_notification_log`` row or a daily
``email_digests`` row, with the same column names — and an :class:`Outbox` says how its
attempts are recorded and its failure reported. The rules, the same for every kind:

- The row is claimed with a conditional UPDATE ``pending → sending`` (never while held by
  ``send_not_before``) that commits with the rendered message before SMTP is spoken, so two
  tasks can never both deliver, and a failure before SMTP rolls the claim back.
- Over the rate limit (:mod:`ingest.ratelimit`, checked right after the claim), the claim
  is rolled back: the row stays ``pending``, no attempt is counted or logged, and the caller
  is asked to come back when the e-mail's turn comes (``deferred``).
- Transient failures put the row back to ``pending`` and ask the caller to retry after an
  exponential backoff with full jitter, capped at ten minutes, for
  ``SMTP_RETRY_WINDOW_MINUTES`` after the first attempt; permanent ones (5xx, or an unknown
  outcome after the body was sent) fail it at once, with an operator alert.
- A 250 is recorded as soon as it arrives, before ``QUIT``: at once in Redis (the outbox's
  ``marker``), then committed to PostgreSQL through an outage of up to two minutes.
- ``body_started_at`` is committed just before ``DATA``; a worker that dies during SMTP
  leaves its row ``sending``, and :func:`to_redrive` settles it after ``sending_after``: a
  remembered 250 → sent; no body started → ``pending`` again (nothing was delivered); else
  the outcome is unknown: failed with an alert, never sent twice automatically.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
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
from ingest.db import DB_CONNECTION_ERRORS, session_scope
from ingest.mail.alerts import EMAIL_FAILED, raise_alert
from ingest.mail.render import RenderedEmail
from ingest.mail.smtp import SmtpPermanent, SmtpTransient, deliver
from ingest.ratelimit import Turn, email_turn
from ingest.redis_client import get_redis
from ingest.retry import MAX_BACKOFF_SECONDS, backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)

SENT_MARKER_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class SendOutcome:
    """``sent``, ``failed``, ``retry`` (after ``retry_in`` seconds), ``deferred`` by the rate
    limit (not an attempt; come back after ``retry_in`` seconds) or ``nothing`` to do."""

    status: str
    retry_in: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Claim:
    """A row claimed ``sending`` for one attempt."""

    log_id: int
    ref: Any  # what tasks are published with: the batch id, the digest id
    attempt: int
    recipient: str
    window_left: float  # seconds of SMTP_RETRY_WINDOW_MINUTES left
    due_for: float  # seconds since the e-mail fell due, at the claim
    claimed: float  # time.monotonic() of the claim


def claim_values() -> dict[str, Any]:
    """The SET of a claim ``pending → sending`` (the model's own columns by name)."""
    return {"send_status": "sending", "body_started_at": None, "updated_at": func.now()}


def to_claim(row: Any, ref: Any, settings: Settings) -> Claim:
    """A claim from the claiming UPDATE's ``RETURNING id, send_attempts, recipient_email,
    due_at, first_attempt, now``."""
    window = settings.smtp_retry_window_minutes * 60
    trying_for = (row.now - row.first_attempt).total_seconds()
    return Claim(row.id, ref, row.send_attempts, row.recipient_email, window - trying_for,
                 (row.now - row.due_at).total_seconds(), time.monotonic())


class Outbox(ABC):
    """One kind of user e-mail row: ``model`` has the columns of ``email_notification_log``
    that sending touches; the methods record what is kind-specific."""

    model: Any
    marker: str  # Redis key of a remembered 250, formatted with the row id
    noun: str  # "batch", "digest": how logs and alerts name ``ref``

    @abstractmethod
    def ref_column(self) -> Any:
        """The column published to the send task (the ``ref`` of a claim)."""

    @abstractmethod
    def retry_due(self) -> Any:
        """SQL: when the row's last transient failure asked to be retried."""

    @abstractmethod
    def write_attempt(self, s: Session, claim: Claim, *, success: bool, error: str | None,
                      next_retry_at: datetime | None, values: dict[str, object]) -> None:
        """Record an attempt's outcome and the row's new ``values``."""

    @abstractmethod
    def log_settled(self, s: Session, row: Any, *, success: bool, error: str | None) -> None:
        """Record the outcome settled for a row abandoned during SMTP."""

    @abstractmethod
    def title(self, ref: Any) -> str:
        """``The summary e-mail of batch …``: what an alert is about."""

    def resend_command(self, ref: Any) -> str:
        return f"ingest email resend {ref}"


def _alert(box: Outbox, s: Session, ref: Any, body: str) -> None:
    raise_alert(s, EMAIL_FAILED, str(ref) if box.noun == "batch" else f"{box.noun}-{ref}",
                f"{box.noun} {ref}", body,
                batch_id=ref if box.noun == "batch" else None)


def send_claimed(box: Outbox, ref: Any, settings: Settings,
                 claim: Callable[[Session], Claim | None],
                 build: Callable[[Session, Claim], RenderedEmail]) -> SendOutcome:
    """Claim the row, wait for the rate limit, render and store the message, deliver it."""
    unbuildable: ValueError | None = None
    with session_scope() as s:
        claimed = claim(s)
        if claimed is None:
            return SendOutcome("nothing", detail=f"no pending e-mail for this {box.noun}")
        turn = email_turn(get_redis(), claimed.recipient, settings)
        if turn.wait > 0:
            return _defer(s, box, claimed, turn)
        try:
            rendered = build(s, claimed)
        except ValueError as exc:  # an address or header value that cannot be sent safely
            unbuildable = exc
        else:
            s.execute(update(box.model).where(box.model.id == claimed.log_id)
                      .values(email_subject=rendered.subject, email_content_text=rendered.text,
                              email_content_html=rendered.html,
                              message_id=rendered.message["Message-ID"]))
    if unbuildable is not None:
        return _failed(box, claimed, f"the e-mail cannot be built: {unbuildable}", None)
    return _deliver(box, claimed, rendered, settings)


def _defer(s: Session, box: Outbox, claim: Claim, turn: Turn) -> SendOutcome:
    """Over the rate limit: undo the claim (not an attempt) and come back at the e-mail's
    turn. ``updated_at`` moves to that time, so the sweeper re-drives the row only when its
    task is overdue, not once every ``new_after`` of a long wait."""
    s.rollback()
    s.execute(update(box.model)
              .where(box.model.id == claim.log_id, box.model.send_status == "pending")
              .values(updated_at=func.now() + timedelta(seconds=turn.wait)))
    limit = turn.refused_by.name if turn.refused_by else "unknown"
    metrics.EMAIL_DEFERRED.labels(limit).inc()
    log.info("%s %s e-mail waits %.1fs for its turn under the %s rate limit", box.noun,
             claim.ref, turn.wait, limit)
    return SendOutcome("deferred", retry_in=turn.wait,
                       detail=f"{limit} rate limit: its turn comes in {turn.wait:.0f}s")


def _deliver(box: Outbox, claim: Claim, rendered: RenderedEmail,
             settings: Settings) -> SendOutcome:
    def record_sent(reply: str) -> None:  # before QUIT: the 250 is a fact from here on
        mark_sent(box, claim.log_id)
        record_attempt(box, claim, success=True, error=None, next_retry_at=None,
                       values={"send_status": "sent", "sent_at": func.now(),
                               "smtp_response": reply, "error_message": None})

    try:
        response = deliver(rendered.message, settings, timeout=settings.smtp_timeout_seconds,
                           before_body=lambda: note_body_started(box, claim.log_id),
                           on_accepted=record_sent)
    except SmtpTransient as exc:
        if claim.window_left <= 0:
            return _failed(box, claim, f"{exc} (still failing after the retry window, "
                           "SMTP_RETRY_WINDOW_MINUTES)", exc.response or None)
        delay = min(backoff_seconds(settings.smtp_retry_base_seconds, claim.attempt - 1,
                                    MAX_BACKOFF_SECONDS), claim.window_left)
        record_attempt(box, claim, success=False, error=str(exc),
                       next_retry_at=datetime.now().astimezone() + timedelta(seconds=delay),
                       values={"send_status": "pending", "error_message": str(exc),
                               "smtp_response": exc.response or None})
        metrics.EMAIL_OUTCOMES.labels("retry").inc()
        log.info("%s %s e-mail attempt %d failed (%s); retry in %.1fs",
                 box.noun, claim.ref, claim.attempt, exc, delay)
        return SendOutcome("retry", retry_in=delay, detail=str(exc))
    except SmtpPermanent as exc:
        return _failed(box, claim, str(exc), exc.response or None)
    metrics.EMAIL_OUTCOMES.labels("sent").inc()
    metrics.EMAIL_DUE_TO_SENT.observe(claim.due_for + time.monotonic() - claim.claimed)
    log.info("%s %s e-mail sent (attempt %d)", box.noun, claim.ref, claim.attempt)
    return SendOutcome("sent", detail=response)


def record_attempt(box: Outbox, claim: Claim, *, success: bool, error: str | None,
                   next_retry_at: datetime | None, values: dict[str, object]) -> None:
    """Write an attempt's outcome, through a database outage of up to two minutes: SMTP has
    spoken, so a lost record would leave the row ``sending`` (a 250 lost could even cause a
    second e-mail)."""
    for attempt_state in Retrying(stop=stop_after_delay(120),
                                  wait=wait_exponential_jitter(initial=0.5, max=10),
                                  retry=retry_if_exception_type(DBAPIError), reraise=True,
                                  before_sleep=before_sleep_log(log, logging.WARNING)):
        with attempt_state, session_scope() as s:
            box.write_attempt(s, claim, success=success, error=error,
                              next_retry_at=next_retry_at, values=values)
            s.execute(update(box.model).where(box.model.id == claim.log_id)
                      .values(updated_at=func.now(), **values))


def _failed(box: Outbox, claim: Claim, error: str, response: str | None) -> SendOutcome:
    """The e-mail finally failed: record it and alert the operator."""
    record_attempt(box, claim, success=False, error=error, next_retry_at=None,
                   values={"send_status": "failed", "error_message": error,
                           "smtp_response": response})
    metrics.EMAIL_OUTCOMES.labels("failed").inc()
    log.error("%s %s e-mail failed for good after %d attempt(s): %s", box.noun, claim.ref,
              claim.attempt, error)
    with session_scope() as s:
        _alert(box, s, claim.ref,
               f"{box.title(claim.ref)} could not be delivered after {claim.attempt} "
               f"attempt(s):\n\n  {error}\n\nFix the cause, then:\n\n"
               f"  {box.resend_command(claim.ref)}\n")
    return SendOutcome("failed", detail=error)


def note_body_started(box: Outbox, log_id: int) -> None:
    """Commit, just before ``DATA``, that the body is about to leave; if that cannot be
    written, nothing is sent (a crash after an unrecorded DATA would look undelivered)."""
    try:
        with session_scope() as s:
            s.execute(update(box.model).where(box.model.id == log_id)
                      .values(body_started_at=func.now()))
    except DB_CONNECTION_ERRORS as exc:
        raise SmtpTransient("not sent: the database could not record that the message was "
                            f"about to go out ({type(exc).__name__})") from None


def mark_sent(box: Outbox, log_id: int) -> None:
    """Remember the 250 outside PostgreSQL, in case PostgreSQL cannot take it now."""
    try:
        get_redis().set(box.marker.format(log_id), "1", ex=SENT_MARKER_TTL_SECONDS)
    except RedisError as exc:
        log.warning("could not record %s e-mail %s as sent in Redis: %s", box.noun, log_id,
                    exc)


def was_sent(box: Outbox, log_id: int) -> bool:
    try:
        return bool(get_redis().exists(box.marker.format(log_id)))
    except RedisError:
        return False


def settle_abandoned(box: Outbox, s: Session, row: Any, now: datetime) -> dict[str, object]:
    """The new values of a ``sending`` row whose worker died during SMTP (``row``: ``id,
    ref, send_attempts, body_started_at``)."""
    if was_sent(box, row.id):  # delivered; only the record was lost
        box.log_settled(s, row, success=True, error="recorded after a database outage")
        return {"send_status": "sent", "sent_at": now}
    if row.body_started_at is None:  # the body never left: nothing was delivered
        return {"send_status": "pending"}
    error = ("SMTP outcome unknown: the worker stopped after the message body started to go "
             f"out (at {row.body_started_at:%Y-%m-%d %H:%M:%S %Z}) and before the server's "
             "reply was recorded; it may have been delivered, so it is not sent again "
             "automatically")
    box.log_settled(s, row, success=False, error=error)
    metrics.EMAIL_OUTCOMES.labels("failed").inc()
    log.error("%s %s e-mail outcome unknown after attempt %d: not sent again", box.noun,
              row.ref, row.send_attempts)
    _alert(box, s, row.ref,
           f"{box.title(row.ref)} may or may not have been delivered:\n\n  {error}.\n\n"
           f"If the uploader did not get it:\n\n  {box.resend_command(row.ref)}\n")
    return {"send_status": "failed", "error_message": error}


def to_redrive(box: Outbox, new_after: timedelta, retry_after: timedelta,
               sending_after: timedelta, limit: int = 200) -> list[Any]:
    """The refs of rows whose send task was lost, for the sweeper to publish again.

    A never-tried ``pending`` row older than ``new_after`` lost its first task; a tried one
    whose retry is overdue by ``new_after`` lost its retry (with the worker that held the
    countdown, or with the broker), and one untouched for ``retry_after`` (longer than any
    backoff) is re-driven in any case. A re-driven row's ``updated_at`` moves to now, so a
    busy queue gets one more copy per ``new_after``, not one per sweep. A ``sending`` row
    older than ``sending_after`` is settled (:func:`settle_abandoned`). A row held by
    ``send_not_before`` is left alone until then and re-driven by the first sweep after it.
    Publishing twice is harmless: only one task can claim the row.
    """
    M = box.model
    with session_scope() as s:
        now = s.execute(select(func.now())).scalar_one()
        stale = s.execute(
            select(M.id, box.ref_column().label("ref"), M.send_attempts, M.body_started_at)
            .where(M.send_status == "sending", M.updated_at < now - sending_after)
            .with_for_update(skip_locked=True)
        ).all()
        undelivered = []  # abandoned before their body left: re-driven in this sweep
        for row in stale:
            values = settle_abandoned(box, s, row, now)
            s.execute(update(M).where(M.id == row.id).values(updated_at=now, **values))
            if values["send_status"] == "pending":
                undelivered.append(row.ref)
        not_before = M.send_not_before
        rows = s.execute(
            select(M.id, box.ref_column().label("ref"))
            .where(
                M.send_status == "pending",
                not_before.is_(None) | (not_before <= now),
                # a row held for quiet hours goes at the first sweep after they end
                (M.updated_at < now - new_after) | (M.updated_at < not_before),
                (M.send_attempts == 0)
                | (box.retry_due() < now - new_after)
                | (M.updated_at < now - retry_after),
            )
            .limit(limit).with_for_update(skip_locked=True)
        ).all()
        if rows:
            s.execute(update(M).where(M.id.in_([r.id for r in rows])).values(updated_at=now))
        return undelivered + [r.ref for r in rows]

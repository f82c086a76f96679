"""Batch summaries to a bot's channels: plan → claim → post → record (one row per channel).

- **Plan.** When a batch has closed, :func:`plan` writes one ``channel_deliveries`` row per
  channel of the bot (``idempotency_key`` = batch id + a hash of the channel URL, unique)
  and sets the batch's ``channels_planned_at`` in the same transaction. Planning twice
  adds nothing. The sweeper plans closed batches that were never planned
  (:func:`batches_to_plan`), so a lost task or a CMS outage delays, never drops.
- **Deliver.** :func:`deliver` claims a row ``pending → sending`` with a conditional UPDATE
  committed before the post, so two tasks never post one delivery. Every attempt writes a
  ``channel_delivery_attempts`` row. A transient failure (no answer, 5xx, 408, 429) puts
  it back to ``pending`` with ``next_attempt_at`` (capped backoff with jitter), for
  ``CHANNEL_RETRY_WINDOW_MINUTES`` after the batch closed; a permanent one (another 4xx,
  or a webhook with no ``NOTIFY_WEBHOOK_SECRET``) fails it at once. A final failure
  raises a ``channel_failed`` operator alert. Channels and the e-mail are independent:
  none waits for or blocks another.
- **Crash.** A worker that dies while posting leaves the row ``sending``. After
  ``sending_after`` the sweeper puts a ``webhook`` delivery back to ``pending`` (the
  receiver de-duplicates on ``Idempotency-Key``); a Slack or Teams post, which nobody can
  de-duplicate, may have been shown, so it fails as "outcome unknown" with an alert
  rather than risk a duplicate message.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest import metrics
from ingest.db import session_scope
from ingest.log_context import binds
from ingest.mail.alerts import CHANNEL_FAILED, raise_alert
from ingest.mail.send import summary_in
from ingest.models import BatchProcessingSession, ChannelDelivery, ChannelDeliveryAttempt
from ingest.notify.channels import PostResult, Target, build_post, parse_target, post
from ingest.retry import MAX_BACKOFF_SECONDS, backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryOutcome:
    """``sent``, ``failed``, ``retry`` (after ``retry_in`` seconds) or ``nothing`` to do."""

    status: str
    retry_in: float = 0.0
    detail: str = ""


def idempotency_key(batch_id: uuid.UUID, target: Target) -> str:
    """The delivery's key: one per batch and channel, repeated by every retry."""
    return f"batch-{batch_id}-{target.key}"


def to_plan(batch_id: uuid.UUID) -> tuple[int, int] | None:
    """``(company_id, bot_id)`` of a closed batch not yet planned, else None."""
    with session_scope() as s:
        row = s.execute(
            select(BatchProcessingSession.company_id, BatchProcessingSession.bot_id)
            .where(BatchProcessingSession.batch_id == batch_id,
                   BatchProcessingSession.status != "processing",
                   BatchProcessingSession.channels_planned_at.is_(None))
        ).first()
    return (row.company_id, row.bot_id) if row is not None else None


def plan(batch_id: uuid.UUID, targets: list[Target]) -> list[int]:
    """Write the batch's delivery rows once; the ids of those created now."""
    with session_scope() as s:
        batch = s.execute(
            select(BatchProcessingSession.id)
            .where(BatchProcessingSession.batch_id == batch_id,
                   BatchProcessingSession.status != "processing",
                   BatchProcessingSession.channels_planned_at.is_(None))
            .with_for_update()
        ).first()
        if batch is None:  # still open, planned already, or unknown
            return []
        ids = []
        for target in targets:
            created = s.execute(
                insert(ChannelDelivery)
                .values(batch_id=batch_id, channel=target.kind, target_url=target.url,
                        target_label=target.label,
                        idempotency_key=idempotency_key(batch_id, target))
                .on_conflict_do_nothing(constraint="uq_delivery_idempotency_key")
                .returning(ChannelDelivery.id)
            ).scalar_one_or_none()
            if created is not None:
                ids.append(created)
        s.execute(update(BatchProcessingSession)
                  .where(BatchProcessingSession.batch_id == batch_id)
                  .values(channels_planned_at=func.now()))
    if ids:
        log.info("batch %s: %d channel deliveries planned", batch_id, len(ids))
    return ids


def batches_to_plan(older_than: timedelta, limit: int = 100) -> list[uuid.UUID]:
    """Closed batches whose channels were never planned (their task was lost or failed)."""
    with session_scope() as s:
        return list(s.execute(
            select(BatchProcessingSession.batch_id)
            .where(BatchProcessingSession.status != "processing",
                   BatchProcessingSession.channels_planned_at.is_(None),
                   BatchProcessingSession.batch_end_time < func.now() - older_than)
            .order_by(BatchProcessingSession.batch_end_time).limit(limit)
        ).scalars())


@dataclass(frozen=True)
class _Claim:
    id: int
    batch_id: uuid.UUID
    attempt: int
    target: Target
    key: str
    window_left: float


def _claim(s: Session, delivery_id: int, settings: Settings) -> _Claim | None:
    row = s.execute(
        update(ChannelDelivery)
        .where(ChannelDelivery.id == delivery_id, ChannelDelivery.status == "pending",
               (ChannelDelivery.next_attempt_at.is_(None))
               | (ChannelDelivery.next_attempt_at <= func.now()))
        .values(status="sending", attempts=ChannelDelivery.attempts + 1, updated_at=func.now())
        .returning(ChannelDelivery.batch_id, ChannelDelivery.attempts, ChannelDelivery.channel,
                   ChannelDelivery.target_url, ChannelDelivery.target_label,
                   ChannelDelivery.idempotency_key, ChannelDelivery.created_at,
                   func.now().label("now"))
    ).first()
    if row is None:
        return None
    window = settings.channel_retry_window_minutes * 60
    return _Claim(delivery_id, row.batch_id, row.attempts,
                  Target(row.channel, row.target_url, row.target_label), row.idempotency_key,
                  window - (row.now - row.created_at).total_seconds())


def _record(claim: _Claim, *, success: bool, error: str | None,
            next_attempt_at: datetime | None, values: dict[str, Any]) -> None:
    with session_scope() as s:
        s.add(ChannelDeliveryAttempt(delivery_id=claim.id, attempt=claim.attempt,
                                     success=success, error_message=error,
                                     next_attempt_at=next_attempt_at))
        s.execute(update(ChannelDelivery).where(ChannelDelivery.id == claim.id)
                  .values(updated_at=func.now(), **values))
        if not success and values.get("status") == "failed":
            _alert(s, claim.id, claim.batch_id, claim.target.kind, claim.target.label, error)


def _alert(s: Session, delivery_id: int, batch_id: uuid.UUID, kind: str, label: str,
           error: str | None) -> None:
    metrics.CHANNEL_DELIVERIES.labels(kind, "failed").inc()
    raise_alert(s, CHANNEL_FAILED, str(delivery_id), f"delivery {delivery_id}",
                f"The summary of batch {batch_id} could not be posted to the bot's {kind} "
                f"channel {label}:\n\n  {error}\n\nFix the channel in the CMS "
                "(bot-notification-setting), then:\n\n"
                f"  ingest channels resend {delivery_id}\n", batch_id=batch_id)


@binds(delivery_id="delivery_id")
def deliver(delivery_id: int, settings: Settings) -> DeliveryOutcome:
    """Post one delivery once; safe to call again (a second call finds no claim)."""
    # The claim commits with the summary it reads: a failure before the post (the database
    # gone) rolls the claim back, so it can never look like a post of unknown outcome.
    with session_scope() as s:
        claim = _claim(s, delivery_id, settings)
        if claim is None:
            return DeliveryOutcome("nothing", detail="no pending delivery with this id is due")
        summary, _ = summary_in(s, claim.batch_id)
    try:
        message = build_post(claim.target, summary, list_cap=settings.email_list_cap,
                             idempotency_key=claim.key, secret=settings.notify_webhook_secret)
    except ValueError as exc:
        result = PostResult(False, transient=False, detail=str(exc))
    else:
        result = post(claim.target, message, timeout=settings.channel_timeout_seconds)
    kind, label = claim.target.kind, claim.target.label
    if result.ok:
        _record(claim, success=True, error=None, next_attempt_at=None,
                values={"status": "sent", "sent_at": func.now(), "error_message": None})
        metrics.CHANNEL_DELIVERIES.labels(kind, "sent").inc()
        log.info("batch %s summary posted to %s %s", claim.batch_id, kind, label)
        return DeliveryOutcome("sent")
    if result.transient and claim.window_left > 0:
        delay = min(backoff_seconds(settings.channel_retry_base_seconds, claim.attempt - 1,
                                    MAX_BACKOFF_SECONDS), claim.window_left)
        at = datetime.now().astimezone() + timedelta(seconds=delay)
        _record(claim, success=False, error=result.detail, next_attempt_at=at,
                values={"status": "pending", "next_attempt_at": at,
                        "error_message": result.detail})
        metrics.CHANNEL_DELIVERIES.labels(kind, "retry").inc()
        log.info("delivery %s to %s %s failed (%s); retry in %.1fs", delivery_id, kind, label,
                 result.detail, delay)
        return DeliveryOutcome("retry", retry_in=delay, detail=result.detail)
    error = result.detail if not result.transient else (
        f"{result.detail} (still failing after CHANNEL_RETRY_WINDOW_MINUTES)")
    _record(claim, success=False, error=error, next_attempt_at=None,
            values={"status": "failed", "error_message": error})
    log.error("delivery %s to %s %s failed for good: %s", delivery_id, kind, label, error)
    return DeliveryOutcome("failed", detail=error)


def resend(delivery_id: int, settings: Settings) -> DeliveryOutcome:
    """``ingest channels resend``: post a failed delivery once more, now (same key)."""
    with session_scope() as s:
        row = s.execute(
            update(ChannelDelivery)
            .where(ChannelDelivery.id == delivery_id, ChannelDelivery.status == "failed")
            .values(status="pending", next_attempt_at=None, error_message=None,
                    created_at=func.now(), updated_at=func.now())
            .returning(ChannelDelivery.target_url)
        ).first()
    if row is None:
        return DeliveryOutcome("nothing", detail="no failed delivery with this id")
    try:  # the URL is re-validated: the registry may have narrowed since it was planned
        parse_target(row.target_url)
    except ValueError as exc:
        return DeliveryOutcome("failed", detail=f"the channel URL is no longer valid: {exc}")
    log.warning("delivery %s re-sent by an operator", delivery_id)
    return deliver(delivery_id, settings)


def deliveries_to_redrive(new_after: timedelta, sending_after: timedelta,
                          limit: int = 200) -> list[int]:
    """Deliveries whose task was lost, for the sweeper to publish again.

    A ``pending`` row never tried for ``new_after``, or whose ``next_attempt_at`` passed
    ``new_after`` ago; its ``updated_at`` moves to now, so a busy queue gets one more copy
    per ``new_after``. A ``sending`` row older than ``sending_after``: see the module
    docstring. Publishing twice is harmless: only one task can claim the row.
    """
    with session_scope() as s:
        now = s.execute(select(func.now())).scalar_one()
        stale = s.execute(
            select(ChannelDelivery.id, ChannelDelivery.batch_id, ChannelDelivery.channel,
                   ChannelDelivery.target_label, ChannelDelivery.attempts)
            .where(ChannelDelivery.status == "sending",
                   ChannelDelivery.updated_at < now - sending_after)
            .with_for_update(skip_locked=True)
        ).all()
        again = []
        for row in stale:
            if row.channel == "webhook":
                values: dict[str, Any] = {"status": "pending", "next_attempt_at": None}
                again.append(row.id)
            else:
                error = ("outcome unknown: the worker stopped while posting; it may have been "
                         "shown, so it is not posted again automatically")
                values = {"status": "failed", "error_message": error}
                s.add(ChannelDeliveryAttempt(delivery_id=row.id, attempt=max(row.attempts, 1),
                                             success=False, error_message=error))
                _alert(s, row.id, row.batch_id, row.channel, row.target_label, error)
            s.execute(update(ChannelDelivery).where(ChannelDelivery.id == row.id)
                      .values(updated_at=now, **values))
        due = (((ChannelDelivery.next_attempt_at.is_(None))
                & (ChannelDelivery.updated_at < now - new_after))
               | (ChannelDelivery.next_attempt_at < now - new_after))
        rows = s.execute(
            select(ChannelDelivery.id)
            .where(ChannelDelivery.status == "pending", due,
                   ChannelDelivery.updated_at < now - new_after)
            .limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        if rows:
            s.execute(update(ChannelDelivery).where(ChannelDelivery.id.in_(rows))
                      .values(updated_at=now))
        return again + list(rows)

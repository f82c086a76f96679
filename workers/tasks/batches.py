"""Batch follow-ups: checks after each file, countdown hints, the beat sweeper.

A batch check only reads and conditionally updates rows (``ingest.batches``); hints are a
latency optimisation, the beat sweeper is the guarantee.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError

from ingest.batches import Check, batches_to_check, check_batch, hint_delay_seconds
from ingest.corrections import corrections_to_redrive
from ingest.db import DB_CONNECTION_ERRORS
from ingest.digests import create_due_digests
from ingest.mail.alerts import send_pending_alerts
from ingest.mail.digest import digests_to_redrive
from ingest.mail.send import emails_to_redrive
from ingest.names import (
    TASK_CHECK_BATCH,
    TASK_DELIVER_CHANNEL,
    TASK_PLAN_CHANNELS,
    TASK_RUN_CORRECTION,
    TASK_SEND_BATCH_EMAIL,
    TASK_SEND_DIGEST,
    TASK_SWEEP_BATCHES,
)
from ingest.notify.deliveries import batches_to_plan, deliveries_to_redrive
from ingest.redis_client import get_redis
from ingest.retry import MAX_BACKOFF_SECONDS
from ingest.settings import get_settings
from workers.app import app

HINT_KEY = "kb-ingest:batch-hint:{}"
#: When a user e-mail's task counts as lost (``ingest.mail.outbox.to_redrive``).
REDRIVE_AFTER = {"new_after": timedelta(seconds=30),
                 "retry_after": timedelta(seconds=MAX_BACKOFF_SECONDS + 60),
                 "sending_after": timedelta(minutes=15)}


def _schedule_hint(batch_id: uuid.UUID, at: datetime) -> bool:
    """One pending hint per batch (a Redis NX key); a lost key only costs a sweep's delay."""
    delay = hint_delay_seconds(at, datetime.now(UTC))
    try:
        if not get_redis().set(HINT_KEY.format(batch_id), "1", nx=True,
                               px=int((delay + 1) * 1000)):
            return False
    except RedisError:
        pass  # Redis down: publish anyway; the check is harmless if it runs twice
    app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)], countdown=delay,
                  expires=delay + 600)
    return True


def _notify_closed(result: Check) -> None:
    """A batch that closed now: its e-mail (if wanted) and its channels, independently."""
    if result.email_pending:
        app.send_task(TASK_SEND_BATCH_EMAIL, args=[str(result.batch_id)])
    if result.closed_status is not None:
        app.send_task(TASK_PLAN_CHANNELS, args=[str(result.batch_id)])


def follow_up_batch(batch_id: uuid.UUID, open_until: datetime | None = None) -> str:
    """Check a batch; send its e-mail if it closed, else schedule the next hint.

    ``open_until``: the caller read that the batch stays open and is not due before then
    (as the final write of a file does), so no check is needed yet, only the hint.
    """
    if open_until is not None:
        _schedule_hint(batch_id, open_until)
        return "open"
    result = check_batch(batch_id, get_settings())
    _notify_closed(result)
    if result.next_check_at is not None:
        _schedule_hint(batch_id, result.next_check_at)
    return result.closed_status or "open"


@app.task(name=TASK_CHECK_BATCH, autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True,
          retry_backoff_max=60, retry_jitter=True, max_retries=10)
def check_batch_task(batch_id: str) -> str:
    """A countdown hint: check the batch now (harmless if it is not due or already closed)."""
    with contextlib.suppress(RedisError):  # the key expires by itself
        get_redis().delete(HINT_KEY.format(batch_id))
    return follow_up_batch(uuid.UUID(batch_id))


@app.task(name=TASK_SWEEP_BATCHES)
def sweep_batches() -> int:
    """Check due batches; create the daily digests that are due; re-drive corrections,
    e-mails and digests whose task was lost; mail the pending operator alerts."""
    ids = batches_to_check()
    for batch_id in ids:
        _notify_closed(check_batch(batch_id, get_settings()))
    for correction_id in corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                                unstarted_after=timedelta(seconds=30)):
        app.send_task(TASK_RUN_CORRECTION, args=[correction_id])
    send_pending_alerts(get_settings())
    for batch_id in emails_to_redrive(**REDRIVE_AFTER):
        app.send_task(TASK_SEND_BATCH_EMAIL, args=[str(batch_id)])
    for digest_id in create_due_digests():
        app.send_task(TASK_SEND_DIGEST, args=[digest_id])
    for digest_id in digests_to_redrive(**REDRIVE_AFTER):
        app.send_task(TASK_SEND_DIGEST, args=[digest_id])
    for batch_id in batches_to_plan(older_than=timedelta(seconds=30)):
        app.send_task(TASK_PLAN_CHANNELS, args=[str(batch_id)])
    for delivery_id in deliveries_to_redrive(new_after=timedelta(seconds=30),
                                             sending_after=timedelta(minutes=15)):
        app.send_task(TASK_DELIVER_CHANNEL, args=[delivery_id])
    return len(ids)

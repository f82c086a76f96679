"""The channel tasks: thin wrappers over :mod:`ingest.notify.deliveries`."""

from __future__ import annotations

import uuid
from functools import cache

from celery import Task

from ingest.adapters.cms import CmsClient
from ingest.db import DB_CONNECTION_ERRORS
from ingest.errors import TransientError
from ingest.metrics import TASK_RETRIES
from ingest.names import TASK_DELIVER_CHANNEL, TASK_PLAN_CHANNELS
from ingest.notify.bot_settings import BotChannelStore
from ingest.notify.deliveries import deliver, plan, to_plan
from ingest.redis_client import get_redis
from ingest.settings import get_settings
from workers.app import app


@cache
def _store() -> BotChannelStore:
    settings = get_settings()
    return BotChannelStore(get_redis(), CmsClient.from_settings(settings),
                           ttl_seconds=settings.preferences_cache_ttl_seconds)


@app.task(name=TASK_PLAN_CHANNELS, autoretry_for=(*DB_CONNECTION_ERRORS, TransientError),
          retry_backoff=True, retry_backoff_max=300, retry_jitter=True, max_retries=8)
def plan_channels(batch_id: str) -> int:
    """Look up the bot's channels and write a closed batch's deliveries, then post them.

    A CMS failure with no last-known list retries; the sweeper plans what is left."""
    owner = to_plan(uuid.UUID(batch_id))
    if owner is None:  # open, planned already, or unknown
        return 0
    targets = _store().channels(*owner)
    ids = plan(uuid.UUID(batch_id), targets)
    for delivery_id in ids:
        app.send_task(TASK_DELIVER_CHANNEL, args=[delivery_id])
    return len(ids)


@app.task(name=TASK_DELIVER_CHANNEL, bind=True, max_retries=None,
          autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True, retry_backoff_max=60,
          retry_jitter=True)
def deliver_channel(self: Task, delivery_id: int) -> str:
    """Post one delivery; its row's status makes a duplicate task a no-op."""
    outcome = deliver(delivery_id, get_settings())
    if outcome.status == "retry":
        # Attempts are counted on the row; CHANNEL_RETRY_WINDOW_MINUTES ends them.
        TASK_RETRIES.labels(self.name, "channel_transient").inc()
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status

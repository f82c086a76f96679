"""The outbox relay, run by beat: publishes events the web process could not publish, and
re-drives the work of dead workers and of an emptied broker (``ingest.events``); first it
restores the broker messages a dead worker had fetched but never acked, and publishes again
the events whose message was lost outright (``workers.orphans``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError

from ingest.db import session_scope
from ingest.events import (
    events_awaiting_their_task,
    events_to_relay,
    publish_then_mark_enqueued,
    relay_cutoffs,
)
from ingest.names import TASK_PROCESS_FILE_EVENT, TASK_RELAY_OUTBOX
from ingest.redis_client import broker_was_emptied
from ingest.settings import get_settings
from workers.app import app
from workers.orphans import lost_events, restore_orphans

log = logging.getLogger(__name__)


@app.task(name=TASK_RELAY_OUTBOX)
def relay_outbox() -> int:
    """Publish events left in ``received`` (or lost after enqueueing); returns how many."""
    settings = get_settings()
    received_before, stuck_before = relay_cutoffs(
        datetime.now(UTC), settings.outbox_relay_after_seconds,
        settings.visibility_timeout_seconds,
    )
    try:
        emptied = broker_was_emptied(settings.broker_url)
    except RedisError:
        emptied = False  # the broker is down: nothing can be published anyway
    lost: list[int] = []
    if emptied:
        log.warning("the broker's data is new or was lost: re-publishing every queued event")
    else:
        grace = settings.broker_orphan_grace_seconds
        try:
            restore_orphans(app, grace)
            with session_scope() as s:
                awaiting = events_awaiting_their_task(s, datetime.now(UTC) - timedelta(
                    seconds=grace))
            lost = lost_events(app, awaiting)
        except Exception as exc:  # the outbox part below must run whatever happens here
            log.warning("restoring orphaned broker messages failed: %s: %s",
                        type(exc).__name__, exc)
    with session_scope() as s:
        ids = events_to_relay(s, received_before, stuck_before, broker_emptied=emptied)
        ids += [event_id for event_id in lost if event_id not in ids]
        published = publish_then_mark_enqueued(s, ids, publish_file_event, relayed=True)
    return len(published)


def publish_file_event(event_id: int) -> None:
    """Send ``process_file_event`` from a worker or beat (raises if the broker is down)."""
    app.send_task(TASK_PROCESS_FILE_EVENT, args=[event_id])

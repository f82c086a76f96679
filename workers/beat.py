"""Beat's scheduler: Celery's PersistentScheduler that also records a heartbeat in Redis.

The heartbeat (``BEAT_HEARTBEAT_KEY``, unix time) is written by beat itself on its
scheduler ticks, at most every :data:`HEARTBEAT_EVERY_SECONDS`, so ``ingest probe beat``
and the metrics see beat alive without depending on any worker running its tasks.
Set as ``beat_scheduler`` in ``celeryconfig``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler
from redis.exceptions import RedisError

from ingest.probes import record_beat_heartbeat
from ingest.redis_client import get_redis

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_SECONDS = 5.0


class HeartbeatScheduler(PersistentScheduler):
    """PersistentScheduler whose ticks record beat's heartbeat (throttled)."""

    _last_heartbeat = 0.0
    _redis_failing = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.time()
        if now - self._last_heartbeat >= HEARTBEAT_EVERY_SECONDS:
            self._last_heartbeat = now
            self._heartbeat(now)
        return super().tick(*args, **kwargs)

    def _heartbeat(self, now: float) -> None:
        try:
            record_beat_heartbeat(get_redis(), now)
        except RedisError as exc:
            if not self._redis_failing:  # once per outage, not once per tick
                log.warning("beat heartbeat not recorded: %s", type(exc).__name__)
            self._redis_failing = True
        else:
            self._redis_failing = False

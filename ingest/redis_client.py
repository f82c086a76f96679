"""The process's Redis client (preference cache, batch-check hints); fork-safe by redis-py.

Also the broker's epoch marker, by which the relay learns that queued messages were lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from redis import Redis

from ingest.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    """A client for ``REDIS_URL`` with short timeouts (Redis is an optimisation, not truth)."""
    return Redis.from_url(get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2)


BROKER_EPOCH_KEY = "kb-ingest:broker-epoch"


def broker_was_emptied(broker_url: str) -> bool:
    """True (once) when the broker's Redis has lost its data since the last call.

    A marker key lives beside the queues; if it is gone, so are the messages that were
    queued, reserved or waiting for a retry countdown (a restart without persistence, a
    flush, a failover to an empty replica). The first call on a new broker also says True:
    re-publishing then costs only duplicates, which the claim's lease turns away. Always
    False for a non-Redis broker.
    """
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return False
    client = Redis.from_url(broker_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        return bool(client.set(BROKER_EPOCH_KEY, datetime.now(UTC).isoformat(), nx=True))
    finally:
        client.close()

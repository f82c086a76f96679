"""The process's Redis client (preference cache, batch-check hints); fork-safe by redis-py.

Also the broker's epoch marker, by which the relay learns that queued messages were lost, and
the refusals of workers that could not start, which ``/health`` reports.
"""

from __future__ import annotations

import json
import socket
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


WORKER_REFUSAL_KEY = "kb-ingest:worker-refusal:{}"
WORKER_REFUSAL_TTL_SECONDS = 24 * 3600


def record_worker_refusal(problem: str) -> None:
    """Tell ``/health`` that a worker on this host refused to start, and why."""
    value = {"host": socket.gethostname(), "problem": problem,
             "at": datetime.now(UTC).isoformat(timespec="seconds")}
    get_redis().set(WORKER_REFUSAL_KEY.format(socket.gethostname()), json.dumps(value),
                    ex=WORKER_REFUSAL_TTL_SECONDS)


def clear_worker_refusal() -> None:
    """A worker started on this host: forget an earlier refusal here."""
    get_redis().delete(WORKER_REFUSAL_KEY.format(socket.gethostname()))


def worker_refusals(client: Redis) -> list[dict[str, str]]:
    """The refusals of the last day, one per host."""
    found = []
    for key in client.scan_iter(WORKER_REFUSAL_KEY.format("*"), count=100):
        raw = client.get(key)
        if raw:
            found.append(json.loads(raw))
    return found


BEAT_HEARTBEAT_KEY = "kb-ingest:beat-heartbeat"
"""Unix time of beat's last scheduler tick (written by beat, read by probes and metrics)."""

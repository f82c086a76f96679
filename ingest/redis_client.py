"""The process's Redis client (preference cache, batch-check hints); fork-safe by redis-py."""

from __future__ import annotations

from functools import lru_cache

from redis import Redis

from ingest.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    """A client for ``REDIS_URL`` with short timeouts (Redis is an optimisation, not truth)."""
    return Redis.from_url(get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2)

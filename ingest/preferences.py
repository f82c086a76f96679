"""User notification preferences: the shared Redis cache's keys and invalidation.

The CMS fetch, fallback and clamping arrive with the batch e-mail slice; the web process
already drops a user's cached copy when the CMS reports a change.
"""

from __future__ import annotations

import hashlib

from redis import Redis

CACHE_PREFIX = "kb-ingest:prefs"


def cache_key(company_id: int, bot_id: int, user_email: str) -> str:
    """The Redis key of one user's cached preferences (e-mail case-insensitive, hashed)."""
    digest = hashlib.sha256(user_email.strip().lower().encode()).hexdigest()[:32]
    return f"{CACHE_PREFIX}:{company_id}:{bot_id}:{digest}"


def invalidate(redis: Redis, company_id: int, bot_id: int, user_email: str) -> bool:
    """Drop the cached copy; True if there was one."""
    return bool(redis.delete(cache_key(company_id, bot_id, user_email)))

"""Backoff for retries: exponential with full jitter (AWS architecture blog's "full jitter").

Celery schedules the retry (``task.retry(countdown=…)``); this only computes the countdown.
"""

from __future__ import annotations

import random

MAX_BACKOFF_SECONDS = 600.0  # well below the broker's visibility timeout (celeryconfig)


def backoff_seconds(base: float, retries: int, maximum: float = MAX_BACKOFF_SECONDS) -> float:
    """A random delay in [0, min(maximum, base · 2^retries)]."""
    return random.uniform(0.0, min(maximum, base * (2 ** max(0, retries))))  # noqa: S311

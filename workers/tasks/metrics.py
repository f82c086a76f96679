"""The metrics snapshot task, run by beat: the database figures a scrape of ``/metrics``
shows (:func:`ingest.metrics.write_snapshot`), so no scrape runs SQL."""

from __future__ import annotations

from ingest.db import session_scope
from ingest.metrics import write_snapshot
from ingest.names import TASK_SNAPSHOT_METRICS
from ingest.redis_client import get_redis
from workers.app import app


@app.task(name=TASK_SNAPSHOT_METRICS)
def snapshot_metrics() -> float:
    """Compute and store the snapshot; returns how long the queries took (seconds)."""
    with session_scope() as s:
        return float(write_snapshot(s, get_redis())["seconds"])

"""A bare Celery app with one no-op task, on kb-ingest's own Celery settings and broker.

``make bench`` runs it as ``celery -A bench.noop_app worker -c 2 -Q bench_noop`` (prefork,
as the service's worker) and times N no-op tasks: the floor under any per-task cost.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

QUEUE = "bench_noop"

app = Celery("bench_noop")
app.config_from_object("celeryconfig")  # the same broker, acks, prefetch, events
app.conf.update(task_queues=(Queue(QUEUE, routing_key=QUEUE),), task_default_queue=QUEUE,
                task_routes={}, beat_schedule={}, include=[])


@app.task(name="bench.noop")
def noop(n: int) -> None:
    """Nothing."""


@app.task(name="bench.mark")
def mark(key: str) -> None:
    """The last task of a run: records that the run's tasks were taken."""
    import redis

    redis.Redis.from_url(app.conf.broker_url).set(key, "1")

"""Every Prometheus metric of kb-ingest, in one place (README "Metrics" lists them).

Two kinds:

- **Process metrics** (counters, histograms, live gauges) are prometheus-client objects
  updated where an outcome is decided. With ``PROMETHEUS_MULTIPROC_DIR`` set *before*
  prometheus-client is first imported, every process (gunicorn workers, Celery pool
  children) writes them to files in that directory, and :func:`process_registry` in any
  process on the host shows their sum: the web's ``/metrics`` shows the whole host. A
  process that exits calls :func:`process_exited` (``mark_process_dead``), so its live
  gauges leave the sums; its counters stay counted.
- **System gauges** (queue depth, beat heartbeat, the database figures) are read at scrape
  time by :class:`SystemCollector` with a few Redis commands, never SQL: the database
  figures come from a snapshot that a beat-scheduled task writes (:func:`write_snapshot`),
  so a scrape costs the same with 100 rows or 100 million.

This module imports neither Flask nor Celery.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingest.models import (
    AutoCorrectionTask,
    BatchProcessingSession,
    CorrectionBreaker,
    EmailNotificationLog,
    FileEvent,
    ProcessingError,
    ReconciliationCheckpoint,
)
from ingest.names import QUEUES
from ingest.redis_client import BEAT_HEARTBEAT_KEY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- process metrics ---------------------------------------------------------------------

FILES = Counter(
    "kb_ingest_files", "File events finished, by outcome (done, deleted, ignored, failed) "
    "and error category (none unless failed)", ["outcome", "category"])
TASK_RETRIES = Counter(
    "kb_ingest_task_retries", "Celery task retries, by task and reason", ["task", "reason"])
EMAIL_OUTCOMES = Counter(
    "kb_ingest_email_outcomes", "Batch e-mail attempts and decisions, by outcome (sent, "
    "retry, failed, skipped, deferred: held until the user's quiet hours end, digest: left to the "
    "daily digest); daily digests count their attempts here too", ["outcome"])
EMAIL_DEFERRED = Counter(
    "kb_ingest_email_deferred", "Batch e-mails put back by the rate limit before any SMTP "
    "attempt (one e-mail may be put back more than once), by the limit that held it back "
    "(global, domain)", ["limit"])
EMAIL_RATE_UNCHECKED = Counter(
    "kb_ingest_email_rate_limit_unchecked", "Batch e-mails sent without their rate limit "
    "because Redis could not be asked (the limiter fails open)")
CORRECTION_OUTCOMES = Counter(
    "kb_ingest_correction_outcomes", "Auto-correction runs, by outcome (completed, skipped, "
    "retry, failed)", ["outcome"])
CHANNEL_DELIVERIES = Counter(
    "kb_ingest_channel_deliveries", "Batch summaries posted to bot channels, by channel "
    "(slack, teams, webhook) and outcome (sent, retry, failed)", ["channel", "outcome"])
WEBHOOKS = Counter("kb_ingest_webhooks", "Webhook requests by outcome", ["outcome"])
BROKER_RESTORES = Counter(
    "kb_ingest_broker_messages_restored", "Broker messages of a dead worker (fetched, never "
    "acked) put back on their queue by the beat relay, by task", ["task"])

STAGE_SECONDS = Histogram(
    "kb_ingest_stage_duration_seconds", "Duration of a successful pipeline stage (download, "
    "extract, chunk, embed, store)", ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
STAGE_CPU_SECONDS = Counter(
    "kb_ingest_stage_cpu_seconds", "CPU time (process time, all threads) spent in successful "
    "pipeline stages, by stage: what is left of the worker's CPU is orchestration", ["stage"])
HTTP_SECONDS = Histogram(
    "kb_ingest_http_request_duration_seconds", "Time the web process took to answer, by "
    "route and method", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EMAIL_DUE_TO_SENT = Histogram(
    "kb_ingest_email_due_to_sent_seconds", "From a batch e-mail falling due (its batch "
    "closed, or an operator re-sent it) to the SMTP server accepting it",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400))
PROCESSES = Gauge(
    "kb_ingest_processes", "Live processes (web: gunicorn workers, worker: Celery pool "
    "children) writing to this metrics directory", ["kind"], multiprocess_mode="livesum")

PROCESS_METRICS = (FILES, TASK_RETRIES, EMAIL_OUTCOMES, EMAIL_DEFERRED, EMAIL_RATE_UNCHECKED,
                   CHANNEL_DELIVERIES, CORRECTION_OUTCOMES, WEBHOOKS, BROKER_RESTORES,
                   STAGE_SECONDS, STAGE_CPU_SECONDS, HTTP_SECONDS, EMAIL_DUE_TO_SENT, PROCESSES)


def multiprocess_mode() -> bool:
    """Whether processes share their metrics through ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_ENV))


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the stage's duration and CPU time if the block succeeds (a failure is not a
    duration)."""
    started, cpu = time.perf_counter(), time.process_time()
    yield
    STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)
    STAGE_CPU_SECONDS.labels(stage).inc(time.process_time() - cpu)


def process_registry() -> CollectorRegistry:
    """The process metrics: of every process sharing the directory, else of this one."""
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def process_exited(pid: int) -> None:
    """Drop an exited process's live gauges from the sums (gunicorn ``child_exit``, Celery
    ``worker_process_shutdown``)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)


def serve(port: int) -> None:
    """Serve :func:`process_registry` on ``port`` (a worker's own ``/metrics``)."""
    start_http_server(port, registry=process_registry())


# --- the database snapshot, written by beat's task ---------------------------------------

SNAPSHOT_KEY = "kb-ingest:metrics-snapshot"
UNFINISHED = ("received", "enqueued", "processing")

#: The row-count gauges: (name, help, grouped column, table, condition).
ROW_COUNTS: list[tuple[str, str, Any, Any, Any]] = [
    ("kb_ingest_file_events", "File events by status", FileEvent.status, FileEvent, None),
    ("kb_ingest_unresolved_errors", "Unresolved processing errors by category",
     ProcessingError.error_category, ProcessingError,
     ProcessingError.resolution_status == "unresolved"),
    ("kb_ingest_batches", "Batches by status", BatchProcessingSession.status,
     BatchProcessingSession, None),
    ("kb_ingest_corrections", "Auto-corrections by status", AutoCorrectionTask.status,
     AutoCorrectionTask, None),
    ("kb_ingest_emails", "Notification e-mails by status", EmailNotificationLog.send_status,
     EmailNotificationLog, None),
    ("kb_ingest_emails_without_recipient",
     "Batch e-mails with no usable address (user_email missing or invalid, no fallback)",
     EmailNotificationLog.send_status, EmailNotificationLog,
     EmailNotificationLog.recipient_email == ""),
]


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def compute_snapshot(s: Session) -> dict[str, Any]:
    """The database figures the system gauges show (a few GROUP BYs and lookups)."""
    started = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    for name, _doc, column, table, condition in ROW_COUNTS:
        query = select(column, func.count()).select_from(table).group_by(column)
        if condition is not None:
            query = query.where(condition)
        counts[name] = {str(label): int(n) for label, n in s.execute(query)}
    oldest = s.execute(select(func.min(FileEvent.received_at))
                       .where(FileEvent.status.in_(UNFINISHED))).scalar_one()
    checkpoint = s.get(ReconciliationCheckpoint, "cms-files")
    breaker = s.get(CorrectionBreaker, "corrections")
    return {
        "at": time.time(),
        "row_counts": counts,
        "oldest_unfinished_at": _epoch(oldest),
        "reconciliation_last_run_at": _epoch(checkpoint.last_run_at) if checkpoint else None,
        "breaker_open": int(breaker is not None and breaker.tripped_at is not None),
        "held_corrections": counts["kb_ingest_corrections"].get("held", 0),
        "seconds": time.perf_counter() - started,
    }


def write_snapshot(s: Session, redis: Redis) -> dict[str, Any]:
    """Compute the snapshot and store it in Redis for the scrapes; returns it."""
    snapshot = compute_snapshot(s)
    redis.set(SNAPSHOT_KEY, json.dumps(snapshot))
    return snapshot


# --- what a scrape reads -----------------------------------------------------------------

#: The gauges :class:`SystemCollector` yields besides :data:`ROW_COUNTS`: name → help.
SYSTEM_GAUGES: dict[str, str] = {
    "kb_ingest_queue_depth": "Messages waiting in each Celery queue on the broker (LLEN)",
    "kb_ingest_beat_heartbeat_age_seconds":
        "Seconds since beat's last scheduler tick (+Inf: no heartbeat recorded)",
    "kb_ingest_oldest_unfinished_event_age_seconds":
        "Age of the oldest received, enqueued or processing file event (0: none)",
    "kb_ingest_reconciliation_lag_seconds":
        "Seconds since the CMS reconciliation last committed a run",
    "kb_ingest_corrections_held": "Corrections held for an operator by the breaker",
    "kb_ingest_correction_breaker_open": "1 while the correction circuit breaker is tripped",
    "kb_ingest_metrics_snapshot_age_seconds":
        "Seconds since beat's task last computed the database figures",
}

#: kombu's Redis transport keeps priority sub-queues under these suffixes.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, SYSTEM_GAUGES[name], value=value)


class SystemCollector(Collector):
    """Queue depth, beat heartbeat and the beat snapshot, read from Redis at scrape time.

    ``redis`` holds the heartbeat and the snapshot (``REDIS_URL``); ``broker`` the Celery
    queues (None when the broker is not Redis). An unreachable Redis leaves its gauges out;
    a scrape never fails.
    """

    def __init__(self, redis: Redis, broker: Redis | None) -> None:
        self.redis, self.broker = redis, broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The families described in the README's Metrics section."""
        now = time.time()
        yield from self._queues()
        try:
            heartbeat, raw = self.redis.mget([BEAT_HEARTBEAT_KEY, SNAPSHOT_KEY])
        except RedisError:
            return
        # No key at all (beat never ran, or Redis lost it) is as stale as it gets: +Inf.
        yield _gauge("kb_ingest_beat_heartbeat_age_seconds",
                     now - float(heartbeat) if heartbeat is not None else math.inf)
        if raw is not None:
            yield from self._snapshot(json.loads(raw), now)

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        if self.broker is None:
            return
        try:
            with self.broker.pipeline(transaction=False) as pipe:
                for queue in QUEUES:
                    for suffix in _PRIORITY_SUFFIXES:
                        pipe.llen(queue + suffix)
                lengths = pipe.execute()
        except RedisError:
            return
        name = "kb_ingest_queue_depth"
        family = GaugeMetricFamily(name, SYSTEM_GAUGES[name], labels=["queue"])
        per_queue = len(_PRIORITY_SUFFIXES)
        for n, queue in enumerate(QUEUES):
            family.add_metric([queue], sum(lengths[n * per_queue:(n + 1) * per_queue]))
        yield family

    def _snapshot(self, snap: dict[str, Any], now: float) -> Iterator[GaugeMetricFamily]:
        for name, doc, column, _table, _condition in ROW_COUNTS:
            family = GaugeMetricFamily(name, doc, labels=[column.key])
            for label, count in snap["row_counts"].get(name, {}).items():
                family.add_metric([label], count)
            yield family
        oldest = snap.get("oldest_unfinished_at")
        yield _gauge("kb_ingest_oldest_unfinished_event_age_seconds",
                     now - oldest if oldest is not None else 0.0)
        last_run = snap.get("reconciliation_last_run_at")
        if last_run is not None:  # no sample before the first run
            yield _gauge("kb_ingest_reconciliation_lag_seconds", now - last_run)
        yield _gauge("kb_ingest_corrections_held", snap["held_corrections"])
        yield _gauge("kb_ingest_correction_breaker_open", snap["breaker_open"])
        yield _gauge("kb_ingest_metrics_snapshot_age_seconds", now - snap["at"])


def exposed_names() -> set[str]:
    """Every sample name kb-ingest can expose (for checking alert rules and dashboards)."""
    names = set(SYSTEM_GAUGES) | {row[0] for row in ROW_COUNTS}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    for metric in PROCESS_METRICS:
        for family in metric.describe():
            names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names

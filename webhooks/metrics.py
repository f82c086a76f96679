"""``GET /metrics`` of the web process, and the request-latency hooks.

A scrape shows the process metrics of every process sharing ``PROMETHEUS_MULTIPROC_DIR``
(this host's gunicorn workers and Celery pool children), plus the system gauges that
:class:`ingest.metrics.SystemCollector` reads from Redis. A scrape runs no SQL: the database
figures are the snapshot beat's task wrote (``kb_ingest_metrics_snapshot_age_seconds``
says how old it is). The metrics themselves are defined in :mod:`ingest.metrics`.
"""

from __future__ import annotations

import time
from functools import lru_cache

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis

from ingest.metrics import HTTP_SECONDS, SystemCollector, process_registry

bp = Blueprint("metrics", __name__)


@lru_cache(maxsize=4)
def _broker(url: str) -> Redis | None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    system = CollectorRegistry()
    system.register(SystemCollector(current_app.extensions["kb_redis"],
                                    _broker(current_app.extensions["kb_settings"].broker_url)))
    body = generate_latest(process_registry()) + generate_latest(system)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


@bp.before_app_request
def _start_clock() -> None:
    g.kb_started = time.perf_counter()


@bp.after_app_request
def _observe_latency(response: Response) -> Response:
    started = g.get("kb_started")
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_SECONDS.labels(route, request.method).observe(time.perf_counter() - started)
    return response

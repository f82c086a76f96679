"""``GET /metrics``: request counters of this process plus gauges read from PostgreSQL.

The gauges come from the database at scrape time, so they are right whichever gunicorn
worker answers; set ``PROMETHEUS_MULTIPROC_DIR`` to aggregate the counters across workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ingest.db import session_scope
from ingest.models import FileEvent, ProcessingError

bp = Blueprint("metrics", __name__)


class DatabaseCollector(Collector):
    """Events by status and unresolved errors by category."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        events = GaugeMetricFamily(
            "kb_ingest_file_events", "File events by status", labels=["status"]
        )
        errors = GaugeMetricFamily(
            "kb_ingest_unresolved_errors", "Unresolved processing errors by category",
            labels=["category"],
        )
        try:
            with session_scope() as s:
                for status, count in s.execute(
                    select(FileEvent.status, func.count()).group_by(FileEvent.status)
                ):
                    events.add_metric([status], count)
                for category, count in s.execute(
                    select(ProcessingError.error_category, func.count())
                    .where(ProcessingError.resolution_status == "unresolved")
                    .group_by(ProcessingError.error_category)
                ):
                    errors.add_metric([category], count)
        except Exception:  # a scrape must not fail because the database is down; /health says so
            return
        yield events
        yield errors


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


_db_registry = CollectorRegistry(auto_describe=True)
_db_registry.register(DatabaseCollector())


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    body = generate_latest(_registry()) + generate_latest(_db_registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)

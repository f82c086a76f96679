"""``GET /metrics``: request counters of this process plus gauges read from PostgreSQL.

The gauges come from the database at scrape time, so they are right whichever gunicorn
worker answers; set ``PROMETHEUS_MULTIPROC_DIR`` to aggregate the counters across workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ingest.db import session_scope
from ingest.models import (
    AutoCorrectionTask,
    BatchProcessingSession,
    EmailNotificationLog,
    FileEvent,
    ProcessingError,
)

bp = Blueprint("metrics", __name__)


_GAUGES: list[tuple[str, str, Any, Any, Any]] = [
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


class DatabaseCollector(Collector):
    """Row counts by status (or category) of the tables an operator watches."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = []
        try:
            with session_scope() as s:
                for name, doc, column, table, condition in _GAUGES:
                    family = GaugeMetricFamily(name, doc, labels=[column.key])
                    query = select(column, func.count()).select_from(table).group_by(column)
                    if condition is not None:
                        query = query.where(condition)
                    for label, count in s.execute(query):
                        family.add_metric([label], count)
                    families.append(family)
        except Exception:  # a scrape must not fail because the database is down; /health says so
            return
        yield from families


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

"""The reconciliation task, run by beat: a thin wrapper over :func:`ingest.reconcile.reconcile`.

It stores the CMS file entries whose webhook never arrived, then publishes
``process_file_event`` for each new event and marks it ``enqueued``. If a publish fails the
remaining events stay ``received`` and the outbox relay publishes them. A CMS failure is
logged and the task returns: the next beat run tries again (no retry loop here).
"""

from __future__ import annotations

import logging
from typing import Any

from ingest.adapters.cms import CmsClient
from ingest.db import session_scope
from ingest.errors import TransientError
from ingest.events import publish_then_mark_enqueued
from ingest.names import TASK_RECONCILE_CMS
from ingest.reconcile import reconcile
from ingest.settings import get_settings
from workers.app import app
from workers.tasks.sweepers import publish_file_event

log = logging.getLogger(__name__)


@app.task(name=TASK_RECONCILE_CMS)
def reconcile_cms() -> dict[str, Any]:
    """Poll the CMS for missed file entries and publish their events; returns a summary."""
    settings = get_settings()
    cms = CmsClient.from_settings(settings)
    try:
        result = reconcile(cms, settings)
    except TransientError as exc:  # reconcile reports CMS errors itself; this is a safety net
        log.warning("reconciliation failed: %s; the next run retries", exc)
        return {"error": str(exc)}
    finally:
        cms.session.close()
    if result.error:
        log.warning("reconciliation ended early: %s; the next run retries", result.error)
    with session_scope() as s:
        published = len(publish_then_mark_enqueued(s, result.event_ids, publish_file_event))
    return {
        "skipped": result.skipped,
        "pages": result.pages,
        "entries_seen": result.entries_seen,
        "events_created": result.events_created,
        "published": published,
        "checkpoint": result.new_checkpoint.isoformat() if result.new_checkpoint else None,
        "error": result.error,
    }

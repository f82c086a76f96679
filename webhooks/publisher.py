"""Publishing tasks by name from the web process (no task code, no embedding imports)."""

from __future__ import annotations

import logging

from celery import Celery

from ingest.names import TASK_PROCESS_FILE_EVENT

log = logging.getLogger(__name__)


class Publisher:
    """A Celery client configured from ``celeryconfig`` that only sends tasks."""

    def __init__(self, broker_url: str | None = None) -> None:
        self.celery = Celery("kb_ingest-web")
        self.celery.config_from_object("celeryconfig")
        if broker_url:
            # Celery lets a CELERY_BROKER_URL environment variable override broker_url, but
            # not broker_write_url: an explicit URL given here must win.
            self.celery.conf.broker_write_url = broker_url

    def publish_file_event(self, event_id: int) -> bool:
        """Send ``process_file_event``; False (logged) if the broker is unreachable."""
        try:
            self.celery.send_task(TASK_PROCESS_FILE_EVENT, args=[event_id])
        except Exception as exc:  # the outbox row is committed; the relay will publish it
            log.warning("publish of event %s failed (%s); left for the relay", event_id,
                        type(exc).__name__)
            return False
        return True

    def broker_ok(self, timeout: float = 2.0) -> bool:
        """Whether the broker accepts a connection now."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception:
            return False
        return True

"""Publishing tasks by name from the web process (no task code, no embedding imports)."""

from __future__ import annotations

from celery import Celery

from ingest.names import TASK_PROCESS_FILE_EVENT


class Publisher:
    """A Celery client configured from ``celeryconfig`` that only sends tasks."""

    def __init__(self, broker_url: str | None = None) -> None:
        self.celery = Celery("kb_ingest-web")
        self.celery.config_from_object("celeryconfig")
        if broker_url:
            # Celery lets a CELERY_BROKER_URL environment variable override broker_url, but
            # not broker_write_url: an explicit URL given here must win.
            self.celery.conf.broker_write_url = broker_url

    def publish_file_event(self, event_id: int) -> None:
        """Send ``process_file_event``; raises if the broker is unreachable (see
        :func:`ingest.events.publish_then_mark_enqueued`)."""
        self.celery.send_task(TASK_PROCESS_FILE_EVENT, args=[event_id])

    def broker_ok(self, timeout: float = 2.0) -> bool:
        """Whether the broker accepts a connection now."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception:
            return False
        return True

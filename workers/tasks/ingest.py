"""The ingest task: a thin wrapper over :func:`ingest.pipeline.run.process_event`.

Transient errors are retried with Celery's exponential backoff and full jitter; when the
retries run out the file fails once, like a permanent error.
"""

from __future__ import annotations

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from ingest.errors import TransientError
from ingest.names import TASK_PROCESS_FILE_EVENT
from ingest.pipeline.run import fail_event, process_event
from ingest.settings import get_settings
from workers.app import app


@app.task(name=TASK_PROCESS_FILE_EVENT, bind=True, max_retries=None)
def process_file_event(self: Task, event_id: int) -> str:
    """Process one stored ``file_events`` row; idempotent by the row's status."""
    try:
        return process_event(event_id).status
    except TransientError as exc:
        if self.request.retries >= get_settings().ingest_max_retries:
            fail_event(event_id, exc, retries=self.request.retries)
            return "failed"
        countdown = get_exponential_backoff_interval(
            factor=2, retries=self.request.retries, maximum=app.conf.retry_backoff_max,
            full_jitter=True,
        )
        raise self.retry(exc=exc, countdown=countdown) from exc

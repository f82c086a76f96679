"""The ingest task: a thin wrapper over :func:`ingest.pipeline.run.process_event`.

Transient errors (:class:`TransientError`, a lost database connection) are retried with
Celery's exponential backoff and full jitter; when the retries run out the file fails
once, like a permanent error. An unexpected exception (a bug) also fails the file, with
its stack trace, instead of leaving the event stuck in ``processing``; it is re-raised so
Flower shows the task as failed.
"""

from __future__ import annotations

from celery import Task
from sqlalchemy.exc import DBAPIError, OperationalError

from ingest.errors import TransientError
from ingest.names import TASK_PROCESS_FILE_EVENT, TASK_RUN_CORRECTION
from ingest.pipeline.run import Failure, Outcome, fail_event, process_event
from ingest.retry import backoff_seconds
from ingest.settings import get_settings
from workers.app import app
from workers.tasks.batches import follow_up_batch


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, TransientError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@app.task(name=TASK_PROCESS_FILE_EVENT, bind=True, max_retries=None)
def process_file_event(self: Task, event_id: int) -> str:
    """Process one stored ``file_events`` row; idempotent by the row's status.

    Afterwards the file's batch is checked: it may now be due, or finished.
    """
    try:
        outcome = process_event(event_id)
    except Exception as exc:
        if not _is_transient(exc):
            _follow_up(fail_event(event_id, exc, retries=self.request.retries))
            raise
        if self.request.retries >= get_settings().ingest_max_retries:
            _follow_up(fail_event(event_id, exc, retries=self.request.retries))
            return "failed"
        countdown = backoff_seconds(2.0, self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from exc
    _follow_up(outcome)
    return outcome.status


def _follow_up(result: Outcome | Failure) -> None:
    """Chain the correction of a failed file, then check the file's batch."""
    if result.correction_id is not None:
        app.send_task(TASK_RUN_CORRECTION, args=[result.correction_id])
    if result.batch_id is not None:
        follow_up_batch(result.batch_id)

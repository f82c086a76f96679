"""The ingest task: a thin wrapper over :func:`ingest.pipeline.together.process_with_others`.

- An object not there yet (:class:`ObjectNotYetThere`) is looked for again after the
  countdown the pipeline chose; the pipeline ends the wait after S3_MISSING_GRACE_SECONDS,
  so these retries do not count against INGEST_MAX_RETRIES.
- Transient errors (:class:`TransientError`, a lost database connection) are retried with
  exponential backoff and full jitter; when the retries run out the file fails once with the
  error's category (``infrastructure_error``: never corrected, the operator is alerted).
- Celery's soft time limit and ``MemoryError`` fail the file as ``resource_limit``: the file
  may be fine, so nothing is deleted.
- Celery's hard time limit kills the pool process, like an OOM kill: the attempt's lease
  (``ingest.leases``) lets the relay re-drive the event within about a minute, and after
  MAX_WORKER_LOSSES such losses the file fails as ``resource_limit``.
- Any other exception is a bug: the file fails as ``internal_error`` with its stack trace
  instead of staying in ``processing`` — also when it is raised before the claim (loading
  the services) — and it is re-raised so Flower shows the task failed. If failing the file
  fails too (the database is unwell), the task is retried.
"""

from __future__ import annotations

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task

from ingest.db import DB_CONNECTION_ERRORS, is_disconnect
from ingest.errors import ObjectNotYetThere, ResourceLimit, TransientError
from ingest.metrics import TASK_RETRIES
from ingest.names import TASK_PROCESS_FILE_EVENT, TASK_RUN_CORRECTION
from ingest.pipeline.run import Failure, Outcome, fail_event
from ingest.pipeline.together import process_with_others
from ingest.retry import backoff_seconds
from ingest.settings import get_settings
from workers.app import app
from workers.tasks.batches import follow_up_batch


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, (TransientError, *DB_CONNECTION_ERRORS)) or is_disconnect(exc)


@app.task(name=TASK_PROCESS_FILE_EVENT, bind=True, max_retries=None)
def process_file_event(self: Task, event_id: int, waited: int = 0) -> str:
    """Process one stored ``file_events`` row; idempotent by the row's status.

    ``waited`` counts the retries spent waiting for a missing object. Afterwards the file's
    batch is checked: it may now be due, or finished.
    """
    try:
        outcome = process_with_others(event_id, _other_done)
    except ObjectNotYetThere as exc:
        TASK_RETRIES.labels(self.name, "object_not_there_yet").inc()
        raise self.retry(countdown=exc.retry_in, kwargs={"waited": waited + 1}) from exc
    except (SoftTimeLimitExceeded, MemoryError) as exc:
        limit = ResourceLimit(f"{type(exc).__name__}: the file needed more time or memory "
                              "than this worker allows")
        _fail(self, event_id, limit, self.request.retries)
        return "failed"
    except Exception as exc:
        retries = self.request.retries - waited
        if not _is_transient(exc):
            _fail(self, event_id, exc, retries)
            raise
        if retries >= get_settings().ingest_max_retries:
            _fail(self, event_id, exc, retries)
            return "failed"
        countdown = backoff_seconds(2.0, retries)
        TASK_RETRIES.labels(self.name, getattr(exc, "category", "database")).inc()
        raise self.retry(exc=exc, countdown=countdown, kwargs={"waited": waited}) from exc
    _follow_up(outcome)
    return outcome.status


def _fail(task: Task, event_id: int, exc: BaseException, retries: int) -> None:
    """Fail the event; if even that fails (the database is unwell), run the task again."""
    try:
        _follow_up(fail_event(event_id, exc, retries=retries))
    except Exception as fail_exc:
        TASK_RETRIES.labels(task.name, "recording_failure").inc()
        raise task.retry(countdown=backoff_seconds(2.0, task.request.retries),
                         exc=fail_exc) from fail_exc


def _other_done(outcome: Outcome) -> None:
    """A file processed together with this task's file ended: follow it up, or publish it
    again when its attempt ended in an error that is not its own fault."""
    if outcome.status == "released":
        TASK_RETRIES.labels(TASK_PROCESS_FILE_EVENT, "released_from_group").inc()
        app.send_task(TASK_PROCESS_FILE_EVENT, args=[outcome.event_id],
                      countdown=outcome.retry_in if outcome.retry_in is not None else 1.0)
    else:
        _follow_up(outcome)


def _follow_up(result: Outcome | Failure) -> None:
    """Chain the correction of a failed file (due after its delay), then check the batch."""
    if result.correction_id is not None:
        delay = get_settings().auto_correction_delay_seconds
        app.send_task(TASK_RUN_CORRECTION, args=[result.correction_id],
                      countdown=min(delay, 300))
    if result.batch_id is not None:
        follow_up_batch(result.batch_id, result.batch_open_until)

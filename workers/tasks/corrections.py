"""The correction task (queue ``corrections``): thin wrapper over :mod:`ingest.corrections`.

A correction that is not due yet is looked at again when it is (countdowns of at most five
minutes: long ETAs on Redis are redelivered after the visibility timeout).
"""

from __future__ import annotations

from functools import lru_cache

from celery import Task

from ingest.corrections import CorrectionServices, run_correction
from ingest.db import DB_CONNECTION_ERRORS
from ingest.mail.alerts import alert_correction_failed
from ingest.metrics import TASK_RETRIES
from ingest.names import TASK_RUN_CORRECTION
from ingest.settings import get_settings
from workers.app import app
from workers.tasks.batches import follow_up_batch


@lru_cache(maxsize=1)
def _services() -> CorrectionServices:
    return CorrectionServices.from_settings(get_settings())


@app.task(name=TASK_RUN_CORRECTION, bind=True, max_retries=None,
          autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True, retry_backoff_max=60,
          retry_jitter=True)
def run_correction_task(self: Task, task_id: int) -> str:
    """Run one correction; retries are counted on its row (MAX_CORRECTION_ATTEMPTS)."""
    outcome = run_correction(task_id, _services(), on_final_failure=alert_correction_failed)
    if outcome.status in ("retry", "wait"):
        TASK_RETRIES.labels(self.name, "action_failed" if outcome.status == "retry"
                            else "not_due").inc()
        raise self.retry(countdown=min(outcome.retry_in, 300))
    if outcome.batch_id is not None:
        follow_up_batch(outcome.batch_id)  # the batch may have waited for this correction
    return outcome.status

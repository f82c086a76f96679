"""The correction task (queue ``corrections``): thin wrapper over :mod:`ingest.corrections`."""

from __future__ import annotations

from functools import lru_cache

from celery import Task

from ingest.adapters.cms import CmsClient
from ingest.adapters.s3 import S3Store
from ingest.adapters.vectors import VectorStore
from ingest.corrections import CorrectionServices, run_correction
from ingest.mail.alerts import alert_operator
from ingest.names import TASK_RUN_CORRECTION
from ingest.settings import get_settings
from workers.app import app
from workers.tasks.batches import follow_up_batch


@lru_cache(maxsize=1)
def _services() -> CorrectionServices:
    settings = get_settings()
    return CorrectionServices(settings=settings, s3=S3Store(settings),
                              cms=CmsClient.from_settings(settings),
                              vectors=VectorStore(settings))


@app.task(name=TASK_RUN_CORRECTION, bind=True, max_retries=None)
def run_correction_task(self: Task, task_id: int) -> str:
    """Run one correction; retries are counted on its row (MAX_CORRECTION_ATTEMPTS)."""
    outcome = run_correction(task_id, _services(),
                             on_final_failure=lambda t: alert_operator(t, get_settings()))
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.retry_in)
    if outcome.batch_id is not None:
        follow_up_batch(outcome.batch_id)  # the batch may have waited for this correction
    return outcome.status

"""The e-mail task: thin wrapper over :func:`ingest.mail.send.send_batch_email`."""

from __future__ import annotations

import uuid

from celery import Task

from ingest.db import DB_CONNECTION_ERRORS
from ingest.mail.send import send_batch_email as send
from ingest.metrics import TASK_RETRIES
from ingest.names import TASK_SEND_BATCH_EMAIL
from ingest.settings import get_settings
from workers.app import app


@app.task(name=TASK_SEND_BATCH_EMAIL, bind=True, max_retries=None,
          autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True, retry_backoff_max=60,
          retry_jitter=True)
def send_batch_email(self: Task, batch_id: str) -> str:
    """Send one batch's summary; the log row's status makes a duplicate task a no-op."""
    outcome = send(uuid.UUID(batch_id), get_settings())
    if outcome.status == "retry":
        # Attempts are counted on the log row; SMTP_RETRY_WINDOW_MINUTES ends them.
        TASK_RETRIES.labels(self.name, "smtp_transient").inc()
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status

"""The e-mail tasks: thin wrappers over :func:`ingest.mail.send.send_batch_email` and
:func:`ingest.mail.digest.send_digest`."""

from __future__ import annotations

import random
import time
import uuid

from celery import Task
from celery.exceptions import Retry

from ingest.db import DB_CONNECTION_ERRORS
from ingest.mail.digest import send_digest as send_the_digest
from ingest.mail.outbox import SendOutcome
from ingest.mail.send import send_batch_email as send
from ingest.metrics import TASK_RETRIES
from ingest.names import TASK_SEND_BATCH_EMAIL, TASK_SEND_DIGEST
from ingest.settings import get_settings
from workers.app import app

# A countdown longer than this waits in steps (long ETAs on a Redis broker are redelivered).
MAX_COUNTDOWN_SECONDS = 300.0


@app.task(name=TASK_SEND_BATCH_EMAIL, bind=True, max_retries=None,
          autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True, retry_backoff_max=60,
          retry_jitter=True)
def send_batch_email(self: Task, batch_id: str, not_before: float | None = None) -> str:
    """Send one batch's summary; the log row's status makes a duplicate task a no-op.

    ``not_before`` (unix time) is the e-mail's turn under the rate limit when that is more
    than one countdown away.
    """
    if not_before is not None and not_before - time.time() > 1:
        raise _come_back(self, not_before)
    return _settle(self, send(uuid.UUID(batch_id), get_settings()))


@app.task(name=TASK_SEND_DIGEST, bind=True, max_retries=None,
          autoretry_for=DB_CONNECTION_ERRORS, retry_backoff=True, retry_backoff_max=60,
          retry_jitter=True)
def send_digest(self: Task, digest_id: int, not_before: float | None = None) -> str:
    """Send one daily digest; its row's status makes a duplicate task a no-op."""
    if not_before is not None and not_before - time.time() > 1:
        raise _come_back(self, not_before)
    return _settle(self, send_the_digest(int(digest_id), get_settings()))


def _settle(task: Task, outcome: SendOutcome) -> str:
    """The task's answer to a send's outcome: done, or retried / re-scheduled."""
    if outcome.status == "deferred":
        # Not an attempt: back at its turn, with a little jitter.
        jitter = random.uniform(0, min(1.0, outcome.retry_in / 10))  # noqa: S311
        raise _come_back(task, time.time() + outcome.retry_in + jitter)
    if outcome.status == "retry":
        # Attempts are counted on the row; SMTP_RETRY_WINDOW_MINUTES ends them.
        TASK_RETRIES.labels(task.name, "smtp_transient").inc()
        raise task.retry(countdown=outcome.retry_in)
    return outcome.status


def _come_back(task: Task, at: float) -> Retry:
    """Re-schedule the task for unix time ``at``, in steps of at most one countdown."""
    return task.retry(countdown=max(0.0, min(at - time.time(), MAX_COUNTDOWN_SECONDS)),
                      kwargs={"not_before": at})

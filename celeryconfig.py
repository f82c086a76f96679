"""Every Celery setting of kb-ingest, with the reason for each (DESIGN §5).

Loaded by the worker/beat app (``workers.app``) and by the web process's publisher with
``config_from_object("celeryconfig")``; queue and task names come from ``ingest.names``.
"""

from kombu import Queue

from ingest.names import (
    QUEUE_CORRECTIONS,
    QUEUE_INGEST,
    QUEUE_NOTIFICATIONS,
    TASK_CHECK_BATCH,
    TASK_DELIVER_CHANNEL,
    TASK_PLAN_CHANNELS,
    TASK_PROCESS_FILE_EVENT,
    TASK_RECONCILE_CMS,
    TASK_RELAY_OUTBOX,
    TASK_RUN_CORRECTION,
    TASK_SEND_BATCH_EMAIL,
    TASK_SEND_DIGEST,
    TASK_SNAPSHOT_METRICS,
    TASK_SWEEP_BATCHES,
)
from ingest.settings import get_settings

_settings = get_settings()
VISIBILITY_TIMEOUT = _settings.visibility_timeout_seconds

broker_url = _settings.broker_url
# Results are never read: state lives in PostgreSQL.
task_ignore_result = True
result_backend = None
# One visibility timeout for the broker and every process that talks to it: an unacked
# message is redelivered only after this long, so it must exceed the longest task.
broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
# Keep retrying the broker at start instead of crashing (and silence the 6.0 warning).
broker_connection_retry_on_startup = True
# Ack after the task ran, so a crashed worker's task is redelivered, not lost.
task_acks_late = True
# A child killed by the OOM killer or SIGKILL gets its task requeued, not acked.
task_reject_on_worker_lost = True
# One message at a time per process: long tasks must not sit reserved behind each other.
worker_prefetch_multiplier = 1
# If the broker connection drops, cancel running late-ack tasks: their messages will be
# redelivered anyway, and running them twice in parallel is avoidable waste.
worker_cancel_long_running_tasks_on_connection_loss = True
# Hard limit below the visibility timeout, so no task is still running when its message
# is redelivered; the soft limit leaves time to record the failure.
task_time_limit = VISIBILITY_TIMEOUT // 2
task_soft_time_limit = max(task_time_limit - 60, task_time_limit * 9 // 10)
# Retry backoff is capped well below the visibility timeout (countdowns live on Redis).
retry_backoff_max = 600  # = ingest.retry.MAX_BACKOFF_SECONDS
# Structured, UTC timestamps everywhere.
enable_utc = True
timezone = "UTC"
task_serializer = "json"
accept_content = ["json"]
# Publishing from the web process must fail fast when the broker is down: the outbox row
# is already committed and the beat relay publishes it later.
task_publish_retry_policy = {
    "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
}
broker_connection_timeout = 3
# A replaced pool process must be working within seconds, not crash-loop: the worker's main
# process imports the embedding libraries before forking (workers.app), so a child only
# loads the model's weights (about a second). Celery kills a child that has not reported
# alive within this timeout (default 4 s, shorter than a cold model load on 2 cores).
worker_proc_alive_timeout = 60
# Events are visible in Flower.
worker_send_task_events = True
task_send_sent_event = True

task_default_queue = QUEUE_INGEST
task_queues = (
    Queue(QUEUE_INGEST, routing_key=QUEUE_INGEST),
    Queue(QUEUE_NOTIFICATIONS, routing_key=QUEUE_NOTIFICATIONS),
    Queue(QUEUE_CORRECTIONS, routing_key=QUEUE_CORRECTIONS),
)
task_routes = {
    TASK_PROCESS_FILE_EVENT: {"queue": QUEUE_INGEST},
    TASK_SEND_BATCH_EMAIL: {"queue": QUEUE_NOTIFICATIONS},
    TASK_SEND_DIGEST: {"queue": QUEUE_NOTIFICATIONS},
    TASK_PLAN_CHANNELS: {"queue": QUEUE_NOTIFICATIONS},
    TASK_DELIVER_CHANNEL: {"queue": QUEUE_NOTIFICATIONS},
    TASK_RUN_CORRECTION: {"queue": QUEUE_CORRECTIONS},
    # Reconciliation talks to the CMS only; it feeds the ingest queue.
    TASK_RECONCILE_CMS: {"queue": QUEUE_CORRECTIONS},
    # Sweepers and checks are cheap and must not wait behind a long embedding job.
    TASK_RELAY_OUTBOX: {"queue": QUEUE_NOTIFICATIONS},
    TASK_CHECK_BATCH: {"queue": QUEUE_NOTIFICATIONS},
    TASK_SWEEP_BATCHES: {"queue": QUEUE_NOTIFICATIONS},
    TASK_SNAPSHOT_METRICS: {"queue": QUEUE_NOTIFICATIONS},
}

# Beat records a heartbeat on its ticks (``ingest probe beat``); a tick comes at least this
# often, well inside BEAT_HEARTBEAT_MAX_AGE_SECONDS, whatever the schedule.
beat_scheduler = "workers.beat:HeartbeatScheduler"
beat_max_loop_interval = min(60.0, _settings.beat_heartbeat_max_age_seconds / 4)

# A beat entry that could not run in time is dropped (expires), never piled up.
RELAY_EVERY_SECONDS = 10.0
# The database figures of /metrics: a scrape reads this snapshot instead of running SQL.
METRICS_SNAPSHOT_EVERY_SECONDS = 15.0
beat_schedule = {
    "relay-outbox": {
        "task": TASK_RELAY_OUTBOX,
        "schedule": RELAY_EVERY_SECONDS,
        "options": {"expires": RELAY_EVERY_SECONDS},
    },
    # The safety net of batch closing: due batches are checked even if every hint is lost.
    "sweep-batches": {
        "task": TASK_SWEEP_BATCHES,
        "schedule": _settings.batch_sweep_seconds,
        "options": {"expires": _settings.batch_sweep_seconds},
    },
    # Strapi never retries a webhook: poll the CMS for file entries we never heard of.
    "reconcile-cms": {
        "task": TASK_RECONCILE_CMS,
        "schedule": _settings.reconciliation_every_seconds,
        "options": {"expires": _settings.reconciliation_every_seconds},
    },
    "snapshot-metrics": {
        "task": TASK_SNAPSHOT_METRICS,
        "schedule": METRICS_SNAPSHOT_EVERY_SECONDS,
        "options": {"expires": METRICS_SNAPSHOT_EVERY_SECONDS},
    },
}

"""Queue and task names: the one place they are spelled.

The web process publishes by these names (``send_task``) and never imports task code.
"""

QUEUE_INGEST = "ingest"
QUEUE_NOTIFICATIONS = "notifications"
QUEUE_CORRECTIONS = "corrections"
QUEUES = (QUEUE_INGEST, QUEUE_NOTIFICATIONS, QUEUE_CORRECTIONS)

TASK_PROCESS_FILE_EVENT = "kb_ingest.process_file_event"
TASK_RELAY_OUTBOX = "kb_ingest.relay_outbox"
TASK_CHECK_BATCH = "kb_ingest.check_batch"
TASK_SWEEP_BATCHES = "kb_ingest.sweep_batches"
TASK_SEND_BATCH_EMAIL = "kb_ingest.send_batch_email"
TASK_SEND_DIGEST = "kb_ingest.send_digest"
TASK_PLAN_CHANNELS = "kb_ingest.plan_channels"
TASK_DELIVER_CHANNEL = "kb_ingest.deliver_channel"
TASK_RECONCILE_CMS = "kb_ingest.reconcile_cms"
TASK_RUN_CORRECTION = "kb_ingest.run_correction"
TASK_SNAPSHOT_METRICS = "kb_ingest.snapshot_metrics"

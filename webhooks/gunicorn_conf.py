"""gunicorn settings of the web process: ``gunicorn -c python:webhooks.gunicorn_conf
"webhooks.app:create_app()"``.

Its own log lines go through kb-ingest's logging (JSON, or ``LOG_FORMAT=text``).
With ``PROMETHEUS_MULTIPROC_DIR`` set, each gunicorn worker writes its metrics to that
directory; a worker that exits is marked dead there (``child_exit``), so its live gauges
leave the sums. Bind address and worker count stay gunicorn's own flags (``-b``, ``-w``)
or environment (``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``).
"""

from __future__ import annotations

from typing import Any

from ingest import metrics

# gunicorn's own lines (boot, worker exits, errors) in kb-ingest's log format.
logger_class = "webhooks.gunicorn_logging.JsonLogger"


def post_worker_init(worker: Any) -> None:
    """A gunicorn worker is up: count it in ``kb_ingest_processes{kind="web"}``."""
    metrics.PROCESSES.labels("web").set(1)


def child_exit(server: Any, worker: Any) -> None:
    """Runs in the arbiter when a worker exited, however it ended (also SIGKILL)."""
    metrics.process_exited(worker.pid)

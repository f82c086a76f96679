"""The Celery app of the worker and beat processes.

Before the pool starts, the worker checks that its embedding backend can load (else it exits
non-zero with one line naming the missing package or files) and so imports the backend's
libraries once in the parent. Per worker process: a fresh database pool after the fork,
torch threads = cores ÷ concurrency, and the embedding model loaded once (not per task).
With the embedded Chroma client (no ``CHROMA_HOST``) the worker pins itself to one process,
because several processes writing one ``PersistentClient`` directory corrupt it.

Logging is kb-ingest's own (``ingest.logging_setup``, through Celery's ``setup_logging``
signal); each task's lines carry its ``task_id`` and ``task_name`` (prerun/postrun).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from redis.exceptions import RedisError

from ingest import log_context, metrics
from ingest.db import reset_engine
from ingest.logging_setup import configure_logging
from ingest.pipeline.embedding import backend_problem
from ingest.pipeline.run import warm_up
from ingest.redis_client import clear_worker_refusal, record_worker_refusal
from ingest.settings import get_settings

# Configured here, at import, so that even Celery's first words (a warning before its
# setup_logging signal, say) are lines of our format.
configure_logging()
log = logging.getLogger(__name__)

app = Celery(
    "kb_ingest",
    include=[
        "workers.tasks.ingest",
        "workers.tasks.metrics",
        "workers.tasks.batches",
        "workers.tasks.corrections",
        "workers.tasks.notifications",
        "workers.tasks.channels",
        "workers.tasks.reconcile",
        "workers.tasks.sweepers",
    ],
)
app.config_from_object("celeryconfig")


_concurrency = 1  # the worker's process count, known before the pool forks


@setup_logging.connect
def _setup_logging(loglevel: int | None = None, **_: Any) -> None:
    """Our one configuration (ingest.logging_setup); a receiver here stops Celery's own."""
    configure_logging(loglevel or None)


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    log_context.clear()
    log_context.bind(task_id=task_id, task_name=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    log_context.clear()


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Runs after the options are read and before the pool starts (WorkController)."""
    global _concurrency
    instance = sender
    if instance is None or not hasattr(instance, "concurrency"):
        return
    _concurrency = int(instance.concurrency or os.cpu_count() or 1)
    # A worker that cannot embed would take tasks only to fail them: refuse to start. This
    # also imports the backend's libraries once, before the pool forks its children.
    problem = backend_problem(get_settings().embedding_backend)
    with contextlib.suppress(RedisError):  # /health reports it; Redis is not the truth
        if problem is None:
            clear_worker_refusal()
        else:
            record_worker_refusal(problem)
    if problem is not None:
        log.critical("kb-ingest worker refuses to start: %s", problem)
        raise SystemExit(f"kb-ingest worker refuses to start: {problem}")
    if get_settings().chroma_host:
        return
    if _concurrency > 1:
        log.warning(
            "CHROMA_HOST is not set: the embedded Chroma client is not safe for several "
            "writing processes, so this worker runs with concurrency 1 (was %s). "
            "Run `chroma run` and set CHROMA_HOST to scale out.",
            instance.concurrency,
        )
        instance.concurrency = _concurrency = 1


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    reset_engine()
    metrics.PROCESSES.labels("worker").set(1)
    settings = get_settings()
    threads = 0
    if settings.embedding_backend == "minilm":
        from ingest.pipeline.embedding import limit_torch_threads

        threads = limit_torch_threads(_concurrency)
    started = time.perf_counter()
    try:
        embedder = warm_up().embedder
    except Exception as exc:  # noqa: BLE001 - the first task builds what is missing
        log.warning("warming up the pipeline failed (%s: %s); the first file builds it",
                    type(exc).__name__, exc)
        return
    log.info("embedding model %s loaded in %.2fs (%.2fs with imports; torch threads: %d); "
             "pipeline warm in %.2fs", embedder.name, getattr(embedder, "load_seconds", 0.0),
             getattr(embedder, "cold_start_seconds", 0.0), threads,
             time.perf_counter() - started)


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """WORKER_METRICS_PORT: the main process serves the metrics of its pool children (and of
    every process sharing PROMETHEUS_MULTIPROC_DIR), started once the pool is up."""
    port = get_settings().worker_metrics_port
    if not port:
        return
    try:
        metrics.serve(port)
    except OSError as exc:  # another worker on this host has the port: it keeps running
        log.error("WORKER_METRICS_PORT %d: cannot serve metrics (%s)", port, exc)
        return
    log.info("worker metrics on port %d", port)


@worker_process_shutdown.connect
def _process_exited(pid: int | None = None, **_: Any) -> None:
    """A pool child exits: its live gauges leave the sums (a SIGKILLed child cannot say so;
    its files stay until the metrics directory is emptied at the next deployment)."""
    metrics.process_exited(pid or os.getpid())

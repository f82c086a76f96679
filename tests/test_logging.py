"""JSON logs in every process (worker and its pool children, beat, web, migrations), with
the context fields of the work at hand, readable text on request, and no secret in any line.

The processes run as real subprocesses with ``LOG_FORMAT`` set (the test session itself
logs text); workers and beat use the private broker of ``tests.procs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.samples import make_txt
from ingest.names import TASK_PROCESS_FILE_EVENT
from tests.conftest import (
    CMS_TOKEN,
    REDIS_PORT,
    TMP,
    WEBHOOK_SECRET,
    WEBHOOK_TOKEN,
    _free_port,
    wait_until,
)
from tests.helpers import envelope, file_entry, post, store_event, upload, wait_terminal
from tests.procs import CELERY, ROOT, stop
from webhooks.publisher import Publisher

BIN = Path(sys.executable).parent
# A broker of their own: no message left by another test's subprocess workers reaches them.
BROKER = f"redis://127.0.0.1:{REDIS_PORT}/5"
SMTP_SECRET = "smtp-pa$$word-never-logged"
SECRETS = (SMTP_SECRET, CMS_TOKEN, WEBHOOK_TOKEN, WEBHOOK_SECRET)


def _env(fmt: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "LOG_FORMAT": fmt, "SMTP_PASSWORD": SMTP_SECRET,
            "CELERY_BROKER_URL": BROKER, "EMBEDDING_BACKEND": "hashing", **extra}


def _celery(log: Path, fmt: str, *args: str) -> subprocess.Popen[bytes]:
    """``celery -q …`` (no banner); the log lines (stderr) in ``log``, stdout beside it."""
    with log.open("wb") as err, log.with_suffix(".stdout").open("wb") as out:
        return subprocess.Popen([CELERY, "-A", "workers", "-q", *args], stdout=out,
                                stderr=err, env=_env(fmt), cwd=ROOT, start_new_session=True)


def _celery_stdout(log: Path) -> list[str]:
    """What Celery printed itself (not logged): only its shutdown notice is allowed."""
    lines = [line for line in log.with_suffix(".stdout").read_text(errors="replace")
             .splitlines() if line.strip()]
    assert set(lines) <= {"worker: Warm shutdown (MainProcess)"}, lines
    return lines


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed as JSON (fails on the first line that is not a JSON object)."""
    records = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def _process_one_file(log: Path, fmt: str, s3: Any) -> tuple[int, str, str]:
    """A prefork worker (2 children) in ``fmt`` processes one real file; (event, doc, log)."""
    proc = _celery(log, fmt, "worker", "-Q", "ingest", "-c", "2", "--loglevel", "INFO",
                   "-n", f"{log.stem}@%h", "--without-mingle", "--without-gossip")
    try:
        wait_until(lambda: " ready." in log.read_text(errors="replace"), 60, 0.2)
        entry = file_entry("logged.txt", "text/plain", user_email=f"{log.stem}@example.com")
        upload(s3, entry, make_txt("A file whose processing is logged line by line."))
        event_id = store_event(entry)
        Publisher(BROKER).publish_file_event(event_id)
        assert wait_terminal(event_id, 60).status == "done"
        wait_until(lambda: "succeeded" in log.read_text(errors="replace"), 30, 0.2)
    finally:
        stop(proc)
    _celery_stdout(log)
    return event_id, entry["documentId"], log.read_text(errors="replace")


def test_a_worker_logs_json_lines_carrying_the_task_event_document_and_batch(
    s3_server: Any, cms: Any, chroma_server: str
) -> None:
    event_id, doc, text = _process_one_file(TMP / "logs-json.log", "json", s3_server)
    records = _json_lines(text)
    assert any(r["message"].endswith(" ready.") for r in records)  # the main process
    done = [r for r in records if r.get("event_id") == event_id
            and r["logger"] == "ingest.pipeline.run"]
    assert done, "no line of the pipeline carries the event id"
    for record in done:
        assert record["document_id"] == doc
        assert record["task_id"] and record["task_name"] == TASK_PROCESS_FILE_EVENT
        assert {"ts", "level", "logger", "message"} <= set(record)
    (finished,) = [r for r in done if " done in " in r["message"]]
    uuid.UUID(finished["batch_id"])
    # Celery's own line about the task, logged in the pool child, carries its id too.
    task_lines = [r for r in records if r.get("task_id") == finished["task_id"]]
    assert any(" succeeded in " in r["message"] for r in task_lines)
    # So does its line in the main process, which received the message.
    (received,) = [r for r in task_lines if r["message"].endswith(" received")]
    assert received["task_name"] == TASK_PROCESS_FILE_EVENT
    # Lines outside any task carry no stale context.
    assert not any("task_id" in r for r in records if r["message"].endswith(" ready."))
    _no_secret(text)


def test_text_format_is_one_readable_line_with_the_context_appended(
    s3_server: Any, cms: Any, chroma_server: str
) -> None:
    event_id, doc, text = _process_one_file(TMP / "logs-text.log", "text", s3_server)
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    (finished,) = [line for line in lines if f"event {event_id} " in line and " done in " in line]
    assert " INFO ingest.pipeline.run event " in finished
    assert f"event_id={event_id}" in finished and f"document_id={doc}" in finished
    assert "task_id=" in finished and "batch_id=" in finished
    _no_secret(text)


def test_beat_logs_json(database: str) -> None:
    log = TMP / "logs-beat.log"
    proc = _celery(log, "json", "beat", "--loglevel", "INFO", "-s", str(TMP / "logs-schedule"))
    try:
        wait_until(lambda: "Sending due task" in log.read_text(errors="replace"), 30, 0.2)
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    records = _json_lines(text)
    assert any(r["logger"] == "celery.beat" for r in records)
    assert not _celery_stdout(log)
    _no_secret(text)


def test_web_lines_are_json_and_hold_no_secret(database: str, redis_server: str) -> None:
    """gunicorn with its config (JSON logger class): its own lines and the app's request lines."""
    port = _free_port()
    log = TMP / "logs-web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:webhooks.gunicorn_conf",
             "-w", "1", "-b", f"127.0.0.1:{port}", "webhooks.app:create_app()"],
            stdout=out, stderr=subprocess.STDOUT, env=_env("json"), cwd=ROOT,
            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/livez"), 60, 0.2)
        entry = file_entry("web.txt", "text/plain")
        assert post(base, envelope("entry.create", entry)).status_code == 202
        assert post(base, {"event": "entry.create"}, token="wrong").status_code == 401
        wait_until(lambda: "POST /webhooks/cms 401" in log.read_text(errors="replace"), 10)
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    records = _json_lines(text)
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"]
               for r in records)
    requests_logged = [r for r in records if r["logger"] == "webhooks.requests"]
    assert {(r["method"], r["path"], r["status"]) for r in requests_logged} >= {
        ("POST", "/webhooks/cms", 202), ("POST", "/webhooks/cms", 401)}
    _no_secret(text)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_migrations_log_json(scratch_url: str) -> None:
    """``ingest db upgrade`` on an empty database: alembic's lines are JSON."""
    done = subprocess.run(
        [str(BIN / "ingest"), "db", "upgrade"], capture_output=True, text=True, cwd=ROOT,
        env=_env("json", DATABASE_URL=scratch_url), timeout=120)
    assert done.returncode == 0, done.stderr
    records = _json_lines(done.stdout + done.stderr)
    upgrades = [r for r in records if r["logger"] == "alembic.runtime.migration"
                and r["message"].startswith("Running upgrade")]
    assert upgrades and all(r["level"] == "INFO" for r in upgrades)
    _no_secret(done.stdout + done.stderr)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_secret_logged_by_mistake_is_masked(fmt: str) -> None:
    """Whatever logs a secret (here: on purpose, also inside a URL and JSON-escaped),
    the line shows *** instead."""
    quoted = 'quote"and\\slash-secret'
    code = (
        "import logging, os\n"
        "from ingest.logging_setup import configure_logging\n"
        "configure_logging()\n"
        "log = logging.getLogger('oops')\n"
        "log.error('smtp %s cms %s', os.environ['SMTP_PASSWORD'], os.environ['CMS_API_TOKEN'])\n"
        "log.error('url %s', os.environ['CELERY_BROKER_URL'])\n"
        "log.error('quoted %s', os.environ['STATUS_TOKEN'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=_env(fmt, CELERY_BROKER_URL="redis://:broker-pass-123@127.0.0.1:1/0",
                 STATUS_TOKEN=quoted))
    assert done.returncode == 0, done.stderr
    out = done.stderr
    assert out.count("***") >= 4, out
    for secret in (*SECRETS, "broker-pass-123", quoted, json.dumps(quoted)[1:-1]):
        assert secret not in out
    if fmt == "json":
        assert [r["logger"] for r in _json_lines(out)] == ["oops"] * 3
        assert "redis://:***@127.0.0.1:1/0" in _json_lines(out)[1]["message"]


def test_the_context_is_reset_after_each_block_and_task_signals_clear_it() -> None:
    """In-process: bound() restores the earlier fields, bind() lasts until the block ends."""
    from ingest import log_context

    with log_context.bound(event_id=1):
        with log_context.bound(document_id="d"):
            log_context.bind(batch_id=uuid.UUID(int=5))
            assert dict(log_context.current()) == {
                "event_id": 1, "document_id": "d", "batch_id": str(uuid.UUID(int=5))}
        assert dict(log_context.current()) == {"event_id": 1}
    assert dict(log_context.current()) == {}
    with pytest.raises(TypeError, match="password"):
        log_context.bind(password="x")


@pytest.mark.parametrize(("name", "value"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD")])
def test_a_bad_log_setting_stops_the_process_naming_it(name: str, value: str) -> None:
    done = subprocess.run([str(BIN / "ingest"), "check-config"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, name: value}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ingest: invalid configuration: {name}: ")
    assert value in done.stderr and "Traceback" not in done.stderr

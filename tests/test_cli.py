"""The operator CLI on real services: exit codes, ``--json`` output, and what each command
changes (events, S3, the CMS, the SMTP sink)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from devtools.procs import free_port, script
from devtools.samples import make_corrupt_pdf, make_txt
from ingest.cli import main
from ingest.db import session_scope
from ingest.models import EmailNotificationLog, FileEvent
from tests.conftest import WEBHOOK_TOKEN, wait_until
from tests.helpers import (
    cms_file,
    document_id,
    envelope,
    file_entry,
    post,
    prefer,
    s3_exists,
    sealed_finished_batch,
    store_event,
    upload,
    uploader,
    wait_terminal,
)


def ingest(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The ``ingest`` console script of this venv, in the test environment (+ ``env``)."""
    return subprocess.run([script("ingest"), *argv], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)


def done_document(web: str, s3: Any, name: str = "policy.txt") -> tuple[str, int]:
    """A document whose webhook arrived and whose event is done: (documentId, event id)."""
    entry = file_entry(name, "text/plain", user_email=uploader())
    upload(s3, entry, make_txt(f"The {name} says expenses are due within thirty days."))
    assert post(web, envelope("entry.create", entry)).status_code == 202
    with session_scope() as s:
        event_id = s.execute(select(FileEvent.id).where(
            FileEvent.document_id == entry["documentId"])).scalar_one()
    assert wait_terminal(event_id).status == "done"
    return entry["documentId"], event_id


# --- usage and configuration ---------------------------------------------------------------


def test_check_config_masks_passwords_inside_urls() -> None:
    secrets = {"DATABASE_URL": "postgresql://kb:db-pass-123@db.internal:5432/kb",
               "REDIS_URL": "redis://:redis-pass-456@cache:6379/0",
               "CELERY_BROKER_URL": "redis://user:broker-pass-789@cache:6379/1",
               "SMTP_PASSWORD": "smtp-pass-000", "STATUS_TOKEN": "status-token-111"}
    plain = ingest("check-config", **secrets)
    as_json = ingest("check-config", "--json", **secrets)
    assert plain.returncode == as_json.returncode == 0, plain.stderr
    for secret in ("db-pass-123", "redis-pass-456", "broker-pass-789", "smtp-pass-000",
                   "status-token-111"):
        assert secret not in plain.stdout + plain.stderr + as_json.stdout
    shown = json.loads(as_json.stdout)
    assert shown["DATABASE_URL"] == "postgresql+psycopg2://kb:***@db.internal:5432/kb"
    assert shown["CELERY_BROKER_URL"] == "redis://user:***@cache:6379/1"
    assert shown["STATUS_TOKEN"] == shown["SMTP_PASSWORD"] == "***"
    assert "DATABASE_URL=postgresql+psycopg2://kb:***@db.internal" in plain.stdout


def test_db_downgrade_without_a_revision_is_a_usage_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["db", "downgrade"])
    assert exit_.value.code == 2
    assert "revision" in capsys.readouterr().err


def test_replay_rejects_a_bad_since_naming_the_option() -> None:
    result = ingest("replay", "--since", "2 weeks")
    assert result.returncode == 2
    assert "--since" in result.stderr and "2 weeks" in result.stderr


# --- reprocess, replay, reconcile ------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_reprocess_runs_the_latest_version_again(web: str, s3_server: Any,
                                                 capsys: Any) -> None:
    doc, first = done_document(web, s3_server)
    assert main(["reprocess", doc, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["created"] and out["event_id"] != first and out["document_id"] == doc
    rerun = wait_terminal(out["event_id"])
    assert (rerun.status, rerun.dedupe_key, rerun.event) == ("done", f"rerun:{first}",
                                                             "entry.create")


def test_reprocess_of_a_waiting_document_creates_nothing(capsys: Any) -> None:
    entry = file_entry("waiting.txt", "text/plain")
    waiting = store_event(entry)  # stored, never published: it stays "received"
    for _ in range(2):
        assert main(["reprocess", entry["documentId"], "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["event_id"], out["created"]) == (waiting, False)
    with session_scope() as s:
        assert s.execute(select(func.count()).where(
            FileEvent.document_id == entry["documentId"])).scalar_one() == 1


def test_reprocess_of_an_unknown_document_exits_1(capsys: Any) -> None:
    unknown = document_id()
    assert main(["reprocess", unknown]) == 1
    assert unknown in capsys.readouterr().err


@pytest.mark.usefixtures("worker")
def test_replay_failed_reruns_each_failed_event_once(web: str, s3_server: Any,
                                                     capsys: Any) -> None:
    doc, event_id = done_document(web, s3_server, "replayed.txt")
    with session_scope() as s:  # as if it had failed on an outage that is now over
        s.execute(text("UPDATE file_events SET status = 'failed', updated_at = now() "
                       "WHERE id = :i"), {"i": event_id})
    assert main(["replay", "--status", "failed", "--since", "2m", "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert event_id in [e["event_id"] for e in listed["events"]] and listed["replayed"] == 0
    for _ in range(2):
        assert main(["replay", "--status", "failed", "--since", "2m"]) == 0
        assert "replayed" in capsys.readouterr().out
    with session_scope() as s:
        reruns = s.execute(select(FileEvent.id).where(
            FileEvent.dedupe_key == f"rerun:{event_id}")).scalars().all()
    assert len(reruns) == 1
    assert wait_terminal(reruns[0]).status == "done"


@pytest.mark.usefixtures("worker")
def test_replay_publishes_a_stranded_received_event_again(s3_server: Any, capsys: Any) -> None:
    entry = file_entry("stranded.txt", "text/plain", user_email=uploader())
    upload(s3_server, entry, make_txt("Stored, never published: the web process died."))
    event_id = store_event(entry)
    assert main(["replay", "--status", "received", "--since", "1m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert event_id in [e["event_id"] for e in out["events"]] and out["published"] >= 1
    assert wait_terminal(event_id).status == "done"


@pytest.mark.usefixtures("worker")
def test_reconcile_without_now_queues_a_run_for_a_worker(capsys: Any) -> None:
    from ingest.models import ReconciliationCheckpoint

    def last_run() -> Any:
        with session_scope() as s:
            return s.execute(select(ReconciliationCheckpoint.last_run_at)).scalar()

    before = last_run()
    assert main(["reconcile"]) == 0
    assert "queued" in capsys.readouterr().out
    wait_until(lambda: (now := last_run()) is not None and (before is None or now > before), 30)
    assert main(["reconcile", "--since", "1h"]) == 2  # a window only makes sense --now


def test_corrections_list_json_parses(capsys: Any) -> None:
    assert main(["corrections", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"breaker", "held"} and isinstance(out["held"], list)


@pytest.mark.usefixtures("worker")
def test_reconcile_now_stores_and_publishes_a_missed_entry(cms: Any, s3_server: Any,
                                                           capsys: Any) -> None:
    entry = cms_file(cms, s3_server, "missed.txt", make_txt("A webhook that never came."))
    assert main(["reconcile", "--now", "--since", "10m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["error"] is None and out["events_created"] >= 1
    with session_scope() as s:
        event_id = s.execute(select(FileEvent.id).where(
            FileEvent.document_id == entry["documentId"])).scalar_one()
    assert event_id in out["event_ids"]
    assert wait_terminal(event_id).status == "done"


# --- e-mail --------------------------------------------------------------------------------


def test_email_preview_writes_both_files_and_sends_nothing(tmp_path: Path, smtp_sink: Any,
                                                           capsys: Any) -> None:
    address = uploader()
    batch_id = sealed_finished_batch(address)
    before = len(smtp_sink.messages)
    assert main(["email", "preview", str(batch_id), "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    eml, page = tmp_path / f"{batch_id}.eml", tmp_path / f"{batch_id}.html"
    assert out["eml"] == str(eml) and out["html"] == str(page)
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["X-Batch-ID"]) == (address, str(batch_id))
    assert "d.txt" in message.get_body(("plain",)).get_content()
    assert "<html" in page.read_text() and "d.txt" in page.read_text()
    assert len(smtp_sink.messages) == before
    with session_scope() as s:  # no e-mail row claimed or written
        assert not s.execute(select(EmailNotificationLog.id).where(
            EmailNotificationLog.batch_id == batch_id)).first()


def test_email_preview_of_an_unknown_batch_exits_1(tmp_path: Path, capsys: Any) -> None:
    missing = uuid.uuid4()
    assert main(["email", "preview", str(missing), "--out", str(tmp_path)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_email_test_sends_exactly_one_message(smtp_sink: Any, capsys: Any) -> None:
    to = uploader()
    assert main(["email", "test", "--to", to]) == 0
    assert "250" in capsys.readouterr().out
    mine = wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == to], 10)
    assert len(mine) == 1 and mine[0]["Subject"] == "kb-ingest SMTP test"


def test_email_test_reports_failure_and_never_the_password(smtp_sink: Any) -> None:
    closed = ingest("email", "test", "--to", "ops@example.com", SMTP_PORT=str(free_port()))
    assert closed.returncode == 1
    assert "SMTP test failed" in closed.stderr and "connect" in closed.stderr
    # The sink offers no AUTH: a configured user is refused before any password is sent.
    auth = ingest("email", "test", "--to", "ops@example.com", SMTP_USER="kb",
                  SMTP_PASSWORD="hunter2-not-shown")
    assert auth.returncode == 1 and "AUTH" in auth.stderr
    assert "hunter2-not-shown" not in auth.stdout + auth.stderr
    bad = ingest("email", "test", "--to", "not an address")
    assert bad.returncode == 2 and "--to" in bad.stderr


# --- upload --------------------------------------------------------------------------------


@pytest.fixture
def webhooks_on(web: str, cms: Any) -> Any:
    """The CMS stand-in sends its webhooks to the web app while the test runs."""
    cms.state.configure_webhook(f"{web}/webhooks/cms",
                                {"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    yield cms
    cms.state.configure_webhook(None)


def files_in(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.usefixtures("worker")
def test_upload_stores_creates_entries_and_waits_for_the_email(
    tmp_path: Path, webhooks_on: Any, s3_server: Any, smtp_sink: Any
) -> None:
    user, tag = uploader(), uuid.uuid4().hex[:6]
    prefer(webhooks_on, user, batch_size_threshold=2, notification_delay_minutes=5)
    folder = files_in(tmp_path, {f"a-{tag}.txt": make_txt("Alpha notes on the fleet."),
                                 f"b-{tag}.md": b"# Beta\nNotes on the harbour.\n"})
    result = ingest("upload", str(folder), "--company", "42", "--bot", "7", "--user", user,
                    "--json", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [f["event"] for f in out["files"]] == ["done", "done"]
    assert {f["email"] for f in out["files"]} == {"sent"} and len(out["batches"]) == 1
    for file in out["files"]:
        assert file["storage_key"] == f"companies/42/bots/7/{file['name']}"
        assert s3_exists(s3_server, file["storage_key"])
        assert webhooks_on.state.get_file(file["document_id"])["user_email"] == user
    (message,) = [m for m in smtp_sink.messages if m["To"] == user]
    assert message["X-Batch-ID"] == out["batches"][0]


@pytest.mark.usefixtures("worker")
def test_upload_exits_1_with_a_table_when_a_file_fails(
    tmp_path: Path, webhooks_on: Any
) -> None:
    user, tag = uploader(), uuid.uuid4().hex[:6]
    prefer(webhooks_on, user, batch_size_threshold=2, notification_delay_minutes=5)
    folder = files_in(tmp_path, {f"good-{tag}.txt": make_txt("Good notes."),
                                 f"scan-{tag}.pdf": make_corrupt_pdf()})
    result = ingest("upload", str(folder), "--company", "42", "--bot", "7", "--user", user,
                    "--timeout", "120", COLUMNS="200")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"scan-{tag}.pdf" in result.stdout and "processing_error" in result.stdout
    assert "1 of 2 file(s) processed, 1 failed" in " ".join(result.stdout.split())


def test_upload_no_wait_returns_once_the_entries_exist(tmp_path: Path, cms: Any,
                                                       s3_server: Any) -> None:
    name = f"later-{uuid.uuid4().hex[:6]}.txt"
    result = ingest("upload", str(files_in(tmp_path, {name: make_txt("Later.")})),
                    "--company", "42", "--bot", "7", "--user", uploader(), "--no-wait",
                    "--json")
    assert result.returncode == 0, result.stderr
    (file,) = json.loads(result.stdout)["files"]
    assert cms.state.get_file(file["document_id"])["name"] == name
    assert s3_exists(s3_server, f"companies/42/bots/7/{name}")


def test_upload_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = ingest("upload", str(tmp_path / "nope"), "--company", "42", "--bot", "7",
                    "--user", "a@example.com")
    assert result.returncode == 2 and "DIR" in result.stderr


def test_upload_reports_a_cms_refusal_and_exits_1(tmp_path: Path, cms: Any,
                                                  capsys: Any) -> None:
    cms.state.fail_next("POST files", 400)
    folder = files_in(tmp_path, {f"refused-{uuid.uuid4().hex[:6]}.txt": make_txt("No.")})
    try:
        code = main(["upload", str(folder), "--company", "42", "--bot", "7", "--user",
                     uploader()])
    finally:
        cms.state.clear_faults()
    assert code == 1
    assert "upload stopped after 0 of 1 file(s): CMS answered 400" in capsys.readouterr().err

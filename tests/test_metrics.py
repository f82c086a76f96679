"""Metrics on real services: counters and histograms of real files through the real pipeline,
multiprocess aggregation across prefork children and gunicorn workers, the beat snapshot,
the alert rules (promtool) and the dashboard."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.db import get_engine, session_scope
from ingest.metrics import (
    SNAPSHOT_KEY,
    SystemCollector,
    exposed_names,
    process_registry,
    write_snapshot,
)
from ingest.models import AutoCorrectionTask, CorrectionBreaker, FileEvent
from ingest.names import QUEUES, TASK_PROCESS_FILE_EVENT
from ingest.reconcile import advance_checkpoint
from ingest.redis_client import BEAT_HEARTBEAT_KEY, get_redis
from tests.conftest import PROMETHEUS_DIR, REDIS_PORT, TMP, _free_port, wait_until
from tests.helpers import (
    closed,
    cms_file,
    emails_of,
    envelope,
    file_entry,
    post,
    store_event,
    upload,
    uploader,
    wait_terminal,
)
from tests.procs import BROKER, children, ready, start_worker, stop
from webhooks.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of ``url``/metrics, keyed by name and labels."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a counter not incremented yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def corrections_of(document_id: str) -> list[AutoCorrectionTask]:
    with session_scope() as s:
        return list(s.execute(select(AutoCorrectionTask)
                              .where(AutoCorrectionTask.file_document_id == document_id)
                              ).scalars())


# --- the pipeline's outcomes -------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_files_stages_emails_and_corrections_reach_the_web_metrics(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    before = scrape(web)
    email = uploader()
    good = cms_file(cms, s3_server, "metrics-good.txt", make_txt("Counted by Prometheus."),
                    user_email=email)
    bad = cms_file(cms, s3_server, "metrics-bad.pdf", make_corrupt_pdf(), "application/pdf",
                   user_email=email)
    ids = [post(web, envelope("entry.create", e)).json()["event_id"] for e in (good, bad)]
    assert [wait_terminal(i).status for i in ids] == ["done", "failed"]
    (batch,) = closed(email)  # closes after the bad file's correction ended
    wait_until(lambda: [e for e in emails_of(batch.batch_id) if e.send_status == "sent"], 30)
    assert [t.status for t in corrections_of(bad["documentId"])] == ["completed"]
    after = scrape(web)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kb_ingest_files_total", outcome="done", category="none") >= 1
    assert delta("kb_ingest_files_total", outcome="failed", category="processing_error") >= 1
    assert delta("kb_ingest_stage_duration_seconds_count", stage="download") >= 2
    for stage in ("extract", "chunk", "embed", "store"):  # the corrupt PDF stops at extract
        assert delta("kb_ingest_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert delta("kb_ingest_stage_duration_seconds_sum", stage=stage) > 0, stage
        assert delta("kb_ingest_stage_cpu_seconds_total", stage=stage) > 0, stage
    assert delta("kb_ingest_http_request_duration_seconds_count",
                 route="/webhooks/cms", method="POST") == 2
    assert delta("kb_ingest_webhooks_total", outcome="accepted") == 2
    assert delta("kb_ingest_email_outcomes_total", outcome="sent") >= 1
    assert delta("kb_ingest_email_due_to_sent_seconds_count") >= 1
    # due → sent: the batch closed moments ago; under a minute, and not negative
    waited = delta("kb_ingest_email_due_to_sent_seconds_sum")
    assert 0 < waited < 60 * delta("kb_ingest_email_due_to_sent_seconds_count")
    assert delta("kb_ingest_correction_outcomes_total", outcome="completed") >= 1


@pytest.mark.usefixtures("worker")
def test_a_retry_is_counted_with_its_reason(web: str, s3_server: Any, cms: Any) -> None:
    labels = {"task": TASK_PROCESS_FILE_EVENT, "reason": "object_not_there_yet"}
    before = value(scrape(web), "kb_ingest_task_retries_total", **labels)
    entry = cms_file(cms, s3_server, "metrics-late.txt", None)  # the object lands later
    event_id = post(web, envelope("entry.create", entry)).json()["event_id"]
    wait_until(lambda: value(scrape(web), "kb_ingest_task_retries_total", **labels) > before,
               30, 0.2)
    upload(s3_server, entry, make_txt("Landed after its webhook."))
    assert wait_terminal(event_id, 60).status == "done"


def test_email_outcomes_skipped_is_counted_when_nobody_wants_mail(web: str) -> None:
    """A batch of an uploader without an address closes with its e-mail skipped."""
    from ingest.batches import NO_RECIPIENT, check_batch
    from ingest.settings import get_settings
    from tests.helpers import sealed_finished_batch

    before = value(scrape(web), "kb_ingest_email_outcomes_total", outcome="skipped")
    batch_id = sealed_finished_batch(NO_RECIPIENT)
    time.sleep(0.2)  # past the tiny quiet period
    assert check_batch(batch_id, get_settings()).closed_status == "completed"
    assert value(scrape(web), "kb_ingest_email_outcomes_total", outcome="skipped") == before + 1


# --- what a scrape costs -----------------------------------------------------------------


def test_a_scrape_runs_no_sql(web: str) -> None:
    """The database figures come from beat's snapshot; a scrape only reads Redis."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "process_request_thread" in threading.current_thread().name:  # the web's threads
            statements.append(statement)

    from workers.tasks.metrics import snapshot_metrics

    snapshot_metrics()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        text = requests.get(f"{web}/metrics", timeout=10).text
        requests.get(f"{web}/health", timeout=10)  # proves the listener sees the web's SQL
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert "# TYPE kb_ingest_file_events gauge" in text
    assert statements == ["SELECT 1"]


# --- the beat snapshot and the Redis gauges ----------------------------------------------


@pytest.fixture()
def rolled_back() -> Iterator[Session]:
    """A session whose writes are never committed: state the snapshot sees, nobody else."""
    session = Session(get_engine())
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def test_snapshot_gauges_appear_after_beats_task_runs(web: str, rolled_back: Session) -> None:
    from workers.tasks.metrics import snapshot_metrics

    client = get_redis()
    client.delete(SNAPSHOT_KEY)
    assert not any(name == "kb_ingest_file_events" for name, _ in scrape(web))
    seconds = snapshot_metrics()  # what beat schedules; called directly
    assert seconds >= 0
    samples = scrape(web)
    with session_scope() as s:
        done = s.execute(select(func.count()).where(FileEvent.status == "done")).scalar_one()
    assert value(samples, "kb_ingest_file_events", status="done") == done
    assert value(samples, "kb_ingest_metrics_snapshot_age_seconds") < 10
    assert value(samples, "kb_ingest_correction_breaker_open") == 0

    # Uncommitted state: an event waiting an hour, a reconciliation run ten minutes ago,
    # and a tripped breaker holding one correction.
    now = datetime.now(UTC)
    entry = file_entry("metrics-stuck.txt", "text/plain")
    rolled_back.add(FileEvent(event="entry.create", document_id=entry["documentId"],
                              entry_updated_at=now, payload=envelope("entry.create", entry),
                              dedupe_key=f"metrics-test:{uuid.uuid4()}", status="enqueued",
                              received_at=now - timedelta(hours=1)))
    advance_checkpoint(rolled_back, now - timedelta(days=2), run_at=now - timedelta(minutes=10))
    rolled_back.merge(CorrectionBreaker(name="corrections", tripped_at=now, reason="test"))
    rolled_back.add(AutoCorrectionTask(file_document_id=entry["documentId"],
                                       failure_category="processing_error",
                                       original_error_message="test", correction_actions=[],
                                       status="held"))
    rolled_back.flush()
    write_snapshot(rolled_back, client)
    samples = scrape(web)
    assert 3600 <= value(samples, "kb_ingest_oldest_unfinished_event_age_seconds") < 3660
    assert 600 <= value(samples, "kb_ingest_reconciliation_lag_seconds") < 660
    assert value(samples, "kb_ingest_correction_breaker_open") == 1
    assert value(samples, "kb_ingest_corrections_held") >= 1
    assert value(samples, "kb_ingest_corrections", status="held") == value(
        samples, "kb_ingest_corrections_held")
    rolled_back.rollback()
    snapshot_metrics()
    assert value(scrape(web), "kb_ingest_correction_breaker_open") == 0


def test_beat_heartbeat_age_and_an_absent_heartbeat(web: str) -> None:
    client = get_redis()
    saved = client.get(BEAT_HEARTBEAT_KEY)
    try:
        client.set(BEAT_HEARTBEAT_KEY, str(time.time() - 30))
        assert 30 <= value(scrape(web), "kb_ingest_beat_heartbeat_age_seconds") < 40
        client.delete(BEAT_HEARTBEAT_KEY)
        assert value(scrape(web), "kb_ingest_beat_heartbeat_age_seconds") == math.inf
    finally:
        if saved is not None:
            client.set(BEAT_HEARTBEAT_KEY, saved)


def test_queue_depth_counts_each_queue_and_its_priority_lists(web: str) -> None:
    broker = redis.Redis(port=REDIS_PORT, db=5)  # a broker of this test alone
    broker.flushdb()
    broker.rpush("ingest", "a", "b", "c")
    broker.rpush("ingest\x06\x166", "d")
    broker.rpush("corrections", "e")
    families = {f.name: f for f in SystemCollector(get_redis(), broker).collect()}
    depth = {s.labels["queue"]: s.value for s in families["kb_ingest_queue_depth"].samples}
    assert depth == {"ingest": 4, "notifications": 0, "corrections": 1}
    broker.flushdb()
    down = redis.Redis(port=_free_port(), socket_connect_timeout=0.5)  # nobody listens
    assert list(SystemCollector(down, down).collect()) == []  # a scrape never fails
    queues = {dict(labels)["queue"] for name, labels in scrape(web)
              if name == "kb_ingest_queue_depth"}
    assert queues == set(QUEUES)


# --- multiprocess: prefork children and gunicorn workers ---------------------------------


def _live_files(pid: int) -> list[Path]:
    return list(PROMETHEUS_DIR.glob(f"gauge_live*_{pid}.db"))


def test_prefork_children_show_in_the_web_metrics_and_leave_when_they_exit(
    web: str, s3_server: Any, chroma_server: str, cms: Any
) -> None:
    port = _free_port()
    log = TMP / "worker-metrics.log"
    base = value(scrape(web), "kb_ingest_processes", kind="worker")
    proc = start_worker(log, 2, WORKER_METRICS_PORT=str(port))
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        kids = wait_until(lambda: len(c := children(proc.pid)) == 2 and c, 30)
        wait_until(lambda: value(scrape(web), "kb_ingest_processes", kind="worker")
                   == base + 2, 30, 0.2)
        assert all(_live_files(pid) for pid in kids)
        before = scrape(web)
        entry = file_entry("metrics-prefork.txt", "text/plain")
        upload(s3_server, entry, make_txt("Processed by a pool child."))
        event_id = store_event(entry)
        Publisher(BROKER).publish_file_event(event_id)
        assert wait_terminal(event_id, 60).status == "done"
        done = {"outcome": "done", "category": "none"}
        # counted just after the commit that wait_terminal sees
        after = wait_until(lambda: value(s := scrape(web), "kb_ingest_files_total", **done)
                           > value(before, "kb_ingest_files_total", **done) and s, 10, 0.1)
        assert any((PROMETHEUS_DIR / f"counter_{pid}.db").exists() for pid in kids)
        own = scrape(f"http://127.0.0.1:{port}")  # WORKER_METRICS_PORT
        assert value(own, "kb_ingest_processes", kind="worker") >= 2
        assert value(own, "kb_ingest_files_total", outcome="done", category="none") >= 1
        # Stopped as Docker and Kubernetes stop it: SIGTERM to the main process only.
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
    finally:
        stop(proc)
    assert not any(_live_files(pid) for pid in kids)
    assert value(scrape(web), "kb_ingest_processes", kind="worker") == base
    # The children's counters stay counted after they exit.
    assert value(scrape(web), "kb_ingest_files_total", outcome="done", category="none") >= value(
        after, "kb_ingest_files_total", outcome="done", category="none")


def _web_processes_here() -> float:
    """``kb_ingest_processes{kind="web"}`` as this process reads the shared directory."""
    return sum(s.value for family in process_registry().collect() for s in family.samples
               if s.name == "kb_ingest_processes" and s.labels.get("kind") == "web")


def test_gunicorn_marks_an_exited_worker_dead(database: str, redis_server: str) -> None:
    base = _web_processes_here()  # another test's leftovers, if any
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    with (TMP / "gunicorn.log").open("wb") as out:
        arbiter = subprocess.Popen(
            [gunicorn, "-c", "python:webhooks.gunicorn_conf", "-w", "2", "-b",
             f"127.0.0.1:{port}", "webhooks.app:create_app()"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        def web_processes() -> float:
            try:
                return value(scrape(url), "kb_ingest_processes", kind="web")
            except (requests.RequestException, AssertionError):
                return -1

        wait_until(lambda: web_processes() == base + 2, 60, 0.2)
        victim, survivor = wait_until(lambda: len(c := children(arbiter.pid)) == 2 and c, 30)
        os.kill(victim, signal.SIGKILL)  # it cannot clean up after itself; the arbiter does
        wait_until(lambda: victim not in (c := children(arbiter.pid)) and len(c) == 2, 30)
        assert not _live_files(victim)
        wait_until(lambda: web_processes() == base + 2, 30, 0.2)  # + 3 without child_exit
        arbiter.terminate()
        arbiter.wait(30)
    finally:
        stop(arbiter)
    assert not _live_files(survivor)
    assert _web_processes_here() == base


# --- alert rules and dashboard -----------------------------------------------------------

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "kb-ingest-dashboard.json"
PROMTOOL = shutil.which("promtool")
METRIC_NAME = re.compile(r"\bkb_ingest_[a-z0-9_]+")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package "
                    "prometheus; `make system-deps` installs it)")
def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([PROMTOOL, "test", "rules", str(ALERT_TESTS)], capture_output=True,
                           text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_alerts_and_dashboard_use_only_metrics_that_exist() -> None:
    known = exposed_names()
    used_in_alerts = set(METRIC_NAME.findall(ALERTS.read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used_in_dashboard = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used_in_alerts and used_in_dashboard
    assert used_in_alerts <= known, used_in_alerts - known
    assert used_in_dashboard <= known, used_in_dashboard - known
    for title in ("stuck", "failure", "e-mail", "breaker", "beat", "worker", "queue"):
        assert title in ALERTS.read_text().lower(), title


def test_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in exposed_names():
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{base}" in readme, base

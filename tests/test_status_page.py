"""The operator's status pages and ``ingest status`` on real services and a real browser.

One scenario drives real uploads through the pipeline (webhook → worker → batch → e-mail):
two good files, a corrupt PDF (its correction runs) and a file whose storage key lies
outside its tenant (an operator failure); then the correction breaker trips on two more
corrupt files and holds their corrections. Debian's chromium, driven by Playwright, logs
in with basic auth and reads every view. ``KB_SCREENSHOT_DIR`` set: the batch page is
saved there as ``status-page.png``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import event, select

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.batches import check_batch
from ingest.cli import main
from ingest.corrections import release_held
from ingest.db import get_engine, session_scope
from ingest.errors import INVALID_KEY, PROCESSING_ERROR
from ingest.mail.render import SUGGESTIONS
from ingest.models import AutoCorrectionTask
from ingest.pipeline.run import default_services, process_event
from ingest.quiet_hours import describe
from ingest.settings import get_settings
from ingest.status_view import batch_detail, recent_batches
from tests.conftest import STATUS_TOKEN, WEBHOOK_TOKEN, _free_port, wait_until
from tests.helpers import (
    closed,
    cms_file,
    emails_of,
    envelope,
    file_entry,
    post,
    prefer,
    quiet_until,
    sealed_finished_batch,
    store_event,
    upload,
    uploader,
)

pytestmark = pytest.mark.usefixtures("worker")
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Scenario:
    email: str
    batch_id: uuid.UUID
    corrupt_doc: str
    other_email: str
    other_batch_id: uuid.UUID
    held_docs: list[str]


def corrections_of(document_id: str) -> list[AutoCorrectionTask]:
    with session_scope() as s:
        return list(s.execute(select(AutoCorrectionTask)
                              .where(AutoCorrectionTask.file_document_id == document_id)
                              .order_by(AutoCorrectionTask.id)).scalars())


@pytest.fixture(scope="module")
def scenario(web: str, s3_server: Any, cms: Any, smtp_sink: Any) -> Iterator[Scenario]:
    email = uploader()
    files = [("minutes.txt", "text/plain", make_txt("Board minutes: the budget passed.")),
             ("handbook.txt", "text/plain", make_txt("Staff handbook: holidays and leave.")),
             ("scan.pdf", "application/pdf", make_corrupt_pdf()),
             ("elsewhere.txt", "text/plain", make_txt("Stored under another tenant."))]
    prefer(cms, email, batch_size_threshold=len(files), notification_delay_minutes=5)
    corrupt_doc = ""
    for name, mime, data in files:
        entry = file_entry(name, mime, user_email=email)
        if name == "elsewhere.txt":  # outside company 42 / bot 7: invalid_key, never read
            entry["storage_key"] = f"companies/43/bots/7/{entry['documentId']}/{name}"
        if name == "scan.pdf":
            corrupt_doc = entry["documentId"]
        upload(s3_server, entry, data)
        assert post(web, envelope("entry.create", entry)).status_code == 202
    (batch,) = closed(email)
    wait_until(lambda: [e for e in emails_of(batch.batch_id) if e.send_status == "sent"], 60)
    wait_until(lambda: [t for t in corrections_of(corrupt_doc)
                        if t.status not in ("pending", "processing")], 60)
    other_email = uploader()
    other_batch_id = sealed_finished_batch(other_email)
    # Trip the breaker (limit 1) with two corrupt files processed in this thread: both held.
    release_held(get_settings())
    svc = replace(default_services(), settings=default_services().settings.model_copy(
        update={"correction_breaker_threshold": 1}))
    held = [cms_file(cms, s3_server, f"held-{n}.pdf", make_corrupt_pdf(), "application/pdf",
                     user_email=uploader()) for n in range(2)]
    for entry in held:
        assert process_event(store_event(entry), svc).status == "failed"
    assert [corrections_of(e["documentId"])[0].status for e in held] == ["held", "held"]
    try:
        yield Scenario(email, batch.batch_id, corrupt_doc, other_email, other_batch_id,
                       [e["documentId"] for e in held])
    finally:
        release_held(get_settings(), discard=True)  # later tests must find the breaker closed


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; `make system-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shoot(page: Any, name: str) -> None:
    """Save a full-page screenshot into ``KB_SCREENSHOT_DIR`` when it is set."""
    if os.environ.get("KB_SCREENSHOT_DIR"):
        target = Path(os.environ["KB_SCREENSHOT_DIR"]) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)


def test_an_operator_logs_in_and_reads_every_view(
    web: str, scenario: Scenario, browser: Any
) -> None:
    from playwright.sync_api import Error as BrowserError

    # No or wrong credentials: the browser is challenged (basic auth) and refused.
    for credentials in (None, {"username": "ops", "password": WEBHOOK_TOKEN}):
        refused = browser.new_context(http_credentials=credentials)
        page = refused.new_page()
        try:  # chromium either shows the 401 or gives up on the challenge
            assert page.goto(f"{web}/status").status == 401
        except BrowserError as exc:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        refused.close()

    context = browser.new_context(
        http_credentials={"username": "any-operator", "password": STATUS_TOKEN},
        viewport={"width": 1360, "height": 900})
    page = context.new_page()
    assert page.goto(f"{web}/status").status == 200
    assert page.locator(f"tr.batch-row:has-text('{scenario.email}')").count() == 1
    assert page.locator(f"tr.batch-row:has-text('{scenario.other_email}')").count() == 1

    # Filter by uploader: only that uploader's batch is left.
    page.fill("input[name=user_email]", scenario.email.upper())
    page.click("button[type=submit]")
    rows = page.locator("tr.batch-row")
    assert rows.count() == 1
    assert "partially_completed" in rows.first.inner_text()
    assert page.input_value("input[name=user_email]") == scenario.email  # as matched
    # ... and by status: the other uploader's batch is still processing, not completed.
    page.fill("input[name=user_email]", scenario.other_email)
    page.select_option("select[name=status]", "partially_completed")
    page.click("button[type=submit]")
    assert page.locator("tr.batch-row").count() == 0
    assert "No batches match" in page.inner_text("main")

    # One batch: its files, stages with durations, errors with suggestions, the
    # correction's execution log and the e-mail's attempts.
    page.goto(f"{web}/status?user_email={scenario.email}")
    page.click(f"a[href='/status/batches/{scenario.batch_id}']")
    assert page.url.endswith(f"/status/batches/{scenario.batch_id}")
    files = page.locator("tr.file-row")
    assert files.count() == 4
    minutes = files.filter(has_text="minutes.txt").inner_text()
    for stage in ("download", "processing", "storage", "completed"):
        assert stage in minutes
    assert " s" in minutes  # a duration
    scan = files.filter(has_text="scan.pdf").inner_text()
    assert PROCESSING_ERROR in scan and SUGGESTIONS[PROCESSING_ERROR] in scan
    assert SUGGESTIONS[INVALID_KEY] in files.filter(has_text="elsewhere.txt").inner_text()
    errors = page.locator("tr.error-row")
    assert errors.count() == 2
    assert {PROCESSING_ERROR, INVALID_KEY} <= set(" ".join(errors.all_inner_texts()).split())
    correction = page.locator("tr.correction-row").inner_text()
    (task,) = corrections_of(scenario.corrupt_doc)
    assert scenario.corrupt_doc in correction and task.status in correction
    assert task.execution_log and all(step["step"] in correction and step["detail"] in correction
                                      for step in task.execution_log)
    email = page.locator("div.email").inner_text()
    assert "File Processing Complete - 2 Success, 2 Failed" in email
    assert "sent" in email and re.search(r"Attempts\s+1\b", email)
    assert page.locator("tr.attempt-row").count() >= 1
    shoot(page, "status-page.png")

    # Failures across uploaders by category; held corrections with the breaker's reason.
    page.goto(f"{web}/status")
    assert page.locator("table.failures").count() == 1
    assert page.locator("p.alert").count() == 1  # the breaker is tripped
    page.click("header >> text=Failures")
    table = page.locator("table.failures").inner_text()
    assert PROCESSING_ERROR in table and INVALID_KEY in table
    page.click("header >> text=Held corrections")
    body = page.inner_text("main")
    assert "breaker tripped" in body
    for doc in scenario.held_docs:
        assert page.locator(f"tr.correction-row:has-text('{doc}')").count() == 1
    context.close()


# --- quiet hours ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deferred:
    email: str
    batch_id: uuid.UUID
    label: str  # "deferred until <Berlin time> CET|CEST Europe/Berlin (<UTC>)"


@pytest.fixture(scope="module")
def deferred(database: str) -> Deferred:
    """A batch closed inside its uploader's quiet hours (Berlin, ending in an hour)."""
    email = uploader()
    batch_id = sealed_finished_batch(email, **quiet_until(3600, "Europe/Berlin"))
    check = wait_until(lambda: (c := check_batch(batch_id, get_settings())).closed_status
                       and c, 10)
    assert check.email_deferred_until is not None
    return Deferred(email, batch_id,
                    "deferred until " + describe(check.email_deferred_until, "Europe/Berlin"))


def test_a_deferred_email_shows_until_when_in_local_time_and_utc(
    web: str, deferred: Deferred, browser: Any
) -> None:
    assert re.fullmatch(r"deferred until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T "
                        r"Europe/Berlin \((\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC\)",
                        deferred.label), deferred.label
    context = browser.new_context(
        http_credentials={"username": "ops", "password": STATUS_TOKEN})
    page = context.new_page()
    assert page.goto(f"{web}/status?user_email={deferred.email}").status == 200
    row = page.locator("tr.batch-row")
    assert row.count() == 1
    assert "completed" in row.inner_text()  # closed on time
    assert row.locator(".deferred").inner_text() == deferred.label
    page.click(f"a[href='/status/batches/{deferred.batch_id}']")
    assert page.locator("dl.kv >> .deferred").first.inner_text() == f"no, {deferred.label}"
    email = page.locator("div.email")
    assert "pending" in email.locator(".badge").inner_text()
    assert email.locator("dd.deferred").inner_text() == deferred.label
    assert re.search(r"Attempts\s+0\b", email.inner_text())
    shoot(page, "status-page-deferred.png")
    context.close()


def test_ingest_status_shows_a_deferral(deferred: Deferred, capsys: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per row: rich wraps at 80 otherwise
    assert main(["status", "--batch", str(deferred.batch_id)]) == 0
    out = capsys.readouterr().out
    assert f"pending ({deferred.label})" in out
    assert main(["status", "--user", deferred.email]) == 0
    assert deferred.label in capsys.readouterr().out
    assert main(["status", "--batch", str(deferred.batch_id), "--json"]) == 0
    (mail,) = json.loads(capsys.readouterr().out)["emails"]
    assert (mail["status"], mail["deferred"]) == ("pending", deferred.label)
    assert mail["send_not_before"].endswith("+00:00")


# --- authentication ------------------------------------------------------------------------


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


def test_status_token_opens_status_as_bearer_or_basic_with_any_user(web: str) -> None:
    assert get(f"{web}/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
               ).status_code == 200
    for user in ("ops", "", "someone@else"):
        response = get(f"{web}/status", auth=(user, STATUS_TOKEN))
        assert response.status_code == 200, user
        assert response.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {STATUS_TOKEN}x"},
    {"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    {"Authorization": f"Token {STATUS_TOKEN}"},
    {"Authorization": "Basic !!!not-base64"},
], ids=["none", "wrong", "longer", "webhook-token", "other-scheme", "garbled-basic"])
def test_anything_else_is_challenged(web: str, headers: dict[str, str]) -> None:
    for path in ("/status", "/status/failures", "/status/corrections",
                 f"/status/batches/{uuid.uuid4()}"):
        response = get(f"{web}{path}", headers=headers)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Basic realm="kb-ingest status"'
        assert STATUS_TOKEN not in response.text


def test_webhook_credentials_never_open_status_and_status_token_opens_no_webhook(
    web: str
) -> None:
    assert get(f"{web}/status", auth=("strapi", WEBHOOK_TOKEN)).status_code == 401
    entry = file_entry("note.txt", "text/plain", user_email=uploader())
    assert post(web, envelope("entry.create", entry), token=STATUS_TOKEN).status_code == 401
    assert get(f"{web}/api/batches", params={"user_email": "a@example.com"},
               headers={"Authorization": f"Bearer {STATUS_TOKEN}"}).status_code == 401


def test_without_status_token_the_pages_do_not_exist(database: str, redis_server: str) -> None:
    from werkzeug.serving import make_server

    from webhooks.app import create_app

    port = _free_port()
    app = create_app(get_settings().model_copy(update={"status_token": None}))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for auth in (None, ("ops", STATUS_TOKEN), ("ops", "")):
            response = get(f"http://127.0.0.1:{port}/status", auth=auth)
            assert response.status_code == 404
            assert "WWW-Authenticate" not in response.headers
    finally:
        server.shutdown()
        thread.join(10)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "name"), [
    ("page=abc", "page"), ("page=0", "page"), ("per_page=201", "per_page"),
    ("per_page=-1", "per_page"), ("company_id=x", "company_id"), ("bot_id=1.5", "bot_id"),
    ("status=bogus", "status"),
])
def test_a_bad_filter_is_a_400_naming_the_parameter(web: str, query: str, name: str) -> None:
    response = get(f"{web}/status?{query}", auth=("ops", STATUS_TOKEN))
    assert response.status_code == 400
    assert f"Invalid parameter {name}:" in response.text


@pytest.mark.parametrize(("query", "name"), [
    ("hours=abc", "hours"), ("hours=0", "hours"), ("hours=999999", "hours"),
    ("bucket=week", "bucket"),
])
def test_a_bad_failures_query_is_a_400(web: str, query: str, name: str) -> None:
    response = get(f"{web}/status/failures?{query}", auth=("ops", STATUS_TOKEN))
    assert response.status_code == 400
    assert f"Invalid parameter {name}:" in response.text


def test_unknown_batch_and_document_are_404(web: str) -> None:
    for path in (f"/status/batches/{uuid.uuid4()}", "/status/batches/not-a-uuid",
                 "/status/documents/nosuchdocument0000000000"):
        response = get(f"{web}{path}", auth=("ops", STATUS_TOKEN))
        assert response.status_code == 404, path


def test_hostile_text_is_escaped(web: str, scenario: Scenario) -> None:
    response = get(f"{web}/status", params={"user_email": "<script>x</script>@e.com"},
                   auth=("ops", STATUS_TOKEN))
    assert response.status_code == 200
    assert "<script>x" not in response.text and "&lt;script&gt;x" in response.text


# --- the read model ------------------------------------------------------------------------


class StatementCounter:
    """Counts the SQL statements the engine executes inside a ``with`` block."""

    def __init__(self) -> None:
        self.count = 0

    def _seen(self, *args: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(get_engine(), "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(get_engine(), "before_cursor_execute", self._seen)


def test_a_batch_page_costs_the_same_statements_for_one_file_or_four(
    scenario: Scenario
) -> None:
    counts = []
    for batch_id, files in ((scenario.other_batch_id, 1), (scenario.batch_id, 4)):
        with StatementCounter() as counter, session_scope() as s:
            detail = batch_detail(s, batch_id)
        assert detail is not None and len(detail.files) == files
        counts.append(counter.count)
    assert counts[0] == counts[1] <= 9, counts  # one statement per table


def test_pages_are_newest_first_disjoint_and_complete(scenario: Scenario) -> None:
    from ingest.status_view import BatchFilter

    flt = BatchFilter(company_id=42, bot_id=7)
    with session_scope() as s:
        everything = recent_batches(s, flt, 1, 200)
        pages = [recent_batches(s, flt, n, 2) for n in (1, 2, 3)]
    assert everything.total >= 3 and all(p.total == everything.total for p in pages)
    seen = [b.batch_id for p in pages for b in p.items]
    assert seen == [b.batch_id for b in everything.items[:6]]
    starts = [b.started_at for b in everything.items]
    assert starts == sorted(starts, reverse=True)


# --- the CLI -------------------------------------------------------------------------------


def test_ingest_status_json_lists_recent_batches(scenario: Scenario) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "ingest"), "status", "--json",
                           "--limit", "200"], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {str(scenario.batch_id), str(scenario.other_batch_id)} <= {
        b["batch_id"] for b in listed["items"]}
    assert STATUS_TOKEN not in done.stdout + done.stderr


def test_ingest_status_batch_user_and_doc(scenario: Scenario, capsys: Any) -> None:
    assert main(["status", "--batch", str(scenario.batch_id), "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["batch"]["status"] == "partially_completed"
    assert sorted(f["name"] for f in detail["files"]) == [
        "elsewhere.txt", "handbook.txt", "minutes.txt", "scan.pdf"]
    scan = next(f for f in detail["files"] if f["name"] == "scan.pdf")
    assert scan["suggestion"] == SUGGESTIONS[PROCESSING_ERROR]
    assert [st["stage"] for st in scan["stages"]][-1] == "failed"
    assert all(st["duration_seconds"] is not None for st in scan["stages"])
    assert detail["emails"][0]["status"] == "sent" and detail["emails"][0]["attempts"] == 1

    assert main(["status", "--user", scenario.email.upper(), "--json"]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert [b["batch_id"] for b in mine["items"]] == [str(scenario.batch_id)]

    assert main(["status", "--doc", scenario.corrupt_doc, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["events"][0]["status"] == "failed"
    assert doc["corrections"][0]["document_id"] == scenario.corrupt_doc
    assert doc["batches"][0][0] == str(scenario.batch_id)


def test_ingest_status_tables_and_exit_codes(
    scenario: Scenario, capsys: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["status", "--user", scenario.email]) == 0
    out = capsys.readouterr().out
    assert str(scenario.batch_id) in out and scenario.email in out
    assert main(["status", "--batch", str(scenario.batch_id)]) == 0
    out = capsys.readouterr().out
    assert "scan.pdf" in out and SUGGESTIONS[PROCESSING_ERROR][:40] in out
    assert main(["status", "--batch", str(uuid.uuid4())]) == 1
    assert "no batch" in capsys.readouterr().err
    assert main(["status", "--batch", "nope"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["status", "--user", "nobody@example.com"]) == 1
    assert main(["status", "--doc", "nosuchdocument"]) == 1
    assert main(["status", "--limit", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["status", "--batch", str(scenario.batch_id), "--user", scenario.email])


def test_pagination_links_keep_the_filter(web: str, scenario: Scenario) -> None:
    auth = ("ops", STATUS_TOKEN)
    first = get(f"{web}/status", params={"company_id": 42, "per_page": 1}, auth=auth)
    assert first.status_code == 200
    (link,) = re.findall(r'<a rel="next" href="([^"]+)"', first.text)
    link = link.replace("&amp;", "&")
    assert "company_id=42" in link and "page=2" in link and "per_page=1" in link
    second = get(f"{web}{link}", auth=auth)
    assert second.status_code == 200 and 'rel="prev"' in second.text
    row = re.compile(r'<tr class="batch-row">\s*<td><a class="mono" '
                     r'href="/status/batches/([0-9a-f-]{36})"')
    ids = [row.findall(r.text) for r in (first, second)]
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]


def test_document_and_failure_views(web: str, scenario: Scenario) -> None:
    auth = ("ops", STATUS_TOKEN)
    doc = get(f"{web}/status/documents/{scenario.corrupt_doc}", auth=auth)
    assert doc.status_code == 200
    assert str(scenario.batch_id) in doc.text and "scan.pdf" in doc.text
    assert SUGGESTIONS[PROCESSING_ERROR] in doc.text
    week = get(f"{web}/status/failures", params={"hours": 168, "bucket": "day"}, auth=auth)
    assert week.status_code == 200
    assert "Day (UTC)" in week.text and PROCESSING_ERROR in week.text

"""Batches on real services: joining, sealing, closing, and the one e-mail per batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select, text

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.batches import check_batch, join_batch
from ingest.db import session_scope
from ingest.models import BatchProcessingSession
from ingest.names import TASK_CHECK_BATCH, TASK_SWEEP_BATCHES
from ingest.preferences import Preferences
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import (
    batches_of,
    closed,
    emails_of,
    envelope,
    file_entry,
    files_of,
    post,
    prefer,
    sealed_finished_batch,
    store_event,
    upload,
    uploader,
    wait_terminal,
)

pytestmark = pytest.mark.usefixtures("worker")


def send_files(web: str, s3: Any, email: str, names: list[str], *,
               data: bytes | None = None) -> list[int]:
    ids = []
    for name in names:
        entry = file_entry(name, "text/plain", user_email=email)
        upload(s3, entry, data if data is not None else make_txt(f"Content of {name}."))
        response = post(web, envelope("entry.create", entry))
        assert response.status_code == 202
        ids.append(response.json()["event_id"])
    return ids


def test_twenty_concurrent_webhooks_of_one_uploader_make_one_batch(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    email = uploader()
    prefer(cms, email, batch_size_threshold=20, notification_delay_minutes=5)
    entries = [file_entry(f"doc-{n}.txt", "text/plain", user_email=email) for n in range(20)]
    for entry in entries:
        upload(s3_server, entry, make_txt(f"Document {entry['name']} body."))
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda e: post(web, envelope("entry.create", e)), entries))
    assert all(r.status_code == 202 for r in responses)
    (batch,) = closed(email)
    assert batch.total_files == 20 and batch.successful_files == 20
    assert batch.status == "completed"
    assert len(files_of(batch.batch_id)) == 20
    assert len(batches_of(email)) == 1
    wait_until(lambda: [e for e in emails_of(batch.batch_id) if e.send_status == "sent"], 30)
    mine = [m for m in smtp_sink.messages if m["To"] == email]
    assert len(mine) == 1
    assert mine[0]["Subject"] == "File Processing Complete - 20 Success, 0 Failed"


def test_files_arriving_after_a_seal_open_a_new_batch(
    web: str, s3_server: Any, cms: Any
) -> None:
    email = uploader()
    prefer(cms, email, batch_size_threshold=2, notification_delay_minutes=5)
    for event_id in send_files(web, s3_server, email, ["a.txt", "b.txt", "c.txt"]):
        wait_terminal(event_id)
    batches = batches_of(email)
    assert len(batches) == 2
    assert [b.total_files for b in batches] == [2, 1]
    assert batches[0].sealed_at is not None and batches[1].sealed_at is None
    assert batches[0].user_preferences_snapshot["batch_size_threshold"] == 2


def test_quiet_period_seals_and_closes_with_derived_counts(web: str, s3_server: Any) -> None:
    email = uploader()
    ok = send_files(web, s3_server, email, ["good-1.txt", "good-2.txt"])
    bad = file_entry("broken.pdf", "application/pdf", user_email=email)
    upload(s3_server, bad, make_corrupt_pdf())
    ok.append(post(web, envelope("entry.create", bad)).json()["event_id"])
    (batch,) = closed(email)
    assert (batch.total_files, batch.successful_files, batch.failed_files) == (3, 2, 1)
    assert batch.status == "partially_completed"
    assert batch.batch_end_time >= batch.batch_start_time
    failed = [f for f in files_of(batch.batch_id) if f.processing_status == "failed"]
    assert failed[0].error_category == "processing_error"


def test_all_failed_batch_is_failed(web: str, s3_server: Any) -> None:
    email = uploader()
    entry = file_entry("broken.pdf", "application/pdf", user_email=email)
    upload(s3_server, entry, make_corrupt_pdf())
    post(web, envelope("entry.create", entry))
    (batch,) = closed(email)
    assert batch.status == "failed" and batch.failed_files == 1


def test_a_lost_hint_is_covered_by_the_sweeper(celery_app: Any, smtp_sink: Any) -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email)  # no hint was ever scheduled
    time.sleep(0.2)  # past the (tiny) quiet period
    celery_app.send_task(TASK_SWEEP_BATCHES)
    (batch,) = closed(email)
    assert batch.batch_id == batch_id and batch.status == "completed"
    wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email], 30)


def test_second_check_and_duplicate_hints_change_nothing(celery_app: Any,
                                                         smtp_sink: Any) -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email)
    time.sleep(0.2)  # past the (tiny) quiet period
    celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])
    (before,) = closed(email)
    assert check_batch(batch_id, get_settings()).closed_status is None
    for _ in range(3):
        celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])
    wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email], 30)
    celery_app.send_task(TASK_SWEEP_BATCHES)
    time.sleep(2)
    after = batches_of(email)[0]
    assert (after.status, after.batch_end_time, after.successful_files) == (
        before.status, before.batch_end_time, before.successful_files)
    assert len(emails_of(batch_id)) == 1
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_two_close_checks_racing_close_once(smtp_sink: Any) -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email)
    time.sleep(0.2)  # past the (tiny) quiet period
    barrier = threading.Barrier(4)
    results: list[str | None] = []

    def check() -> None:
        barrier.wait()
        results.append(check_batch(batch_id, get_settings()).closed_status)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r or "" for r in results) == ["", "", "", "completed"]
    assert len(emails_of(batch_id)) == 1


def test_stuck_files_fail_as_timeout(celery_app: Any) -> None:
    email = uploader()
    settings = get_settings()
    prefs = Preferences(notification_delay_minutes=0.001)

    entry = file_entry("stuck.txt", "text/plain", user_email=email)
    event_id = store_event(entry)
    joined = join_batch(event_id=event_id, document_id=entry["documentId"], file_name="s.txt",
                        size_bytes=1, company_id=42, bot_id=7, user_email=email, prefs=prefs,
                        settings=settings)
    with session_scope() as s:  # the file has been "processing" for two hours
        s.execute(text("UPDATE batch_files SET updated_at = now() - interval '2 hours' "
                       "WHERE batch_id = :b"), {"b": joined.batch_id})
    time.sleep(0.2)
    result = check_batch(joined.batch_id, settings)
    assert result.closed_status == "failed"
    (row,) = files_of(joined.batch_id)
    assert (row.processing_status, row.error_category) == ("failed", "timeout")


def test_preferences_are_fetched_once_per_ttl_for_200_files(
    web: str, s3_server: Any, cms: Any
) -> None:
    email = uploader()
    prefer(cms, email, batch_size_threshold=100, notification_delay_minutes=5)
    before = cms.state.calls["GET by-user"]
    ids = send_files(web, s3_server, email, [f"many-{n}.txt" for n in range(200)],
                     data=make_txt("A short note."))
    for event_id in ids:
        assert wait_terminal(event_id, 120).status == "done"
    assert cms.state.calls["GET by-user"] - before == 1
    with session_scope() as s:
        total = s.execute(select(func.sum(BatchProcessingSession.total_files))
                          .where(BatchProcessingSession.user_email == email)).scalar_one()
    assert total == 200


def test_status_api_shows_a_batch_and_an_uploaders_batches(web: str) -> None:
    import requests

    email = uploader()
    batch_id = sealed_finished_batch(email)
    headers = {"Authorization": "Bearer test-webhook-token"}
    assert requests.get(f"{web}/api/batches/{batch_id}", timeout=10).status_code == 401
    one = requests.get(f"{web}/api/batches/{batch_id}", headers=headers, timeout=10)
    assert one.status_code == 200
    assert one.json()["user_email"] == email and len(one.json()["files"]) == 1
    listed = requests.get(f"{web}/api/batches", params={"user_email": email.upper()},
                          headers=headers, timeout=10)
    assert [b["batch_id"] for b in listed.json()["data"]] == [str(batch_id)]
    assert requests.get(f"{web}/api/batches/not-a-uuid", headers=headers,
                        timeout=10).status_code == 400
    assert requests.get(f"{web}/api/batches", headers=headers, timeout=10).status_code == 400


def test_concurrent_joins_meet_in_one_open_batch() -> None:
    """20 threads join at the same moment: the partial unique index makes them share one."""
    from ingest.events import FileEntry, store_file_event

    email = uploader()
    prefs = Preferences(notification_delay_minutes=5, batch_size_threshold=100)
    entries = [file_entry(f"c{n}.txt", "text/plain", user_email=email) for n in range(20)]
    with session_scope() as s:
        ids = [store_file_event(s, "entry.create", FileEntry.model_validate(e),
                                envelope("entry.create", e)).event_id for e in entries]
    barrier = threading.Barrier(20)

    def join(pair: tuple[int, dict[str, Any]]) -> Any:
        event_id, entry = pair
        barrier.wait()
        return join_batch(event_id=event_id, document_id=entry["documentId"],
                          file_name=entry["name"], size_bytes=1, company_id=42, bot_id=7,
                          user_email=email.upper(), prefs=prefs, settings=get_settings())

    with ThreadPoolExecutor(20) as pool:
        joined = list(pool.map(join, zip(ids, entries, strict=True)))
    assert len({j.batch_id for j in joined}) == 1
    assert sum(j.created for j in joined) == 1
    (batch,) = batches_of(email)
    assert batch.total_files == 20 and len(files_of(batch.batch_id)) == 20


def test_counters_are_live_while_the_batch_is_open(web: str, s3_server: Any) -> None:
    """The status API shows progress as files finish, not only at close (seed 000)."""
    import requests

    from tests.conftest import WEBHOOK_TOKEN

    email = uploader()
    prefer_none = Preferences(notification_delay_minutes=5, batch_size_threshold=100)
    entries = [file_entry(n, "text/plain", user_email=email) for n in ("a.txt", "b.pdf")]
    upload(s3_server, entries[0], make_txt("First file."))
    upload(s3_server, entries[1], make_corrupt_pdf())
    ids = [store_event(e) for e in entries]
    batch_id = None
    for entry, event_id in zip(entries, ids, strict=True):
        batch_id = join_batch(event_id=event_id, document_id=entry["documentId"],
                              file_name=entry["name"], size_bytes=1, company_id=42, bot_id=7,
                              user_email=email, prefs=prefer_none,
                              settings=get_settings()).batch_id
    from ingest.pipeline.run import process_event

    assert process_event(ids[0]).status == "done"
    assert process_event(ids[1]).status == "failed"
    body = requests.get(f"{web}/api/batches/{batch_id}", timeout=10,
                        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}).json()
    assert body["status"] == "processing"
    assert (body["successful_files"], body["failed_files"]) == (1, 1)


def test_a_file_reported_timed_out_that_succeeds_later_is_recorded_as_late(
    s3_server: Any
) -> None:
    from ingest.batches import LATE_SUCCESS
    from ingest.pipeline.run import process_event

    email = uploader()
    entry = file_entry("slow.txt", "text/plain", user_email=email)
    event_id = store_event(entry)
    prefs = Preferences(notification_delay_minutes=0.001, batch_size_threshold=1)
    batch_id = join_batch(event_id=event_id, document_id=entry["documentId"],
                          file_name="slow.txt", size_bytes=1, company_id=42, bot_id=7,
                          user_email=email, prefs=prefs, settings=get_settings()).batch_id
    impatient = get_settings().model_copy(update={"batch_file_timeout_minutes": 0.0001})
    time.sleep(0.1)
    wait_until(lambda: check_batch(batch_id, impatient).closed_status, 10)
    (batch,) = [b for b in batches_of(email)]
    assert (batch.status, batch.failed_files) == ("failed", 1)
    # The worker was only slow: the file succeeds after the batch was reported.
    upload(s3_server, entry, make_txt("Finally processed."))
    assert process_event(event_id).status == "done"
    (row,) = files_of(batch_id)
    assert (row.processing_status, row.error_message) == ("success", LATE_SUCCESS)
    (batch,) = [b for b in batches_of(email)]
    assert (batch.status, batch.successful_files, batch.failed_files) == ("completed", 1, 0)

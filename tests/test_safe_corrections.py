"""Auto-correction never deletes good data (DESIGN §8), on real services.

Each test is a scenario in which the first slice deleted or lost good data; the S3 server
(moto), the CMS stand-in, Chroma, PostgreSQL and the in-thread worker are real.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from devtools.samples import make_corrupt_pdf, make_docx, make_docx_bomb, make_txt
from ingest.adapters.s3 import S3Store
from ingest.adapters.vectors import VectorStore
from ingest.cli import main
from ingest.corrections import CorrectionServices, release_held, run_correction
from ingest.db import session_scope
from ingest.models import (
    AutoCorrectionTask,
    FileEvent,
    FileProcessingStatus,
    OperatorAlert,
    ProcessingError,
)
from ingest.pipeline.embedding import get_embedder
from ingest.pipeline.run import default_services, process_event
from ingest.settings import Settings, get_settings
from tests.conftest import wait_until
from tests.helpers import (
    cms_file,
    envelope,
    errors_for,
    post,
    s3_exists,
    stages_for,
    store_event,
    upload,
    uploader,
    wait_terminal,
)
from workers.tasks.sweepers import relay_outbox

pytestmark = pytest.mark.usefixtures("worker")
PREFIX = "companies/42/bots/7"


def corrections_of(document_id: str) -> list[AutoCorrectionTask]:
    with session_scope() as s:
        return list(s.execute(select(AutoCorrectionTask)
                              .where(AutoCorrectionTask.file_document_id == document_id)
                              .order_by(AutoCorrectionTask.id)).scalars())


def alerts_about(document_id: str) -> list[OperatorAlert]:
    with session_scope() as s:
        return list(s.execute(select(OperatorAlert)
                              .where(OperatorAlert.document_id == document_id)).scalars())


def services(**settings: Any) -> Any:
    """The worker's pipeline services with some settings changed."""
    base = default_services()
    return replace(base, settings=base.settings.model_copy(update=settings))


@pytest.fixture(scope="module")
def correction_services(chroma_server: str, s3_server: Any, cms: Any) -> CorrectionServices:
    return CorrectionServices.from_settings(get_settings())


def test_a_late_create_never_deletes_the_newer_version(
    web: str, s3_server: Any, cms: Any
) -> None:
    """v1 (corrupt, key K1) is updated to v2 (good, key K2) before v1's webhook arrives."""
    v1 = cms_file(cms, s3_server, "contract.pdf", make_corrupt_pdf(), "application/pdf")
    v2 = cms.state.put_file({"documentId": v1["documentId"], "name": "contract.txt",
                             "mime_type": "text/plain",
                             "storage_key": f"{PREFIX}/{uuid.uuid4().hex}/contract.txt"})
    upload(s3_server, v2, make_txt("The signed contract renews every March."))
    assert v2["updatedAt"] > v1["updatedAt"]
    # Strapi's webhooks overtake each other: v1's create arrives, v2's much later.
    v1_event = post(web, envelope("entry.create", v1)).json()["event_id"]
    assert wait_terminal(v1_event).status == "failed"
    (task,) = wait_until(lambda: [t for t in corrections_of(v1["documentId"])
                                  if t.status not in ("pending", "processing")], 30)
    assert task.status == "skipped", task.execution_log
    assert "updatedAt" in task.execution_log[-1]["detail"]
    assert cms.state.get_file(v1["documentId"])["storage_key"] == v2["storage_key"]
    # The check stored the CMS's version; the relay publishes it even without its webhook.
    time.sleep(0.6)
    relay_outbox()
    with session_scope() as s:
        v2_event = s.execute(select(FileEvent.id).where(
            FileEvent.document_id == v1["documentId"], FileEvent.id != v1_event)).scalar_one()
    assert wait_terminal(v2_event).status == "done"
    assert post(web, envelope("entry.update", v2)).status_code == 200  # the late webhook
    assert s3_exists(s3_server, v2["storage_key"]) and s3_exists(s3_server, v1["storage_key"])
    chunks = VectorStore(get_settings()).collection.get(
        where={"document_id": v1["documentId"]}, include=["documents"])
    assert "renews every March" in " ".join(chunks["documents"])


def test_an_object_landing_8s_after_its_webhook_is_ingested(
    web: str, s3_server: Any, cms: Any
) -> None:
    entry = cms_file(cms, s3_server, "presigned.txt", None)
    event_id = post(web, envelope("entry.create", entry)).json()["event_id"]
    time.sleep(8)
    assert event_row_status(event_id) == "processing"  # still looking, not failed
    upload(s3_server, entry, make_txt("Uploaded through a presigned URL, a little late."))
    row = wait_terminal(event_id, 60)
    assert row.status == "done", row.last_error
    assert corrections_of(entry["documentId"]) == []
    assert cms.state.get_file(entry["documentId"]) is not None


def event_row_status(event_id: int) -> str:
    with session_scope() as s:
        return s.execute(select(FileEvent.status).where(FileEvent.id == event_id)).scalar_one()


def test_chroma_killed_and_restarted_during_storage_loses_and_deletes_nothing(
    web: str, s3_server: Any, cms: Any, chroma_process: Any
) -> None:
    entries = [cms_file(cms, s3_server, f"note-{n}.txt",
                        make_txt(f"Note {n}: the cafeteria opens at {7 + n % 3} am."))
               for n in range(10)]
    chroma_process.kill()  # every file reaches its storage stage while Chroma is down
    try:
        events = [post(web, envelope("entry.create", e)).json()["event_id"] for e in entries]
        wait_until(lambda: all(("storage", "failed") in stages_for(e) for e in events), 60)
    finally:
        chroma_process.start()
    rows = [wait_terminal(event_id, 180) for event_id in events]
    assert [r.status for r in rows] == ["done"] * 10, [r.last_error for r in rows]
    for entry in entries:
        assert corrections_of(entry["documentId"]) == []
        assert cms.state.get_file(entry["documentId"]) is not None
        assert s3_exists(s3_server, entry["storage_key"])


def test_the_breaker_lets_normal_failures_through_and_holds_a_burst(
    s3_server: Any, cms: Any, correction_services: CorrectionServices, capsys: Any
) -> None:
    """With the default limits: 5 corrupt files are corrected; a worker pointed at the wrong
    (existing, empty) bucket, which finds every object "missing", deletes nothing."""
    release_held(get_settings())  # a fresh count
    defaults = {name: Settings.model_fields[name].default for name in (
        "correction_breaker_threshold", "correction_breaker_window_seconds",
        "auto_correction_delay_seconds")}
    svc = services(**defaults)
    # A normal failure rate: 5 corrupt files among an upload. Nothing is held.
    normal = [cms_file(cms, s3_server, f"bad-{n}.pdf", make_corrupt_pdf(), "application/pdf")
              for n in range(5)]
    for entry in normal:
        assert process_event(store_event(entry), svc).status == "failed"
    assert [t.status for e in normal for t in corrections_of(e["documentId"])] == (
        ["pending"] * 5)
    # A broken deploy: S3_BUCKET names another bucket, so every good file is "not found"
    # (the grace period is over at once here). The breaker trips on the 21st correction;
    # every correction not yet run is held, and the operator gets one alert.
    s3_server.create_bucket(Bucket="kb-wrong")
    wrong_settings = svc.settings.model_copy(update={"s3_bucket": "kb-wrong",
                                                    "s3_missing_grace_seconds": 0})
    wrong = replace(svc, settings=wrong_settings, s3=S3Store(wrong_settings))
    burst = [cms_file(cms, s3_server, f"good-{n}.txt", make_txt(f"Good file {n}."))
             for n in range(20)]
    for entry in burst:
        assert process_event(store_event(entry), wrong).status == "failed"
    assert {t.failure_category for e in burst for t in corrections_of(e["documentId"])} == {
        "file_not_found"}
    statuses = [t.status for e in normal + burst for t in corrections_of(e["documentId"])]
    assert statuses == ["held"] * 25
    with session_scope() as s:
        trips = s.execute(select(OperatorAlert).where(OperatorAlert.kind == "breaker_tripped")
                          ).scalars().all()
    assert len(trips) == 1 and "21 corrections" in trips[0].body
    # A held correction is not run, even when due.
    task = corrections_of(burst[0]["documentId"])[0]
    assert run_correction(task.id, correction_services).status == "nothing"
    assert all(s3_exists(s3_server, e["storage_key"]) for e in normal + burst)
    assert all(cms.state.get_file(e["documentId"]) for e in normal + burst)
    # The operator looks, then decides: discarded, nothing deleted; the breaker closes.
    assert main(["corrections", "list"]) == 0
    listed = capsys.readouterr().out
    assert "breaker: tripped" in listed and "held correction(s)" in listed
    assert all(e["documentId"] in listed for e in burst)
    assert main(["corrections", "discard"]) == 0
    assert "held correction(s) discarded" in capsys.readouterr().out
    assert {t.status for e in burst for t in corrections_of(e["documentId"])} == {"discarded"}
    assert all(s3_exists(s3_server, e["storage_key"]) for e in normal + burst)
    assert all(cms.state.get_file(e["documentId"]) for e in normal + burst)


def test_a_docx_bomb_fails_in_seconds_and_the_next_file_succeeds(
    web: str, s3_server: Any, cms: Any
) -> None:
    bomb = make_docx_bomb()
    assert len(bomb) < 400_000
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    bad = cms_file(cms, s3_server, "bomb.docx", bomb, mime)
    good = cms_file(cms, s3_server, "good.docx", make_docx(["Parking is free on Sundays."]),
                    mime)
    bad_event = post(web, envelope("entry.create", bad)).json()["event_id"]
    good_event = post(web, envelope("entry.create", good)).json()["event_id"]
    row = wait_terminal(bad_event, 60)
    assert row.status == "failed"
    (error,) = errors_for(bad["documentId"])
    assert error.error_category == "processing_error" and "too large" in error.error_message
    with session_scope() as s:
        (parse,) = s.execute(select(FileProcessingStatus).where(
            FileProcessingStatus.file_event_id == bad_event,
            FileProcessingStatus.processing_stage == "processing")).scalars()
    assert parse.status == "failed"
    assert (parse.stage_end_time - parse.stage_start_time).total_seconds() < 10
    assert wait_terminal(good_event, 60).status == "done"


def test_a_document_above_chromas_batch_limit_is_stored_completely(
    s3_server: Any, cms: Any
) -> None:
    settings = get_settings().model_copy(update={
        "chunk_size": 100, "chunk_overlap": 0, "chroma_collection": "kb_test_large"})
    vectors = VectorStore(settings)
    limit = vectors.max_batch_size
    sentences = [f"Line {n:05d} of the parts catalogue lists item {n}." for n in range(3 * limit)]
    entry = cms_file(cms, s3_server, "catalogue.txt", make_txt("\n".join(sentences)))
    svc = replace(default_services(), settings=settings, vectors=vectors,
                  embedder=get_embedder("hashing"))
    outcome = process_event(store_event(entry), svc)
    assert outcome.status == "done", outcome.detail
    assert outcome.chunks > limit
    assert len(vectors.chunk_ids(entry["documentId"])) == outcome.chunks


def test_a_key_of_another_tenant_is_neither_indexed_nor_deleted(
    web: str, s3_server: Any, cms: Any
) -> None:
    """Company A's entry names company B's object, as ``x.exe`` so a correction would fire."""
    b_key = f"companies/99/bots/1/{uuid.uuid4().hex}/salaries.txt"
    s3_server.put_object(Bucket=get_settings().s3_bucket, Key=b_key,
                         Body=make_txt("Company B's salaries are confidential."))
    for key in (b_key, f"{PREFIX}/../../99/bots/1/{b_key.rsplit('/', 2)[1]}/salaries.txt"):
        entry = cms_file(cms, s3_server, "x.exe", None, "application/octet-stream",
                         storage_key=key, user_email=uploader())
        row = wait_terminal(post(web, envelope("entry.create", entry)).json()["event_id"])
        assert row.status == "failed"
        (error,) = errors_for(entry["documentId"])
        assert error.error_category == "invalid_key"
        assert corrections_of(entry["documentId"]) == []
        assert VectorStore(get_settings()).chunk_ids(entry["documentId"]) == []
        assert len(alerts_about(entry["documentId"])) == 1
    assert s3_exists(s3_server, b_key)


def test_nothing_is_deleted_before_the_delay(
    s3_server: Any, cms: Any, correction_services: CorrectionServices
) -> None:
    entry = cms_file(cms, s3_server, "late.pdf", make_corrupt_pdf(), "application/pdf")
    svc = services(auto_correction_delay_seconds=2)
    assert process_event(store_event(entry), svc).status == "failed"
    (task,) = corrections_of(entry["documentId"])
    outcome = run_correction(task.id, correction_services)
    assert outcome.status == "wait" and 0 < outcome.retry_in <= 2
    assert s3_exists(s3_server, entry["storage_key"])
    time.sleep(outcome.retry_in)
    assert run_correction(task.id, correction_services).status == "completed"
    assert not s3_exists(s3_server, entry["storage_key"])


def test_an_entry_gone_from_the_cms_only_loses_our_chunks(
    s3_server: Any, cms: Any, correction_services: CorrectionServices
) -> None:
    entry = cms_file(cms, s3_server, "orphan.pdf", make_corrupt_pdf(), "application/pdf")
    assert process_event(store_event(entry)).status == "failed"
    cms.state.delete_file_direct(entry["documentId"])
    (task,) = corrections_of(entry["documentId"])
    assert run_correction(task.id, correction_services).status == "completed"
    (task,) = corrections_of(entry["documentId"])
    assert (task.s3_cleanup_completed, task.cms_cleanup_completed,
            task.chroma_cleanup_completed) == (False, False, True)
    assert s3_exists(s3_server, entry["storage_key"])


def test_an_object_replaced_since_the_failure_is_kept(
    s3_server: Any, cms: Any, correction_services: CorrectionServices
) -> None:
    entry = cms_file(cms, s3_server, "same-key.pdf", make_corrupt_pdf(), "application/pdf")
    assert process_event(store_event(entry)).status == "failed"
    upload(s3_server, entry, make_txt("A good file uploaded to the same key."))
    (task,) = corrections_of(entry["documentId"])
    assert run_correction(task.id, correction_services).status == "skipped"
    assert s3_exists(s3_server, entry["storage_key"])
    assert cms.state.get_file(entry["documentId"]) is not None
    with session_scope() as s:
        (error,) = s.execute(select(ProcessingError).where(
            ProcessingError.file_document_id == entry["documentId"])).scalars()
    assert error.resolution_status == "ignored"


def test_released_corrections_run_and_a_lost_one_is_redriven_once_per_interval(
    s3_server: Any, cms: Any, correction_services: CorrectionServices
) -> None:
    from datetime import timedelta

    from ingest.corrections import corrections_to_redrive

    release_held(get_settings())
    svc = services(correction_breaker_threshold=1)
    entries = [cms_file(cms, s3_server, f"held-{n}.pdf", make_corrupt_pdf(), "application/pdf")
               for n in range(2)]
    for entry in entries:
        assert process_event(store_event(entry), svc).status == "failed"
    tasks = [corrections_of(e["documentId"])[0] for e in entries]
    assert [t.status for t in tasks] == ["held", "held"]
    assert release_held(get_settings()) >= 2
    # Released, due now, never started: the sweeper re-drives each once per interval.
    redriven = corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                      unstarted_after=timedelta(seconds=-1))
    assert {t.id for t in tasks} <= set(redriven)
    again = corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                   unstarted_after=timedelta(seconds=30))
    assert not {t.id for t in tasks} & set(again)
    for task in tasks:
        assert run_correction(task.id, correction_services).status == "completed"
    assert not any(s3_exists(s3_server, e["storage_key"]) for e in entries)


def test_a_retry_lost_with_its_worker_is_redriven_once_it_is_overdue(
    s3_server: Any, cms: Any, correction_services: CorrectionServices
) -> None:
    """Found by ``make chaos``: a correction whose retry countdown died with its worker (the
    worker holds a countdown's message) was re-driven only 10 minutes after its *first*
    attempt, holding its batch and e-mail that long. The retry's due time is now its
    ``act_after``, and the sweeper re-drives it once that is overdue."""
    from datetime import timedelta

    from ingest.corrections import corrections_to_redrive

    entry = cms_file(cms, s3_server, "lost-retry.pdf", make_corrupt_pdf(), "application/pdf")
    assert process_event(store_event(entry)).status == "failed"
    (task,) = corrections_of(entry["documentId"])
    cms.state.fail_next("GET file", 503)
    outcome = run_correction(task.id, correction_services)
    assert outcome.status == "retry"
    (task,) = corrections_of(entry["documentId"])
    assert task.status == "pending" and task.started_at is not None
    # The retry's message is gone. Not overdue yet: left to its countdown.
    assert task.id not in corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                                 unstarted_after=timedelta(seconds=30))
    # Overdue (as if its due time was outcome.retry_in + 1 s ago): re-driven, once.
    overdue = timedelta(seconds=-(outcome.retry_in + 1))
    assert task.id in corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                             unstarted_after=overdue)
    assert task.id not in corrections_to_redrive(stuck_after=timedelta(minutes=10),
                                                 unstarted_after=timedelta(seconds=30))
    assert run_correction(task.id, correction_services).status == "completed"
    assert cms.state.get_file(entry["documentId"]) is None

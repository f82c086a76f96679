"""Auto-correction on real services: S3 (moto server), the CMS stand-in, Chroma, Postgres."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.corrections import CorrectionServices, run_correction
from ingest.db import session_scope
from ingest.mail.alerts import alert_correction_failed, send_pending_alerts
from ingest.models import AutoCorrectionTask, ProcessingError
from ingest.pipeline.run import process_event
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import (
    closed,
    cms_file,
    envelope,
    post,
    prefer,
    s3_exists,
    store_event,
    upload,
    uploader,
)

pytestmark = pytest.mark.usefixtures("worker")
PDF = "application/pdf"


@pytest.fixture(scope="module")
def services(chroma_server: str, moto_server: Any, cms: Any) -> CorrectionServices:
    return CorrectionServices.from_settings(get_settings())


def correction_for(document_id: str) -> AutoCorrectionTask:
    with session_scope() as s:
        return s.execute(select(AutoCorrectionTask)
                         .where(AutoCorrectionTask.file_document_id == document_id)).scalar_one()


def terminal_correction(document_id: str) -> AutoCorrectionTask:
    def finished() -> AutoCorrectionTask | None:
        with session_scope() as s:
            task = s.execute(select(AutoCorrectionTask).where(
                AutoCorrectionTask.file_document_id == document_id)).scalar_one_or_none()
        return task if task is not None and task.status in ("completed", "failed") else None
    return wait_until(finished, 60, 0.1)


def failed_event(entry: dict[str, Any]) -> int:
    """Store the entry's event and process it in-process (no task: nothing is chained)."""
    event_id = store_event(entry)
    assert process_event(event_id).status == "failed"
    return event_id


def test_processing_error_removes_the_file_everywhere_and_the_email_says_so(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    email = uploader()
    prefer(cms, email, batch_size_threshold=1, notification_delay_minutes=5)
    cms.state.configure_webhook(f"{web}/webhooks/cms",
                                {"Authorization": "Bearer test-webhook-token"})
    try:
        entry = cms_file(cms, s3_server, "scan.pdf", make_corrupt_pdf(), PDF, user_email=email)
        assert post(web, envelope("entry.create", entry)).status_code == 202
        task = terminal_correction(entry["documentId"])
        assert task.status == "completed"
        assert task.correction_actions == ["s3_delete", "cms_delete", "chroma_delete"]
        assert (task.s3_cleanup_completed, task.cms_cleanup_completed,
                task.chroma_cleanup_completed) == (True, True, True)
        assert [e["step"] for e in task.execution_log] == [
            "planned", "verified", "s3_delete", "cms_delete", "chroma_delete", "completed"]
        assert not s3_exists(s3_server, entry["storage_key"])
        assert cms.state.get_file(entry["documentId"]) is None
        with session_scope() as s:
            (error,) = s.execute(select(ProcessingError).where(
                ProcessingError.file_document_id == entry["documentId"])).scalars()
        assert (error.resolution_status, error.resolution_action) == (
            "auto_corrected", "auto_correction")
        assert error.auto_correction_triggered
        # Our own CMS delete came back as entry.delete: handled, no new error row.
        cms.state.wait_for_webhooks(10)
        (batch,) = closed(email)
        message = wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email], 30)[0]
        text = " ".join(message.get_body(("plain",)).get_content().split())
        assert "Removed automatically from file storage, the CMS and the search index" in text
        assert batch.status == "failed"
        with session_scope() as s:
            rows = s.execute(select(ProcessingError).where(
                ProcessingError.file_document_id == entry["documentId"])).scalars().all()
        assert len(rows) == 1
    finally:
        cms.state.configure_webhook(None)


def test_missing_object_removes_cms_entry_and_chunks(web: str, s3_server: Any,
                                                     cms: Any) -> None:
    entry = cms_file(cms, s3_server, "lost.txt", None, user_email=uploader())
    post(web, envelope("entry.create", entry))
    task = terminal_correction(entry["documentId"])
    assert task.failure_category == "file_not_found"
    assert task.correction_actions == ["cms_delete", "chroma_delete"]
    assert task.status == "completed" and not task.s3_cleanup_completed
    assert cms.state.get_file(entry["documentId"]) is None


def test_cms_500_twice_then_204_completes(s3_server: Any, cms: Any,
                                          services: CorrectionServices) -> None:
    entry = cms_file(cms, s3_server, "flaky.pdf", make_corrupt_pdf(), PDF, user_email=uploader())
    failed_event(entry)
    task_id = correction_for(entry["documentId"]).id
    cms.state.fail_next("DELETE file", 500, times=2)
    outcomes = [run_correction(task_id, services).status for _ in range(3)]
    assert outcomes == ["retry", "retry", "completed"]
    task = correction_for(entry["documentId"])
    assert task.attempts == 3 and task.cms_cleanup_completed
    # S3 was done on the first attempt and skipped afterwards: logged once.
    assert [e["step"] for e in task.execution_log].count("s3_delete") == 1
    assert cms.state.get_file(entry["documentId"]) is None


def test_s3_unavailable_then_back_completes(s3_server: Any, moto_server: Any, cms: Any,
                                            services: CorrectionServices) -> None:
    entry = cms_file(cms, s3_server, "outage.pdf", make_corrupt_pdf(), PDF, user_email=uploader())
    failed_event(entry)
    task_id = correction_for(entry["documentId"]).id
    moto_server.stop()
    try:
        assert run_correction(task_id, services).status == "retry"
    finally:
        moto_server.start()
    assert not correction_for(entry["documentId"]).s3_cleanup_completed
    assert run_correction(task_id, services).status == "completed"
    assert not s3_exists(s3_server, entry["storage_key"])


def test_already_deleted_everywhere_counts_as_done(s3_server: Any, cms: Any,
                                                   services: CorrectionServices) -> None:
    entry = cms_file(cms, s3_server, "gone.pdf", make_corrupt_pdf(), PDF, user_email=uploader())
    failed_event(entry)
    s3_server.delete_object(Bucket=get_settings().s3_bucket, Key=entry["storage_key"])
    cms.state.delete_file_direct(entry["documentId"])
    assert run_correction(correction_for(entry["documentId"]).id, services).status == (
        "completed")
    details = [e["detail"] for e in correction_for(entry["documentId"]).execution_log]
    assert "the CMS entry is gone: only our chunks may be removed" in details
    assert "no chunks stored" in details


def test_a_newer_successful_upload_wins_over_the_correction(
    s3_server: Any, cms: Any, services: CorrectionServices
) -> None:
    """v1 failed; v2 of the same document is processed while v1's correction runs."""
    from datetime import UTC, datetime, timedelta

    from tests.helpers import iso

    email = uploader()
    v1 = cms_file(cms, s3_server, "report.pdf", make_corrupt_pdf(), PDF, user_email=email)
    failed_event(v1)
    v2 = {**v1, "name": "report.txt", "mime_type": "text/plain",
          "storage_key": v1["storage_key"] + ".v2",
          "updatedAt": iso(datetime.now(UTC) + timedelta(seconds=2))}
    upload(s3_server, v2, make_txt("The fixed report."))
    v2_event = store_event(v2, "entry.update")
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def correct() -> None:
        barrier.wait()
        results["correction"] = run_correction(correction_for(v1["documentId"]).id,
                                               services).status

    def reprocess() -> None:
        barrier.wait()
        results["v2"] = process_event(v2_event).status

    threads = [threading.Thread(target=correct), threading.Thread(target=reprocess)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {"correction": "skipped", "v2": "done"}
    assert cms.state.get_file(v1["documentId"]) is not None
    assert s3_exists(s3_server, v2["storage_key"])
    assert services.vectors.chunk_ids(v1["documentId"]) == [f"{v1['documentId']}:0"]


def test_disabled_auto_correction_records_the_plan_only(
    s3_server: Any, cms: Any, services: CorrectionServices
) -> None:
    entry = cms_file(cms, s3_server, "keep.pdf", make_corrupt_pdf(), PDF, user_email=uploader())
    failed_event(entry)
    off = CorrectionServices(
        settings=services.settings.model_copy(update={"enable_auto_correction": False}),
        s3=services.s3, cms=services.cms, vectors=services.vectors)
    assert run_correction(correction_for(entry["documentId"]).id, off).status == "completed"
    task = correction_for(entry["documentId"])
    assert task.correction_actions == ["s3_delete", "cms_delete", "chroma_delete"]
    assert not (task.s3_cleanup_completed or task.cms_cleanup_completed
                or task.chroma_cleanup_completed)
    assert s3_exists(s3_server, entry["storage_key"])
    assert cms.state.get_file(entry["documentId"]) is not None


def test_exhausted_correction_fails_and_alerts_the_operator(
    s3_server: Any, cms: Any, services: CorrectionServices, smtp_sink: Any
) -> None:
    email = uploader()
    entry = cms_file(cms, s3_server, "stuck.pdf", make_corrupt_pdf(), PDF, user_email=email)
    from ingest.batches import join_batch
    from ingest.preferences import Preferences

    event_id = store_event(entry)
    join_batch(event_id=event_id, document_id=entry["documentId"], file_name="stuck.pdf",
               size_bytes=1, company_id=42, bot_id=7, user_email=email,
               prefs=Preferences(notification_delay_minutes=5), settings=get_settings())
    assert process_event(event_id).status == "failed"
    task_id = correction_for(entry["documentId"]).id
    cms.state.fail_next("DELETE file", 500, times=10)
    alerted: list[int] = []

    def alert(task: Any) -> None:
        alerted.append(task.id)
        alert_correction_failed(task)

    outcomes = [run_correction(task_id, services, alert).status for _ in range(3)]
    cms.state.clear_faults()
    assert outcomes == ["retry", "retry", "failed"]
    task = correction_for(entry["documentId"])
    assert task.status == "failed" and "CMS answered 500" in task.error_during_correction
    assert alerted == [task_id]
    send_pending_alerts(get_settings())
    alert = wait_until(lambda: [m for m in smtp_sink.messages
                                if m["To"] == "ops@kb-ingest.test"
                                and m["X-Batch-ID"] == str(task.batch_id)], 10)[0]
    # Rendered through the e-mail registry (templates/email/operator_alert/): ids only in
    # the subject, the details and the footer in the text.
    assert alert["Subject"] == f"kb-ingest: auto-correction failed (correction {task.id})"
    assert (alert["X-Alert-Kind"], alert["Auto-Submitted"]) == ("correction_failed",
                                                                 "auto-generated")
    assert entry["documentId"] in alert.get_content()
    assert "kb-ingest operator alert (correction_failed)" in alert.get_content()


@pytest.mark.parametrize("category", ["infrastructure_error", "resource_limit",
                                      "invalid_key", "internal_error"])
def test_failures_on_our_side_plan_no_correction(s3_server: Any, cms: Any,
                                                 category: str) -> None:
    """Only a property of the file may lead to a deletion (DESIGN §8)."""
    from ingest.errors import IngestError, PermanentError
    from ingest.pipeline.run import claim, fail_event

    entry = cms_file(cms, s3_server, f"{category}.txt", make_txt("Good text."),
                     user_email=uploader())
    event_id = store_event(entry)
    assert claim(event_id) is not None
    error = PermanentError("on our side", category=category)
    assert isinstance(error, IngestError)
    assert fail_event(event_id, error).correction_id is None
    with session_scope() as s:
        assert s.execute(select(AutoCorrectionTask).where(
            AutoCorrectionTask.file_document_id == entry["documentId"])).first() is None
    assert s3_exists(s3_server, entry["storage_key"])
    assert cms.state.get_file(entry["documentId"]) is not None

"""End to end on real services: webhook → outbox → Celery worker → S3 → text → Chroma."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.samples import (
    bad_documents,
    format_samples,
    make_md,
    make_pdf,
    make_txt,
    sample_documents,
)
from ingest.adapters.vectors import VectorStore
from ingest.db import session_scope
from ingest.events import FileEntry, store_file_event
from ingest.names import TASK_PROCESS_FILE_EVENT, TASK_RELAY_OUTBOX
from ingest.pipeline.embedding import get_embedder
from ingest.pipeline.run import default_services, process_event
from ingest.pipeline.tokens import minilm_tokenizer
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import (
    envelope,
    errors_for,
    event_row,
    file_entry,
    iso,
    post,
    stages_for,
    store_event,
    upload,
    wait_terminal,
)
from webhooks.app import create_app
from webhooks.publisher import Publisher

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def vectors(chroma_server: str) -> VectorStore:
    return VectorStore(get_settings())


def ingest(web: str, s3: Any, name: str, mime: str, data: bytes, event: str = "entry.create",
           **extra: Any) -> tuple[dict[str, Any], Any]:
    """Upload, send the webhook, wait for the outcome; returns (entry, file_events row)."""
    entry = file_entry(name, mime, **extra)
    upload(s3, entry, data)
    response = post(web, envelope(event, entry))
    assert response.status_code == 202, response.text
    return entry, wait_terminal(response.json()["event_id"])


@pytest.mark.parametrize("sample", sample_documents(), ids=lambda d: d.file_name)
def test_every_file_type_is_chunked_embedded_and_stored(
    web: str, s3_server: Any, vectors: VectorStore, sample: Any
) -> None:
    entry, row = ingest(web, s3_server, sample.file_name, sample.mime_type, sample.data)
    assert row.status == "done", row.last_error
    stored = vectors.collection.get(where={"document_id": entry["documentId"]},
                                    include=["metadatas", "documents"])
    assert stored["ids"], "no chunks stored"
    assert sorted(stored["ids"]) == sorted(f"{entry['documentId']}:{n}"
                                           for n in range(len(stored["ids"])))
    meta = stored["metadatas"][0]
    assert meta["company_id"] == 42 and meta["bot_id"] == 7
    assert meta["file_name"] == sample.file_name
    words = sample.topic_sentence.split()[:4]
    assert any(" ".join(words) in " ".join(doc.split()) for doc in stored["documents"])
    assert stages_for(row.id) == [("download", "success"), ("processing", "success"),
                                  ("storage", "success"), ("completed", "success")]


@pytest.mark.parametrize("bad", bad_documents(), ids=lambda d: d.file_name)
def test_corrupt_unsupported_or_empty_files_fail_once_as_processing_error(
    web: str, s3_server: Any, vectors: VectorStore, bad: Any
) -> None:
    entry, row = ingest(web, s3_server, bad.file_name, bad.mime_type, bad.data)
    assert row.status == "failed"
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "processing_error"
    assert error.processing_stage == "processing"
    assert "Traceback" in (error.stack_trace or "")
    assert error.retry_count == 0
    assert vectors.chunk_ids(entry["documentId"]) == []
    assert stages_for(row.id)[-1] == ("failed", "failed")


def test_missing_s3_object_fails_as_file_not_found_after_its_grace(cms: Any) -> None:
    """Grace 0: the first NoSuchKey is final, once the CMS confirms the entry still uses it."""
    entry = cms.state.put_file({k: v for k, v in file_entry("ghost.pdf", "application/pdf")
                                .items() if k not in ("id", "documentId", "createdAt",
                                                      "updatedAt", "publishedAt")})
    svc = replace(default_services(), settings=get_settings().model_copy(
        update={"s3_missing_grace_seconds": 0}))
    event_id = store_event(entry)
    assert process_event(event_id, svc).status == "failed"
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "file_not_found"
    assert error.processing_stage == "download"
    assert "still missing" in error.error_message


def test_missing_object_of_a_deleted_cms_entry_is_ignored(web: str) -> None:
    """No object and no CMS entry: the entry was deleted; nothing fails, nothing is planned."""
    entry = file_entry("ghost.pdf", "application/pdf")
    row = wait_terminal(post(web, envelope("entry.create", entry)).json()["event_id"])
    assert row.status == "ignored" and "deleted" in row.last_error
    assert errors_for(entry["documentId"]) == []


def test_metadata_comes_from_the_cms_when_the_webhook_lacks_it(
    web: str, s3_server: Any, cms: Any, vectors: VectorStore
) -> None:
    stored = cms.state.put_file({
        "name": "handbook.txt", "storage_key": "companies/42/bots/7/handbook.txt", "company_id": 42,
        "bot_id": 7, "user_email": "carol@example.com", "size_bytes": "20",
        "mime_type": "text/plain"})
    s3_server.put_object(Bucket=get_settings().s3_bucket, Key="companies/42/bots/7/handbook.txt",
                         Body=make_txt("The staff handbook explains holiday allowance."))
    before = cms.state.calls["GET file"]
    partial = {"documentId": stored["documentId"], "updatedAt": stored["updatedAt"]}
    row = wait_terminal(post(web, envelope("entry.create", partial)).json()["event_id"])
    assert row.status == "done", row.last_error
    assert cms.state.calls["GET file"] == before + 1
    meta = vectors.collection.get(ids=[f"{stored['documentId']}:0"])["metadatas"][0]
    assert meta["file_name"] == "handbook.txt"


def test_cms_5xx_is_retried_with_backoff_then_succeeds(
    web: str, s3_server: Any, cms: Any
) -> None:
    stored = cms.state.put_file({
        "name": "retry.txt", "storage_key": "companies/42/bots/7/retry.txt", "company_id": 42,
        "bot_id": 7,
        "user_email": "carol@example.com", "size_bytes": "20", "mime_type": "text/plain"})
    s3_server.put_object(Bucket=get_settings().s3_bucket,
                         Key="companies/42/bots/7/retry.txt",
                         Body=make_txt("Retried documents still arrive."))
    cms.state.fail_next("file", 503, times=2)
    partial = {"documentId": stored["documentId"], "updatedAt": stored["updatedAt"]}
    row = wait_terminal(post(web, envelope("entry.create", partial)).json()["event_id"], 60)
    assert row.status == "done", row.last_error
    assert row.attempts == 3
    assert errors_for(stored["documentId"]) == []


def test_cms_entry_gone_fails_as_file_not_found(web: str) -> None:
    partial = {"documentId": "gonegonegonegonegonegone", "updatedAt": iso(datetime.now(UTC))}
    row = wait_terminal(post(web, envelope("entry.create", partial)).json()["event_id"])
    assert row.status == "failed"
    assert errors_for("gonegonegonegonegonegone")[0].error_category == "file_not_found"


def test_update_reprocesses_and_replaces_older_chunks(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    long_text = " ".join(f"Paragraph {n} talks about quarterly revenue." for n in range(200))
    entry, row = ingest(web, s3_server, "report.txt", "text/plain", make_txt(long_text))
    assert row.status == "done"
    first = len(vectors.chunk_ids(entry["documentId"]))
    assert first > 2
    newer = {**entry, "updatedAt": iso(datetime.now(UTC) + timedelta(seconds=1))}
    upload(s3_server, newer, make_txt("The revised report is short."))
    row2 = wait_terminal(post(web, envelope("entry.update", newer)).json()["event_id"])
    assert row2.status == "done"
    assert vectors.chunk_ids(entry["documentId"]) == [f"{entry['documentId']}:0"]
    text = vectors.collection.get(ids=[f"{entry['documentId']}:0"])["documents"][0]
    assert "revised report" in text


def test_delete_removes_the_documents_chunks(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    entry, row = ingest(web, s3_server, "bye.txt", "text/plain", make_txt("Soon deleted."))
    assert vectors.chunk_ids(entry["documentId"])
    deleted = wait_terminal(post(web, envelope("entry.delete", entry)).json()["event_id"])
    assert deleted.status == "done"
    assert vectors.chunk_ids(entry["documentId"]) == []
    again = post(web, envelope("entry.delete", {**entry, "id": entry["id"] + 1}))
    assert again.json()["status"] == "duplicate"


def test_a_create_arriving_after_its_delete_is_dropped(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    entry = file_entry("late.txt", "text/plain")
    upload(s3_server, entry, make_txt("This create was overtaken by its delete."))
    deleted = wait_terminal(post(web, envelope("entry.delete", entry)).json()["event_id"])
    created = wait_terminal(post(web, envelope("entry.create", entry)).json()["event_id"])
    assert deleted.status == "done"
    assert created.status == "ignored"
    assert vectors.chunk_ids(entry["documentId"]) == []


def test_concurrent_versions_of_one_document_newest_wins(
    s3_server: Any, vectors: VectorStore, cms: Any
) -> None:
    """Two versions processed at the same moment in two threads: the newer one is stored."""
    base = datetime.now(UTC)
    old = file_entry("v.txt", "text/plain", updated=base)
    new = {**old, "updatedAt": iso(base + timedelta(seconds=5)),
           "storage_key": old["storage_key"] + ".v2"}
    upload(s3_server, old, make_txt("Version one says the office opens at nine."))
    upload(s3_server, new, make_txt("Version two says the office opens at ten."))
    with session_scope() as s:
        ids = [store_file_event(s, "entry.update", FileEntry.model_validate(e),
                                envelope("entry.update", e)).event_id for e in (old, new)]
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def run(event_id: int) -> None:
        barrier.wait()
        outcomes[event_id] = process_event(event_id).status

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes[ids[1]] == "done"
    assert outcomes[ids[0]] in ("done", "ignored")
    docs = vectors.collection.get(where={"document_id": old["documentId"]})["documents"]
    assert docs == ["Version two says the office opens at ten."]


def test_broker_down_event_is_processed_after_the_relay(web: str, s3_server: Any,
                                                        celery_app: Any) -> None:
    offline = create_app(get_settings(), publisher=Publisher("redis://127.0.0.1:1/0"))
    entry = file_entry("offline.pdf", "application/pdf")
    upload(s3_server, entry, make_pdf("Stored while the broker was down."))
    response = offline.test_client().post(
        "/webhooks/cms", json=envelope("entry.create", entry),
        headers={"Authorization": "Bearer test-webhook-token"})
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    assert event_row(event_id).status == "received"
    time.sleep(get_settings().outbox_relay_after_seconds + 0.2)  # the relay's grace period
    celery_app.send_task(TASK_RELAY_OUTBOX)  # what beat does every few seconds
    assert wait_terminal(event_id).status == "done"


def test_an_enqueued_event_whose_message_was_lost_is_published_again(
    web: str, s3_server: Any, celery_app: Any
) -> None:
    """Found by ``make chaos``: a worker SIGKILLed between taking a message off the queue
    and recording it in ``unacked`` loses it for good, and its event stayed ``enqueued``
    until the last-resort re-drive (two visibility timeouts: two hours). Once the ingest
    queue is empty, the relay publishes an event again whose message is nowhere on the
    broker; one published within the grace period is left alone."""
    import redis as redis_lib
    from sqlalchemy import text

    from ingest.events import publish_then_mark_enqueued
    from ingest.names import QUEUE_INGEST
    from ingest.redis_client import broker_was_emptied

    settings = get_settings()
    broker_was_emptied(settings.broker_url)  # else the first relay re-publishes everything
    lost = file_entry("lost.txt", "text/plain")
    # Not small: else the worker would take it along with the lost one (a group).
    young = file_entry("young.txt", "text/plain", size_bytes="900000")
    for entry in (lost, young):
        upload(s3_server, entry, make_txt(f"Stored as {entry['name']}; its message vanished."))
    lost_id, young_id = store_event(lost), store_event(young)
    with session_scope() as s:  # marked enqueued, as after a publish, but nothing is sent
        assert publish_then_mark_enqueued(s, [lost_id, young_id], lambda _: None) == [
            lost_id, young_id]
        s.execute(text("UPDATE file_events SET updated_at = now() - make_interval(secs => :g) "
                       "WHERE id = :i"), {"g": settings.broker_orphan_grace_seconds + 5,
                                          "i": lost_id})
    broker = redis_lib.Redis.from_url(settings.broker_url)
    wait_until(lambda: broker.llen(QUEUE_INGEST) == 0, 30)
    celery_app.send_task(TASK_RELAY_OUTBOX)
    assert wait_terminal(lost_id).status == "done"
    young_row = event_row(young_id)
    assert (young_row.status, young_row.attempts) == ("enqueued", 0)
    with session_scope() as s:  # not left for later tests' relays to find
        publish_then_mark_enqueued(s, [young_id], lambda e: celery_app.send_task(
            TASK_PROCESS_FILE_EVENT, args=[e]), relayed=True)
    assert wait_terminal(young_id).status == "done"


def test_a_relayed_mark_never_undoes_a_claim_made_after_the_publish() -> None:
    """The relay publishes events it has not locked (those whose message was lost,
    ``workers.orphans``); a worker may claim one before the relay marks it ``enqueued``.
    The mark must leave that claim alone: set back to ``enqueued``, the attempt's final
    UPDATE (``WHERE status = 'processing'``) would find nothing and the event would never
    be done (seen as a flaky test above, whose clean-up publishes like that)."""
    from ingest.events import publish_then_mark_enqueued
    from ingest.leases import owner
    from ingest.pipeline.run import claim, finish

    event_id = store_event(file_entry("raced.txt", "text/plain"))
    claims: list[Any] = []
    with session_scope() as s:  # the worker's claim commits between the publish and the mark
        assert publish_then_mark_enqueued(s, [event_id], lambda e: claims.append(claim(e)),
                                          relayed=True) == [event_id]
    assert claims[0] is not None
    row = event_row(event_id)
    assert (row.status, row.claimed_by) == ("processing", owner())
    with session_scope() as s:  # the attempt can still end it
        assert finish(s, event_id, "ignored", "ended by the test")


def test_semantic_query_finds_the_right_documents_chunk(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    topics = {
        "coffee.txt": "Descale the espresso machine in the kitchen every Friday afternoon.",
        "parking.txt": "Employees must display the parking permit on the dashboard.",
        "vpn.txt": "Connect to the corporate VPN before opening the internal wiki.",
    }
    ids = {}
    for name, sentence in topics.items():
        entry, row = ingest(web, s3_server, name, "text/plain", make_txt(sentence))
        assert row.status == "done"
        ids[name] = entry["documentId"]
    embedder = get_embedder("minilm")
    (question,) = embedder.embed(["Where do I put my car pass?"])
    hits = vectors.query(question, n_results=1,
                         where={"document_id": {"$in": list(ids.values())}})
    assert hits[0].document_id == ids["parking.txt"]


FORMAT_QUESTIONS = {  # a question per issue-12 format, answered only by that file
    "q3-sales-kickoff.pptx": "How much new business must the Nordic team close in Q3?",
    "furniture-price-list.xlsx": "What is the price of the Orion X2 standing desk?",
    "fire-safety-procedure.odt": "How often are the emergency exits checked by fire wardens?",
    "visitor-wifi.rtf": "When does the password of the guest wireless network change?",
    "northwind-history.epub": "Where and when was Northwind founded?",
    "all-hands-moved.eml": "Where is the quarterly all-hands meeting held?",
    "server-room-badges.msg": "Who reviews the server room access badges?",
    "fleet-maintenance.xml": "When do the delivery vans get winter tyres?",
}


def test_each_new_format_answers_a_question_from_its_own_file(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    ids = {}
    for sample in format_samples():
        entry, row = ingest(web, s3_server, sample.file_name, sample.mime_type, sample.data)
        assert row.status == "done", row.last_error
        ids[sample.file_name] = entry["documentId"]
    assert set(ids) == set(FORMAT_QUESTIONS)
    embedder = get_embedder("minilm")
    names = list(FORMAT_QUESTIONS)
    questions = embedder.embed([FORMAT_QUESTIONS[name] for name in names])
    for name, question in zip(names, questions, strict=True):
        hits = vectors.query(question, n_results=1,
                             where={"document_id": {"$in": list(ids.values())}})
        assert hits[0].document_id == ids[name], f"{name}: {hits[0].metadata['file_name']}"


def test_a_duplicate_delivery_is_processed_once(web: str, s3_server: Any) -> None:
    entry = file_entry("twice.txt", "text/plain")
    upload(s3_server, entry, make_txt("Delivered twice, processed once."))
    first = post(web, envelope("entry.create", entry))
    second = post(web, envelope("entry.create", entry))
    assert (first.status_code, second.status_code) == (202, 200)
    row = wait_terminal(first.json()["event_id"])
    assert row.status == "done" and row.attempts == 1
    # A redelivered task message for the same event finds nothing left to do.
    assert process_event(row.id).status == "skipped"
    assert [stage for stage, _ in stages_for(row.id)] == [
        "download", "processing", "storage", "completed"]


def _handbook() -> str:
    """Markdown of two sections, each several chunks long."""
    parking = " ".join(f"Parking rule {n}: park in bay {n} of level {n % 4}." for n in range(90))
    travel = " ".join(f"Travel rule {n}: trains under {n + 2} hours, never flights."
                      for n in range(90))
    return f"# Parking\n\n{parking}\n\n# Travel\n\n{travel}\n"


def _stored(vectors: VectorStore, document_id: str) -> list[tuple[str, dict[str, Any]]]:
    got = vectors.collection.get(where={"document_id": document_id},
                                 include=["metadatas", "documents"])
    return sorted(zip(got["documents"], got["metadatas"], strict=True),
                  key=lambda pair: pair[1]["chunk_index"])


def test_chunks_carry_their_section_and_fit_the_models_window(
    web: str, s3_server: Any, vectors: VectorStore
) -> None:
    entry, row = ingest(web, s3_server, "handbook.md", "text/markdown", make_md(_handbook()))
    assert row.status == "done", row.last_error
    stored = _stored(vectors, entry["documentId"])
    assert [meta["section"] for _, meta in stored].count("Parking") >= 2
    assert {meta["section"] for _, meta in stored} == {"Parking", "Travel"}
    tokenizer = minilm_tokenizer()
    for text, meta in stored:
        assert text.startswith(f"{meta['section']}\n\n")
        assert ("Parking rule" in text) == (meta["section"] == "Parking")
        assert "page" not in meta  # Markdown has no pages: left out, never None
        assert tokenizer.count(text) <= get_settings().chunk_tokens <= tokenizer.window


def test_hashing_backend_chunks_by_characters(s3_server: Any, vectors: VectorStore) -> None:
    entry = file_entry("handbook.md", "text/markdown")
    upload(s3_server, entry, make_md(_handbook()))
    settings = get_settings().model_copy(update={"embedding_backend": "hashing",
                                                 "chunk_size": 600, "chunk_overlap": 100})
    svc = replace(default_services(), settings=settings, embedder=get_embedder("hashing"))
    assert process_event(store_event(entry), svc).status == "done"
    stored = _stored(vectors, entry["documentId"])
    assert {meta["section"] for _, meta in stored} == {"Parking", "Travel"}
    assert all(len(text) <= 600 for text, _ in stored)
    assert max(len(text) for text, _ in stored) > 500  # characters, not 256 tokens' worth

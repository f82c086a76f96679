"""Small files processed together (``ingest.pipeline.together``): one embedding call and one
Chroma write for the small upserts waiting in the outbox, each file still on its own for
its claim, stages, batch and outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.adapters.vectors import VectorStore
from ingest.db import session_scope
from ingest.events import publish_then_mark_enqueued
from ingest.names import TASK_PROCESS_FILE_EVENT
from ingest.pipeline.run import Outcome, Services, default_services, process_event
from ingest.pipeline.together import process_with_others
from ingest.settings import get_settings
from tests.helpers import (
    cms_file,
    errors_for,
    event_row,
    file_entry,
    files_of,
    stages_for,
    store_event,
    upload,
    uploader,
    wait_terminal,
)

PROSE = "Quarterly notes of the {} team: the harbour crane was serviced on Tuesday."


def _waiting(*entries: dict[str, Any], event: str = "entry.create") -> list[int]:
    """Store the entries' events and mark them enqueued as after a publish, but send no
    message: only being taken together with another file can run them."""
    ids = [store_event(entry, event) for entry in entries]
    with session_scope() as s:
        assert publish_then_mark_enqueued(s, ids, lambda _: None) == ids
    return ids


def _services(**settings: Any) -> Services:
    return replace(default_services(),
                   settings=get_settings().model_copy(update={"ingest_group_files": 12,
                                                              **settings}))


def test_small_files_waiting_are_processed_together_and_a_bad_one_fails_alone(
    s3_server: Any, chroma_server: str, cms: Any
) -> None:
    email = uploader()
    good = [file_entry(f"memo-{n}.txt", "text/plain", user_email=email) for n in range(4)]
    for n, entry in enumerate(good):
        upload(s3_server, entry, PROSE.format(n).encode())
    bad = file_entry("broken.pdf", "application/pdf", user_email=email)
    upload(s3_server, bad, b"%PDF-1.7 this is not a PDF at all")
    first, *rest = _waiting(*good, bad)
    others: list[Outcome] = []

    outcome = process_with_others(first, others.append, _services())

    assert outcome.status == "done" and outcome.chunks >= 1
    by_event = {o.event_id: o for o in others}
    assert set(rest) <= set(by_event), "every waiting small file went with the first"
    *good_rest, bad_id = rest
    assert [by_event[e].status for e in good_rest] == ["done"] * 3
    assert by_event[bad_id].status == "failed"
    assert by_event[bad_id].correction_id is not None  # the file's own fault: corrected
    (error,) = errors_for(bad["documentId"])
    assert error.error_category == "processing_error"
    vectors = VectorStore(get_settings())
    for event_id, entry in zip([first, *good_rest], good, strict=True):
        row = event_row(event_id)
        assert (row.status, row.attempts, row.running_since) == ("done", 1, None)
        assert row.object_key == entry["storage_key"]  # what the download saw
        assert [name for name, _ in stages_for(event_id)] == [
            "download", "processing", "storage", "completed"]
        assert {status for _, status in stages_for(event_id)} == {"success"}
        assert len(vectors.chunk_ids(entry["documentId"])) >= 1
    assert stages_for(bad_id)[-1] == ("failed", "failed")
    (batch,) = {f.batch_id for e in [first, *rest] for f in _file_rows(e)}
    statuses = sorted(f.processing_status for f in files_of(batch))
    assert statuses == ["failed"] + ["success"] * 4
    # Their own messages, when they come, find the files finished.
    assert process_event(good_rest[0]).status == "skipped"


def _file_rows(event_id: int) -> list[Any]:
    from sqlalchemy import select

    from ingest.models import BatchFile

    with session_scope() as s:
        return list(s.execute(select(BatchFile).where(BatchFile.file_event_id == event_id))
                    .scalars())


def test_a_file_too_large_or_a_second_event_of_a_document_is_not_taken_along(
    s3_server: Any, chroma_server: str, cms: Any
) -> None:
    """One event per document in a group (two would wait for each other's document lock),
    and only files small by their entry's size."""
    email = uploader()
    first = file_entry("first.txt", "text/plain", user_email=email)
    large = file_entry("large.txt", "text/plain", user_email=email, size_bytes="900000")
    now = datetime.now(UTC)
    v1 = file_entry("twice.txt", "text/plain", user_email=email,
                    updated=now - timedelta(seconds=5))
    v2 = file_entry("twice.txt", "text/plain", user_email=email, doc=v1["documentId"],
                    updated=now)
    for entry in (first, large, v1):
        upload(s3_server, entry, PROSE.format(entry["name"]).encode())
    first_id, large_id, v1_id = _waiting(first, large, v1)
    (v2_id,) = _waiting(v2, event="entry.update")
    others: list[Outcome] = []

    assert process_with_others(first_id, others.append, _services()).status == "done"

    taken = {o.event_id for o in others}
    assert v1_id in taken
    assert large_id not in taken and v2_id not in taken
    assert (event_row(large_id).status, event_row(v2_id).status) == ("enqueued", "enqueued")
    # Left for their own messages.
    assert process_event(large_id).status == "done"
    assert process_event(v2_id).status == "done"


def test_with_grouping_off_each_file_runs_alone(s3_server: Any, chroma_server: str,
                                                 cms: Any) -> None:
    entries = [file_entry(f"alone-{n}.txt", "text/plain") for n in range(2)]
    for entry in entries:
        upload(s3_server, entry, PROSE.format(entry["name"]).encode())
    first, second = _waiting(*entries)
    others: list[Outcome] = []
    svc = _services(ingest_group_files=1)
    assert process_with_others(first, others.append, svc).status == "done"
    assert others == [] and event_row(second).status == "enqueued"
    assert process_event(second, svc).status == "done"


def test_a_file_taken_along_whose_object_is_not_there_yet_is_published_again(
    worker: Any, celery_app: Any, s3_server: Any, cms: Any
) -> None:
    """Through the real worker: the file taken along meets a missing object (not its fault
    yet), is released and published again by the task, and is done once it arrives."""
    email = uploader()
    first = file_entry("on-time.txt", "text/plain", user_email=email)
    upload(s3_server, first, PROSE.format("on-time").encode())
    late = cms_file(cms, s3_server, "late.txt", None, user_email=email)  # no object yet
    first_id, late_id = _waiting(first, late)
    celery_app.send_task(TASK_PROCESS_FILE_EVENT, args=[first_id])
    assert wait_terminal(first_id).status == "done"
    released = wait_terminal_or(late_id, lambda row: row.attempts >= 1
                                and row.running_since is None)
    assert released.status == "processing", "released: its attempt ended, it is not failed"
    upload(s3_server, late, PROSE.format("late").encode())
    row = wait_terminal(late_id)
    assert row.status == "done", row.last_error
    assert row.attempts >= 2  # taken along once, then run again from its new message


def wait_terminal_or(event_id: int, ready: Any, timeout: float = 60.0) -> Any:
    """The event's row once ``ready(row)`` holds."""
    from tests.conftest import wait_until

    rows: list[Any] = []

    def check() -> bool:
        rows[:] = [event_row(event_id)]
        return bool(ready(rows[0]))

    wait_until(check, timeout, 0.05)
    return rows[0]


def test_a_group_takes_at_most_ingest_group_files(s3_server: Any, chroma_server: str,
                                                  cms: Any) -> None:
    entries = [file_entry(f"capped-{n}.txt", "text/plain") for n in range(6)]
    for entry in entries:
        upload(s3_server, entry, PROSE.format(entry["name"]).encode())
    first, *rest = _waiting(*entries)
    others: list[Outcome] = []
    assert process_with_others(first, others.append, _services(ingest_group_files=3)
                               ).status == "done"
    assert len(others) == 2  # (the oldest waiting: another test's may be among them)
    for event_id in rest:
        if event_id not in {o.event_id for o in others}:
            assert event_row(event_id).status == "enqueued"
            assert process_event(event_id).status == "done"


def test_a_group_holds_at_most_ingest_group_max_bytes_in_all(
    s3_server: Any, chroma_server: str, cms: Any
) -> None:
    """So a group keeps a worker child about as long as one file of that size would."""
    first = file_entry("budget-first.txt", "text/plain", size_bytes="40000")
    rest = [file_entry(f"budget-{n}.txt", "text/plain", size_bytes="20000") for n in range(3)]
    for entry in (first, *rest):
        upload(s3_server, entry, PROSE.format(entry["name"]).encode())
    first_id, *rest_ids = _waiting(first, *rest)
    others: list[Outcome] = []
    svc = _services(ingest_group_max_bytes=65536)
    assert process_with_others(first_id, others.append, svc).status == "done"
    assert len([o for o in others if o.event_id in rest_ids]) <= 1  # 40000 + 20000 fits
    assert sum(int(file_entry_size(o.event_id)) for o in others) <= 65536 - 40000
    for event_id in rest_ids:
        if event_row(event_id).status == "enqueued":
            assert process_event(event_id).status == "done"


def file_entry_size(event_id: int) -> str:
    return event_row(event_id).payload["entry"]["size_bytes"]

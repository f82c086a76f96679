"""Reconciliation on real services: CMS stand-in → file_events → Celery worker.

Entries are seeded in the stand-in *without* a webhook (``put_file(send_webhook=False)``),
as if Strapi's one delivery had been lost. Other tests share the database and the CMS, so
each test works in its own far-future ``updatedAt`` window (``_window()``, days apart)
and sets the checkpoint just before it: the poll then sees only this test's entries, and
assertions are about this test's document ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from devtools.samples import make_txt
from ingest.adapters.cms import CmsClient
from ingest.db import held_lock, session_scope
from ingest.models import FileEvent, ReconciliationCheckpoint
from ingest.reconcile import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    ReconcileResult,
    advance_checkpoint,
    reconcile,
)
from ingest.settings import Settings, get_settings
from tests.conftest import CMS_TOKEN
from tests.helpers import (
    document_id,
    envelope,
    file_entry,
    iso,
    post,
    upload,
    uploader,
    wait_terminal,
)
from workers.tasks.reconcile import reconcile_cms

pytestmark = pytest.mark.usefixtures("worker")

_FAR = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1000)
_slots = itertools.count()
FIELDS = ("name", "storage_key", "company_id", "bot_id", "user_email", "size_bytes",
          "mime_type", "documentId", "createdAt", "updatedAt", "publishedAt")


def _window() -> datetime:
    """A far-future instant no entry of another test (or of an earlier one here) reaches."""
    return _FAR + timedelta(days=10 * next(_slots))


def _settings(**update: Any) -> Settings:
    return get_settings().model_copy(update=update)


def _client() -> CmsClient:
    return CmsClient.from_settings(get_settings())


def set_checkpoint(moment: datetime) -> None:
    """Put the checkpoint exactly at ``moment`` (test setup may move it backwards)."""
    with session_scope() as s:
        s.execute(delete(ReconciliationCheckpoint)
                  .where(ReconciliationCheckpoint.name == CHECKPOINT_NAME))
        s.add(ReconciliationCheckpoint(name=CHECKPOINT_NAME, last_updated_at=moment))


def checkpoint_row() -> ReconciliationCheckpoint | None:
    with session_scope() as s:
        return s.get(ReconciliationCheckpoint, CHECKPOINT_NAME)


def events_of(doc: str) -> list[FileEvent]:
    with session_scope() as s:
        return list(s.execute(select(FileEvent).where(FileEvent.document_id == doc)
                              .order_by(FileEvent.id)).scalars())


def seed(cms: Any, updated: datetime, *, doc: str | None = None, email: str | None = None,
         **extra: Any) -> dict[str, Any]:
    """A file entry in the stand-in at ``updated``, with no webhook sent."""
    entry = file_entry("missed.txt", "text/plain", doc=doc, updated=updated,
                       user_email=email or uploader(), **extra)
    return cms.state.put_file({k: entry[k] for k in FIELDS}, send_webhook=False)


@pytest.fixture
def cleanup(cms: Any) -> Iterator[list[str]]:
    """Document ids to retire afterwards: their CMS entries removed, pending events ignored.

    Events that were never published must not be picked up by another test's relay run.
    """
    docs: list[str] = []
    yield docs
    for doc in docs:
        cms.state.delete_file_direct(doc)
    if docs:
        with session_scope() as s:
            s.execute(update(FileEvent)
                      .where(FileEvent.document_id.in_(docs), FileEvent.status == "received")
                      .values(status="ignored"))


def test_missed_entry_is_found_and_processed_once(cms: Any, s3_server: Any) -> None:
    start = _window()
    stored = seed(cms, start)
    doc = stored["documentId"]
    upload(s3_server, stored, make_txt("A file whose webhook was lost still reaches the KB."))
    set_checkpoint(start - timedelta(seconds=1))

    summary = reconcile_cms()

    assert summary["error"] is None
    assert summary["events_created"] == 1 and summary["published"] == 1
    [event] = events_of(doc)
    row = wait_terminal(event.id, 90)
    assert row.status == "done", row.last_error
    assert row.event == "entry.update"
    assert row.payload["source"] == "reconciliation"
    assert row.payload["entry"]["documentId"] == doc
    assert row.attempts == 1
    checkpoint = checkpoint_row()
    assert checkpoint is not None and checkpoint.last_updated_at == start
    assert checkpoint.last_run_at is not None

    again = reconcile_cms()  # the overlap re-reads the entry: dedupe meets the stored event

    assert again["events_created"] == 0 and again["entries_seen"] == 1
    assert [e.id for e in events_of(doc)] == [event.id]
    assert checkpoint_row().last_updated_at == start  # type: ignore[union-attr]


def test_entry_whose_webhook_arrived_is_not_processed_twice(
    cms: Any, s3_server: Any, web: str
) -> None:
    start = _window()
    entry = file_entry("delivered.txt", "text/plain", updated=start, user_email=uploader())
    cms.state.put_file({k: entry[k] for k in FIELDS}, send_webhook=False)
    upload(s3_server, entry, make_txt("This one's webhook did arrive."))
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202, response.text
    row = wait_terminal(response.json()["event_id"], 90)
    assert row.status == "done", row.last_error
    set_checkpoint(start - timedelta(seconds=1))

    summary = reconcile_cms()

    assert summary["entries_seen"] == 1 and summary["events_created"] == 0
    [event] = events_of(entry["documentId"])
    assert event.id == row.id and event.status == "done" and event.attempts == 1


def test_pagination_reads_every_page(cms: Any, cleanup: list[str]) -> None:
    start = _window()
    email = uploader()
    docs = [seed(cms, start + timedelta(milliseconds=i), email=email)["documentId"]
            for i in range(130)]
    cleanup.extend(docs)
    set_checkpoint(start - timedelta(seconds=1))
    calls = cms.state.calls["GET files"]

    result = reconcile(_client(), _settings(reconciliation_page_size=100,
                                            reconciliation_overlap_seconds=0))

    assert result.error is None and not result.skipped
    assert result.pages == 2 and cms.state.calls["GET files"] == calls + 2
    assert result.entries_seen == 130 and result.events_created == 130
    with session_scope() as s:
        found = s.execute(select(FileEvent.document_id)
                          .where(FileEvent.id.in_(result.event_ids))).scalars().all()
    assert sorted(found) == sorted(docs)
    last = start + timedelta(milliseconds=129)
    assert result.new_checkpoint == last
    assert checkpoint_row().last_updated_at == last  # type: ignore[union-attr]


def test_entries_sharing_one_millisecond_across_pages_are_all_read(
    cms: Any, cleanup: list[str]
) -> None:
    start = _window()
    docs = [seed(cms, start)["documentId"] for _ in range(5)]
    cleanup.extend(docs)
    set_checkpoint(start - timedelta(seconds=1))

    result = reconcile(_client(), _settings(reconciliation_page_size=2,
                                            reconciliation_overlap_seconds=0))

    assert result.events_created == 5 and result.entries_seen == 5
    assert {e.document_id for d in docs for e in events_of(d)} == set(docs)
    assert result.new_checkpoint == start


class _EditingClient(CmsClient):
    """A client that lets the CMS change between the first and the second page."""

    def __init__(self, on_first_page: Callable[[], None]) -> None:
        settings = get_settings()
        super().__init__(settings.cms_api_url, CMS_TOKEN)
        self.on_first_page: Callable[[], None] | None = on_first_page

    def list_files(self, updated_after: datetime, page: int,
                   page_size: int) -> tuple[list[Any], dict[str, Any]]:
        answer = super().list_files(updated_after, page, page_size)
        hook, self.on_first_page = self.on_first_page, None
        if hook is not None:
            hook()
        return answer


def test_an_entry_edited_during_the_walk_does_not_hide_another(
    cms: Any, cleanup: list[str]
) -> None:
    """Page numbers over a fixed filter would skip the third entry here (the first moves to
    the end of the listing); paging from the last ``updatedAt`` read does not."""
    start = _window()
    docs = [seed(cms, start + timedelta(milliseconds=i))["documentId"] for i in range(6)]
    cleanup.extend(docs)
    set_checkpoint(start - timedelta(seconds=1))
    edited = start + timedelta(milliseconds=50)

    def edit_first() -> None:
        cms.state.put_file({"documentId": docs[0], "updatedAt": iso(edited)})

    result = reconcile(_EditingClient(edit_first),
                       _settings(reconciliation_page_size=2, reconciliation_overlap_seconds=0))

    assert result.error is None
    assert all(events_of(doc) for doc in docs)
    assert len(events_of(docs[0])) == 2  # both versions of the edited entry
    assert result.events_created == 7
    assert result.new_checkpoint == edited


def test_checkpoint_never_moves_backwards(cms: Any, cleanup: list[str]) -> None:
    start = _window()
    ahead = start + timedelta(seconds=10)
    set_checkpoint(ahead)
    with session_scope() as s:
        assert advance_checkpoint(s, start, datetime.now(UTC)) == ahead
    doc = seed(cms, start + timedelta(seconds=5))["documentId"]  # inside the overlap
    cleanup.append(doc)

    result = reconcile(_client(), _settings(reconciliation_overlap_seconds=60))

    assert result.events_created == 1 and len(events_of(doc)) == 1
    assert result.new_checkpoint == ahead
    assert checkpoint_row().last_updated_at == ahead  # type: ignore[union-attr]


def test_first_run_looks_back_and_creates_the_checkpoint(cms: Any, cleanup: list[str]) -> None:
    start = _window()
    doc = seed(cms, start)["documentId"]
    cleanup.append(doc)
    with session_scope() as s:
        s.execute(delete(ReconciliationCheckpoint))
    settings = _settings(reconciliation_overlap_seconds=0, reconciliation_lookback_hours=2)
    now = start + timedelta(hours=2) - timedelta(seconds=1)  # looks back to just before it

    result = reconcile(_client(), settings, now=now)

    assert result.events_created == 1 and len(events_of(doc)) == 1
    row = checkpoint_row()
    assert row is not None and row.last_updated_at == start and row.last_run_at == now
    assert row.entries_seen == 1 and row.events_created == 1


def test_invalid_entry_is_skipped_and_the_run_goes_on(cms: Any, cleanup: list[str]) -> None:
    start = _window()
    bad = seed(cms, start, company_id=-1)["documentId"]
    good = seed(cms, start + timedelta(milliseconds=1))["documentId"]
    cleanup.extend([bad, good])
    set_checkpoint(start - timedelta(seconds=1))

    result = reconcile(_client(), _settings(reconciliation_overlap_seconds=0))

    assert result.error is None
    assert result.entries_seen == 2 and result.invalid == 1 and result.events_created == 1
    assert events_of(bad) == [] and len(events_of(good)) == 1
    assert result.new_checkpoint == start + timedelta(milliseconds=1)


def test_cms_503_ends_the_run_without_moving_the_checkpoint(
    cms: Any, s3_server: Any
) -> None:
    start = _window()
    stored = seed(cms, start)
    doc = stored["documentId"]
    upload(s3_server, stored, make_txt("Found on the second try."))
    before = start - timedelta(seconds=1)
    set_checkpoint(before)
    cms.state.fail_next("GET files", 503, times=1)

    summary = reconcile_cms()

    assert summary["error"] is not None and "503" in summary["error"]
    assert summary["events_created"] == 0 and summary["pages"] == 0
    assert events_of(doc) == []
    row = checkpoint_row()
    assert row is not None and row.last_updated_at == before and row.last_run_at is not None

    retried = reconcile_cms()  # the next beat run

    assert retried["error"] is None and retried["events_created"] == 1
    [event] = events_of(doc)
    assert wait_terminal(event.id, 90).status == "done"
    assert checkpoint_row().last_updated_at == start  # type: ignore[union-attr]


def test_a_second_concurrent_run_returns_at_once(cms: Any) -> None:
    calls = cms.state.calls["GET files"]
    with held_lock(LOCK_NAME) as held:
        result = reconcile(_client(), get_settings())

    assert held and result == ReconcileResult(skipped=True)
    assert cms.state.calls["GET files"] == calls
    set_checkpoint(_window())
    assert reconcile(_client(), get_settings()).skipped is False  # the lock was released


def test_listing_request_shape(cms: Any) -> None:
    start = _window()
    doc = seed(cms, start + timedelta(milliseconds=5), doc=document_id())["documentId"]
    try:
        data, pagination = _client().list_files(start, 1, 10)
    finally:
        cms.state.delete_file_direct(doc)
    assert [e["documentId"] for e in data] == [doc]
    assert pagination == {"page": 1, "pageSize": 10, "pageCount": 1, "total": 1}
    assert data[0]["size_bytes"] == "1234"  # as Strapi sends it

"""Helpers shared by the tests: Strapi-shaped entries, webhook POSTs, waiting on the database."""

from __future__ import annotations

import json
import os
import random
import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, inspect, select, text

from ingest.batches import join_batch, record_file_outcome
from ingest.db import session_scope
from ingest.events import FileEntry, store_file_event
from ingest.models import (
    BatchFile,
    BatchProcessingSession,
    EmailNotificationLog,
    FileEvent,
    FileProcessingStatus,
    ProcessingError,
)
from ingest.preferences import Preferences
from ingest.settings import get_settings
from tests.conftest import WEBHOOK_TOKEN, wait_until

TERMINAL = ("done", "ignored", "failed")


def document_id() -> str:
    """A fresh Strapi-style documentId (24 lowercase alphanumerics)."""
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=24))


def iso(moment: datetime) -> str:
    """Strapi's timestamp format: UTC with milliseconds and Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_entry(name: str, mime: str | None = None, *, doc: str | None = None,
               updated: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A ``file`` entry shaped like Strapi 5's webhook entry (size_bytes as a string)."""
    doc = doc or document_id()
    updated = updated or datetime.now(UTC)
    entry = {
        "id": random.randint(1, 10_000),
        "documentId": doc,
        "name": name,
        "storage_key": f"companies/42/bots/7/{doc}/{name}",
        "company_id": 42,
        "bot_id": 7,
        "user_email": "alice@example.com",
        "size_bytes": "1234",
        "mime_type": mime or "application/octet-stream",
        "createdAt": iso(updated - timedelta(seconds=1)),
        "updatedAt": iso(updated),
        "publishedAt": iso(updated),
    }
    entry.update(extra)
    return entry


def envelope(event: str, entry: dict[str, Any], model: str = "file") -> dict[str, Any]:
    """The Strapi webhook body around an entry."""
    uid = "api::file.file" if model == "file" else f"api::{model}.{model}"
    return {"event": event, "createdAt": iso(datetime.now(UTC)), "model": model, "uid": uid,
            "entry": entry}


def post(base_url: str, body: Any, *, token: str | None = WEBHOOK_TOKEN,
         headers: dict[str, str] | None = None, raw: bytes | None = None) -> requests.Response:
    """POST to ``/webhooks/cms`` as Strapi does (Bearer token, JSON)."""
    sent = {"Content-Type": "application/json"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{base_url}/webhooks/cms", data=data, headers=sent, timeout=10)


def cms_file(cms: Any, s3: Any, name: str, data: bytes | None, mime: str = "text/plain",
             **fields: Any) -> dict[str, Any]:
    """A file entry in the CMS stand-in (no webhook) under company 42's bot 7 prefix and,
    unless ``data`` is None, its S3 object."""
    entry = cms.state.put_file({
        "name": name, "storage_key": f"companies/42/bots/7/{uuid.uuid4().hex}/{name}",
        "company_id": 42, "bot_id": 7, "user_email": "alice@example.com",
        "size_bytes": str(len(data or b"")), "mime_type": mime, **fields})
    if data is not None:
        upload(s3, entry, data)
    return entry


def s3_exists(s3: Any, key: str) -> bool:
    """Whether the test bucket holds ``key``."""
    try:
        s3.head_object(Bucket=os.environ["S3_BUCKET"], Key=key)
    except ClientError:
        return False
    return True


def upload(s3: Any, entry: dict[str, Any], data: bytes) -> None:
    """Put the entry's object into the test bucket."""
    s3.put_object(Bucket=os.environ["S3_BUCKET"], Key=entry["storage_key"], Body=data)


def event_row(event_id: int) -> FileEvent:
    """The ``file_events`` row."""
    with session_scope() as s:
        return s.execute(select(FileEvent).where(FileEvent.id == event_id)).scalar_one()


def wait_terminal(event_id: int, timeout: float = 60.0) -> FileEvent:
    """Wait until the event is done, ignored or failed; return the row."""
    return wait_until(
        lambda: (row := event_row(event_id)).status in TERMINAL and row, timeout, 0.1
    )


def errors_for(document_id: str) -> list[ProcessingError]:
    """The ``processing_errors`` rows of a document."""
    with session_scope() as s:
        return list(s.execute(
            select(ProcessingError).where(ProcessingError.file_document_id == document_id)
        ).scalars())


def stages_for(event_id: int) -> list[tuple[str, str]]:
    """(stage, status) rows of an event, in order."""
    with session_scope() as s:
        rows = s.execute(
            select(FileProcessingStatus.processing_stage, FileProcessingStatus.status)
            .where(FileProcessingStatus.file_event_id == event_id)
            .order_by(FileProcessingStatus.id)
        ).all()
    return [(r[0], r[1]) for r in rows]


def uploader() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def batches_of(email: str) -> list[BatchProcessingSession]:
    with session_scope() as s:
        return list(s.execute(
            select(BatchProcessingSession).where(BatchProcessingSession.user_email == email)
            .order_by(BatchProcessingSession.id)).scalars())


def files_of(batch_id: uuid.UUID) -> list[BatchFile]:
    with session_scope() as s:
        return list(s.execute(select(BatchFile).where(BatchFile.batch_id == batch_id)).scalars())


def emails_of(batch_id: uuid.UUID) -> list[EmailNotificationLog]:
    with session_scope() as s:
        return list(s.execute(select(EmailNotificationLog)
                              .where(EmailNotificationLog.batch_id == batch_id)).scalars())


def closed(email: str, count: int = 1) -> list[BatchProcessingSession]:
    """Wait until ``count`` batches of the uploader are closed; return them."""
    def done() -> list[BatchProcessingSession] | None:
        rows = [b for b in batches_of(email) if b.status != "processing"]
        return rows if len(rows) >= count else None
    return wait_until(done, 60, 0.2)


def store_event(entry: dict[str, Any], event: str = "entry.create") -> int:
    """Store a file event as the webhook would (no publish): its id."""
    with session_scope() as s:
        return store_file_event(s, event, FileEntry.model_validate(entry),
                                envelope(event, entry)).event_id


def prefer(cms: Any, email: str, **values: Any) -> None:
    """Store the uploader's notification preferences in the CMS stand-in (company 42, bot 7)."""
    cms.state.put_preference({"company_id": 42, "bot_id": 7, "user_email": email, **values})


def sealed_finished_batch(email: str, **prefs_values: Any) -> uuid.UUID:
    """A batch joined through the domain API, its one file finished, due now (with the
    preferences ``prefs_values`` snapshotted on it)."""
    settings = get_settings()
    prefs = Preferences(**{"notification_delay_minutes": 0.001, "batch_size_threshold": 100,
                           **prefs_values})
    entry = file_entry("direct.txt", "text/plain", user_email=email)
    event_id = store_event(entry)
    with session_scope() as s:
        s.execute(text("UPDATE file_events SET status = 'done' WHERE id = :i"), {"i": event_id})
    joined = join_batch(event_id=event_id, document_id=entry["documentId"], file_name="d.txt",
                        size_bytes=1, company_id=42, bot_id=7, user_email=email, prefs=prefs,
                        settings=settings)
    with session_scope() as s:
        record_file_outcome(s, event_id, succeeded=True, chunks=1)
    return joined.batch_id


def quiet_until(seconds: float, timezone: str = "Asia/Kathmandu") -> dict[str, Any]:
    """Preference values of a quiet window in ``timezone`` that began an hour ago and ends
    ``seconds`` from now (to the second; it may cross midnight)."""
    local = datetime.now(UTC).astimezone(ZoneInfo(timezone))
    return {"timezone": timezone,
            "quiet_hours_start": (local - timedelta(hours=1)).strftime("%H:%M:%S"),
            "quiet_hours_end": (local + timedelta(seconds=seconds)).strftime("%H:%M:%S")}


def table_names(url: str) -> set[str]:
    """The tables of the database at ``url`` (a postgresql:// URL)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

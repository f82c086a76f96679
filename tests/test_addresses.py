"""A CMS entry is never refused for its notification field (DESIGN §8), on real services."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from devtools.samples import make_txt
from ingest.adapters.cms import CmsClient
from ingest.addresses import usable_address
from ingest.batches import NO_RECIPIENT, check_batch
from ingest.db import session_scope
from ingest.models import BatchFile, FileEvent
from ingest.pipeline.run import default_services, process_event
from ingest.reconcile import reconcile
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import (
    closed,
    emails_of,
    envelope,
    file_entry,
    post,
    store_event,
    upload,
    wait_terminal,
)

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.parametrize(("raw", "usable"), [
    ("alice@corp.local", "alice@corp.local"),  # Active Directory intranets
    ("bob@lab.test", "bob@lab.test"),
    ("x@localhost", "x@localhost"),  # the CMS's HTML5 rule takes it
    ("carol@exämple.de", "carol@xn--exmple-cua.de"),  # IDN: written in punycode
    ('"dee dee"@example.com', '"dee dee"@example.com'),
    (" eve@example.com ", "eve@example.com"),
    ("not-an-address", None),
    ("Alice <alice@example.com>", None),
    ("a\r\nBcc: x@y.z@example.com", None),
    ("", None),
    (None, None),
    (42, None),
])
def test_usable_address(raw: Any, usable: str | None) -> None:
    assert usable_address(raw) == usable


@pytest.mark.parametrize("domain", ["corp.local", "lab.test", "exämple.de"])
def test_special_use_and_internationalised_addresses_are_ingested_and_mailed(
    web: str, s3_server: Any, smtp_sink: Any, domain: str
) -> None:
    address = f"u{uuid.uuid4().hex[:8]}@{domain}"
    entry = file_entry("intranet.txt", "text/plain", user_email=address)
    upload(s3_server, entry, make_txt("The intranet lives at intranet.corp."))
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202, response.text  # was 400: EmailStr refused it
    assert wait_terminal(response.json()["event_id"]).status == "done"
    written = usable_address(address)
    assert written is not None
    (batch,) = closed(written.lower())
    message = wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == written.lower()],
                         60)[0]
    assert message["X-Batch-ID"] == str(batch.batch_id)


@pytest.mark.parametrize("user_email", [None, "not-an-address", 12345])
def test_a_missing_or_malformed_address_is_ingested_and_reported_to_the_fallback(
    web: str, s3_server: Any, smtp_sink: Any, user_email: Any
) -> None:
    name = f"orphan-{uuid.uuid4().hex[:6]}.txt"
    entry = file_entry(name, "text/plain", user_email=user_email)
    if user_email is None:
        del entry["user_email"]
    upload(s3_server, entry, make_txt("Uploaded from the admin panel."))
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202, response.text
    assert wait_terminal(response.json()["event_id"]).status == "done"
    fallback = get_settings().fallback_notification_email

    def told() -> bool:
        return any(m["To"] == fallback and name in m.get_body(("plain",)).get_content()
                   for m in smtp_sink.messages)
    wait_until(told, 60)


def test_without_a_fallback_the_email_is_skipped_with_the_reason(s3_server: Any) -> None:
    base = default_services()
    svc = replace(base, settings=base.settings.model_copy(
        update={"fallback_notification_email": None}))
    entry = file_entry("nobody.txt", "text/plain", user_email="nobody-at-all")
    upload(s3_server, entry, make_txt("Nobody will be told, but the file is searchable."))
    event_id = store_event(entry)
    assert process_event(event_id, svc).status == "done"
    with session_scope() as s:
        batch_id = s.execute(select(BatchFile.batch_id)
                             .where(BatchFile.file_event_id == event_id)).scalar_one()

    def closed_now() -> bool:
        return check_batch(batch_id, svc.settings).closed_status is not None or bool(
            emails_of(batch_id))
    wait_until(closed_now, 30, 0.5)
    (email,) = emails_of(batch_id)
    assert email.recipient_email == NO_RECIPIENT and email.send_status == "skipped"
    assert "FALLBACK_NOTIFICATION_EMAIL" in email.error_message


def test_reconciliation_takes_the_entries_the_webhook_takes(cms: Any, s3_server: Any) -> None:
    stored = cms.state.put_file({
        "name": "polled.txt", "storage_key": f"companies/42/bots/7/{uuid.uuid4().hex}/p.txt",
        "company_id": 42, "bot_id": 7, "user_email": "frank@corp.local",
        "size_bytes": "10", "mime_type": "text/plain"})
    upload(s3_server, stored, make_txt("Found by the poll."))  # fine whenever it is relayed
    settings = get_settings()
    result = reconcile(CmsClient.from_settings(settings), settings)
    assert result.error is None
    with session_scope() as s:
        found = s.execute(select(FileEvent.id)
                          .where(FileEvent.document_id == stored["documentId"])).first()
    assert found is not None, "the poll skipped the entry as invalid"

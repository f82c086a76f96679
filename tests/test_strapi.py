"""kb-ingest against a real Strapi 5.54 (the app in ``strapi/``), over HTTP.

Strapi runs on the machine's PostgreSQL in a throwaway database, with its webhook pointed at
kb-ingest's receiver (the ``web`` fixture). These tests assert that the webhooks are accepted
(a ``file_events`` row per delivery), not what processing makes of them: the session's worker
may or may not be running. Entries use company 9901 and e-mail addresses of
``strapi.example.com`` so that nothing else in the suite looks at them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from sqlalchemy import select

from devtools.pg import admin_exec
from ingest.adapters.cms import CmsClient
from ingest.db import session_scope
from ingest.models import FileEvent
from ingest.preferences import Preferences, PreferenceStore, cache_key
from ingest.settings import get_settings
from tests.conftest import WEBHOOK_TOKEN, wait_until
from tests.strapi_support import TIMINGS, StrapiServer, node_ok, variant_app

pytestmark = [
    pytest.mark.skipif(
        not node_ok(), reason="Node.js 20+ is not installed: the real-Strapi tests are skipped"
    )
]

COMPANY = 9901
BOT = 7
PREFS = "/api/user-notification-preferences"
#: Issue 14's attributes with the content type's defaults: what an entry made before them
#: (or without them) reads back as.
SCHEDULE_DEFAULTS = {"timezone": "UTC", "quiet_hours_start": None, "quiet_hours_end": None,
                     "frequency": "immediate", "digest_hour_local": 8}
SCHEMA = ("src/api/user-notification-preference/content-types/user-notification-preference/"
          "schema.json")
MIGRATION = "2026.12.01T00.00.00.preference-schedule-fields.js"
#: documentIds of the files these tests created (to count the accepted webhook deliveries).
CREATED_DOCS: set[str] = set()


@pytest.fixture(scope="module")
def strapi(web: str, database: str, redis_server: str) -> Iterator[StrapiServer]:
    """The strapi/ app, started with its webhook pointed at kb-ingest's receiver."""
    with StrapiServer(f"{web}/webhooks/cms", WEBHOOK_TOKEN) as server:
        yield server
    print(f"\n[strapi] timings: {TIMINGS}")


@pytest.fixture(scope="module")
def rcache(redis_server: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(os.environ["REDIS_URL"])


def email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@strapi.example.com"


def file_data(name: str = "report.pdf", **extra: Any) -> dict[str, Any]:
    key = uuid.uuid4().hex[:12]
    data = {
        "name": name,
        "storage_key": f"companies/{COMPANY}/bots/{BOT}/strapi-{key}/{name}",
        "company_id": COMPANY,
        "bot_id": BOT,
        "user_email": email("uploader"),
        "size_bytes": "5368709120",
        "mime_type": "application/pdf",
    }
    data.update(extra)
    return data


def create_file(strapi: StrapiServer, **extra: Any) -> dict[str, Any]:
    response = strapi.request("POST", "/api/files", json={"data": file_data(**extra)})
    assert response.status_code == 201, response.text
    entry = response.json()["data"]
    CREATED_DOCS.add(entry["documentId"])
    return entry


def create_pref(strapi: StrapiServer, **values: Any) -> dict[str, Any]:
    data = {"company_id": COMPANY, "bot_id": BOT, "user_email": email(), **values}
    response = strapi.request("POST", PREFS, json={"data": data})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def events_of(document_id: str) -> list[tuple[str, str]]:
    """(event, status) of the document's ``file_events`` rows, in order."""
    with session_scope() as s:
        rows = s.execute(select(FileEvent.event, FileEvent.status)
                         .where(FileEvent.document_id == document_id)
                         .order_by(FileEvent.id)).all()
    return [(r[0], r[1]) for r in rows]


def wait_event(document_id: str, event: str, timeout: float = 30) -> list[tuple[str, str]]:
    return wait_until(
        lambda: (rows := events_of(document_id)) and any(e == event for e, _ in rows) and rows,
        timeout, 0.2)


def wait_invalidated(rcache: redis_lib.Redis, key: str, generation: int) -> None:
    """Wait until kb-ingest's receiver invalidated the key (its generation went past one)."""
    wait_until(lambda: int(rcache.get(key + ":gen") or 0) > generation, 15, 0.1)


# -- CRUD ----------------------------------------------------------------------------------


def test_file_crud(strapi: StrapiServer) -> None:
    entry = create_file(strapi)
    doc = entry["documentId"]
    assert entry["size_bytes"] == "5368709120"  # biginteger: a string
    assert entry["company_id"] == COMPANY and entry["publishedAt"]

    response = strapi.request("PUT", f"/api/files/{doc}",
                              json={"data": {"name": "final.pdf", "size_bytes": "123456"}})
    assert response.status_code == 200, response.text

    response = strapi.request("GET", f"/api/files/{doc}")
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["name"] == "final.pdf"
    assert body["data"]["size_bytes"] == "123456"
    assert body["meta"] == {}

    response = strapi.request("DELETE", f"/api/files/{doc}")
    assert response.status_code == 204 and response.content == b""
    response = strapi.request("GET", f"/api/files/{doc}")
    assert response.status_code == 404
    assert response.json() == {"data": None, "error": {
        "status": 404, "name": "NotFoundError", "message": "Not Found", "details": {}}}
    # Strapi 5 answers a DELETE of a missing document with 204 too.
    assert strapi.request("DELETE", f"/api/files/{doc}").status_code == 204


def test_files_need_a_token(strapi: StrapiServer) -> None:

    assert requests.get(f"{strapi.url}/api/files", timeout=10).status_code in (401, 403)


def test_preference_crud(strapi: StrapiServer) -> None:
    entry = create_pref(strapi, batch_size_threshold=10, email_format="text")
    doc = entry["documentId"]
    assert entry["batch_size_threshold"] == 10 and entry["notification_delay_minutes"] == 30

    response = strapi.request("PUT", f"{PREFS}/{doc}",
                              json={"data": {"notification_delay_minutes": 90}})
    assert response.status_code == 200, response.text
    response = strapi.request("GET", f"{PREFS}/{doc}")
    assert response.status_code == 200
    assert response.json()["data"]["notification_delay_minutes"] == 90

    assert strapi.request("DELETE", f"{PREFS}/{doc}").status_code == 204
    response = strapi.request("GET", f"{PREFS}/{doc}")
    assert response.status_code == 404
    assert response.json()["error"]["name"] == "NotFoundError"


# -- by-user, bulk-get, validation ---------------------------------------------------------


def test_by_user_stored_in_another_case(strapi: StrapiServer) -> None:
    address = email("Case")
    entry = create_pref(strapi, user_email=address.lower(), batch_size_threshold=12)
    response = strapi.request("GET", f"{PREFS}/by-user/{COMPANY}/{BOT}/{address.upper()}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback_applied"] is False and body["cache_hit"] is False
    assert body["data"]["documentId"] == entry["documentId"]
    assert body["data"]["batch_size_threshold"] == 12


def test_by_user_fallback(strapi: StrapiServer) -> None:
    address = email("nobody")
    response = strapi.request("GET", f"{PREFS}/by-user/{COMPANY}/{BOT}/{address}")
    assert response.status_code == 200
    assert response.json() == {
        "data": {"company_id": COMPANY, "bot_id": BOT, "user_email": address,
                 "notification_enabled": True, "batch_size_threshold": 5,
                 "notification_delay_minutes": 30, "email_format": "html",
                 "include_success_details": True, "include_error_details": True,
                 **SCHEDULE_DEFAULTS},
        "cache_hit": False, "fallback_applied": True}


def test_by_user_bad_ids(strapi: StrapiServer) -> None:
    response = strapi.request("GET", f"{PREFS}/by-user/abc/{BOT}/x%40example.com")
    assert response.status_code == 400
    assert response.json() == {"data": None, "error": {
        "status": 400, "name": "BadRequestError",
        "message": "companyId and botId must be integers and userEmail must be set",
        "details": {}}}
    response = strapi.request("GET", f"{PREFS}/by-user/{COMPANY}/7.5/x%40example.com")
    assert response.status_code == 400


def test_bulk_get(strapi: StrapiServer) -> None:
    stored = create_pref(strapi)
    unknown = email("unknown")
    users = [{"company_id": COMPANY, "bot_id": BOT, "user_email": stored["user_email"].upper()},
             {"company_id": COMPANY, "bot_id": BOT, "user_email": unknown}]
    response = strapi.request("POST", f"{PREFS}/bulk-get", json={"users": users})
    assert response.status_code == 200, response.text
    body = response.json()
    first = f"{COMPANY}:{BOT}:{stored['user_email'].upper()}"
    second = f"{COMPANY}:{BOT}:{unknown}"
    assert body["data"][first]["documentId"] == stored["documentId"]
    assert body["data"][second] is None
    assert body["missing_preferences"] == [second]
    assert body["processed_count"] == 2

    many = [{"company_id": 1, "bot_id": 1, "user_email": f"u{i}@example.com"} for i in range(101)]
    assert strapi.request("POST", f"{PREFS}/bulk-get", json={"users": many}).status_code == 400


def test_duplicate_preference_is_409(strapi: StrapiServer) -> None:
    entry = create_pref(strapi)
    again = {"company_id": COMPANY, "bot_id": BOT, "user_email": entry["user_email"].upper()}
    response = strapi.request("POST", PREFS, json={"data": again})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["name"] == "ConflictError"

    other = create_pref(strapi, user_email=entry["user_email"], bot_id=BOT + 1)
    response = strapi.request("PUT", f"{PREFS}/{other['documentId']}",
                              json={"data": {"bot_id": BOT}})
    assert response.status_code == 409, response.text


@pytest.mark.parametrize("values", [
    {"batch_size_threshold": 0},
    {"batch_size_threshold": 101},
    {"notification_delay_minutes": 0},
    {"notification_delay_minutes": 1441},
    {"email_format": "pdf"},
    {"user_email": "not-an-email"},
    {"timezone": "Mars/Olympus"},
    {"timezone": " UTC"},
    {"quiet_hours_start": "25:00:00"},
    {"quiet_hours_start": "22:00"},  # Strapi's time wants seconds
    {"quiet_hours_end": "7 pm"},
    {"frequency": "weekly"},
    {"digest_hour_local": 24},
    {"digest_hour_local": -1},
])
def test_out_of_range_values_are_400(strapi: StrapiServer, values: dict[str, Any]) -> None:
    data = {"company_id": COMPANY, "bot_id": BOT, "user_email": email("range"), **values}
    response = strapi.request("POST", PREFS, json={"data": data})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["name"] == "ValidationError"


# -- webhooks into kb-ingest ---------------------------------------------------------------


def test_webhook_file_create_update_delete(strapi: StrapiServer) -> None:
    entry = create_file(strapi)
    doc = entry["documentId"]
    rows = wait_event(doc, "entry.create")
    assert [e for e, _ in rows] == ["entry.create"]

    response = strapi.request("PUT", f"/api/files/{doc}", json={"data": {"name": "v2.pdf"}})
    assert response.status_code == 200
    rows = wait_event(doc, "entry.update")
    assert [e for e, _ in rows] == ["entry.create", "entry.update"]

    assert strapi.request("DELETE", f"/api/files/{doc}").status_code == 204
    rows = wait_event(doc, "entry.delete")
    assert [e for e, _ in rows] == ["entry.create", "entry.update", "entry.delete"]
    # Accepted and handed to the queue (no worker here, so they stay ``enqueued``; when the
    # whole suite runs, another module's worker may already have taken them).
    wait_until(lambda: all(status != "received" for _, status in events_of(doc)), 15, 0.2)


def test_webhook_preference_update_invalidates_the_cache(
    strapi: StrapiServer, rcache: redis_lib.Redis
) -> None:
    entry = create_pref(strapi)
    key = cache_key(COMPANY, BOT, entry["user_email"])
    wait_invalidated(rcache, key, 0)  # the create's own webhook

    rcache.set(key, "{}")
    response = strapi.request("PUT", f"{PREFS}/{entry['documentId']}",
                              json={"data": {"batch_size_threshold": 20}})
    assert response.status_code == 200
    wait_until(lambda: not rcache.exists(key), 15, 0.1)
    assert int(rcache.get(key + ":gen") or 0) >= 2


# -- kb-ingest's own clients against this Strapi --------------------------------------------


def test_cms_client_get_and_delete(strapi: StrapiServer) -> None:
    entry = create_file(strapi)
    doc = entry["documentId"]
    client = CmsClient(strapi.url, strapi.kb_token)
    data = client.get_file(doc)
    assert data["documentId"] == doc and data["size_bytes"] == "5368709120"
    assert data["storage_key"] == entry["storage_key"]

    assert client.delete_file(doc) is True
    assert strapi.request("GET", f"/api/files/{doc}").status_code == 404
    from ingest.errors import FileNotFound

    with pytest.raises(FileNotFound):
        client.get_file(doc)
    # Already gone: Strapi answers 204 again, which the client takes as deleted.
    assert client.delete_file(doc) in (True, False)


def test_kb_token_cannot_write(strapi: StrapiServer) -> None:
    response = strapi.request("POST", "/api/files", token=strapi.kb_token,
                              json={"data": file_data()})
    assert response.status_code == 403
    response = strapi.request("POST", PREFS, token=strapi.kb_token, json={"data": {
        "company_id": COMPANY, "bot_id": BOT, "user_email": email()}})
    assert response.status_code == 403


def test_cms_client_list_files_paginates(strapi: StrapiServer) -> None:
    since = datetime.now(UTC) - timedelta(milliseconds=1)
    docs = [create_file(strapi, name=f"page-{i}.pdf")["documentId"] for i in range(5)]
    client = CmsClient(strapi.url, strapi.kb_token)
    seen: list[str] = []
    page = 1
    while True:
        data, pagination = client.list_files(since, page, 2)
        assert len(data) <= 2
        assert pagination["pageSize"] == 2 and pagination["total"] == 5
        assert pagination["pageCount"] == 3
        seen += [e["documentId"] for e in data]
        if page >= pagination["pageCount"]:
            break
        page += 1
    assert sorted(seen) == sorted(docs) and len(seen) == 5
    data, pagination = client.list_files(datetime.now(UTC) + timedelta(days=1), 1, 2)
    assert data == [] and pagination["total"] == 0
    for doc in docs:  # so that a worker of another module, if running, has nothing to fetch
        assert client.delete_file(doc) is True


def test_preference_store_reads_strapi(strapi: StrapiServer, rcache: redis_lib.Redis) -> None:
    entry = create_pref(strapi, batch_size_threshold=17, notification_delay_minutes=45,
                        email_format="text", include_error_details=False)
    address = entry["user_email"]
    key = cache_key(COMPANY, BOT, address)
    wait_invalidated(rcache, key, 0)  # the create's webhook, so it cannot drop what we cache
    store = PreferenceStore(get_settings(), rcache, CmsClient(strapi.url, strapi.kb_token))
    prefs = store.get(COMPANY, BOT, address.upper())
    assert prefs.source == "cms"
    assert prefs.batch_size_threshold == 17
    assert prefs.notification_delay_minutes == 45
    assert prefs.email_format == "text"
    assert prefs.include_error_details is False
    assert store.get(COMPANY, BOT, address).source == "cache"


# -- issue 14: quiet hours (and the digest's fields) ----------------------------------------


def test_schedule_fields_round_trip_through_the_route_kb_ingest_reads(
    strapi: StrapiServer, rcache: redis_lib.Redis
) -> None:
    entry = create_pref(strapi, timezone="america/new_york", quiet_hours_start="22:00:00",
                        quiet_hours_end="06:30:15.5", frequency="daily", digest_hour_local=6)
    address = entry["user_email"]
    expected = {"timezone": "America/New_York", "quiet_hours_start": "22:00:00",
                "quiet_hours_end": "06:30:15.5", "frequency": "daily",
                "digest_hour_local": 6}
    assert {k: entry[k] for k in SCHEDULE_DEFAULTS} == expected  # the zone as ICU spells it
    response = strapi.request("GET", f"{PREFS}/by-user/{COMPANY}/{BOT}/{address}")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert response.json()["fallback_applied"] is False
    assert {k: data[k] for k in SCHEDULE_DEFAULTS} == expected

    key = cache_key(COMPANY, BOT, address)
    wait_invalidated(rcache, key, 0)
    store = PreferenceStore(get_settings(), rcache, CmsClient(strapi.url, strapi.kb_token))
    prefs = store.get(COMPANY, BOT, address)
    assert prefs.source == "cms"
    assert (prefs.timezone, prefs.quiet_hours_start, prefs.quiet_hours_end) == (
        "America/New_York", dt_time(22), dt_time(6, 30, 15))
    assert (prefs.frequency, prefs.digest_hour_local) == ("daily", 6)

    # Cleared: no window, the default zone.
    response = strapi.request("PUT", f"{PREFS}/{entry['documentId']}", json={"data": {
        "timezone": None, "quiet_hours_start": None, "quiet_hours_end": None}})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["timezone"], data["quiet_hours_start"], data["quiet_hours_end"]) == (
        "UTC", None, None)


def _before_issue_14(app: Path) -> None:
    """The app as released before issue 14: no schedule attributes, no migration."""
    schema = app / SCHEMA
    content_type = json.loads(schema.read_text())
    for name in SCHEDULE_DEFAULTS:
        del content_type["attributes"][name]
    schema.write_text(json.dumps(content_type, indent=2))
    (app / "database" / "migrations" / MIGRATION).unlink()


def test_the_migration_keeps_entries_made_before_it_valid(web: str, strapi: StrapiServer
                                                          ) -> None:
    """An entry written by the previous schema, then the new app with its migration on the
    same database: the entry reads back with the defaults, is editable, and kb-ingest reads
    it as "no quiet hours"."""
    database = f"kb_strapi_upgrade_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    admin_exec(admin, f'CREATE DATABASE "{database}"')
    try:
        before = variant_app("before-issue-14", _before_issue_14)
        with StrapiServer(f"{web}/webhooks/cms", WEBHOOK_TOKEN, app=before,
                          database=database) as old:
            entry = create_pref(old, batch_size_threshold=12, email_format="text")
            assert not set(SCHEDULE_DEFAULTS) & set(entry)
            address, doc = entry["user_email"], entry["documentId"]
        with StrapiServer(f"{web}/webhooks/cms", WEBHOOK_TOKEN, database=database) as new:
            response = new.request("GET", f"{PREFS}/by-user/{COMPANY}/{BOT}/{address}")
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            assert response.json()["fallback_applied"] is False
            assert (data["documentId"], data["batch_size_threshold"]) == (doc, 12)
            assert {k: data[k] for k in SCHEDULE_DEFAULTS} == SCHEDULE_DEFAULTS
            prefs = Preferences.from_cms(data, get_settings())
            assert (prefs.timezone, prefs.quiet_hours_start, prefs.frequency) == (
                "UTC", None, "immediate")
            # Still a valid entry: it can be edited, and the new fields set on it.
            response = new.request("PUT", f"{PREFS}/{doc}", json={"data": {
                "notification_delay_minutes": 60, "quiet_hours_start": "23:00:00",
                "quiet_hours_end": "06:00:00", "timezone": "Europe/Berlin"}})
            assert response.status_code == 200, response.text
            assert response.json()["data"]["quiet_hours_end"] == "06:00:00"
            ran = _query(database, "SELECT name FROM strapi_migrations")
            assert (MIGRATION,) in ran, ran
    finally:
        admin_exec(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _query(database: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database) as conn, \
            conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_strapi_does_not_retry_a_webhook_answered_500(strapi: StrapiServer) -> None:
    """Why kb-ingest reconciles: one failed delivery is never sent again by Strapi."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.append(self.headers.get("X-Strapi-Event", ""))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    # Strapi's admin API refuses private webhook URLs, so a second Strapi is started with
    # its webhook (created from the environment at boot) pointing at the failing receiver.
    failing_url = f"http://127.0.0.1:{receiver.server_port}/webhooks/cms"
    try:
        with StrapiServer(failing_url, WEBHOOK_TOKEN) as other:
            response = other.request("POST", "/api/files", json={"data": file_data()})
            assert response.status_code == 201, response.text
            wait_until(lambda: hits, 15, 0.1)
            time.sleep(5)  # room for any retry Strapi might make
    finally:
        receiver.shutdown()
    assert hits == ["entry.create"]


def test_report(strapi: StrapiServer) -> None:
    """Print the setup timings and the webhook deliveries kb-ingest accepted."""
    wait_until(lambda: all(events_of(doc) for doc in CREATED_DOCS), 15, 0.2)
    with session_scope() as s:
        rows = s.execute(select(FileEvent.document_id, FileEvent.event)
                         .where(FileEvent.document_id.in_(CREATED_DOCS))).all()
    print(f"\n[strapi] timings: {TIMINGS}")
    print(f"[strapi] webhook deliveries accepted (file_events rows for {len(CREATED_DOCS)} "
          f"files created in Strapi): {len(rows)}")
    assert rows


def test_bot_channels_are_read_from_strapi_and_its_webhook_drops_the_cache(
    strapi: StrapiServer, rcache: redis_lib.Redis
) -> None:
    from ingest.notify.bot_settings import BotChannelStore
    from ingest.notify.bot_settings import cache_key as bot_key

    bot = 700 + uuid.uuid4().int % 1000
    channels = ["json://127.0.0.1:9/hook", "workflows://teams.example/wf/sig", "discord://x/y"]
    response = strapi.request("POST", "/api/bot-notification-settings", json={"data": {
        "company_id": COMPANY, "bot_id": bot, "notification_channels": channels}})
    assert response.status_code == 201, response.text
    doc = response.json()["data"]["documentId"]
    store = BotChannelStore(rcache, CmsClient(strapi.url, strapi.kb_token))  # least privilege
    assert [t.kind for t in store.channels(COMPANY, bot)] == ["webhook", "teams"]
    assert rcache.exists(bot_key(COMPANY, bot))

    response = strapi.request("PUT", f"/api/bot-notification-settings/{doc}", json={"data": {
        "notification_channels": channels[:1]}})
    assert response.status_code == 200, response.text
    wait_until(lambda: not rcache.exists(bot_key(COMPANY, bot)), 15, 0.1)  # its webhook
    assert [t.kind for t in store.channels(COMPANY, bot)] == ["webhook"]
    assert store.channels(COMPANY, bot + 1) == []  # no entry: no channels

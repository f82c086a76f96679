"""The webhook receiver over HTTP: auth, validation, limits, dedupe, outbox, health."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update

from ingest.db import session_scope
from ingest.events import (
    EnqueuedMarks,
    events_to_relay,
    publish_then_mark_enqueued,
    relay_cutoffs,
)
from ingest.models import FileEvent
from ingest.preferences import cache_key
from ingest.settings import get_settings
from tests.conftest import WEBHOOK_SECRET, WEBHOOK_TOKEN, wait_until
from tests.helpers import document_id, envelope, event_row, file_entry, post, store_event
from webhooks.app import create_app
from webhooks.auth import sign
from webhooks.publisher import Publisher


def _count_events(doc: str) -> int:
    with session_scope() as s:
        return s.execute(
            select(func.count()).select_from(FileEvent).where(FileEvent.document_id == doc)
        ).scalar_one()


def test_strapi_create_is_accepted_and_stored_before_answering(web: str) -> None:
    entry = file_entry("notes.txt", "text/plain")
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    row = event_row(body["event_id"])
    assert row.document_id == entry["documentId"]
    assert row.payload["entry"]["size_bytes"] == "1234"
    assert row.dedupe_key.startswith(f"upsert:{entry['documentId']}:")


def test_missing_token_is_401_and_stores_nothing(web: str) -> None:
    entry = file_entry("a.txt", "text/plain")
    response = post(web, envelope("entry.create", entry), token=None)
    assert response.status_code == 401
    assert "credentials" in response.json()["error"]
    assert _count_events(entry["documentId"]) == 0


def test_wrong_token_is_401(web: str) -> None:
    response = post(web, envelope("entry.create", file_entry("a.txt")), token="nope")
    assert response.status_code == 401


def test_valid_hmac_without_token_is_accepted(web: str) -> None:
    raw = json.dumps(envelope("entry.create", file_entry("signed.txt", "text/plain"))).encode()
    ts = str(int(time.time()))
    response = post(web, None, token=None, raw=raw, headers={
        "X-Webhook-Timestamp": ts, "X-Webhook-Signature": sign(WEBHOOK_SECRET, ts, raw)})
    assert response.status_code == 202


def test_wrong_hmac_is_401(web: str) -> None:
    raw = json.dumps(envelope("entry.create", file_entry("x.txt"))).encode()
    ts = str(int(time.time()))
    response = post(web, None, token=None, raw=raw, headers={
        "X-Webhook-Timestamp": ts, "X-Webhook-Signature": sign("other-secret", ts, raw)})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid signature"


def test_stale_timestamp_is_401_even_with_a_correct_signature(web: str) -> None:
    raw = json.dumps(envelope("entry.create", file_entry("x.txt"))).encode()
    ts = str(int(time.time()) - 301)
    response = post(web, None, token=None, raw=raw, headers={
        "X-Webhook-Timestamp": ts, "X-Webhook-Signature": sign(WEBHOOK_SECRET, ts, raw)})
    assert response.status_code == 401
    assert "stale" in response.json()["error"]


def test_malformed_json_is_400(web: str) -> None:
    response = post(web, None, raw=b'{"event": "entry.create", "entry": {')
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON"


@pytest.mark.parametrize("path", ["/webhooks/cms", "/webhooks/preference-updated"])
@pytest.mark.parametrize("shape", ["object", "array"])
def test_a_body_nested_10000_levels_is_400_and_stores_nothing(
    web: str, path: str, shape: str
) -> None:
    import requests

    with session_scope() as s:
        before = s.execute(select(func.count()).select_from(FileEvent)).scalar_one()
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000 if shape == "object" else (
        "[" * 10_000 + "]" * 10_000)
    raw = ('{"event": "entry.create", "model": "file", "entry": ' + deep + "}").encode() if (
        shape == "object") else deep.encode()
    response = requests.post(f"{web}{path}", data=raw, timeout=10, headers={
        "Content-Type": "application/json", "Authorization": "Bearer test-webhook-token"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "JSON nested too deeply"
    assert "WEBHOOK_MAX_JSON_DEPTH" in response.json()["detail"]
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(FileEvent)).scalar_one() == before


def test_brackets_inside_strings_do_not_count_as_nesting(web: str) -> None:
    entry = file_entry('[[[{{{"]]]}}}\\"' * 30 + ".txt", "text/plain")
    assert post(web, envelope("entry.create", entry)).status_code == 202


def test_missing_field_is_400_naming_it_and_loses_nothing_stored(web: str) -> None:
    entry = file_entry("a.txt")
    assert post(web, envelope("entry.create", entry)).status_code == 202
    broken = dict(entry)
    del broken["documentId"]
    response = post(web, envelope("entry.update", broken))
    assert response.status_code == 400
    assert response.json()["field"] == "entry.documentId"
    assert _count_events(entry["documentId"]) == 1


def test_bad_value_is_400_naming_the_field(web: str) -> None:
    response = post(web, envelope("entry.create", file_entry("a.txt", company_id="forty-two")))
    assert response.status_code == 400
    assert response.json()["field"] == "entry.company_id"


def test_missing_event_is_400(web: str) -> None:
    response = post(web, {"model": "file", "entry": file_entry("a.txt")})
    assert response.status_code == 400
    assert response.json()["field"] == "event"


def test_oversize_body_is_413(web: str) -> None:
    limit = get_settings().webhook_max_body_bytes
    entry = file_entry("big.txt", padding="x" * (limit + 10))
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 413
    assert _count_events(entry["documentId"]) == 0


def test_non_json_is_415(web: str) -> None:
    response = post(web, None, raw=b"event=entry.create", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_trigger_test_and_other_models_are_ignored(web: str) -> None:
    trigger = post(web, {"event": "trigger-test", "createdAt": "2026-11-23T08:58:19.174Z"})
    assert trigger.status_code == 202 and trigger.json()["status"] == "ignored"
    other = post(web, envelope("entry.create", {"documentId": "abc"}, model="company"))
    assert other.status_code == 202 and other.json()["status"] == "ignored"
    media = post(web, {"event": "media.create", "createdAt": "2026-11-23T08:58:19.174Z",
                       "media": {"id": 1}})
    assert media.json()["status"] == "ignored"


def test_duplicate_delivery_is_200_duplicate(web: str) -> None:
    body = envelope("entry.create", file_entry("dup.txt", "text/plain"))
    first = post(web, body)
    second = post(web, body)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}


def test_draft_create_and_publish_of_one_version_meet_on_one_event(web: str) -> None:
    entry = file_entry("draft.txt", "text/plain", publishedAt=None)
    created = post(web, envelope("entry.create", entry))
    published = post(web, envelope("entry.publish", {**entry, "id": entry["id"] + 1,
                                                     "publishedAt": entry["updatedAt"]}))
    assert created.status_code == 202
    assert published.status_code == 200 and published.json()["status"] == "duplicate"


def test_concurrent_identical_deliveries_store_one_event(web: str) -> None:
    body = envelope("entry.create", file_entry("race.txt", "text/plain"))
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: post(web, body), range(8)))
    assert codes == [200] * 7 + [202]
    assert _count_events(body["entry"]["documentId"]) == 1


def test_preference_change_invalidates_the_cached_copy(web: str) -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    key = cache_key(42, 7, "Bob@Example.com")
    client.set(key, "{}")
    pref = {"id": 1, "documentId": document_id(), "company_id": 42, "bot_id": 7,
            "user_email": "bob@example.com", "notification_enabled": True,
            "updatedAt": "2026-11-23T08:58:14.511Z"}
    response = post(web, envelope("entry.update", pref, model="user-notification-preference"))
    assert response.status_code == 202 and response.json()["status"] == "invalidated"
    assert client.get(key) is None


def test_web_refuses_to_start_without_auth() -> None:
    settings = get_settings().model_copy(update={"webhook_token": None, "webhook_secret": None})
    with pytest.raises(RuntimeError, match="WEBHOOK_TOKEN"):
        create_app(settings)


def _dead_broker_app() -> Any:
    dead = "redis://127.0.0.1:1/0"
    return create_app(get_settings(), publisher=Publisher(dead)).test_client()


def test_broker_down_the_event_is_stored_and_answered_202() -> None:
    client = _dead_broker_app()
    entry = file_entry("offline.txt", "text/plain")
    started = time.monotonic()
    response = client.post("/webhooks/cms", json=envelope("entry.create", entry),
                           headers={"Authorization": "Bearer test-webhook-token"})
    assert response.status_code == 202
    assert time.monotonic() - started < 5
    assert event_row(response.get_json()["event_id"]).status == "received"


class _Recording:
    """Stands in for the broker: remembers what was published (``Publisher``'s one call)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def publish_file_event(self, event_id: int) -> None:
        self.sent.append(event_id)


def test_an_accepted_webhook_is_marked_enqueued_right_after_its_answer(web: str) -> None:
    response = post(web, envelope("entry.create", file_entry("marked.txt", "text/plain")))
    assert response.status_code == 202
    # enqueued; or already taken by a worker of another module when the whole suite runs
    wait_until(lambda: event_row(response.json()["event_id"]).status != "received", 5, 0.02)


def test_marks_follow_the_publish_and_never_undo_a_claim() -> None:
    published, failed, claimed = (store_event(file_entry(f"{n}.txt", "text/plain"))
                                  for n in ("published", "failed", "claimed"))
    marks, broker = EnqueuedMarks(after_seconds=0.3), _Recording()

    def down(event_id: int) -> None:
        raise ConnectionError("broker down")

    assert marks.publish_then_mark(published, broker.publish_file_event)
    assert not marks.publish_then_mark(failed, down)
    assert marks.publish_then_mark(claimed, broker.publish_file_event)
    with session_scope() as s:  # a worker claims this one before the mark is written
        s.execute(update(FileEvent).where(FileEvent.id == claimed).values(status="processing"))
    assert broker.sent == [published, claimed]
    assert event_row(published).status == "received"  # published; its mark is on its way
    wait_until(lambda: event_row(published).status == "enqueued", 5, 0.02)
    assert event_row(claimed).status == "processing"
    assert event_row(failed).status == "received"  # for the relay


def test_an_event_whose_mark_never_happened_is_published_again_by_the_relay() -> None:
    """The web process died between the publish and the mark: the row is still
    ``received``, so the relay publishes it again (the claim makes the second message
    harmless: tests/test_db_load.py)."""
    broker = _Recording()
    app = create_app(get_settings(), publisher=broker)  # type: ignore[arg-type]
    app.extensions["kb_enqueued_marks"] = EnqueuedMarks(after_seconds=3600)  # never marks
    response = app.test_client().post(
        "/webhooks/cms", json=envelope("entry.create", file_entry("died.txt", "text/plain")),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    assert broker.sent == [event_id] and event_row(event_id).status == "received"
    settings = get_settings()
    later = datetime.now(UTC) + timedelta(seconds=settings.outbox_relay_after_seconds + 1)
    with session_scope() as s:
        due = events_to_relay(s, *relay_cutoffs(later, settings.outbox_relay_after_seconds,
                                                settings.visibility_timeout_seconds),
                              limit=100_000)
        assert event_id in due
        publish_then_mark_enqueued(s, [event_id], broker.publish_file_event, relayed=True)
    assert broker.sent == [event_id, event_id]
    assert event_row(event_id).status == "enqueued"
    app.extensions["kb_enqueued_marks"].flush()  # not at exit, when the database is gone


def test_pending_marks_are_written_when_the_process_exits() -> None:
    """A gunicorn worker stopped gracefully writes the marks still gathering."""
    event_id = store_event(file_entry("exit.txt", "text/plain"))
    code = ("import sys\n"
            "from ingest.events import EnqueuedMarks\n"
            "marks = EnqueuedMarks(after_seconds=3600)\n"
            "assert marks.publish_then_mark(int(sys.argv[1]), lambda event_id: None)\n")
    subprocess.run([sys.executable, "-c", code, str(event_id)], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parent.parent)
    assert event_row(event_id).status == "enqueued"


def test_health_reports_each_dependency(web: str) -> None:
    import requests

    ok = requests.get(f"{web}/health", timeout=10)
    assert ok.status_code == 200
    assert ok.json()["checks"] == {"database": "ok", "broker": "ok"}
    down = _dead_broker_app().get("/health")
    assert down.status_code == 503
    assert down.get_json()["checks"]["broker"].startswith("error")
    assert down.get_json()["checks"]["database"] == "ok"


def test_metrics_expose_counters_and_event_gauges(web: str) -> None:
    import requests

    from workers.tasks.metrics import snapshot_metrics

    post(web, envelope("entry.create", file_entry("m.txt", "text/plain")))
    snapshot_metrics()  # beat's task: the row-count gauges come from its snapshot
    text = requests.get(f"{web}/metrics", timeout=10).text
    assert 'kb_ingest_webhooks_total{outcome="accepted"}' in text
    assert "kb_ingest_file_events{status=" in text
    for gauge in ("batches", "corrections", "emails", "unresolved_errors"):
        assert f"# TYPE kb_ingest_{gauge} gauge" in text


def test_preference_updated_webhook_invalidates_and_validates(web: str) -> None:
    import requests

    client = redis.Redis.from_url(get_settings().redis_url)
    key = cache_key(42, 9, "dana@example.com")
    client.set(key, "{}")
    url = f"{web}/webhooks/preference-updated"
    headers = {"Authorization": "Bearer test-webhook-token"}
    body = {"action": "updated", "company_id": 42, "bot_id": 9,
            "user_email": "Dana@Example.com", "preferences": {"email_format": "text"},
            "timestamp": "2026-11-23T08:58:14.511Z"}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    ok = requests.post(url, json=body, headers=headers, timeout=10)
    assert ok.status_code == 202 and ok.json()["status"] == "invalidated"
    assert client.get(key) is None
    bad = requests.post(url, json={**body, "action": "renamed"}, headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["field"] == "action"


# --- found by tests/test_fuzz_api.py: each was a 500, or accepted what must be refused ----


def _refused(web: str, raw: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with session_scope() as s:
        before = s.execute(select(func.count()).select_from(FileEvent)).scalar_one()
    response = post(web, None, raw=raw, token=None if headers is not None else WEBHOOK_TOKEN,
                    headers=headers)
    assert 400 <= response.status_code < 500, response.text
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(FileEvent)).scalar_one() == before
    return response.json()


def _entry_body(**fields: Any) -> bytes:
    entry = {**file_entry("f.txt", "text/plain"), **fields}
    return json.dumps(envelope("entry.create", entry)).encode()


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": "a\x00b.txt"}, "entry.name"),
    ({"note\x00": "x"}, "entry.note\x00"),
    ({"tags": ["ok", "b\x00d"]}, "entry.tags.1"),
])
def test_a_nul_character_in_a_webhook_body_is_400_naming_the_field(
    web: str, fields: dict[str, Any], field: str
) -> None:
    """PostgreSQL's jsonb holds no U+0000: storing one was a 500."""
    body = _refused(web, _entry_body(**fields))
    assert body["error"] == "invalid payload" and body["field"] == field


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_infinity_and_out_of_range_numbers_are_malformed_json(web: str, number: str) -> None:
    """Python's parser takes them, jsonb refuses them: storing one was a 500."""
    raw = _entry_body(size_bytes="1").replace(b'"size_bytes": "1"',
                                              b'"size_bytes": "1", "x": ' + number.encode())
    assert _refused(web, raw)["error"] == "malformed JSON"


@pytest.mark.parametrize("updated", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_updated_at_outside_the_utc_range_is_400(web: str, updated: str) -> None:
    """The dedupe key converts it to UTC, which overflowed: a 500."""
    assert _refused(web, _entry_body(updatedAt=updated))["field"] == "entry.updatedAt"


@pytest.mark.parametrize("updated", ["0", 1700000000, "1700000000"])
def test_unix_seconds_are_not_an_updated_at(web: str, updated: Any) -> None:
    """pydantic took them for times in 1970 or 2023; Strapi sends ISO 8601 strings."""
    assert _refused(web, _entry_body(updatedAt=updated))["field"] == "entry.updatedAt"


@pytest.mark.parametrize(("fields", "field"), [
    ({"company_id": 2**31}, "entry.company_id"),  # the column is a PostgreSQL integer
    ({"bot_id": {"id": 2**31}}, "entry.bot_id"),
    ({"company_id": True}, "entry.company_id"),  # pydantic made it company 1
    ({"company_id": "42"}, "entry.company_id"),
    ({"size_bytes": str(2**63)}, "entry.size_bytes"),  # the column is a bigint
    ({"size_bytes": "+5"}, "entry.size_bytes"),
])
def test_ids_and_sizes_the_tables_cannot_hold_are_400(
    web: str, fields: dict[str, Any], field: str
) -> None:
    """Accepted before: the worker then failed on them (or filed the file under company 1)."""
    assert _refused(web, _entry_body(**fields))["field"] == field


def test_relations_whole_numbers_and_digit_strings_are_still_accepted(web: str) -> None:
    raw = _entry_body(company_id={"id": 42}, bot_id=7.0, size_bytes="5368709120")
    assert post(web, None, raw=raw).status_code == 202


def test_a_400_digit_signature_timestamp_is_401_not_500(web: str) -> None:
    """``abs(now - int(ts))`` overflowed a float before the signature was even checked."""
    body = _refused(web, b"{}", headers={"X-Webhook-Timestamp": "9" * 400,
                                         "X-Webhook-Signature": "sha256=00"})
    assert body["error"] == "invalid X-Webhook-Timestamp"


def test_credentials_are_checked_before_the_content_type(web: str) -> None:
    plain = {"Content-Type": "text/plain"}
    assert post(web, None, raw=b"x", token=None, headers=plain).status_code == 401
    assert post(web, None, raw=b"x", headers=plain).status_code == 415


def test_a_nul_character_in_a_query_or_path_is_refused_not_500(web: str) -> None:
    """PostgreSQL refuses U+0000 in a query parameter: these were 500s."""
    import requests

    from tests.conftest import STATUS_TOKEN

    api = requests.get(f"{web}/api/batches?user_email=a%00b", timeout=10,
                       headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert api.status_code == 400 and api.json()["field"] == "user_email"
    status = {"Authorization": f"Bearer {STATUS_TOKEN}"}
    page = requests.get(f"{web}/status?user_email=a%00b", headers=status, timeout=10)
    assert page.status_code == 400 and "user_email" in page.text
    assert requests.get(f"{web}/status/documents/a%00b", headers=status,
                        timeout=10).status_code == 404

"""The Strapi stand-in over real HTTP: the answers and webhooks kb-ingest relies on, compared
with captures from a real Strapi 5.54.

The captures are copied from `../shared/strapi-examples/` into `tests/data/strapi/` (CI
clones only this project). The contract itself is tested against the real Strapi in
`test_strapi.py`; here only that the stand-in keeps to it. No database, no conftest.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from devtools.cms_standin import CmsServer, CmsState, iso_ms

DATA = Path(__file__).parent / "data" / "strapi"
TOKEN = "test-cms-token"
DOCUMENT_ID = re.compile(r"^[a-z0-9]{24}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SYSTEM = ("id", "documentId", "createdAt", "updatedAt", "publishedAt")


def capture(name: str) -> dict[str, Any]:
    """A captured exchange from tests/data/strapi/."""
    return json.loads((DATA / f"{name}.json").read_text())


def shape(value: Any) -> Any:
    """Keys (in order) and JSON types of a body, values left out."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def without_system(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in SYSTEM}


#: The preference attributes of issue 14, with their schema defaults. The captures predate
#: them; test_strapi.py checks the real Strapi's answers with them.
SCHEDULE_DEFAULTS = {"timezone": "UTC", "quiet_hours_start": None, "quiet_hours_end": None,
                     "frequency": "immediate", "digest_hour_local": 8}


def with_schedule(entry: dict[str, Any]) -> dict[str, Any]:
    """A captured preference entry as the current schema answers it (new attributes after
    the last old one, before the timestamps)."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        out[key] = value
        if key == "include_error_details":
            out |= SCHEDULE_DEFAULTS
    return out


class Receiver:
    """A tiny webhook receiver: a WSGI app that records every request."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/cms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        req = Request(environ)
        with self.lock:
            self.received.append({"headers": dict(req.headers), "body": json.loads(req.get_data())})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def cms(receiver: Receiver) -> Iterator[CmsServer]:
    receiver.clear()
    with CmsServer(CmsState(token=TOKEN)) as server:
        yield server
        server.state.wait_for_webhooks(5)


@pytest.fixture
def api(cms: CmsServer) -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    yield session
    session.close()


def post_file(cms: CmsServer, api: requests.Session, **changes: Any) -> dict[str, Any]:
    body = capture("rest-01-create-file")["request"]["body"]
    body["data"].update(changes)
    response = api.post(f"{cms.url}/api/files", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


# -- one file entry: what an uploader creates, what the pipeline reads and corrections delete


def test_create_file_answers_like_strapi(cms: CmsServer, api: requests.Session) -> None:
    captured = capture("rest-01-create-file")
    response = api.post(f"{cms.url}/api/files", json=captured["request"]["body"])

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert shape(body) == shape(captured["response"]["body"])
    entry = body["data"]
    assert without_system(entry) == without_system(captured["response"]["body"]["data"])
    assert entry["size_bytes"] == "5368709120"
    assert DOCUMENT_ID.match(entry["documentId"])
    assert all(TIMESTAMP.match(entry[k]) for k in ("createdAt", "updatedAt", "publishedAt"))
    assert cms.state.calls["POST files"] == 1


def test_update_get_delete_then_404(cms: CmsServer, api: requests.Session) -> None:
    created = post_file(cms, api)
    doc_url = f"{cms.url}/api/files/{created['documentId']}"
    update = capture("rest-02-update-file")

    updated = api.put(doc_url, json=update["request"]["body"])
    assert updated.status_code == 200
    assert shape(updated.json()) == shape(update["response"]["body"])
    entry = updated.json()["data"]
    assert without_system(entry) == without_system(update["response"]["body"]["data"])
    assert (entry["id"], entry["createdAt"]) == (created["id"], created["createdAt"])
    assert entry["updatedAt"] > created["updatedAt"]

    fetched = api.get(doc_url)
    assert fetched.status_code == 200
    assert fetched.json() == {"data": entry, "meta": {}}

    deleted = api.delete(doc_url)
    assert (deleted.status_code, deleted.content) == (204, b"")

    not_found = capture("rest-06-get-file-after-delete")["response"]
    for method in ("GET", "DELETE", "PUT"):
        again = api.request(method, doc_url, json=update["request"]["body"])
        assert (again.status_code, again.json()) == (not_found["status"], not_found["body"])
    assert cms.state.calls["GET file"] == 2
    assert cms.state.get_file(created["documentId"]) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"name": "a.pdf"}}, "storage_key must be defined."),
        ({"data": {"name": "a", "storage_key": "k", "bogus": 1}}, "Invalid key bogus"),
        ({"name": "a"}, 'Missing "data" payload in the request body'),
    ],
)
def test_bad_create_payloads_are_validation_errors(
    cms: CmsServer, api: requests.Session, body: dict, message: str
) -> None:
    response = api.post(f"{cms.url}/api/files", json=body)

    assert response.status_code == 400
    assert response.json()["data"] is None
    error = response.json()["error"]
    assert (error["status"], error["name"], error["message"]) == (400, "ValidationError", message)
    assert cms.state.files == {}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_requests_without_the_token_get_401(cms: CmsServer, headers: dict[str, str]) -> None:
    response = requests.get(f"{cms.url}/api/files", headers=headers, timeout=5)

    assert response.status_code == 401
    assert response.json() == {
        "data": None,
        "error": {"status": 401, "name": "UnauthorizedError",
                  "message": "Missing or invalid credentials", "details": {}},
    }
    assert cms.state.calls["GET files"] == 1


def test_fail_next_injects_statuses_then_recovers(cms: CmsServer, api: requests.Session) -> None:
    doc = cms.state.put_file({"name": "a.pdf", "storage_key": "k"})
    cms.state.fail_next("GET file", 503, times=2)
    cms.state.fail_next("by-user", 500)
    url = f"{cms.url}/api/files/{doc['documentId']}"

    statuses = [api.get(url).status_code for _ in range(3)]
    failed = api.get(f"{cms.url}/api/user-notification-preferences/by-user/1/2/a@b.co")

    assert statuses == [503, 503, 200]
    assert cms.state.calls["GET file"] == 3
    assert failed.status_code == 500
    assert failed.json()["error"] == {"status": 500, "name": "InternalServerError",
                                      "message": "Internal Server Error", "details": {}}
    with pytest.raises(ValueError):
        cms.state.fail_next("no-such-route", 500)


def test_fail_for_is_an_outage_of_every_route(cms: CmsServer, api: requests.Session) -> None:
    doc = cms.state.put_file({"name": "a.pdf", "storage_key": "k"})
    url = f"{cms.url}/api/files/{doc['documentId']}"
    cms.state.fail_for(30)

    during = [api.get(url), api.delete(url), api.get(f"{cms.url}/api/files"),
              api.post(f"{cms.url}/api/files", json={"data": {"name": "b", "storage_key": "b"}})]
    cms.state.fail_for(0)

    assert [r.status_code for r in during] == [503, 503, 503, 503]
    assert during[0].json()["error"]["name"] == "ServiceUnavailableError"
    assert list(cms.state.files) == [doc["documentId"]]  # nothing deleted or created
    assert api.get(url).status_code == 200


def test_put_file_upserts_by_document_id(cms: CmsServer, receiver: Receiver) -> None:
    cms.state.configure_webhook(receiver.url)
    doc_id = "a" * 24

    first = cms.state.put_file(
        {"documentId": doc_id, "name": "a.pdf", "updatedAt": "2026-01-01T00:00:00Z"},
        send_webhook=True,
    )
    second = cms.state.put_file({"documentId": doc_id, "mime_type": "application/pdf"})
    assert cms.state.wait_for_webhooks(10)

    assert (first["documentId"], first["updatedAt"]) == (doc_id, "2026-01-01T00:00:00.000Z")
    assert (second["id"], second["name"]) == (first["id"], "a.pdf")
    assert second["updatedAt"] > first["updatedAt"]
    assert list(cms.state.files) == [doc_id]
    assert [r["body"]["entry"] for r in receiver.received] == [first]
    assert cms.state.delete_file_direct(doc_id) == second
    assert cms.state.delete_file_direct(doc_id) is None


# -- preferences: the by-user lookup (and the create an uploader's settings page makes) ------


def by_user_url(cms: CmsServer, company: str, bot: str, email: str) -> str:
    return f"{cms.url}/api/user-notification-preferences/by-user/{company}/{bot}/{email}"


def test_by_user_fallback_is_the_captured_body(cms: CmsServer, api: requests.Session) -> None:
    captured = capture("rest-07-by-user-fallback")

    response = api.get(cms.url + captured["request"]["path"])

    assert response.status_code == 200
    expected = captured["response"]["body"]
    assert response.json() == {**expected, "data": with_schedule(expected["data"])}
    assert cms.state.calls["GET by-user"] == 1


def test_by_user_finds_a_stored_preference_case_insensitively(
    cms: CmsServer, api: requests.Session
) -> None:
    create = capture("rest-08-create-preference")
    stored = capture("rest-09-by-user-stored")

    created = api.post(
        f"{cms.url}/api/user-notification-preferences", json=create["request"]["body"]
    )
    response = api.get(cms.url + stored["request"]["path"])  # .../Bob%40Example.com
    other_bot = api.get(by_user_url(cms, "42", "8", "bob@example.com")).json()

    assert created.status_code == 201
    expected = create["response"]["body"]
    assert shape(created.json()) == shape({**expected, "data": with_schedule(expected["data"])})
    assert without_system(created.json()["data"]) == without_system(
        with_schedule(expected["data"]))
    assert response.status_code == 200
    expected = stored["response"]["body"]
    assert shape(response.json()) == shape({**expected, "data": with_schedule(expected["data"])})
    assert response.json()["data"] == created.json()["data"]
    assert response.json()["fallback_applied"] is False
    assert other_bot["fallback_applied"] is True and "documentId" not in other_bot["data"]


@pytest.mark.parametrize(("company", "bot"), [("abc", "7"), ("42", "x1"), ("4.2", "7")])
def test_by_user_rejects_non_integer_ids(
    cms: CmsServer, api: requests.Session, company: str, bot: str
) -> None:
    captured = capture("rest-11-by-user-bad-request")["response"]

    response = api.get(by_user_url(cms, company, bot, "x%40example.com"))

    assert (response.status_code, response.json()) == (captured["status"], captured["body"])


# -- the listing reconciliation reads --------------------------------------------------------


def seed_files(state: CmsState, count: int, start: datetime) -> list[dict[str, Any]]:
    return [
        state.put_file({"name": f"f{i}.pdf", "storage_key": f"k/{i}", "size_bytes": 10 * i,
                        "updatedAt": iso_ms(start + timedelta(seconds=i // 2))})
        for i in range(count)
    ]


def test_listing_matches_capture(cms: CmsServer, api: requests.Session) -> None:
    post_file(cms, api)
    captured = capture("rest-04-list-files")["response"]["body"]

    body = api.get(f"{cms.url}/api/files").json()

    assert shape(body) == shape(captured)
    assert body["meta"] == captured["meta"]


def test_reconciliation_query_filters_sorts_and_pages(cms: CmsServer, api: requests.Session
                                                      ) -> None:
    """Exactly the query of ``CmsClient.list_files``: entries strictly after a time, by
    ``updatedAt`` then ``documentId``, page by page."""
    from ingest.adapters.cms import CmsClient

    start = datetime(2026, 1, 1, tzinfo=UTC)
    seeded = seed_files(cms.state, 30, start)  # two entries per second
    client = CmsClient(cms.url, TOKEN)
    pages = [client.list_files(start + timedelta(seconds=4), page, 8) for page in (1, 2, 3)]

    listed = [entry for data, _ in pages for entry in data]
    later = [e for e in seeded if e["updatedAt"] > iso_ms(start + timedelta(seconds=4))]
    assert listed == sorted(later, key=lambda e: (e["updatedAt"], e["documentId"]))
    assert len(listed) == 20  # strictly after second 4: f10 … f29
    assert pages[0][1] == {"page": 1, "pageSize": 8, "pageCount": 3, "total": 20}
    assert len(pages[2][0]) == 4
    assert seeded[3]["size_bytes"] == "30"


def test_listing_defaults_caps_and_refuses_other_queries(cms: CmsServer, api: requests.Session
                                                         ) -> None:
    seed_files(cms.state, 30, datetime(2026, 1, 1, tzinfo=UTC))
    url = f"{cms.url}/api/files"

    default = api.get(url).json()
    capped = api.get(url, params={"pagination[pageSize]": "500"}).json()
    newest = api.get(url, params={"sort": "updatedAt:desc", "pagination[pageSize]": "1"}).json()
    other = api.get(url, params={"filters[name][$eq]": "f1.pdf"})

    assert len(default["data"]) == 25
    assert default["meta"]["pagination"] == {"page": 1, "pageSize": 25, "pageCount": 2, "total": 30}
    assert capped["meta"]["pagination"]["pageSize"] == 100
    assert newest["data"][0]["name"] in ("f28.pdf", "f29.pdf")
    assert other.status_code == 400
    assert other.json()["error"]["name"] == "ValidationError"


# -- webhooks -----------------------------------------------------------------------------


def test_webhooks_are_delivered_like_strapi(
    cms: CmsServer, api: requests.Session, receiver: Receiver
) -> None:
    cms.state.configure_webhook(receiver.url, {"Authorization": "Bearer wh-token"})
    captured = capture("webhook-01-entry.create-file")
    captured_headers = {name.lower(): value for name, value in captured["headers"]}

    created = post_file(cms, api)
    api.put(f"{cms.url}/api/files/{created['documentId']}", json={"data": {"name": "b.pdf"}})
    api.delete(f"{cms.url}/api/files/{created['documentId']}")
    assert cms.state.wait_for_webhooks(10)

    received = {r["body"]["event"]: r for r in receiver.received}
    assert set(received) == {"entry.create", "entry.update", "entry.delete"}
    for event, request in received.items():
        assert request["headers"]["X-Strapi-Event"] == event
        assert request["headers"]["Content-Type"] == captured_headers["content-type"]
        assert request["headers"]["Authorization"] == "Bearer wh-token"
        assert shape(request["body"]) == shape(captured["body"])
        assert request["body"]["uid"] == captured["body"]["uid"]
    assert received["entry.create"]["body"]["entry"] == created
    assert received["entry.update"]["body"]["entry"]["name"] == "b.pdf"
    assert sorted((d["event"], d["model"], d["documentId"], d["status"])
                  for d in cms.state.webhook_deliveries) == [
        (event, "file", created["documentId"], 200)
        for event in ("entry.create", "entry.delete", "entry.update")
    ]


def test_preference_webhook_has_strapi_shape(cms: CmsServer, receiver: Receiver) -> None:
    cms.state.configure_webhook(receiver.url)
    captured = capture("webhook-04-entry.create-user-notification-preference")["body"]

    cms.state.put_file({"name": "q.pdf", "storage_key": "q"})  # seeding sends nothing
    pref = cms.state.put_preference(
        {"company_id": 42, "bot_id": 7, "user_email": "bob@example.com"}, send_webhook=True
    )
    assert cms.state.wait_for_webhooks(10)

    assert [r["body"]["event"] for r in receiver.received] == ["entry.create"]
    body = receiver.received[0]["body"]
    assert shape(body) == shape({**captured, "entry": with_schedule(captured["entry"])})
    assert (body["model"], body["uid"]) == (captured["model"], captured["uid"])
    assert body["entry"] == pref
    assert "Authorization" not in receiver.received[0]["headers"]


def test_quiet_hours_are_stored_as_strapi_answers_a_time(
    cms: CmsServer, api: requests.Session
) -> None:
    data = {"company_id": 42, "bot_id": 7, "user_email": "night@example.com",
            "timezone": "Europe/Berlin", "quiet_hours_start": "22:00:00",
            "quiet_hours_end": "06:30:15.5", "frequency": "daily", "digest_hour_local": 6}
    created = api.post(f"{cms.url}/api/user-notification-preferences", json={"data": data})
    assert created.status_code == 201, created.text
    got = api.get(by_user_url(cms, "42", "7", "night@example.com")).json()["data"]
    assert {k: got[k] for k in SCHEDULE_DEFAULTS} == {
        "timezone": "Europe/Berlin", "quiet_hours_start": "22:00:00",
        "quiet_hours_end": "06:30:15.5", "frequency": "daily", "digest_hour_local": 6}
    for value in ("25:00:00", "22:00", "7 pm"):  # Strapi wants seconds too
        bad = api.post(f"{cms.url}/api/user-notification-preferences", json={"data": {
            **data, "user_email": "bad@example.com", "quiet_hours_start": value}})
        assert bad.status_code == 400 and bad.json()["error"]["name"] == "ValidationError"


def test_unreachable_webhook_is_recorded_not_retried(cms: CmsServer) -> None:
    closed = make_server("127.0.0.1", 0, lambda e, s: [])
    port = closed.server_port
    closed.server_close()
    cms.state.configure_webhook(f"http://127.0.0.1:{port}/webhooks/cms")

    cms.state.put_file({"name": "a.pdf", "storage_key": "k"}, send_webhook=True)
    assert cms.state.wait_for_webhooks(10)

    [delivery] = cms.state.webhook_deliveries
    assert delivery["event"] == "entry.create"
    assert "error" in delivery and "status" not in delivery


def test_server_stops_cleanly() -> None:
    with CmsServer() as server:
        url = server.url
        assert requests.get(f"{url}/api/files", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/files", timeout=2)

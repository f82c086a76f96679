"""The web API against its own ``/openapi.json``, with generated requests (schemathesis).

Every operation of the document is called in process (WSGI) on the real app, over the test
PostgreSQL and Redis, with requests that fit the document and requests that break it
(schemathesis' positive and negative modes):
- with the right credential: never a 5xx; the status code, content type and body are the
  documented ones; what breaks the document is refused with a 4xx and what fits it is
  accepted; a 400 for an invalid field names the field;
- without a credential or with a wrong one: 401 on every protected route;
- a request that is refused, or that stores nothing by its nature (ignored, duplicate,
  invalidated, every GET), leaves ``file_events`` (the outbox, the one table the web process
  writes) as it was.
Bounded and reproducible: a fixed number of examples per operation, derandomized, no
deadline. The app under test publishes to a Redis database no worker consumes, and the
events it stored are marked ``ignored`` at the end, so no later test processes fuzzed
uploads.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import func, select, text

from ingest.db import session_scope
from ingest.models import FileEvent
from ingest.settings import get_settings
from tests.conftest import REDIS_PORT, STATUS_TOKEN, WEBHOOK_SECRET, WEBHOOK_TOKEN
from webhooks.app import create_app
from webhooks.auth import sign
from webhooks.openapi import openapi_path
from webhooks.publisher import Publisher

UNCONSUMED_BROKER = f"redis://127.0.0.1:{REDIS_PORT}/15"
# Examples per operation and test; FUZZ_EXAMPLES=1000 for a longer hunt.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.positive_data_acceptance,
]
# The 400s that concern the body as a whole; every other 400 names its field.
WHOLE_BODY_ERRORS = {"malformed JSON", "the body must be a JSON object",
                     "JSON nested too deeply"}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


# Built at import (no database needed): schemathesis parametrizes from the document at
# collection time. (Its lazy ``from_fixture`` loader does not work with pytest 9.)
APP = create_app(get_settings(), publisher=Publisher(UNCONSUMED_BROKER))
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES,
    deterministic=True, with_security_parameters=False)
protected = schema.include(tag_regex="^(webhooks|status-api|status-pages)$")


@pytest.fixture(scope="module", autouse=True)
def _fuzzed_events_are_never_processed() -> Iterator[None]:
    """Mark the events this module stored ``ignored`` and drop their broker messages."""
    before = _max_event_id()
    yield
    with session_scope() as s:
        s.execute(text("UPDATE file_events SET status = 'ignored', updated_at = now() "
                       "WHERE id > :before AND status IN ('received', 'enqueued')"),
                  {"before": before})
    redis.Redis.from_url(UNCONSUMED_BROKER).flushdb()


def _max_event_id() -> int:
    with session_scope() as s:
        return s.execute(select(func.coalesce(func.max(FileEvent.id), 0))).scalar_one()


def _events() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(FileEvent)).scalar_one()


def _raw_body(case: Any) -> bytes | None:
    """The body bytes schemathesis would send (serialized here, so that they can be signed)."""
    sent = case.as_transport_kwargs()
    if "json" in sent:
        return json.dumps(sent["json"]).encode()
    data = sent.get("data")
    return data.encode() if isinstance(data, str) else data


def _holds_nul(case: Any, raw: bytes | None) -> bool:
    parameters = json.dumps([case.query, case.path_parameters], default=str)
    return "\\u0000" in parameters or (raw is not None and (b"\\u0000" in raw or b"\0" in raw))


def _send(case: Any, headers: dict[str, str], raw: bytes | None) -> Any:
    """Call the app with exactly ``raw`` as the body (what a signature covers)."""
    if raw is None:
        return case.call(headers=headers)
    return case.call(headers={"Content-Type": "application/json", **headers}, data=raw)


def _is_status_page(case: Any) -> bool:
    return case.path.startswith("/status")


def _good_credential(case: Any, raw: bytes | None, how: str) -> dict[str, str]:
    """A valid credential of the route: ``how`` picks Bearer token or signature (webhook
    routes and status API) or Bearer token or basic auth (status pages)."""
    if _is_status_page(case):
        if how == "token":
            return {"Authorization": f"Bearer {STATUS_TOKEN}"}
        return {"Authorization": "Basic " + base64.b64encode(
            f"operator:{STATUS_TOKEN}".encode()).decode()}
    if not case.operation.definition.raw.get("security"):
        return {}
    if how == "token":
        return {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    ts = str(int(time.time()))
    return {"X-Webhook-Timestamp": ts,
            "X-Webhook-Signature": sign(WEBHOOK_SECRET, ts, raw or b"")}


@schema.parametrize()
@schema.given(how=st.sampled_from(["token", "signature"]))
@FUZZ
def test_with_a_valid_credential_the_api_keeps_its_document(case: Any, how: str) -> None:
    raw = _raw_body(case)
    before = _events()
    response = _send(case, _good_credential(case, raw, how), raw)
    assert response.status_code != 401, response.text  # schemathesis would let it pass
    # No schema keyword says "no NUL in any string, at any depth"; the document says it in
    # words, and such a request must be refused (400 naming the field) rather than accepted.
    nul = _holds_nul(case, raw)
    case.validate_response(response, checks=[c for c in CHECKS if not (
        nul and c is schemathesis.checks.positive_data_acceptance)])
    if nul and case.path.startswith("/webhooks"):
        assert response.status_code == 400, response.text
    stored = _events() - before
    if response.status_code == 202 and response.json()["status"] == "accepted":
        assert stored == 1
    else:
        assert stored == 0, f"{response.status_code} {response.text} stored {stored} rows"
    if response.status_code == 400 and not _is_status_page(case):
        body = response.json()
        assert body.get("field") or body["error"] in WHOLE_BODY_ERRORS, body


def _bad_webhook_credentials() -> st.SearchStrategy[dict[str, str]]:
    header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
    timestamps = st.one_of(st.integers(min_value=-(10**400), max_value=10**400).map(str),
                           st.just(str(int(time.time()))), header_text)
    return st.one_of(
        st.just({}),
        header_text.map(lambda t: {"Authorization": f"Bearer {t}"}),
        st.just({"Authorization": f"Bearer {STATUS_TOKEN}"}),
        st.just({"Authorization": f"Basic {WEBHOOK_TOKEN}"}),
        st.tuples(timestamps, header_text).map(
            lambda p: {"X-Webhook-Timestamp": p[0], "X-Webhook-Signature": p[1]}),
        timestamps.map(lambda ts: {"X-Webhook-Timestamp": ts,
                                   "X-Webhook-Signature": sign("another-secret", ts, b"")}),
    )


def _bad_status_credentials() -> st.SearchStrategy[dict[str, str]]:
    header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
    basic = header_text.map(lambda p: "Basic " + base64.b64encode(f"op:{p}".encode()).decode())
    return st.one_of(
        st.just({}),
        header_text.map(lambda t: {"Authorization": f"Bearer {t}"}),
        basic.map(lambda v: {"Authorization": v}),
        st.just({"Authorization": f"Bearer {WEBHOOK_TOKEN}"}),
        header_text.map(lambda v: {"Authorization": v}),
    )


@protected.parametrize()
@protected.given(webhook_creds=_bad_webhook_credentials(), status_creds=_bad_status_credentials())
@settings(FUZZ, max_examples=30)
def test_without_a_valid_credential_every_protected_route_is_401_and_stores_nothing(
    case: Any, webhook_creds: dict[str, str], status_creds: dict[str, str]
) -> None:
    raw = _raw_body(case)
    before = _events()
    response = _send(case, status_creds if _is_status_page(case) else webhook_creds, raw)
    assert response.status_code == 401, (response.status_code, response.text)
    if _is_status_page(case):
        assert response.headers["www-authenticate"][0].startswith("Basic")
    assert _events() == before


def test_the_document_is_public_valid_openapi_3_1_and_describes_every_route() -> None:
    from openapi_spec_validator import validate

    response = APP.test_client().get("/openapi.json")  # no credential
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    for rule in APP.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        item = doc["paths"].get(openapi_path(rule.rule))
        assert item is not None, f"{rule.rule} is not in /openapi.json"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            operation = item.get(method.lower())
            assert operation is not None, f"{method} {rule.rule} is not in /openapi.json"
            assert not operation.get("x-undocumented"), (
                f"{method} {rule.rule} has no entry in webhooks.openapi.OPERATIONS")


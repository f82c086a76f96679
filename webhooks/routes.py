"""Routes: ``POST /webhooks/cms``, ``GET /health``, the probes ``GET /livez`` and ``/readyz``.

The webhook path is authenticate → validate → INSERT the outbox row → COMMIT → publish →
answer; the row is marked ``enqueued`` right after, a few webhooks in one UPDATE
(:class:`ingest.events.EnqueuedMarks`). If publishing fails the answer is still 202: the row
is stored and the beat relay publishes it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from sqlalchemy import text

from ingest.db import autocommit, get_engine, reconnecting
from ingest.events import (
    BOT_SETTING_MODEL,
    FILE_MODEL,
    PREFERENCE_MODEL,
    BotSettingEntry,
    FileEntry,
    PreferenceEntry,
    PreferenceUpdate,
    WebhookEnvelope,
    event_kind,
    store_file_event,
)
from ingest.metrics import WEBHOOKS
from ingest.notify.bot_settings import invalidate as invalidate_bot_channels
from ingest.preferences import invalidate
from ingest.redis_client import worker_refusals
from webhooks.auth import AuthError, authenticate

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)
M = TypeVar("M", bound=BaseModel)



class BadRequest(Exception):
    """A 4xx answer with a JSON body naming the field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.detail = status, error, field, detail

    def response(self) -> tuple[Response, int]:
        body: dict[str, Any] = {"status": "rejected", "error": self.error}
        if self.field:
            body["field"] = self.field
        if self.detail:
            body["detail"] = self.detail
        return jsonify(body), self.status


def _validation_error(exc: ValidationError, prefix: str = "") -> BadRequest:
    first = exc.errors()[0]
    field = prefix + ".".join(str(p) for p in first["loc"])
    fields = [prefix + ".".join(str(p) for p in e["loc"]) for e in exc.errors()]
    detail = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, exc.errors(), strict=True))
    return BadRequest(400, "invalid payload", field=field or None, detail=detail)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests objects/arrays deeper than ``limit`` (strings skipped).

    Checked before parsing: Python's parser and pydantic recurse once per level, so a body
    nested thousands of levels deep would otherwise end in a ``RecursionError`` (a 500).
    """
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"the number {number[:40]} is out of range")
    return value


def _nul_path(value: Any, path: str = "") -> str | None:
    """The path (``entry.name``) of the first key or string holding a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return here
        if (found := _nul_path(item, here)) is not None:
            return found
    return None


def _parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object that PostgreSQL can store (``jsonb``): no NaN or Infinity
    (Python's parser takes them, PostgreSQL refuses them) and no NUL character (no
    PostgreSQL text can hold one, so no PostgreSQL-backed CMS can send one)."""
    limit = current_app.extensions["kb_settings"].webhook_max_json_depth
    if json_depth_exceeds(raw, limit):
        raise BadRequest(400, "JSON nested too deeply",
                         detail=f"objects and arrays may nest at most {limit} levels "
                                "(WEBHOOK_MAX_JSON_DEPTH)")
    try:
        body = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "malformed JSON", detail=str(exc)) from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    if (field := _nul_path(body)) is not None:
        raise BadRequest(400, "invalid payload", field=field,
                         detail=f"{field}: NUL characters (\\u0000) cannot be stored")
    return body


def _validate(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate with pydantic; a 400 naming the first field at fault otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, prefix) from None


def _accept_file_event(envelope: WebhookEnvelope, body: dict[str, Any]) -> tuple[Response, int]:
    if envelope.entry is None:
        raise BadRequest(400, "invalid payload", field="entry", detail="entry: Field required")
    entry = _validate(FileEntry, envelope.entry, "entry.")
    # Strapi never re-sends a webhook: a pooled connection that died with a PostgreSQL
    # restart costs a retry here, not the event (storing is idempotent by the dedupe key).
    # Autocommit: the INSERT is committed when it returns (one round trip), before the
    # publish. The mark ``enqueued`` follows off the request path, with the marks of the
    # next webhooks (ingest.events.EnqueuedMarks).
    for attempt in reconnecting():
        with attempt, autocommit() as conn:
            stored = store_file_event(conn, envelope.event, entry, body)
    if not stored.created:
        WEBHOOKS.labels("duplicate").inc()
        return jsonify({"status": "duplicate", "event_id": stored.event_id}), 200
    current_app.extensions["kb_enqueued_marks"].publish_then_mark(
        stored.event_id, current_app.extensions["kb_publisher"].publish_file_event)
    WEBHOOKS.labels("accepted").inc()
    return jsonify({"status": "accepted", "event_id": stored.event_id}), 202


def _accept_preference_event(envelope: WebhookEnvelope) -> tuple[Response, int]:
    pref = _validate(PreferenceEntry, envelope.entry or {}, "entry.")
    invalidate(current_app.extensions["kb_redis"], pref.company_id, pref.bot_id,
               str(pref.user_email))
    WEBHOOKS.labels("invalidated").inc()
    return jsonify({"status": "invalidated"}), 202


def _accept_bot_setting_event(envelope: WebhookEnvelope) -> tuple[Response, int]:
    setting = _validate(BotSettingEntry, envelope.entry or {}, "entry.")
    invalidate_bot_channels(current_app.extensions["kb_redis"], setting.company_id,
                            setting.bot_id)
    WEBHOOKS.labels("invalidated").inc()
    return jsonify({"status": "invalidated"}), 202


def _authenticated_json() -> dict[str, Any]:
    """Size, authentication, content type and JSON parsing shared by the webhook routes.

    Authentication comes before everything but the size limit (a signature covers the body,
    so the body is read first): a caller without credentials learns nothing but 401.
    """
    raw = request.get_data(cache=True)  # 413 above MAX_CONTENT_LENGTH
    try:
        authenticate(request.headers, raw, current_app.extensions["kb_settings"])
    except AuthError as exc:
        raise BadRequest(401, str(exc)) from None
    if request.mimetype != "application/json":
        raise BadRequest(415, "Content-Type must be application/json")
    return _parse(raw)


@bp.errorhandler(BadRequest)
def _rejected(exc: BadRequest) -> tuple[Response, int]:
    WEBHOOKS.labels(f"http_{exc.status}").inc()
    return exc.response()


@bp.post("/webhooks/cms")
def cms_webhook() -> tuple[Response, int]:
    """Receive a Strapi 5 webhook (DESIGN §4)."""
    body = _authenticated_json()
    envelope = _validate(WebhookEnvelope, body)
    if event_kind(envelope.event) is not None and envelope.model == FILE_MODEL:
        return _accept_file_event(envelope, body)
    if event_kind(envelope.event) is not None and envelope.model == PREFERENCE_MODEL:
        return _accept_preference_event(envelope)
    if event_kind(envelope.event) is not None and envelope.model == BOT_SETTING_MODEL:
        return _accept_bot_setting_event(envelope)
    WEBHOOKS.labels("ignored").inc()
    return jsonify({"status": "ignored"}), 202


@bp.post("/webhooks/preference-updated")
def preference_updated() -> tuple[Response, int]:
    """Seed 001's preference-change notification: drop the user's cached preferences."""
    update = _validate(PreferenceUpdate, _authenticated_json())
    invalidate(current_app.extensions["kb_redis"], update.company_id, update.bot_id,
               str(update.user_email))
    WEBHOOKS.labels("invalidated").inc()
    return jsonify({"status": "invalidated"}), 202


def check_database() -> str:
    """``ok`` when PostgreSQL answers ``SELECT 1``, else ``error: <exception type>``.

    A pooled connection that died with a server restart is retried on a fresh one, so a
    restart that is over does not fail one probe (there is no ping before checkout)."""
    try:
        for attempt in reconnecting():
            with attempt, get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def check_broker() -> str:
    """``ok`` when the broker accepts a connection."""
    return "ok" if current_app.extensions["kb_publisher"].broker_ok() else "error: unreachable"


def check_redis() -> str:
    """``ok`` when ``REDIS_URL`` answers PING."""
    try:
        current_app.extensions["kb_redis"].ping()
    except RedisError as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def _answer(checks: dict[str, str], bad: str) -> tuple[Response, int]:
    healthy = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if healthy else bad, "checks": checks}), (
        200 if healthy else 503
    )


@bp.get("/health")
def health() -> tuple[Response, int]:
    """200 when the database and the broker answer and no worker refused to start, else 503;
    each dependency's state."""
    checks = {"database": check_database(), "broker": check_broker()}
    try:
        refusals = worker_refusals(current_app.extensions["kb_redis"])
    except RedisError:
        refusals = []  # Redis down: the broker check (same server, usually) says so
    if refusals:
        checks["workers"] = "; ".join(f"error: a worker on {r['host']} refused to start at "
                                      f"{r['at']}: {r['problem']}" for r in refusals)
    return _answer(checks, "degraded")


@bp.get("/livez")
def livez() -> tuple[Response, int]:
    """Liveness: 200 whenever the process answers (no dependency is asked)."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 when the database, Redis and the broker answer, else 503; each one's
    state. Workers are not asked: the web can take webhooks without them (the outbox)."""
    return _answer({"database": check_database(), "redis": check_redis(),
                    "broker": check_broker()}, "unavailable")

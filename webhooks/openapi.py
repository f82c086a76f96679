"""``GET /openapi.json``: an OpenAPI 3.1 description of every route the web process serves.

Little of it is written by hand, so it cannot drift from the code:
- the paths and methods are the app's own ``url_map``; a route registered without an entry
  in :data:`OPERATIONS` still appears, flagged ``x-undocumented`` (a test fails on that);
- request bodies are the JSON Schemas of the pydantic models the routes validate with
  (:mod:`ingest.events`), answers of the status API those of its response models
  (:mod:`webhooks.batches_api`); summaries are the view functions' docstrings.
Written here: which credential a route takes, its query parameters (parsed by hand in the
routes; the bounds are the routes' own constants) and the status codes it answers with.
``tests/test_fuzz_api.py`` runs schemathesis against this document and the real app, so a
status code, a bound or a body shape that is wrong here fails there.

The document is public, like ``/livez``: it describes the contract and holds no data and no
secret. Like the probes, keep it on the internal network (route only ``/webhooks/*`` from the
CMS's side).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ingest.events import (
    BOT_SETTING_MODEL,
    DELETE_EVENTS,
    FILE_MODEL,
    INT32_MAX,
    PREFERENCE_MODEL,
    UPSERT_EVENTS,
    BotSettingEntry,
    FileEntry,
    PreferenceEntry,
    PreferenceUpdate,
    WebhookEnvelope,
)
from ingest.models import BATCH_STATUSES
from ingest.status_view import BUCKETS, DEFAULT_PER_PAGE, MAX_FAILURE_HOURS, MAX_PER_PAGE
from webhooks.batches_api import MAX_LIST, BatchDetail, BatchList

bp = Blueprint("openapi", __name__)
_HANDLED_EVENTS = tuple(sorted(UPSERT_EVENTS | DELETE_EVENTS))


# --- bodies that only this document names (the routes validate their parts) -----------


class FileWebhook(WebhookEnvelope):
    """A file entry created, updated, published, deleted or unpublished: stored, then
    processed (202 accepted; 200 duplicate for a version already stored)."""

    event: Literal[_HANDLED_EVENTS]  # type: ignore[valid-type]
    model: Literal[FILE_MODEL]  # type: ignore[valid-type]
    entry: FileEntry  # type: ignore[assignment]


class PreferenceWebhook(WebhookEnvelope):
    """A notification-preference entry changed: that user's cached preferences are dropped
    (202 invalidated)."""

    event: Literal[_HANDLED_EVENTS]  # type: ignore[valid-type]
    model: Literal[PREFERENCE_MODEL]  # type: ignore[valid-type]
    entry: PreferenceEntry  # type: ignore[assignment]


class BotSettingWebhook(WebhookEnvelope):
    """A bot's notification channels changed: its cached channel list is dropped
    (202 invalidated)."""

    event: Literal[_HANDLED_EVENTS]  # type: ignore[valid-type]
    model: Literal[BOT_SETTING_MODEL]  # type: ignore[valid-type]
    entry: BotSettingEntry  # type: ignore[assignment]


class WebhookAnswer(BaseModel):
    """What a webhook route answers when it took the request."""

    status: Literal["accepted", "duplicate", "ignored", "invalidated"]
    event_id: int | None = None


class Rejected(BaseModel):
    """A refused request; ``field`` names the body field or parameter at fault."""

    status: Literal["rejected"]
    error: str
    field: str | None = None
    detail: str | None = None


class NotFound(BaseModel):
    """No such batch."""

    status: Literal["not_found"]


class Health(BaseModel):
    """Each dependency's state: ``ok`` or ``error: …``."""

    status: str
    checks: dict[str, str]


class Alive(BaseModel):
    """The process answers."""

    status: Literal["ok"]


_MODELS: list[type[BaseModel]] = [
    FileWebhook, PreferenceWebhook, BotSettingWebhook, WebhookEnvelope, FileEntry,
    PreferenceEntry, BotSettingEntry,
    PreferenceUpdate, WebhookAnswer, Rejected, NotFound, Health, Alive, BatchDetail, BatchList,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _handled(model_name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["event", "model"],
            "properties": {"event": {"enum": list(_HANDLED_EVENTS)},
                           "model": {"const": model_name}}}


# ``/webhooks/cms``: a file event, a preference or bot-setting event, or anything else
# (ignored). The one
# hand-written body schema: "anything else" is the envelope that is neither of the first two.
_CMS_BODY = {
    "anyOf": [
        _ref(FileWebhook),
        _ref(PreferenceWebhook),
        _ref(BotSettingWebhook),
        {"allOf": [_ref(WebhookEnvelope),
                   {"not": {"anyOf": [_handled(FILE_MODEL), _handled(PREFERENCE_MODEL),
                                      _handled(BOT_SETTING_MODEL)]}}],
         "description": "Any other event or model (Strapi's `trigger-test`, `media.*`, "
                        "other content types): 202 ignored."},
    ],
}


# --- operations --------------------------------------------------------------------------

WEBHOOK_AUTH = [{"webhookToken": []}, {"webhookSignature": [], "webhookTimestamp": []}]
STATUS_AUTH = [{"statusToken": []}, {"statusBasic": []}]
_JSON = "application/json"
_HTML = "text/html"


@dataclass(frozen=True)
class Op:
    """How one route is called and what it answers (everything the url_map does not say)."""

    tag: str
    security: list[dict[str, list[str]]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    query: list[dict[str, Any]] = field(default_factory=list)
    path: dict[str, dict[str, Any]] = field(default_factory=dict)
    # status → (description, media type, schema or None)
    responses: dict[int, tuple[str, str, dict[str, Any] | None]] = field(default_factory=dict)


def _query(name: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _blank_or(schema: dict[str, Any]) -> dict[str, Any]:
    """A status-page filter: an empty value (an empty form field) means "not given"."""
    if schema.get("type") == "integer":
        # One schema, not anyOf: string keywords bind strings only, number keywords numbers.
        return {**schema, "type": ["integer", "string"], "maxLength": 0}
    return {"anyOf": [schema, {"const": ""}]}


_NO_NUL = "^[^\u0000]*$"  # PostgreSQL text cannot hold one


_REJECTED = (_JSON, _ref(Rejected))
_WEBHOOK_ERRORS = {
    400: ("Malformed JSON (NaN and Infinity included), or an invalid field, or a NUL "
          "character anywhere (the field is named in `field`)", *_REJECTED),
    401: ("Missing or invalid credentials", *_REJECTED),
    413: ("Body larger than WEBHOOK_MAX_BODY_BYTES", *_REJECTED),
    415: ("Content-Type is not application/json", *_REJECTED),
}
_STATUS_PAGE_ERRORS = {
    401: ("Missing or wrong STATUS_TOKEN (asks for basic auth)", _HTML, None),
    404: ("STATUS_TOKEN unset, or no such batch/document", _HTML, None),
}
_HEALTH = (_JSON, _ref(Health))
_BATCH_FILTERS = [
    _query("company_id", _blank_or({"type": "integer", "minimum": 0, "maximum": INT32_MAX}),
           "Company"),
    _query("bot_id", _blank_or({"type": "integer", "minimum": 0, "maximum": INT32_MAX}),
           "Bot"),
    _query("user_email", {"type": "string", "maxLength": 255, "pattern": _NO_NUL},
           "Uploader (case-insensitive)"),
    _query("status", _blank_or({"enum": list(BATCH_STATUSES)}), "Batch status"),
    _query("page", _blank_or({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
           "Page, from 1"),
    _query("per_page", _blank_or({"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}),
           f"Batches a page (default {DEFAULT_PER_PAGE})"),
]

OPERATIONS: dict[str, Op] = {
    "webhooks.cms_webhook": Op(
        "webhooks", WEBHOOK_AUTH, _CMS_BODY, responses={
            202: ("Accepted (stored, processing queued), ignored, or cache invalidated",
                  _JSON, _ref(WebhookAnswer)),
            200: ("Duplicate: this version of the document is already stored",
                  _JSON, _ref(WebhookAnswer)),
            **_WEBHOOK_ERRORS}),
    "webhooks.preference_updated": Op(
        "webhooks", WEBHOOK_AUTH, _ref(PreferenceUpdate), responses={
            202: ("Cached preferences dropped", _JSON, _ref(WebhookAnswer)),
            **_WEBHOOK_ERRORS}),
    "batches_api.get_batch": Op(
        "status-api", WEBHOOK_AUTH,
        path={"batch_id": {"type": "string", "format": "uuid"}}, responses={
            200: ("The batch", _JSON, _ref(BatchDetail)),
            400: ("batch_id is not a UUID", *_REJECTED),
            401: ("Missing or invalid credentials", *_REJECTED),
            404: ("No such batch", _JSON, _ref(NotFound))}),
    "batches_api.list_batches": Op(
        "status-api", WEBHOOK_AUTH, query=[
            # Something besides what str.strip() removes (\s and U+001C…U+001F), no NUL.
            _query("user_email", {"type": "string", "minLength": 1,
                                  "pattern": "^[^\u0000]*[^\\s\u0000\u001c-\u001f][^\u0000]*$"},
                   "The uploader (case-insensitive)", required=True),
            _query("limit", {"type": "integer"},
                   f"How many (clamped to 1…{MAX_LIST}; default 20)"),
        ], responses={
            200: ("The uploader's newest batches", _JSON, _ref(BatchList)),
            400: ("user_email missing or limit not an integer", *_REJECTED),
            401: ("Missing or invalid credentials", *_REJECTED)}),
    "status.index": Op("status-pages", STATUS_AUTH, query=_BATCH_FILTERS, responses={
        200: ("HTML page", _HTML, None), 400: ("A bad parameter, named", _HTML, None),
        **_STATUS_PAGE_ERRORS}),
    "status.batch": Op("status-pages", STATUS_AUTH, path={"batch_id": {"type": "string"}},
                       responses={200: ("HTML page", _HTML, None), **_STATUS_PAGE_ERRORS}),
    "status.failures": Op("status-pages", STATUS_AUTH, query=[
        _query("hours", _blank_or({"type": "integer", "minimum": 1,
                                   "maximum": MAX_FAILURE_HOURS}), "How far back (default 24)"),
        _query("bucket", _blank_or({"enum": list(BUCKETS)}),
               "Per hour or per day (default: hour up to 72 hours, else day)"),
    ], responses={200: ("HTML page", _HTML, None), 400: ("A bad parameter, named", _HTML, None),
                  **_STATUS_PAGE_ERRORS}),
    "status.corrections": Op("status-pages", STATUS_AUTH, responses={
        200: ("HTML page", _HTML, None), **_STATUS_PAGE_ERRORS}),
    "status.document": Op("status-pages", STATUS_AUTH,
                          path={"document_id": {"type": "string", "maxLength": 255,
                                                "pattern": _NO_NUL}},
                          responses={200: ("HTML page", _HTML, None), **_STATUS_PAGE_ERRORS}),
    "webhooks.health": Op("probes", responses={
        200: ("Database and broker answer", *_HEALTH),
        503: ("A dependency is down (named in checks)", *_HEALTH)}),
    "webhooks.livez": Op("probes", responses={200: ("The process answers", _JSON,
                                                    _ref(Alive))}),
    "webhooks.readyz": Op("probes", responses={
        200: ("Database, Redis and broker answer", *_HEALTH),
        503: ("A dependency is down (named in checks)", *_HEALTH)}),
    "metrics.metrics": Op("probes", responses={
        200: ("Prometheus text format", "text/plain", None)}),
    "openapi.document": Op("probes", responses={200: ("This document", _JSON, None)}),
}

SECURITY_SCHEMES = {
    "webhookToken": {"type": "http", "scheme": "bearer",
                     "description": "WEBHOOK_TOKEN (when set); what Strapi sends"},
    "webhookSignature": {
        "type": "apiKey", "in": "header", "name": "X-Webhook-Signature",
        "description": "WEBHOOK_SECRET (when set): `sha256=<hex HMAC-SHA256(secret, "
                       "timestamp + '.' + raw body)>`; GET requests sign the empty body"},
    "webhookTimestamp": {"type": "apiKey", "in": "header", "name": "X-Webhook-Timestamp",
                         "description": "Unix seconds, within WEBHOOK_REPLAY_WINDOW_SECONDS"},
    "statusToken": {"type": "http", "scheme": "bearer", "description": "STATUS_TOKEN"},
    "statusBasic": {"type": "http", "scheme": "basic",
                    "description": "Any user name, STATUS_TOKEN as password"},
}

_DESCRIPTION = """\
Webhook receiver, status API, status pages and probes of the kb-ingest web process.

- Webhook routes and the status API (`/api/batches`) take `WEBHOOK_TOKEN` as a Bearer token
  or the `WEBHOOK_SECRET` signature, whichever is configured; `/status` takes `STATUS_TOKEN`
  only. Without a valid credential every one of them answers 401 and stores nothing.
- No string may hold a NUL character (U+0000), in a body at any depth or in a parameter:
  PostgreSQL cannot store one. A webhook holding one is refused with 400 naming the field.
"""

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Flask's ``/a/<b>`` (or ``<conv:b>``) as OpenAPI's ``/a/{b}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def _operation(app: Flask, endpoint: str, method: str, op: Op | None) -> dict[str, Any]:
    doc = inspect.getdoc(app.view_functions[endpoint]) or endpoint
    summary, _, description = doc.partition("\n\n")
    out: dict[str, Any] = {"operationId": f"{endpoint}.{method.lower()}",
                           "summary": " ".join(summary.split())}
    if description:
        out["description"] = description
    if op is None:
        out["x-undocumented"] = True
        out["responses"] = {"default": {"description": "Not described"}}
        return out
    out["tags"] = [op.tag]
    out["security"] = op.security
    params = [{"name": name, "in": "path", "required": True, "schema": schema}
              for name, schema in op.path.items()] + op.query
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {_JSON: {"schema": op.body}}}
    out["responses"] = {
        str(code): {"description": text,
                    "content": {media: {"schema": schema} if schema else {}}}
        for code, (text, media, schema) in op.responses.items()
    }
    return out


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes."""
    _, top = models_json_schema([(m, "validation") for m in _MODELS],
                                ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item[method.lower()] = _operation(app, rule.endpoint, method,
                                              OPERATIONS.get(rule.endpoint))
    return {
        "openapi": "3.1.0",
        "info": {"title": "kb-ingest", "version": "1", "description": _DESCRIPTION},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


@bp.get("/openapi.json")
def document() -> tuple[Response, int]:
    """This OpenAPI document (no credential needed)."""
    doc = current_app.extensions.get("kb_openapi")
    if doc is None:
        doc = current_app.extensions["kb_openapi"] = build_document(current_app)
    return jsonify(doc), 200

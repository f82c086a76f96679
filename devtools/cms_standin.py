"""A Strapi 5 stand-in: the CMS's REST and webhook contract over real HTTP, in one process.

It answers exactly like the Strapi 5.54 captures in `strapi-examples/` (bodies, status codes,
error shapes) for the two content types this service uses, `file` and
`user-notification-preference`, so the test-suite and `make demo` can run without Strapi.

What it reproduces:
- `{"data": …, "meta": {}}` bodies; `documentId` (24 lowercase alphanumerics), numeric `id`,
  ISO timestamps with milliseconds and `Z`, `size_bytes` (a biginteger) as a string, every
  attribute present (unset ones as `null`).
- Strapi's error shape `{"data": null, "error": {status, name, message, details}}` for 401,
  404, 400 (BadRequestError, ValidationError with yup-style `details.errors`), injected faults.
- REST query parameters: `filters[field][$op]` (with `$and`/`$or`/`$not`), `sort`,
  `pagination[page|pageSize]` (25 by default, at most 100) or `pagination[start|limit]`.
- Webhooks `{event, createdAt, model, uid, entry}` with `X-Strapi-Event`, sent from a pool
  of five threads (so order is not guaranteed) and never retried. With
  `draft_and_publish=True`, file entries behave like a draft & publish content type: a create
  sends `entry.create` (draft, `publishedAt: null`) then `entry.publish`, an update sends
  `entry.update` then `entry.publish` with a new numeric `id`, a delete sends two
  `entry.delete`. Preferences never use draft & publish (their schema turns it off).

What it does not: authentication other than one API token (no 403), relations, locales,
`populate`/`fields` (ignored), the admin API.

All mutable state lives in a `CmsState` (guarded by one lock), so several stand-ins can run
in one process.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType, TracebackType
from typing import Any

import requests
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
WEBHOOK_WORKERS = 5
BY_USER_MESSAGE = "companyId and botId must be integers and userEmail must be set"
UNAUTHORIZED_MESSAGE = "Missing or invalid credentials"

# ---------------------------------------------------------------------------------------------
# Content types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One attribute of a content type (a small subset of Strapi's attribute types)."""

    kind: str  # string | email | integer | biginteger | boolean | enumeration
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A collection type: its singular name (`model` in webhooks), plural (route) and fields."""

    model: str
    plural: str
    fields: dict[str, FieldSpec]

    @property
    def uid(self) -> str:
        """Strapi's uid, e.g. `api::file.file`."""
        return f"api::{self.model}.{self.model}"

    def kinds(self) -> dict[str, str]:
        """Filterable/sortable keys and their kinds, system keys included."""
        kinds = {"id": "integer", "documentId": "string"}
        kinds.update({name: spec.kind for name, spec in self.fields.items()})
        kinds.update(createdAt="datetime", updatedAt="datetime", publishedAt="datetime")
        return kinds


FILE_MODEL = ModelSpec(
    model="file",
    plural="files",
    fields={
        "name": FieldSpec("string", required=True),
        "storage_key": FieldSpec("string", required=True),
        "company_id": FieldSpec("integer"),
        "bot_id": FieldSpec("integer"),
        "user_email": FieldSpec("email"),
        "size_bytes": FieldSpec("biginteger"),
        "mime_type": FieldSpec("string"),
    },
)

PREFERENCE_MODEL = ModelSpec(
    model="user-notification-preference",
    plural="user-notification-preferences",
    fields={
        "company_id": FieldSpec("integer", required=True),
        "bot_id": FieldSpec("integer", required=True),
        "user_email": FieldSpec("email", required=True),
        "notification_enabled": FieldSpec("boolean", required=True, default=True),
        "batch_size_threshold": FieldSpec("integer", default=5, minimum=1, maximum=100),
        "notification_delay_minutes": FieldSpec("integer", default=30, minimum=1, maximum=1440),
        "email_format": FieldSpec(
            "enumeration", required=True, default="html", choices=("html", "text")
        ),
        "include_success_details": FieldSpec("boolean", default=True),
        "include_error_details": FieldSpec("boolean", default=True),
    },
)

MODELS: dict[str, ModelSpec] = {spec.model: spec for spec in (FILE_MODEL, PREFERENCE_MODEL)}

# Keys Strapi manages itself: ignored when a client sends them in `data`.
SYSTEM_KEYS = frozenset({"id", "documentId", "createdAt", "updatedAt", "publishedAt", "locale"})

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class StrapiError(Exception):
    """An error answered as Strapi's `{"data": null, "error": {…}}` body."""

    def __init__(
        self, status: int, name: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.details = details if details is not None else {}

    def body(self) -> dict[str, Any]:
        """The response body."""
        error = {
            "status": self.status,
            "name": self.name,
            "message": self.message,
            "details": self.details,
        }
        return {"data": None, "error": error}

    @classmethod
    def for_status(cls, status: int) -> StrapiError:
        """A generic error for a status, named like http-errors does (`ServiceUnavailableError`)."""
        known = {
            400: ("BadRequestError", "Bad Request"),
            401: ("UnauthorizedError", "Unauthorized"),
            403: ("ForbiddenError", "Forbidden"),
            404: ("NotFoundError", "Not Found"),
            429: ("RateLimitError", "Too many requests, please try again later."),
            500: ("InternalServerError", "Internal Server Error"),
        }
        if status in known:
            return cls(status, *known[status])
        phrase = HTTP_STATUS_CODES.get(status, "Error")
        name = re.sub(r"[^A-Za-z]", "", phrase.title())
        return cls(status, name if name.endswith("Error") else f"{name}Error", phrase)


def _not_found() -> StrapiError:
    return StrapiError(404, "NotFoundError", "Not Found")


def _unauthorized() -> StrapiError:
    return StrapiError(401, "UnauthorizedError", UNAUTHORIZED_MESSAGE)


def _validation(message: str, details: dict[str, Any] | None = None) -> StrapiError:
    return StrapiError(400, "ValidationError", message, details)


def _invalid_key(key: str) -> StrapiError:
    return _validation(f"Invalid key {key}", {"key": key, "path": key})


# ---------------------------------------------------------------------------------------------
# Field validation (yup-like messages, as Strapi's entity validator produces)
# ---------------------------------------------------------------------------------------------

_MISSING = object()
_INT_RE = re.compile(r"^-?\d+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _type_message(name: str, type_name: str, value: Any) -> str:
    return f"{name} must be a `{type_name}` type, but the final value was: `{json.dumps(value)}`."


def _coerce_int(name: str, value: Any, type_name: str = "number") -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        return int(value)
    raise ValueError(_type_message(name, type_name, value))


def _check_range(name: str, spec: FieldSpec, value: int) -> int:
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"{name} must be greater than or equal to {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"{name} must be less than or equal to {spec.maximum}")
    return value


def _coerce_field(name: str, spec: FieldSpec, value: Any) -> Any:
    """Return the stored form of `value`, or raise ValueError with Strapi's message."""
    if value is None:
        if spec.required:
            raise ValueError(f"{name} must be defined.")
        return None
    if spec.kind in ("string", "email"):
        if not isinstance(value, str):
            raise ValueError(_type_message(name, "string", value))
        if spec.kind == "email" and not _EMAIL_RE.match(value):
            raise ValueError(f"{name} must be a valid email")
        return value
    if spec.kind == "integer":
        return _check_range(name, spec, _coerce_int(name, value))
    if spec.kind == "biginteger":
        return str(_coerce_int(name, value))
    if spec.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(_type_message(name, "boolean", value))
        return value
    if spec.kind == "enumeration":
        if value not in spec.choices:
            raise ValueError(
                f"{name} must be one of the following values: {', '.join(spec.choices)}"
            )
        return value
    raise ValueError(f"{name} has an unsupported type")  # pragma: no cover - schema error


def _validation_error(problems: list[tuple[str, str, Any]]) -> StrapiError:
    errors = []
    for path, message, value in problems:
        item: dict[str, Any] = {"path": [path], "message": message, "name": "ValidationError"}
        if value is not _MISSING:
            item["value"] = value
        errors.append(item)
    message = problems[0][1] if len(problems) == 1 else f"{len(problems)} errors occurred"
    return _validation(message, {"errors": errors})


def validate_data(spec: ModelSpec, data: Any, *, creating: bool, strict: bool = True) -> dict:
    """Check and coerce a `data` payload like Strapi does; raise StrapiError (400) if invalid.

    `strict=False` (the seeding helpers) skips the required-field check on create.
    """
    if not isinstance(data, dict):
        raise _validation('Missing "data" payload in the request body')
    unknown = [key for key in data if key not in spec.fields and key not in SYSTEM_KEYS]
    if unknown:
        raise _invalid_key(unknown[0])
    clean: dict[str, Any] = {}
    problems: list[tuple[str, str, Any]] = []
    for name, field_spec in spec.fields.items():
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if creating and strict and field_spec.required and field_spec.default is None:
                problems.append((name, f"{name} must be defined.", _MISSING))
            continue
        try:
            clean[name] = _coerce_field(name, field_spec, value)
        except ValueError as exc:
            problems.append((name, str(exc), value))
    if problems:
        raise _validation_error(problems)
    return clean


# ---------------------------------------------------------------------------------------------
# Time and ids
# ---------------------------------------------------------------------------------------------


def iso_ms(moment: datetime) -> str:
    """Strapi's timestamp format: `2026-11-23T08:58:07.322Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO timestamp (or epoch milliseconds) into an aware UTC datetime."""
    text = value.strip()
    if _INT_RE.match(text):
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_document_id() -> str:
    """A 24-character lowercase alphanumeric id starting with a letter, like Strapi's cuid2."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(23)
    )


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


@dataclass
class _Record:
    """One document: its published version's id, its draft's id (draft & publish only)."""

    document_id: str
    id: int
    fields: dict[str, Any]
    created_at: str
    updated_at: str
    published_at: str | None
    draft_id: int | None = None

    def entry(self, spec: ModelSpec, *, draft: bool = False) -> dict[str, Any]:
        """The REST/webhook representation (the draft row when `draft`)."""
        entry: dict[str, Any] = {
            "id": self.draft_id if draft else self.id,
            "documentId": self.document_id,
        }
        entry.update({name: self.fields.get(name) for name in spec.fields})
        entry["createdAt"] = self.created_at
        entry["updatedAt"] = self.updated_at
        entry["publishedAt"] = None if draft else self.published_at
        return entry


@dataclass
class _Store:
    """The documents of one content type and its row-id sequence."""

    spec: ModelSpec
    records: dict[str, _Record] = field(default_factory=dict)
    last_id: int = 0

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id


Event = tuple[str, dict[str, Any]]  # (event name, entry)

# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


class CmsState:
    """Everything the stand-in holds: entries, call counters, faults, webhook deliveries.

    Thread-safe: every access goes through one lock. Route names (keys of `calls` are
    `"<METHOD> <route>"`, e.g. `"GET by-user"`): `files`, `file`, `preferences`,
    `preference`, `by-user`.
    """

    def __init__(
        self,
        token: str | None = None,
        webhook_url: str | None = None,
        webhook_headers: Mapping[str, str] | None = None,
        *,
        draft_and_publish: bool = False,
        webhook_timeout: float = 10.0,
        webhook_jitter: float = 0.0,
    ) -> None:
        """`webhook_jitter`: up to that many seconds of random delay before each delivery,
        to shake the order of concurrent webhooks like a busy Strapi does."""
        self.token = token
        self.webhook_url = webhook_url
        self.webhook_headers: dict[str, str] = dict(webhook_headers or {})
        self.draft_and_publish = draft_and_publish
        self.webhook_timeout = webhook_timeout
        self.webhook_jitter = webhook_jitter
        self.calls: Counter[str] = Counter()
        self.webhook_deliveries: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._stores = {name: _Store(spec) for name, spec in MODELS.items()}
        self._faults: dict[str, list[list[int]]] = {}
        self._last_tick: datetime | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    # -- configuration and test helpers ------------------------------------------------------

    def configure_webhook(self, url: str | None, headers: Mapping[str, str] | None = None) -> None:
        """Set (or, with None, remove) the webhook target and its extra headers."""
        with self._lock:
            self.webhook_url = url
            self.webhook_headers = dict(headers or {})

    def reset(self) -> None:
        """Forget entries, counters, faults and deliveries; keep the configuration."""
        self.wait_for_webhooks(timeout=self.webhook_timeout)
        with self._lock:
            self._stores = {name: _Store(spec) for name, spec in MODELS.items()}
            self._faults.clear()
            self.calls.clear()
            self.webhook_deliveries.clear()

    def fail_next(self, route_name: str, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` requests to a route with `status` and a Strapi error body.

        `route_name` is a route (`"by-user"`, any method) or `"<METHOD> <route>"`.
        """
        route = route_name.split(" ", 1)[-1]
        if route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {route_name!r}; known: {sorted(ROUTE_NAMES)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.setdefault(route_name, []).append([status, times])

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        with self._lock:
            self._faults.clear()

    def record_call(self, method: str, route: str) -> int | None:
        """Count a request; return the injected fault status to answer, if any."""
        with self._lock:
            self.calls[f"{method} {route}"] += 1
            for key in (f"{method} {route}", route):
                queue = self._faults.get(key)
                if queue:
                    status = queue[0][0]
                    queue[0][1] -= 1
                    if queue[0][1] <= 0:
                        queue.pop(0)
                    return status
        return None

    # -- generic document operations (HTTP handlers and helpers use these) -------------------

    def get_entry(self, model: str, document_id: str) -> dict[str, Any] | None:
        """The entry of a document, or None."""
        with self._lock:
            record = self._store(model).records.get(document_id)
            return record.entry(MODELS[model]) if record else None

    def list_entries(self, model: str) -> list[dict[str, Any]]:
        """All entries of a content type, by id."""
        with self._lock:
            records = sorted(self._store(model).records.values(), key=lambda r: r.id)
            return [record.entry(MODELS[model]) for record in records]

    def create_entry(
        self,
        model: str,
        data: Any,
        *,
        send_webhook: bool = True,
        strict: bool = True,
        document_id: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a document from a `data` payload (validated); return its entry."""
        spec = MODELS[model]
        fields = validate_data(spec, data, creating=True, strict=strict)
        with self._lock:
            record = self._insert(spec, fields, document_id or new_document_id(), overrides)
            events = self._creation_events(spec, record)
            entry = record.entry(spec)
        if send_webhook:
            self._emit(spec, events)
        return entry

    def update_entry(
        self,
        model: str,
        document_id: str,
        data: Any,
        *,
        send_webhook: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Update a document (partial `data`); return its entry, or None when absent."""
        spec = MODELS[model]
        fields = validate_data(spec, data, creating=False)
        with self._lock:
            record = self._store(model).records.get(document_id)
            if record is None:
                return None
            events = self._modify(spec, record, fields, overrides)
            entry = record.entry(spec)
        if send_webhook:
            self._emit(spec, events)
        return entry

    def delete_entry(
        self, model: str, document_id: str, *, send_webhook: bool = True
    ) -> dict[str, Any] | None:
        """Delete a document; return its last entry, or None when absent."""
        spec = MODELS[model]
        with self._lock:
            record = self._store(model).records.pop(document_id, None)
            if record is None:
                return None
            events: list[Event] = [("entry.delete", record.entry(spec))]
            if self._uses_drafts(spec):
                events.append(("entry.delete", record.entry(spec, draft=True)))
        if send_webhook:
            self._emit(spec, events)
        return events[0][1]

    def find_preference(self, company_id: int, bot_id: int, user_email: str) -> dict | None:
        """The stored preference of a user (e-mail compared case-insensitively), or None."""
        wanted = user_email.casefold()
        for entry in self.list_entries(PREFERENCE_MODEL.model):
            email = entry["user_email"] or ""
            same_owner = entry["company_id"] == company_id and entry["bot_id"] == bot_id
            if same_owner and email.casefold() == wanted:
                return entry
        return None

    # -- seeding helpers (no HTTP) -----------------------------------------------------------

    def put_file(self, fields: Mapping[str, Any], send_webhook: bool = False) -> dict[str, Any]:
        """Create or update (by `documentId`) a file entry; return it.

        Required fields are not enforced; `createdAt`/`updatedAt`/`publishedAt`/`id` may be
        given to seed exact values (e.g. for `filters[updatedAt][$gt]` tests).
        """
        return self._put(FILE_MODEL.model, fields, send_webhook)

    def put_preference(
        self, fields: Mapping[str, Any], send_webhook: bool = False
    ) -> dict[str, Any]:
        """Create or update (by `documentId`) a preference entry; return it."""
        return self._put(PREFERENCE_MODEL.model, fields, send_webhook)

    def delete_file_direct(
        self, document_id: str, send_webhook: bool = False
    ) -> dict[str, Any] | None:
        """Delete a file entry without HTTP; return its last entry, or None when absent."""
        return self.delete_entry(FILE_MODEL.model, document_id, send_webhook=send_webhook)

    def delete_preference_direct(
        self, document_id: str, send_webhook: bool = False
    ) -> dict[str, Any] | None:
        """Delete a preference entry without HTTP; return its last entry, or None."""
        return self.delete_entry(PREFERENCE_MODEL.model, document_id, send_webhook=send_webhook)

    def get_file(self, document_id: str) -> dict[str, Any] | None:
        """A file entry, or None."""
        return self.get_entry(FILE_MODEL.model, document_id)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the file entries by documentId."""
        return {e["documentId"]: e for e in self.list_entries(FILE_MODEL.model)}

    @property
    def preferences(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the preference entries by documentId."""
        return {e["documentId"]: e for e in self.list_entries(PREFERENCE_MODEL.model)}

    # -- webhooks ----------------------------------------------------------------------------

    def trigger_test_webhook(self) -> None:
        """Send what the admin panel's "Trigger" button sends: `{"event":"trigger-test"}`."""
        payload = {"event": "trigger-test", "createdAt": iso_ms(datetime.now(UTC))}
        self._submit(payload, {"event": "trigger-test", "model": None, "documentId": None})

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._pending = [f for f in self._pending if not f.done()]
                pending = list(self._pending)
            remaining = deadline - time.monotonic()
            if not pending:
                return True
            if remaining <= 0:
                return False
            wait_futures(pending, timeout=remaining)

    def close(self) -> None:
        """Stop the delivery pool (queued deliveries are dropped; a new one starts on demand)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # -- internals ---------------------------------------------------------------------------

    def _store(self, model: str) -> _Store:
        return self._stores[model]

    def _uses_drafts(self, spec: ModelSpec) -> bool:
        return self.draft_and_publish and spec is FILE_MODEL

    def _tick(self) -> str:
        """Now, in milliseconds, strictly after the previous tick (so updatedAt always moves)."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_tick is not None and now <= self._last_tick:
            now = self._last_tick + timedelta(milliseconds=1)
        self._last_tick = now
        return iso_ms(now)

    def _insert(
        self,
        spec: ModelSpec,
        fields: dict[str, Any],
        document_id: str,
        overrides: Mapping[str, Any] | None,
    ) -> _Record:
        store = self._store(spec.model)
        values = {name: f.default for name, f in spec.fields.items()} | fields
        stamp = self._tick()
        draft_id = store.next_id() if self._uses_drafts(spec) else None
        published = self._tick() if draft_id is not None else stamp
        record = _Record(document_id, store.next_id(), values, stamp, stamp, published, draft_id)
        self._apply_overrides(spec, record, overrides)
        store.records[document_id] = record
        return record

    def _creation_events(self, spec: ModelSpec, record: _Record) -> list[Event]:
        if not self._uses_drafts(spec):
            return [("entry.create", record.entry(spec))]
        return [
            ("entry.create", record.entry(spec, draft=True)),
            ("entry.publish", record.entry(spec)),
        ]

    def _modify(
        self,
        spec: ModelSpec,
        record: _Record,
        fields: dict[str, Any],
        overrides: Mapping[str, Any] | None,
    ) -> list[Event]:
        record.fields.update(fields)
        record.updated_at = self._tick()
        if not self._uses_drafts(spec):
            record.published_at = record.updated_at
            self._apply_overrides(spec, record, overrides)
            return [("entry.update", record.entry(spec))]
        record.id = self._store(spec.model).next_id()
        record.published_at = self._tick()
        self._apply_overrides(spec, record, overrides)
        return [
            ("entry.update", record.entry(spec, draft=True)),
            ("entry.publish", record.entry(spec)),
        ]

    def _apply_overrides(
        self, spec: ModelSpec, record: _Record, overrides: Mapping[str, Any] | None
    ) -> None:
        """Seed system values (`createdAt`, `updatedAt`, `publishedAt`, `id`) verbatim."""
        if not overrides:
            return
        for key, attr in (("createdAt", "created_at"), ("updatedAt", "updated_at")):
            if key in overrides:
                setattr(record, attr, iso_ms(parse_iso(str(overrides[key]))))
        if "publishedAt" in overrides:
            value = overrides["publishedAt"]
            record.published_at = None if value is None else iso_ms(parse_iso(str(value)))
        if "id" in overrides:
            record.id = int(overrides["id"])
            store = self._store(spec.model)
            store.last_id = max(store.last_id, record.id)

    def _put(self, model: str, fields: Mapping[str, Any], send_webhook: bool) -> dict[str, Any]:
        data = {k: v for k, v in fields.items() if k not in SYSTEM_KEYS}
        overrides = {k: v for k, v in fields.items() if k in SYSTEM_KEYS and k != "documentId"}
        document_id = fields.get("documentId")
        with self._lock:
            if document_id and document_id in self._store(model).records:
                entry = self.update_entry(
                    model, document_id, data, send_webhook=send_webhook, overrides=overrides
                )
                assert entry is not None
                return entry
            return self.create_entry(
                model,
                data,
                send_webhook=send_webhook,
                strict=False,
                document_id=document_id,
                overrides=overrides,
            )

    def _emit(self, spec: ModelSpec, events: Iterable[Event]) -> None:
        for event, entry in events:
            payload = {
                "event": event,
                "createdAt": iso_ms(datetime.now(UTC)),
                "model": spec.model,
                "uid": spec.uid,
                "entry": entry,
            }
            meta = {
                "event": event,
                "model": spec.model,
                "documentId": entry["documentId"],
                "id": entry["id"],
            }
            self._submit(payload, meta)

    def _submit(self, payload: dict[str, Any], meta: dict[str, Any]) -> None:
        with self._lock:
            if not self.webhook_url:
                return
            url, headers = self.webhook_url, dict(self.webhook_headers)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(WEBHOOK_WORKERS, "cms-standin-webhook")
            future = self._executor.submit(self._deliver, url, headers, payload, meta)
            self._pending.append(future)

    def _deliver(
        self, url: str, headers: dict[str, str], payload: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        """POST one webhook, once (Strapi never retries), and record the outcome."""
        if self.webhook_jitter > 0:
            time.sleep(random.uniform(0, self.webhook_jitter))
        headers = headers | {"X-Strapi-Event": payload["event"], "Content-Type": "application/json"}
        body = json.dumps(payload, separators=(",", ":"))
        outcome: dict[str, Any]
        try:
            response = requests.post(url, data=body, headers=headers, timeout=self.webhook_timeout)
            outcome = {"status": response.status_code}
        except requests.RequestException as exc:
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
            log.warning("webhook %s to %s failed: %s", payload["event"], url, exc)
        with self._lock:
            self.webhook_deliveries.append(meta | outcome)


# ---------------------------------------------------------------------------------------------
# Query parameters (Strapi's qs syntax)
# ---------------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def nested_query(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`filters[a][$gt]=1` → `{"filters": {"a": {"$gt": "1"}}}`; repeated keys give lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if not match:
            continue
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if last in node:
            previous = node[last]
            node[last] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            node[last] = value
    return root


def _as_list(value: Any) -> list[Any]:
    """A qs array (`[0]=a&[1]=b`, repeated keys or a comma list value) as a Python list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if all(_INT_RE.match(k) for k in value):
            return [value[k] for k in sorted(value, key=int)]
        return [value]
    return [value]


def _query_value(kind: str, raw: Any) -> Any:
    """A filter operand cast to the attribute's kind."""
    text = str(raw)
    try:
        if kind == "datetime":
            return parse_iso(text)
        if kind in ("integer", "biginteger"):
            return int(text)
    except ValueError as exc:
        raise _validation(f"Invalid value {text!r} for a {kind} attribute") from exc
    if kind == "boolean":
        return text.lower() in ("true", "1", "t")
    return text


def _entry_value(kind: str, value: Any) -> Any:
    """An entry's value in the comparable form of `_query_value`."""
    if value is None:
        return None
    if kind == "datetime":
        return parse_iso(value)
    if kind == "biginteger":
        return int(value)
    return value


Predicate = Callable[[dict[str, Any]], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
}

_TEXT: dict[str, Callable[[str, str], bool]] = {
    "$eqi": lambda a, b: a.casefold() == b.casefold(),
    "$nei": lambda a, b: a.casefold() != b.casefold(),
    "$contains": lambda a, b: b in a,
    "$containsi": lambda a, b: b.casefold() in a.casefold(),
    "$startsWith": lambda a, b: a.startswith(b),
    "$endsWith": lambda a, b: a.endswith(b),
}


def _operator(name: str, kind: str, op: str, operand: Any) -> Predicate:
    """A predicate for one `filters[name][op]=operand`."""
    if op in ("$null", "$notNull"):
        want = str(operand).lower() in ("true", "1", "t")
        is_null = op == "$null"
        return lambda e: (e.get(name) is None) == (want if is_null else not want)
    if op in ("$in", "$notIn"):
        values = [_query_value(kind, v) for v in _as_list(operand)]
        inside = op == "$in"
        return lambda e: (_entry_value(kind, e.get(name)) in values) == inside
    if op in _TEXT:
        check, text = _TEXT[op], str(operand)
        return lambda e: e.get(name) is not None and check(str(e.get(name)), text)
    if op in _COMPARE:
        compare, target = _COMPARE[op], _query_value(kind, operand)

        def predicate(entry: dict[str, Any]) -> bool:
            value = _entry_value(kind, entry.get(name))
            return value is not None and compare(value, target)

        return predicate
    raise _invalid_key(op)


def compile_filters(spec: ModelSpec, node: Any) -> Predicate:
    """Validate `filters` eagerly (400 on an unknown key) and return a predicate."""
    if node is None:
        return lambda e: True
    if not isinstance(node, dict):
        raise _validation("Invalid filters parameter")
    kinds = spec.kinds()
    predicates: list[Predicate] = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            subs = [compile_filters(spec, sub) for sub in _as_list(value)]
            combine = all if key == "$and" else any
            predicates.append(lambda e, s=subs, c=combine: c(p(e) for p in s))
        elif key == "$not":
            sub = compile_filters(spec, value)
            predicates.append(lambda e, s=sub: not s(e))
        elif key in kinds:
            ops = value if isinstance(value, dict) else {"$eq": value}
            predicates.extend(_operator(key, kinds[key], op, arg) for op, arg in ops.items())
        else:
            raise _invalid_key(key)
    return lambda e: all(p(e) for p in predicates)


def _sort_items(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict) and not all(_INT_RE.match(k) for k in raw):
        return [f"{key}:{direction}" for key, direction in raw.items()]
    items: list[str] = []
    for item in _as_list(raw):
        items.extend(part.strip() for part in str(item).split(",") if part.strip())
    return items


def sort_entries(spec: ModelSpec, entries: list[dict], raw: Any) -> list[dict]:
    """Apply `sort` (`updatedAt:asc`, `id:desc`, lists of them); default: by id."""
    kinds = spec.kinds()
    keys: list[tuple[str, bool]] = []
    for item in _sort_items(raw):
        name, _, direction = item.partition(":")
        if name not in kinds:
            raise _invalid_key(name)
        if direction.lower() not in ("", "asc", "desc"):
            raise _validation("Invalid order. order can only be one of asc|desc|ASC|DESC")
        keys.append((name, direction.lower() == "desc"))
    result = sorted(entries, key=lambda e: e["id"])
    for name, descending in reversed(keys):
        kind = kinds[name]

        def key(entry: dict, n: str = name, k: str = kind) -> tuple[bool, Any]:
            value = _entry_value(k, entry.get(n))
            return (value is None, value if value is not None else 0)

        result.sort(key=key, reverse=descending)
    return result


def _int_param(params: dict[str, Any], name: str, default: int, minimum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    text = str(raw).strip()
    if not _INT_RE.match(text) or int(text) < minimum:
        bound = "an integer > 0" if minimum > 0 else "an integer >= 0"
        raise _validation(f"Invalid '{name}' parameter. Expected {bound}")
    return int(text)


def paginate(entries: list[dict], raw: Any) -> tuple[list[dict], dict[str, int]]:
    """Apply `pagination[page|pageSize]` or `pagination[start|limit]`; return (page, meta)."""
    params = raw if isinstance(raw, dict) else {}
    total = len(entries)
    if "start" in params or "limit" in params:
        start = _int_param(params, "start", 0, 0)
        limit = params.get("limit")
        size = MAX_PAGE_SIZE if str(limit) == "-1" else _int_param(params, "limit", 25, 1)
        size = min(size, MAX_PAGE_SIZE)
        return entries[start : start + size], {"start": start, "limit": size, "total": total}
    page = _int_param(params, "page", 1, 1)
    size = min(_int_param(params, "pageSize", DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE)
    meta = {"page": page, "pageSize": size, "pageCount": math.ceil(total / size), "total": total}
    return entries[(page - 1) * size : page * size], meta


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    """A compact JSON response, keys in insertion order, as Strapi (koa) writes it."""
    text = json.dumps(body, separators=(",", ":"))
    return Response(text, status=status, content_type="application/json; charset=utf-8")


def _request_data() -> Any:
    """The `data` member of the JSON body (None when absent); 400 on malformed JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise StrapiError(400, "BadRequestError", "Invalid JSON") from exc
    return body.get("data") if isinstance(body, dict) else None


def _list_view(state: CmsState, spec: ModelSpec) -> Response:
    query = nested_query(request.args.items(multi=True))
    predicate = compile_filters(spec, query.get("filters"))
    entries = [e for e in state.list_entries(spec.model) if predicate(e)]
    entries = sort_entries(spec, entries, query.get("sort"))
    page, meta = paginate(entries, query.get("pagination"))
    return _json({"data": page, "meta": {"pagination": meta}})


def _create_view(state: CmsState, spec: ModelSpec) -> Response:
    entry = state.create_entry(spec.model, _request_data())
    return _json({"data": entry, "meta": {}}, 201)


def _get_view(state: CmsState, spec: ModelSpec, document_id: str) -> Response:
    entry = state.get_entry(spec.model, document_id)
    if entry is None:
        raise _not_found()
    return _json({"data": entry, "meta": {}})


def _update_view(state: CmsState, spec: ModelSpec, document_id: str) -> Response:
    entry = state.update_entry(spec.model, document_id, _request_data())
    if entry is None:
        raise _not_found()
    return _json({"data": entry, "meta": {}})


def _delete_view(state: CmsState, spec: ModelSpec, document_id: str) -> Response:
    if state.delete_entry(spec.model, document_id) is None:
        raise _not_found()
    return Response(status=204)


def _by_user_view(
    state: CmsState, spec: ModelSpec, company_id: str, bot_id: str, user_email: str
) -> Response:
    """The custom controller: the stored preference, else the schema defaults."""
    if not (_INT_RE.match(company_id) and _INT_RE.match(bot_id) and user_email.strip()):
        raise StrapiError(400, "BadRequestError", BY_USER_MESSAGE)
    stored = state.find_preference(int(company_id), int(bot_id), user_email)
    if stored is not None:
        return _json({"data": stored, "cache_hit": False, "fallback_applied": False})
    fallback: dict[str, Any] = {
        "company_id": int(company_id),
        "bot_id": int(bot_id),
        "user_email": user_email,
    }
    fallback |= {n: f.default for n, f in spec.fields.items() if n not in fallback}
    return _json({"data": fallback, "cache_hit": False, "fallback_applied": True})


View = Callable[..., Response]

# (method, path under /api/<plural>, route name, view)
_ROUTE_TABLE: list[tuple[str, str, str, View]] = [
    ("GET", "", "{plural}", _list_view),
    ("POST", "", "{plural}", _create_view),
    ("GET", "/<document_id>", "{singular}", _get_view),
    ("PUT", "/<document_id>", "{singular}", _update_view),
    ("DELETE", "/<document_id>", "{singular}", _delete_view),
]
_ROUTE_ALIASES = {
    FILE_MODEL.model: ("files", "file"),
    PREFERENCE_MODEL.model: ("preferences", "preference"),
}
ROUTE_NAMES = frozenset({"files", "file", "preferences", "preference", "by-user"})


def _bind(state: CmsState, spec: ModelSpec, view: View) -> View:
    def bound(**kwargs: str) -> Response:
        return view(state, spec, **kwargs)

    return bound


def _register_routes(app: Flask, state: CmsState) -> None:
    rule = "/api/user-notification-preferences/by-user/<company_id>/<bot_id>/<path:user_email>"
    app.add_url_rule(
        rule, "GET by-user", _bind(state, PREFERENCE_MODEL, _by_user_view), methods=["GET"]
    )
    for spec in MODELS.values():
        plural, singular = _ROUTE_ALIASES[spec.model]
        for method, suffix, name, view in _ROUTE_TABLE:
            route = name.format(plural=plural, singular=singular)
            app.add_url_rule(
                f"/api/{spec.plural}{suffix}",
                f"{method} {route}",
                _bind(state, spec, view),
                methods=[method],
            )


def _authorized(token: str | None) -> bool:
    if not token:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _install_hooks(app: Flask, state: CmsState) -> None:
    @app.before_request
    def count_fault_and_auth() -> Response | None:
        endpoint = request.endpoint or ""
        if " " not in endpoint:
            return None
        method, route = endpoint.split(" ", 1)
        fault = state.record_call(method, route)
        if fault is not None:
            return _json(StrapiError.for_status(fault).body(), fault)
        if not _authorized(state.token):
            return _json(_unauthorized().body(), 401)
        return None

    @app.after_request
    def strapi_headers(response: Response) -> Response:
        response.headers["X-Powered-By"] = "Strapi <strapi.io>"
        return response

    @app.errorhandler(StrapiError)
    def strapi_error(error: StrapiError) -> Response:
        return _json(error.body(), error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        return _json(StrapiError.for_status(status).body(), status)


def create_cms_app(state: CmsState) -> Flask:
    """The Flask app speaking Strapi 5's REST contract for `state`."""
    app = Flask("cms_standin")
    app.url_map.strict_slashes = False
    app.extensions["cms_state"] = state
    _register_routes(app, state)
    _install_hooks(app, state)
    return app


class CmsServer:
    """Runs the stand-in on a real port in a daemon thread; a context manager.

    >>> with CmsServer(CmsState(token="t")) as cms:
    ...     requests.get(f"{cms.url}/api/files", headers={"Authorization": "Bearer t"})
    """

    def __init__(
        self, state: CmsState | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = state if state is not None else CmsState()
        self.app = create_cms_app(self.state)
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321` (the port is known once started)."""
        if self._server is None:
            raise RuntimeError("CmsServer is not running")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> CmsServer:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = make_server(self.host, self.port, self.app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cms-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket, stop the webhook pool."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.state.close()

    def __enter__(self) -> CmsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.cms_standin",
        description="Strapi 5 stand-in (files and user-notification-preferences) for demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1337)
    parser.add_argument(
        "--token",
        default=os.environ.get("CMS_API_TOKEN") or None,
        help="API token clients must send as Bearer (default: $CMS_API_TOKEN; none = open)",
    )
    parser.add_argument("--webhook-url", default=None, help="where to POST entry.* webhooks")
    parser.add_argument(
        "--webhook-token",
        default=os.environ.get("WEBHOOK_TOKEN") or None,
        help="sent as 'Authorization: Bearer …' with each webhook (default: $WEBHOOK_TOKEN)",
    )
    parser.add_argument(
        "--draft-and-publish",
        action="store_true",
        help="file entries behave like a draft & publish content type",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until Ctrl-C or SIGTERM."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    headers = {"Authorization": f"Bearer {args.webhook_token}"} if args.webhook_token else {}
    state = CmsState(
        token=args.token,
        webhook_url=args.webhook_url,
        webhook_headers=headers,
        draft_and_publish=args.draft_and_publish,
    )
    server = make_server(args.host, args.port, create_cms_app(state), threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "CMS stand-in on http://%s:%s (webhooks → %s)",
        args.host,
        server.server_port,
        args.webhook_url or "off",
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.wait_for_webhooks(timeout=5)
        state.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

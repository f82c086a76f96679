"""A Strapi 5 stand-in with only the routes kb-ingest calls, for the tests and the demo.

Routes (bodies, status codes and error shapes as in the Strapi 5.54 captures of
``tests/data/strapi/``; the real Strapi tests in ``tests/test_strapi.py`` cover the contract):

- ``GET /api/files?filters[updatedAt][$gt]=…&sort=…&pagination[page]=…&pagination[pageSize]=…``
  — reconciliation's listing. Any other filter is refused (400): the stand-in does not
  re-implement Strapi's query language.
- ``GET``/``DELETE /api/files/:documentId`` — the pipeline and corrections.
- ``GET /api/user-notification-preferences/by-user/:companyId/:botId/:userEmail`` — the
  project's custom preference lookup (the stored entry, else the schema defaults).
- ``POST /api/files``, ``PUT /api/files/:documentId``, ``POST
  /api/user-notification-preferences`` — what an uploader (or ``make demo``) does.

Every create, update and delete sends a webhook ``{event, createdAt, model, uid, entry}``
with ``X-Strapi-Event`` from a pool of five threads (so the order is not guaranteed), once,
never retried — as Strapi does. Test controls live on :class:`CmsState`: seeding without
HTTP (``put_file``, ``put_preference``), injected faults (``fail_next``; ``fail_for`` an
outage of every route), call counters (``calls``) and the webhook deliveries.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import re
import secrets
import signal
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

FILE = "file"
PREFERENCE = "user-notification-preference"
BOT_SETTING = "bot-notification-setting"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
WEBHOOK_WORKERS = 5
SYSTEM_KEYS = frozenset({"id", "documentId", "createdAt", "updatedAt", "publishedAt"})
#: Attributes of each content type: name → (required, default). ``size_bytes`` is a
#: biginteger, which Strapi answers as a string.
FIELDS: dict[str, dict[str, tuple[bool, Any]]] = {
    FILE: {
        "name": (True, None), "storage_key": (True, None), "company_id": (False, None),
        "bot_id": (False, None), "user_email": (False, None), "size_bytes": (False, None),
        "mime_type": (False, None),
    },
    PREFERENCE: {
        "company_id": (True, None), "bot_id": (True, None), "user_email": (True, None),
        "notification_enabled": (False, True), "batch_size_threshold": (False, 5),
        "notification_delay_minutes": (False, 30), "email_format": (False, "html"),
        "include_success_details": (False, True), "include_error_details": (False, True),
        # Issue 14: quiet hours (and the digest's fields), as in strapi/'s schema.json.
        "timezone": (False, "UTC"), "quiet_hours_start": (False, None),
        "quiet_hours_end": (False, None), "frequency": (False, "immediate"),
        "digest_hour_local": (False, 8),
    },
    BOT_SETTING: {
        "company_id": (True, None), "bot_id": (True, None), "notification_channels": (False, []),
    },
}
#: Strapi's ``time`` attributes (see :func:`_strapi_time`).
TIME_FIELDS = frozenset({"quiet_hours_start", "quiet_hours_end"})
_TIME = re.compile(r"^(2[0-3]|[01]\d):([0-5]\d):([0-5]\d)(?:\.(\d{1,3}))?$")  # Strapi's
#: Route names, as counted in ``CmsState.calls`` (``"<METHOD> <route>"``) and for faults.
ROUTES = frozenset({"files", "file", "preferences", "by-user", "bot-settings"})
BY_USER_MESSAGE = "companyId and botId must be integers and userEmail must be set"
ERROR_NAMES = {400: "BadRequestError", 401: "UnauthorizedError", 404: "NotFoundError",
               429: "RateLimitError", 500: "InternalServerError"}


class StrapiError(Exception):
    """An error answered as Strapi's ``{"data": null, "error": {…}}`` body."""

    def __init__(self, status: int, message: str | None = None, *, name: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        phrase = HTTP_STATUS_CODES.get(status, "Error")
        self.status = status
        self.name = name or ERROR_NAMES.get(status) or phrase.title().replace(" ", "") + "Error"
        self.message = message or phrase
        self.details = details or {}
        super().__init__(self.message)

    def response(self) -> Response:
        """The JSON response."""
        error = {"status": self.status, "name": self.name, "message": self.message,
                 "details": self.details}
        return _json({"data": None, "error": error}, self.status)


def _validation(message: str, details: dict[str, Any] | None = None) -> StrapiError:
    return StrapiError(400, message, name="ValidationError", details=details)


def iso_ms(moment: datetime) -> str:
    """Strapi's timestamp format: ``2026-11-23T08:58:07.322Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """An ISO timestamp as an aware UTC datetime (naive means UTC); ValueError if invalid."""
    moment = datetime.fromisoformat(value.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def new_document_id() -> str:
    """24 lowercase alphanumerics starting with a letter, like Strapi's cuid2."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(23))


def validate(model: str, data: Any, *, creating: bool) -> dict[str, Any]:
    """The attributes of a ``data`` payload; a 400 like Strapi's for what kb-ingest could
    get wrong (no payload, an unknown key, a missing required attribute)."""
    if not isinstance(data, dict):
        raise _validation('Missing "data" payload in the request body')
    fields = FIELDS[model]
    unknown = [key for key in data if key not in fields and key not in SYSTEM_KEYS]
    if unknown:
        raise _validation(f"Invalid key {unknown[0]}", {"key": unknown[0], "path": unknown[0]})
    missing = [name for name, (required, _) in fields.items()
               if creating and required and data.get(name) is None]
    if missing:
        errors = [{"path": [name], "message": f"{name} must be defined.",
                   "name": "ValidationError"} for name in missing]
        message = errors[0]["message"] if len(errors) == 1 else f"{len(errors)} errors occurred"
        raise _validation(message, {"errors": errors})
    clean = {key: value for key, value in data.items() if key in fields}
    if clean.get("size_bytes") is not None:
        clean["size_bytes"] = str(int(clean["size_bytes"]))
    for name in TIME_FIELDS & clean.keys():
        clean[name] = _strapi_time(name, clean[name])
    return clean


def _strapi_time(name: str, value: Any) -> str | None:
    """A ``time`` as Strapi 5 on PostgreSQL answers it: seconds required on input (else a
    400 with Strapi's message), milliseconds kept, and read back as PostgreSQL prints a
    ``time(3)``: ``22:00:00``, ``06:30:15.5``."""
    if value is None:
        return None
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _validation("Invalid time format, expected HH:mm:ss.SSS")
    fraction = (match[4] or "").ljust(3, "0").rstrip("0")
    return f"{match[1]}:{match[2]}:{match[3]}" + (f".{fraction}" if fraction else "")


class CmsState:
    """Entries, call counters, injected faults and webhook deliveries, behind one lock."""

    def __init__(self, token: str | None = None, webhook_url: str | None = None,
                 webhook_headers: Mapping[str, str] | None = None, *,
                 webhook_timeout: float = 10.0) -> None:
        self.token = token
        self.webhook_url = webhook_url
        self.webhook_headers = dict(webhook_headers or {})
        self.webhook_timeout = webhook_timeout
        self.calls: Counter[str] = Counter()
        self.webhook_deliveries: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._entries: dict[str, dict[str, dict[str, Any]]] = {
            FILE: {}, PREFERENCE: {}, BOT_SETTING: {}}
        self._last_id = 0
        self._last_tick: datetime | None = None
        self._faults: dict[str, list[int]] = {}
        self._outage: tuple[float, int] = (0.0, 503)  # (until, monotonic; status)
        self._pool = ThreadPoolExecutor(WEBHOOK_WORKERS, "cms-standin-webhook")
        self._pending: list[Future[None]] = []

    # -- test controls -----------------------------------------------------------------------

    def configure_webhook(self, url: str | None, headers: Mapping[str, str] | None = None) -> None:
        """Set (or, with None, remove) the webhook target and its extra headers."""
        with self._lock:
            self.webhook_url, self.webhook_headers = url, dict(headers or {})

    def fail_next(self, route: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``route`` (``"by-user"``, any method, or
        ``"<METHOD> <route>"``) with ``status`` and a Strapi error body."""
        if route.split(" ", 1)[-1] not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {sorted(ROUTES)}")
        with self._lock:
            self._faults.setdefault(route, []).extend([status] * times)

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Answer every request to every route with ``status`` for the next ``seconds``
        (an outage: nothing is created, read or deleted meanwhile)."""
        with self._lock:
            self._outage = (time.monotonic() + seconds, status)

    def clear_faults(self) -> None:
        """Drop every pending injected fault, and end an outage."""
        with self._lock:
            self._faults.clear()
            self._outage = (0.0, 503)

    def record_call(self, method: str, route: str) -> int | None:
        """Count a request; the injected fault status to answer with, if any."""
        with self._lock:
            self.calls[f"{method} {route}"] += 1
            until, status = self._outage
            if time.monotonic() < until:
                return status
            queue = self._faults.get(f"{method} {route}") or self._faults.get(route)
            return queue.pop(0) if queue else None

    def put_file(self, fields: Mapping[str, Any], send_webhook: bool = False) -> dict[str, Any]:
        """Create, or update by ``documentId``, a file entry without HTTP; return it.

        Required attributes are not enforced; ``id``, ``createdAt``, ``updatedAt`` and
        ``publishedAt`` may be given to seed exact values.
        """
        return self.save(FILE, fields, send_webhook=send_webhook)

    def put_preference(self, fields: Mapping[str, Any], send_webhook: bool = False
                       ) -> dict[str, Any]:
        """Create, or update by ``documentId``, a preference entry without HTTP; return it."""
        return self.save(PREFERENCE, fields, send_webhook=send_webhook)

    def put_bot_setting(self, company_id: int, bot_id: int, channels: list[Any],
                        send_webhook: bool = False) -> dict[str, Any]:
        """Set a bot's ``notification_channels`` (one entry per company and bot)."""
        with self._lock:
            found = next((doc for doc, e in self._entries[BOT_SETTING].items()
                          if (e["company_id"], e["bot_id"]) == (company_id, bot_id)), None)
        fields = {"company_id": company_id, "bot_id": bot_id, "notification_channels": channels}
        if found:
            fields["documentId"] = found
        return self.save(BOT_SETTING, fields, send_webhook=send_webhook)  # type: ignore[return-value]

    def bot_settings(self, company_id: int | None, bot_id: int | None) -> list[dict[str, Any]]:
        """The bot setting entries matching the filters (None: any)."""
        with self._lock:
            return [dict(e) for e in self._entries[BOT_SETTING].values()
                    if company_id in (None, e["company_id"]) and bot_id in (None, e["bot_id"])]

    def get_file(self, document_id: str) -> dict[str, Any] | None:
        """A file entry, or None."""
        return self.files.get(document_id)

    def delete_file_direct(self, document_id: str, send_webhook: bool = False
                           ) -> dict[str, Any] | None:
        """Delete a file entry without HTTP; its last state, or None when absent."""
        return self.delete(FILE, document_id, send_webhook=send_webhook)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the file entries by ``documentId``."""
        with self._lock:
            return {doc: dict(entry) for doc, entry in self._entries[FILE].items()}

    # -- entries -----------------------------------------------------------------------------

    def save(self, model: str, fields: Mapping[str, Any], *, send_webhook: bool = True,
             must_exist: bool = False) -> dict[str, Any] | None:
        """Create an entry, or update the one whose ``documentId`` ``fields`` names; return it
        (None when ``must_exist`` and there is none). Attributes are validated; system keys
        (``id``, timestamps) are taken as given."""
        data = validate(model, {k: v for k, v in fields.items() if k not in SYSTEM_KEYS},
                        creating=False)
        with self._lock:
            stamp = self._tick()
            entry = self._entries[model].get(fields.get("documentId", ""))
            event = "entry.update"
            if entry is None:
                if must_exist:
                    return None
                self._last_id += 1
                document_id = fields.get("documentId") or new_document_id()
                event, entry = "entry.create", {
                    "id": self._last_id, "documentId": document_id,
                    **{name: default for name, (_, default) in FIELDS[model].items()},
                    "createdAt": stamp}
                self._entries[model][entry["documentId"]] = entry
            entry |= data | {"updatedAt": stamp, "publishedAt": stamp}
            for key, value in fields.items():
                if key == "id":
                    entry["id"] = int(value)
                    self._last_id = max(self._last_id, entry["id"])
                elif key in ("createdAt", "updatedAt", "publishedAt"):
                    entry[key] = None if value is None else iso_ms(parse_iso(str(value)))
            snapshot = dict(entry)
        if send_webhook:
            self._emit(event, model, snapshot)
        return snapshot

    def delete(self, model: str, document_id: str, *, send_webhook: bool = True
               ) -> dict[str, Any] | None:
        """Delete an entry; its last state, or None when absent."""
        with self._lock:
            entry = self._entries[model].pop(document_id, None)
        if entry is not None and send_webhook:
            self._emit("entry.delete", model, entry)
        return entry

    def file_page(self, updated_after: datetime | None, sort: list[tuple[str, bool]],
                  page: int, size: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """One page of file entries updated after ``updated_after``; ``(data, pagination)``."""
        entries = sorted((e for e in self.files.values() if updated_after is None
                          or parse_iso(e["updatedAt"]) > updated_after), key=lambda e: e["id"])
        for key, descending in reversed(sort):  # stable sorts: the first key decides first
            entries.sort(key=lambda e, k=key: (e.get(k) is None, e.get(k) or 0),
                         reverse=descending)
        meta = {"page": page, "pageSize": size, "pageCount": math.ceil(len(entries) / size),
                "total": len(entries)}
        return entries[(page - 1) * size:page * size], meta

    def find_preference(self, company_id: int, bot_id: int, user_email: str
                        ) -> dict[str, Any] | None:
        """The stored preference of a user (e-mail compared case-insensitively), or None."""
        with self._lock:
            return next((dict(e) for e in self._entries[PREFERENCE].values()
                         if (e["company_id"], e["bot_id"]) == (company_id, bot_id)
                         and (e["user_email"] or "").casefold() == user_email.casefold()), None)

    # -- webhooks ----------------------------------------------------------------------------

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has finished; False on timeout."""
        with self._lock:
            pending, self._pending = self._pending, []
        not_done = wait_futures(pending, timeout=timeout).not_done
        with self._lock:
            self._pending.extend(not_done)
        return not not_done

    def close(self) -> None:
        """Stop the delivery pool (queued deliveries are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _tick(self) -> str:
        """Now in milliseconds, strictly after the previous tick (``updatedAt`` always moves)."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_tick is not None and now <= self._last_tick:
            now = self._last_tick + timedelta(milliseconds=1)
        self._last_tick = now
        return iso_ms(now)

    def _emit(self, event: str, model: str, entry: dict[str, Any]) -> None:
        payload = {"event": event, "createdAt": iso_ms(datetime.now(UTC)), "model": model,
                   "uid": f"api::{model}.{model}", "entry": entry}
        with self._lock:
            if self.webhook_url:
                self._pending.append(self._pool.submit(
                    self._deliver, self.webhook_url, dict(self.webhook_headers), payload))

    def _deliver(self, url: str, headers: dict[str, str], payload: dict[str, Any]) -> None:
        """POST one webhook, once (Strapi never retries), and record the outcome."""
        headers |= {"X-Strapi-Event": payload["event"], "Content-Type": "application/json"}
        outcome: dict[str, Any] = {"event": payload["event"], "model": payload["model"],
                                   "documentId": payload["entry"]["documentId"]}
        try:
            response = requests.post(url, data=json.dumps(payload, separators=(",", ":")),
                                     headers=headers, timeout=self.webhook_timeout)
            outcome["status"] = response.status_code
        except requests.RequestException as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("webhook %s to %s failed: %s", payload["event"], url, exc)
        with self._lock:
            self.webhook_deliveries.append(outcome)


# -- HTTP -------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    """Compact JSON, keys in insertion order, as Strapi (koa) writes it."""
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json; charset=utf-8")


def _entry_response(entry: dict[str, Any] | None, status: int = 200) -> Response:
    if entry is None:
        raise StrapiError(404)
    return _json({"data": entry, "meta": {}}, status)


def _request_data() -> Any:
    """The ``data`` member of the JSON body (None when absent); 400 on malformed JSON."""
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        raise StrapiError(400, "Invalid JSON") from None
    return body.get("data") if isinstance(body, dict) else None


def _positive(name: str, default: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise _validation(f"Invalid '{name}' parameter. Expected an integer > 0")
    return int(raw)


def _list_files(state: CmsState) -> Response:
    """Reconciliation's listing: one ``updatedAt $gt`` filter, a sort, page pagination."""
    allowed = {"filters[updatedAt][$gt]", "sort", "pagination[page]", "pagination[pageSize]"}
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise _validation(f"Invalid key {unknown[0]} (the stand-in knows only what kb-ingest "
                          f"sends: {sorted(allowed)})")
    after = request.args.get("filters[updatedAt][$gt]")
    try:
        moment = parse_iso(after) if after is not None else None
    except ValueError:
        raise _validation(f"Invalid value {after!r} for updatedAt") from None
    sort = []
    for item in filter(None, request.args.get("sort", "").split(",")):
        key, _, direction = item.strip().partition(":")
        if key not in SYSTEM_KEYS | set(FIELDS[FILE]) or direction not in ("", "asc", "desc"):
            raise _validation(f"Invalid sort {item!r}")
        sort.append((key, direction == "desc"))
    size = min(_positive("pagination[pageSize]", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
    data, meta = state.file_page(moment, sort, _positive("pagination[page]", 1), size)
    return _json({"data": data, "meta": {"pagination": meta}})


def _list_bot_settings(state: CmsState) -> Response:
    """``GET /api/bot-notification-settings`` with ``$eq`` filters on company and bot."""
    allowed = {"filters[company_id][$eq]", "filters[bot_id][$eq]", "pagination[pageSize]"}
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise _validation(f"Invalid key {unknown[0]}")
    ids = []
    for name in ("filters[company_id][$eq]", "filters[bot_id][$eq]"):
        raw = request.args.get(name)
        if raw is not None and not raw.isdigit():
            raise _validation(f"Invalid value {raw!r} for {name}")
        ids.append(int(raw) if raw is not None else None)
    size = min(_positive("pagination[pageSize]", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
    data = state.bot_settings(*ids)
    meta = {"page": 1, "pageSize": size, "pageCount": math.ceil(len(data) / size),
            "total": len(data)}
    return _json({"data": data[:size], "meta": {"pagination": meta}})


def _by_user(state: CmsState, company_id: str, bot_id: str, user_email: str) -> Response:
    """The custom controller: the stored preference, else the schema defaults."""
    if not (company_id.isdigit() and bot_id.isdigit() and user_email.strip()):
        raise StrapiError(400, BY_USER_MESSAGE)
    stored = state.find_preference(int(company_id), int(bot_id), user_email)
    if stored is not None:
        return _json({"data": stored, "cache_hit": False, "fallback_applied": False})
    data: dict[str, Any] = {"company_id": int(company_id), "bot_id": int(bot_id),
                            "user_email": user_email}
    data |= {name: default for name, (_, default) in FIELDS[PREFERENCE].items()
             if name not in data}
    return _json({"data": data, "cache_hit": False, "fallback_applied": True})


def create_cms_app(state: CmsState) -> Flask:
    """The Flask app answering kb-ingest's Strapi 5 calls from ``state``."""
    app = Flask("cms_standin")
    app.url_map.strict_slashes = False
    routes: list[tuple[str, str, str, Callable[..., Response]]] = [
        ("GET", "/api/files", "files", lambda: _list_files(state)),
        ("POST", "/api/files", "files", lambda: _entry_response(
            state.save(FILE, validate(FILE, _request_data(), creating=True)), 201)),
        ("GET", "/api/files/<document_id>", "file",
         lambda document_id: _entry_response(state.get_file(document_id))),
        ("PUT", "/api/files/<document_id>", "file", lambda document_id: _entry_response(
            state.save(FILE, {**validate(FILE, _request_data(), creating=False),
                              "documentId": document_id}, must_exist=True))),
        ("DELETE", "/api/files/<document_id>", "file", lambda document_id: (
            Response(status=204) if state.delete(FILE, document_id) else _entry_response(None))),
        ("POST", "/api/user-notification-preferences", "preferences", lambda: _entry_response(
            state.save(PREFERENCE, validate(PREFERENCE, _request_data(), creating=True)), 201)),
        ("GET", "/api/user-notification-preferences/by-user/<company_id>/<bot_id>/"
                "<path:user_email>", "by-user",
         lambda **kwargs: _by_user(state, **kwargs)),
        ("GET", "/api/bot-notification-settings", "bot-settings",
         lambda: _list_bot_settings(state)),
        ("POST", "/api/bot-notification-settings", "bot-settings", lambda: _entry_response(
            state.save(BOT_SETTING, validate(BOT_SETTING, _request_data(), creating=True)),
            201)),
    ]
    for method, rule, route, view in routes:
        app.add_url_rule(rule, f"{method} {route}", view, methods=[method])

    @app.before_request
    def count_fault_and_auth() -> Response | None:
        if " " not in (request.endpoint or ""):
            return None
        fault = state.record_call(*request.endpoint.split(" ", 1))  # type: ignore[union-attr]
        if fault is not None:
            return StrapiError(fault).response()
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if state.token and not (scheme.lower() == "bearer"
                                and hmac.compare_digest(value.strip(), state.token)):
            return StrapiError(401, "Missing or invalid credentials").response()
        return None

    @app.after_request
    def powered_by(response: Response) -> Response:
        response.headers["X-Powered-By"] = "Strapi <strapi.io>"
        return response

    app.register_error_handler(StrapiError, StrapiError.response)
    app.register_error_handler(
        HTTPException, lambda error: StrapiError(error.code or 500).response())
    return app


class CmsServer:
    """The stand-in on a real port, served from a daemon thread; a context manager."""

    def __init__(self, state: CmsState | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state = state if state is not None else CmsState()
        self._server: BaseWSGIServer = make_server(host, port, create_cms_app(self.state),
                                                   threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="cms-standin", daemon=True)

    def __enter__(self) -> CmsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.state.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m devtools.cms_standin``: serve in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devtools.cms_standin",
                                     description="Strapi 5 stand-in for the demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1337)
    parser.add_argument("--token", default=os.environ.get("CMS_API_TOKEN") or None,
                        help="the Bearer token clients must send (default: $CMS_API_TOKEN)")
    parser.add_argument("--webhook-url", help="where to POST entry.* webhooks")
    parser.add_argument("--webhook-token", default=os.environ.get("WEBHOOK_TOKEN") or None,
                        help="sent as 'Authorization: Bearer …' with each webhook")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    headers = {"Authorization": f"Bearer {args.webhook_token}"} if args.webhook_token else {}
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before any thread starts: sigwait gets them
    with CmsServer(CmsState(args.token, args.webhook_url, headers), host=args.host,
                   port=args.port) as server:
        log.info("CMS stand-in on %s (webhooks → %s)", server.url, args.webhook_url or "off")
        signal.sigwait(stop)
        server.state.wait_for_webhooks(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

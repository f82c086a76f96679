"""The operator's status pages under ``/status`` (server-rendered, read-only).

Authentication: ``STATUS_TOKEN`` only, never the webhook credentials, as
``Authorization: Bearer <token>`` or as the password of HTTP basic auth with any user name
(so a browser can log in). Compared in constant time. Unset, the pages do not exist (404).
Every page reads through :mod:`ingest.status_view`.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from ingest.db import session_scope
from ingest.models import BATCH_STATUSES
from ingest.status_view import (
    BadParameter,
    batch_detail,
    document_history,
    failures_by_category,
    held_corrections,
    parse_batch_query,
    parse_failure_query,
    recent_batches,
)

bp = Blueprint("status", __name__, template_folder="templates")
REALM = 'Basic realm="kb-ingest status"'
# Inline CSS only; no scripts, no frames, nothing fetched from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _presented_secret() -> str | None:
    auth = request.authorization
    if auth is None:
        return None
    if auth.type == "bearer":
        return auth.token
    if auth.type == "basic":
        return auth.password
    return None


def _authorized(token: str) -> bool:
    given = _presented_secret()
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@bp.before_request
def _authenticate() -> Response | None:
    token = current_app.extensions["kb_settings"].status_token
    if not token:
        return _page("status/error.html", 404, title="Not found",
                     message="The status page is not enabled (STATUS_TOKEN is unset).")
    if not _authorized(token):
        response = _page("status/error.html", 401, title="Log in required",
                         message="Log in with any user name and the STATUS_TOKEN as password.")
        response.headers["WWW-Authenticate"] = REALM
        return response
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.errorhandler(BadParameter)
def _bad_parameter(exc: BadParameter) -> Response:
    return _page("status/error.html", 400, title="Bad request",
                 message=f"Invalid parameter {exc.name}: {exc.message}.", field=exc.name)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _page("status/error.html", exc.code or 500, title=exc.name, message=exc.description)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return Response(render_template(template, **context), status=status,
                    mimetype="text/html")


@bp.app_template_filter("utc")
def _utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "–"


@bp.app_template_filter("secs")
def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes} min {seconds} s"


@bp.get("/status")
def index() -> Response:
    """Recent batches (filter form, pages), failures by category, held corrections."""
    flt, page, per_page = parse_batch_query(request.args)
    with session_scope() as s:
        batches = recent_batches(s, flt, page, per_page)
        failures = failures_by_category(s, 24, "hour")
        held = held_corrections(s, limit=20)
    return _page("status/index.html", batches=batches, failures=failures, held=held,
                 statuses=BATCH_STATUSES, per_page=per_page)


@bp.get("/status/batches/<batch_id>")
def batch(batch_id: str) -> Response:
    """One batch: files with stages, errors with suggestions, corrections, e-mails."""
    try:
        key = uuid.UUID(batch_id)
    except ValueError:
        return _page("status/error.html", 404, title="Not found",
                     message="There is no batch with this id.")
    with session_scope() as s:
        detail = batch_detail(s, key)
    if detail is None:
        return _page("status/error.html", 404, title="Not found",
                     message="There is no batch with this id.")
    return _page("status/batch.html", d=detail)


@bp.get("/status/failures")
def failures() -> Response:
    """Final failures of every uploader by category, per hour or day (``hours``, ``bucket``)."""
    hours, bucket = parse_failure_query(request.args)
    with session_scope() as s:
        report = failures_by_category(s, hours, bucket)
    return _page("status/failures.html", failures=report)


@bp.get("/status/corrections")
def corrections() -> Response:
    """The correction breaker and every held correction (up to 1,000)."""
    with session_scope() as s:
        held = held_corrections(s, limit=1000)
    return _page("status/corrections.html", held=held)


@bp.get("/status/documents/<document_id>")
def document(document_id: str) -> Response:
    """One CMS document: its events with stages, batch files, errors, corrections."""
    if not document_id or len(document_id) > 255 or "\x00" in document_id:
        return _page("status/error.html", 404, title="Not found",
                     message="There is no document with this id.")
    with session_scope() as s:
        history = document_history(s, document_id)
    if not history.found:
        return _page("status/error.html", 404, title="Not found",
                     message="kb-ingest has seen no event of this document.")
    return _page("status/document.html", h=history)

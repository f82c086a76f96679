"""Status API: ``GET /api/batches/<batch_id>`` and ``GET /api/batches?user_email=…``.

Same authentication as the webhooks (Bearer token or HMAC over the empty body). The answers
are built from the pydantic models below, which are also what ``/openapi.json`` describes.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel
from sqlalchemy import select

from ingest.db import session_scope
from ingest.models import BatchFile, BatchProcessingSession, EmailNotificationLog
from webhooks.auth import AuthError, authenticate

bp = Blueprint("batches_api", __name__)
MAX_LIST = 100


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class BatchSummary(BaseModel):
    """A batch: who uploaded, its status and counters, its times (ISO 8601, UTC)."""

    batch_id: str
    company_id: int
    bot_id: int
    user_email: str
    status: str
    total_files: int
    successful_files: int
    failed_files: int
    started_at: str | None
    sealed_at: str | None
    close_at: str | None
    ended_at: str | None
    notification_sent: bool
    notification_sent_at: str | None


class BatchFileState(BaseModel):
    """One file of a batch and its outcome."""

    document_id: str
    name: str
    status: str
    chunks: int
    error_category: str | None
    error_message: str | None


class BatchEmailState(BaseModel):
    """The batch's e-mail and its sending state."""

    type: str
    status: str
    attempts: int
    sent_at: str | None
    message_id: str | None


class BatchDetail(BatchSummary):
    """``GET /api/batches/<batch_id>``: the batch with its files and e-mails."""

    files: list[BatchFileState]
    emails: list[BatchEmailState]


class BatchList(BaseModel):
    """``GET /api/batches``: the uploader's newest batches."""

    data: list[BatchSummary]


def _summary(batch: BatchProcessingSession) -> BatchSummary:
    return BatchSummary(
        batch_id=str(batch.batch_id), company_id=batch.company_id,
        bot_id=batch.bot_id, user_email=batch.user_email, status=batch.status,
        total_files=batch.total_files, successful_files=batch.successful_files,
        failed_files=batch.failed_files, started_at=_iso(batch.batch_start_time),
        sealed_at=_iso(batch.sealed_at), close_at=_iso(batch.close_at),
        ended_at=_iso(batch.batch_end_time), notification_sent=batch.notification_sent,
        notification_sent_at=_iso(batch.notification_sent_at),
    )


def _denied() -> tuple[Response, int] | None:
    try:
        authenticate(request.headers, request.get_data(cache=True),
                     current_app.extensions["kb_settings"])
    except AuthError as exc:
        return jsonify({"status": "rejected", "error": str(exc)}), 401
    return None


@bp.get("/api/batches/<batch_id>")
def get_batch(batch_id: str) -> tuple[Response, int]:
    """One batch with its files and its e-mail's state."""
    if (denied := _denied()) is not None:
        return denied
    try:
        key = uuid.UUID(batch_id)
    except ValueError:
        return jsonify({"status": "rejected", "error": "invalid batch id",
                        "field": "batch_id"}), 400
    with session_scope() as s:
        batch = s.execute(select(BatchProcessingSession)
                          .where(BatchProcessingSession.batch_id == key)).scalar_one_or_none()
        if batch is None:
            return jsonify({"status": "not_found"}), 404
        files = s.execute(select(BatchFile).where(BatchFile.batch_id == key)
                          .order_by(BatchFile.id)).scalars().all()
        emails = s.execute(select(EmailNotificationLog)
                           .where(EmailNotificationLog.batch_id == key)).scalars().all()
        body = BatchDetail(
            **_summary(batch).model_dump(),
            files=[BatchFileState(
                document_id=f.file_document_id, name=f.file_name, status=f.processing_status,
                chunks=f.chunks_created, error_category=f.error_category,
                error_message=f.error_message) for f in files],
            emails=[BatchEmailState(
                type=e.email_type, status=e.send_status, attempts=e.send_attempts,
                sent_at=_iso(e.sent_at), message_id=e.message_id) for e in emails],
        )
    return jsonify(body.model_dump()), 200


@bp.get("/api/batches")
def list_batches() -> tuple[Response, int]:
    """The newest batches of one uploader (``user_email`` required, case-insensitive)."""
    if (denied := _denied()) is not None:
        return denied
    email = (request.args.get("user_email") or "").strip().lower()
    if not email:
        return jsonify({"status": "rejected", "error": "user_email is required",
                        "field": "user_email"}), 400
    if "\x00" in email:  # no PostgreSQL text holds one: no batch can match
        return jsonify({"status": "rejected", "error": "user_email holds a NUL character",
                        "field": "user_email"}), 400
    try:
        limit = min(MAX_LIST, max(1, int(request.args.get("limit", 20))))
    except ValueError:
        return jsonify({"status": "rejected", "error": "limit must be an integer",
                        "field": "limit"}), 400
    with session_scope() as s:
        rows = s.execute(select(BatchProcessingSession)
                         .where(BatchProcessingSession.user_email == email)
                         .order_by(BatchProcessingSession.batch_start_time.desc())
                         .limit(limit)).scalars().all()
        return jsonify(BatchList(data=[_summary(b) for b in rows]).model_dump()), 200

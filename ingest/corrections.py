"""Auto-correction: remove what is left of a finally failed file from S3, the CMS and Chroma.

Rules (DESIGN §4):

- One ``auto_correction_tasks`` row per failed file, planned in the same transaction that
  fails the file, with actions by category: ``file_not_found → [cms_delete,
  chroma_delete]``, ``s3_error → [s3_delete, cms_delete]``, ``processing_error → [s3_delete,
  cms_delete, chroma_delete]``, ``storage_error → [chroma_delete]``.
- Corrections are planned for *permanent* failures only (the file itself is missing,
  corrupt, unsupported or refused). A file that failed because a dependency stayed
  unreachable through every retry keeps its unresolved ``processing_errors`` row for an
  operator: deleting a user's file because our CMS or S3 was down would lose data.
- Every action is idempotent (already gone counts as done); its ``*_cleanup_completed`` flag
  is committed as soon as it is done, so a retry skips it; every step is appended to
  ``execution_log``. Failures retry with backoff up to ``MAX_CORRECTION_ATTEMPTS``; then the
  row is ``failed`` with ``error_during_correction`` and the operator is alerted.
- Guard: under the document's advisory lock (the same lock the storage stage takes), a
  correction whose document has a newer event is skipped: a newer upload wins.
- ``ENABLE_AUTO_CORRECTION=false`` records the plan and acts on nothing.
- Our own CMS delete comes back as an ``entry.delete`` webhook, which only removes chunks
  that are already gone: no error rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from ingest.adapters.cms import CmsClient
from ingest.adapters.s3 import S3Store
from ingest.adapters.vectors import VectorStore
from ingest.db import get_engine, session_scope
from ingest.errors import (
    FILE_NOT_FOUND,
    PROCESSING_ERROR,
    S3_ERROR,
    STORAGE_ERROR,
    FileNotFound,
)
from ingest.models import AutoCorrectionTask, FileEvent, ProcessingError
from ingest.retry import backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)

S3_DELETE, CMS_DELETE, CHROMA_DELETE = "s3_delete", "cms_delete", "chroma_delete"
ACTIONS: dict[str, list[str]] = {
    FILE_NOT_FOUND: [CMS_DELETE, CHROMA_DELETE],
    S3_ERROR: [S3_DELETE, CMS_DELETE],
    PROCESSING_ERROR: [S3_DELETE, CMS_DELETE, CHROMA_DELETE],
    STORAGE_ERROR: [CHROMA_DELETE],
}
FLAGS = {S3_DELETE: "s3_cleanup_completed", CMS_DELETE: "cms_cleanup_completed",
         CHROMA_DELETE: "chroma_cleanup_completed"}


@dataclass
class CorrectionServices:
    """The stores a correction acts on."""

    settings: Settings
    s3: S3Store
    cms: CmsClient
    vectors: VectorStore


@dataclass(frozen=True)
class CorrectionOutcome:
    """``completed``, ``skipped`` (newer version), ``failed``, ``retry`` or ``nothing``."""

    status: str
    batch_id: Any = None
    retry_in: float = 0.0
    detail: str = ""


def plan_correction(
    s: Session, *, event_id: int, document_id: str, batch_id: Any, category: str,
    message: str, entry: dict[str, Any],
) -> int:
    """Insert the correction row for a failed file (in the failing transaction)."""
    row = AutoCorrectionTask(
        file_document_id=document_id, file_event_id=event_id, batch_id=batch_id,
        file_name=entry.get("name"), storage_key=entry.get("storage_key"),
        company_id=_int_or_none(entry.get("company_id")),
        bot_id=_int_or_none(entry.get("bot_id")),
        failure_category=category, original_error_message=message[:4000] or category,
        correction_actions=ACTIONS.get(category, [S3_DELETE, CMS_DELETE, CHROMA_DELETE]),
        execution_log=[_entry("planned", f"actions for {category}")],
    )
    s.add(row)
    s.flush()
    return row.id


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _entry(step: str, detail: str, ok: bool = True) -> dict[str, Any]:
    return {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "step": step,
            "ok": ok, "detail": detail}


def _append(s: Session, task_id: int, *entries: dict[str, Any], **values: Any) -> None:
    """Append to ``execution_log`` (and set ``values``) in one UPDATE."""
    s.execute(
        update(AutoCorrectionTask).where(AutoCorrectionTask.id == task_id).values(
            execution_log=AutoCorrectionTask.execution_log.op("||")(
                bindparam(None, list(entries), type_=JSONB)),
            **values,
        )
    )


def _claim(task_id: int) -> AutoCorrectionTask | None:
    with session_scope() as s:
        return s.execute(
            update(AutoCorrectionTask)
            .where(AutoCorrectionTask.id == task_id,
                   AutoCorrectionTask.status.in_(("pending", "processing")))
            .values(status="processing", attempts=AutoCorrectionTask.attempts + 1,
                    started_at=func.coalesce(AutoCorrectionTask.started_at, func.now()))
            .returning(AutoCorrectionTask)
        ).scalar_one_or_none()


@contextmanager
def document_lock(document_id: str) -> Iterator[None]:
    """Hold the document's advisory lock across several short transactions."""
    with get_engine().connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:d, 0))"),
                     {"d": document_id})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:d, 0))"),
                         {"d": document_id})
            conn.commit()


def _superseded(task: AutoCorrectionTask) -> bool:
    """Whether a newer event of the document exists (its outcome governs)."""
    with session_scope() as s:
        failed_at = s.execute(select(FileEvent.entry_updated_at)
                              .where(FileEvent.id == task.file_event_id)).scalar_one_or_none()
        if failed_at is None:
            return False
        return s.execute(
            select(FileEvent.id).where(
                FileEvent.document_id == task.file_document_id,
                FileEvent.id != task.file_event_id,
                FileEvent.entry_updated_at > failed_at,
                FileEvent.event.in_(("entry.create", "entry.update", "entry.publish")),
                FileEvent.status != "ignored",
            ).limit(1)
        ).first() is not None


def _storage_key(task: AutoCorrectionTask, cms: CmsClient) -> str | None:
    if task.storage_key:
        return task.storage_key
    try:
        return cms.get_file(task.file_document_id).get("storage_key")
    except FileNotFound:
        return None


def _act(action: str, task: AutoCorrectionTask, svc: CorrectionServices) -> str:
    """Run one action; returns what happened. Raises if it could not be done."""
    if action == S3_DELETE:
        key = _storage_key(task, svc.cms)
        if key is None:
            return "storage key unknown (CMS entry gone): nothing to delete"
        svc.s3.delete(key)
        return f"deleted S3 object {key!r} (or it was already gone)"
    if action == CMS_DELETE:
        deleted = svc.cms.delete_file(task.file_document_id)
        return "deleted the CMS entry" if deleted else "CMS entry already gone"
    if action == CHROMA_DELETE:
        removed = svc.vectors.delete_document(task.file_document_id)
        return f"deleted {removed} chunks" if removed else "no chunks stored"
    raise ValueError(f"unknown correction action {action!r}")


def _resolve_errors(s: Session, task: AutoCorrectionTask, status: str, action: str) -> None:
    s.execute(
        update(ProcessingError)
        .where(ProcessingError.file_event_id == task.file_event_id,
               ProcessingError.resolution_status == "unresolved")
        .values(resolution_status=status, resolution_action=action, resolved_at=func.now())
    )


def _finish(task: AutoCorrectionTask, status: str, detail: str,
            resolution: tuple[str, str] | None, error: str | None = None) -> None:
    with session_scope() as s:
        _append(s, task.id, _entry(status, detail, ok=status == "completed"),
                status=status, completed_at=func.now(), error_during_correction=error)
        if resolution:
            _resolve_errors(s, task, *resolution)


def run_correction(task_id: int, svc: CorrectionServices,
                   on_final_failure: Callable[[AutoCorrectionTask], None] | None = None,
                   ) -> CorrectionOutcome:
    """Carry out one correction; safe to run again (flags and status make it idempotent)."""
    task = _claim(task_id)
    if task is None:
        return CorrectionOutcome("nothing", detail="already finished")
    if not svc.settings.enable_auto_correction:
        _finish(task, "completed", "auto-correction disabled: plan recorded, nothing done",
                None)
        return CorrectionOutcome("completed", task.batch_id, detail="disabled")
    try:
        with document_lock(task.file_document_id):
            if _superseded(task):
                _finish(task, "completed", "skipped: a newer version of the document exists",
                        ("ignored", "ignored"))
                return CorrectionOutcome("skipped", task.batch_id)
            for action in task.correction_actions:
                if getattr(task, FLAGS[action]):
                    continue
                detail = _act(action, task, svc)
                with session_scope() as s:
                    _append(s, task.id, _entry(action, detail), **{FLAGS[action]: True})
    except Exception as exc:
        return _failed_attempt(task, exc, svc.settings, on_final_failure)
    _finish(task, "completed", "all actions done", ("auto_corrected", "auto_correction"))
    log.info("correction %s for %s completed", task.id, task.file_document_id)
    return CorrectionOutcome("completed", task.batch_id)


def _failed_attempt(task: AutoCorrectionTask, exc: Exception, settings: Settings,
                    on_final_failure: Callable[[AutoCorrectionTask], None] | None,
                    ) -> CorrectionOutcome:
    message = f"{type(exc).__name__}: {exc}"
    if task.attempts >= settings.max_correction_attempts:
        _finish(task, "failed", f"giving up after {task.attempts} attempts: {message}", None,
                error=message)
        log.error("correction %s for %s failed: %s", task.id, task.file_document_id, message)
        if on_final_failure is not None:
            on_final_failure(task)
        return CorrectionOutcome("failed", task.batch_id, detail=message)
    delay = backoff_seconds(settings.correction_retry_base_seconds, task.attempts - 1)
    with session_scope() as s:
        _append(s, task.id, _entry("attempt", f"attempt {task.attempts} failed: {message}",
                                   ok=False), status="pending")
    log.warning("correction %s attempt %d failed (%s); retry in %.1fs", task.id,
                task.attempts, message, delay)
    return CorrectionOutcome("retry", task.batch_id, retry_in=delay, detail=message)


def corrections_to_redrive(pending_after: timedelta, limit: int = 200) -> list[int]:
    """Corrections whose task was lost (``pending``/``processing`` untouched for long)."""
    with session_scope() as s:
        rows = s.execute(
            select(AutoCorrectionTask.id)
            .where(AutoCorrectionTask.status.in_(("pending", "processing")),
                   func.coalesce(AutoCorrectionTask.started_at, AutoCorrectionTask.created_at)
                   < func.now() - pending_after)
            .limit(limit)
        ).scalars()
        return list(rows)

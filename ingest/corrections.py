"""Auto-correction: remove what is left of a finally failed file from S3, the CMS and Chroma.

**Deletion policy** (DESIGN §8; enforced here and only here):

1. A correction is planned only when the failure is a property of the file itself
   (:data:`ingest.errors.CORRECTABLE`): ``processing_error`` — corrupt, unsupported,
   encrypted, empty, or over a configured size or text limit — with actions ``s3_delete,
   cms_delete, chroma_delete``; or ``file_not_found`` — the object *verified* missing after
   ``S3_MISSING_GRACE_SECONDS`` of re-checks — with ``cms_delete, chroma_delete``.
   Infrastructure and configuration errors, resource limits, keys outside the tenant's
   prefix and bugs never plan a correction; they are reported to the operator.
2. Nothing is done before ``act_after`` (planned + ``AUTO_CORRECTION_DELAY_SECONDS``), so a
   quick re-upload or a late webhook wins.
3. Before the first action, under the document's advisory lock (the lock the storage stage
   takes), the correction is checked against what is true now:
   - a newer event of the document that we received → ``skipped``;
   - the CMS entry is re-read: gone → only our own chunks are removed; a newer
     ``updatedAt`` or another ``storage_key`` → ``skipped`` with the reason logged, and the
     CMS's version is stored as an event so it is processed even if its webhook never came.
4. S3: only the exact key the failed attempt read, and only if the object still has the ETag
   (or size) that attempt saw; otherwise the correction is ``skipped`` and nothing more is
   deleted.
5. A circuit breaker: when more than ``CORRECTION_BREAKER_THRESHOLD`` corrections are planned
   within ``CORRECTION_BREAKER_WINDOW_SECONDS`` it trips, every pending and new correction
   is ``held``, and the operator gets one alert. ``ingest corrections release`` closes it
   and lets the held ones run; ``ingest corrections discard`` drops them.

Mechanics: every action is idempotent (already gone counts as done) and its
``*_cleanup_completed`` flag is committed as soon as it is done, so a retry skips it; every
step is appended to ``execution_log``. Failures retry with backoff up to
``MAX_CORRECTION_ATTEMPTS``; then the row is ``failed`` and the operator is alerted. A
retry's due time is its row's ``act_after`` (it gates only the first attempt), so the
sweeper re-drives a retry lost with its worker or broker as soon as it is overdue.
``ENABLE_AUTO_CORRECTION=false`` records the plan and acts on nothing. Our own CMS delete
comes back as an ``entry.delete`` webhook, which only removes chunks that are already gone.

What remains possible: Strapi has no conditional DELETE and S3 none for general-purpose
buckets, so an edit landing in the milliseconds between the re-read and the delete is not
seen. The delay, the re-read and the breaker make that window small and rare.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from ingest import metrics
from ingest.adapters.cms import CmsClient
from ingest.adapters.s3 import S3Store
from ingest.adapters.vectors import VectorStore
from ingest.db import held_lock, lock_xact, session_scope
from ingest.errors import CORRECTABLE, FILE_NOT_FOUND, PROCESSING_ERROR, FileNotFound
from ingest.log_context import bind, binds
from ingest.mail.alerts import BREAKER_TRIPPED, raise_alert
from ingest.models import AutoCorrectionTask, CorrectionBreaker, FileEvent, ProcessingError
from ingest.reconcile import store_current_entry
from ingest.retry import backoff_seconds
from ingest.settings import Settings

log = logging.getLogger(__name__)

S3_DELETE, CMS_DELETE, CHROMA_DELETE = "s3_delete", "cms_delete", "chroma_delete"
ACTIONS: dict[str, list[str]] = {
    FILE_NOT_FOUND: [CMS_DELETE, CHROMA_DELETE],
    PROCESSING_ERROR: [S3_DELETE, CMS_DELETE, CHROMA_DELETE],
}
FLAGS = {S3_DELETE: "s3_cleanup_completed", CMS_DELETE: "cms_cleanup_completed",
         CHROMA_DELETE: "chroma_cleanup_completed"}
BREAKER = "corrections"
OPEN_STATUSES = ("pending", "processing")


@dataclass
class CorrectionServices:
    """The stores a correction acts on."""

    settings: Settings
    s3: S3Store
    cms: CmsClient
    vectors: VectorStore

    @classmethod
    def from_settings(cls, settings: Settings) -> CorrectionServices:
        """The stores the settings name."""
        return cls(settings=settings, s3=S3Store(settings),
                   cms=CmsClient.from_settings(settings), vectors=VectorStore(settings))


@dataclass(frozen=True)
class CorrectionOutcome:
    """``completed``, ``skipped``, ``held``, ``failed``, ``retry``, ``wait`` or ``nothing``."""

    status: str
    batch_id: Any = None
    retry_in: float = 0.0
    detail: str = ""


def plan_correction(s: Session, *, event: FileEvent, batch_id: Any, category: str,
                    message: str, entry: dict[str, Any], settings: Settings) -> int | None:
    """Insert the correction row of a failed file (in the failing transaction).

    None when the category is not a property of the file (rule 1). A new row is ``held``
    when the breaker is tripped, or trips now.
    """
    if category not in CORRECTABLE:
        return None
    held = _breaker_counts_one_more(s, settings)
    now = datetime.now(UTC)
    row = AutoCorrectionTask(
        file_document_id=event.document_id, file_event_id=event.id, batch_id=batch_id,
        file_name=entry.get("name"), storage_key=event.object_key or entry.get("storage_key"),
        object_etag=event.object_etag, object_size=event.object_size,
        company_id=_int_or_none(entry.get("company_id")),
        bot_id=_int_or_none(entry.get("bot_id")),
        failure_category=category, original_error_message=message[:4000] or category,
        correction_actions=ACTIONS[category],
        act_after=now + timedelta(seconds=settings.auto_correction_delay_seconds),
        status="held" if held else "pending",
        execution_log=[_entry("planned", f"actions for {category}")] + (
            [_entry("held", "the correction breaker is tripped", ok=False)] if held else []),
    )
    s.add(row)
    s.flush()
    return row.id


# --- the breaker -------------------------------------------------------------------------


def breaker_tripped(s: Session) -> CorrectionBreaker | None:
    """The breaker row if it is tripped now."""
    row = s.get(CorrectionBreaker, BREAKER)
    return row if row is not None and row.tripped_at is not None else None


def _breaker_counts_one_more(s: Session, settings: Settings) -> bool:
    """Count one planned correction; True if corrections must be held (tripped now or before)."""
    lock_xact(s, "correction-breaker")
    if breaker_tripped(s) is not None:
        return True
    row = s.get(CorrectionBreaker, BREAKER)
    since = datetime.now(UTC) - timedelta(seconds=settings.correction_breaker_window_seconds)
    if row is not None and row.released_at is not None:
        since = max(since, row.released_at)  # a release starts a fresh count
    planned = s.execute(select(func.count()).where(AutoCorrectionTask.created_at > since)
                        ).scalar_one()
    if planned + 1 <= settings.correction_breaker_threshold:
        return False
    reason = (f"{planned + 1} corrections planned within "
              f"{settings.correction_breaker_window_seconds:g}s (limit "
              f"{settings.correction_breaker_threshold})")
    s.execute(insert(CorrectionBreaker)
              .values(name=BREAKER, tripped_at=func.now(), reason=reason)
              .on_conflict_do_update(index_elements=["name"],
                                     set_={"tripped_at": func.now(), "reason": reason}))
    held = s.execute(
        update(AutoCorrectionTask).where(AutoCorrectionTask.status == "pending")
        .values(status="held", execution_log=AutoCorrectionTask.execution_log.op("||")(
            bindparam(None, [_entry("held", "the correction breaker tripped", ok=False)],
                      type_=JSONB)))
        .returning(AutoCorrectionTask.id)
    ).scalars().all()
    raise_alert(s, BREAKER_TRIPPED, datetime.now(UTC).isoformat(), "breaker",
                "The correction circuit breaker tripped: " + reason + ".\n\n"
                f"{len(held) + 1} corrections are held and nothing is deleted until you decide.\n"
                "A wrong S3_BUCKET, an expired token or a broken deploy look like this.\n\n"
                "  ingest corrections list       # what is held\n"
                "  ingest corrections release    # close the breaker and run them\n"
                "  ingest corrections discard    # close the breaker and drop them\n")
    log.error("correction breaker tripped: %s; %d corrections held", reason, len(held) + 1)
    return True


def release_held(settings: Settings, *, discard: bool = False) -> int:
    """Close the breaker; run the held corrections (or discard them). Returns how many."""
    with session_scope() as s:
        lock_xact(s, "correction-breaker")
        s.execute(insert(CorrectionBreaker)
                  .values(name=BREAKER, tripped_at=None, released_at=func.now())
                  .on_conflict_do_update(index_elements=["name"],
                                         set_={"tripped_at": None, "released_at": func.now()}))
        step = "discarded" if discard else "released"
        values: dict[str, Any] = {"status": "discarded", "completed_at": func.now()} if (
            discard) else {"status": "pending", "act_after": func.now()}
        ids = s.execute(
            update(AutoCorrectionTask).where(AutoCorrectionTask.status == "held")
            .values(execution_log=AutoCorrectionTask.execution_log.op("||")(
                bindparam(None, [_entry(step, f"{step} by an operator")], type_=JSONB)),
                **values)
            .returning(AutoCorrectionTask.id)
        ).scalars().all()
        if discard and ids:
            s.execute(update(ProcessingError)
                      .where(ProcessingError.file_event_id.in_(
                          select(AutoCorrectionTask.file_event_id)
                          .where(AutoCorrectionTask.id.in_(ids))),
                          ProcessingError.resolution_status == "unresolved")
                      .values(resolution_status="ignored", resolution_action="ignored",
                              resolved_at=func.now()))
    log.warning("correction breaker closed by an operator; %d held corrections %s",
                len(ids), step)
    return len(ids)


# --- running one correction --------------------------------------------------------------


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


def _gate(task_id: int) -> tuple[str, AutoCorrectionTask | None, float]:
    """Claim the correction if it may run now: (``run``|``wait``|``held``|``nothing``, row, wait).

    One transaction under the breaker lock: a correction due now while the breaker is
    tripped is held instead of claimed.
    """
    with session_scope() as s:
        row = s.execute(select(AutoCorrectionTask.status, AutoCorrectionTask.act_after,
                               AutoCorrectionTask.started_at, func.now().label("now"))
                        .where(AutoCorrectionTask.id == task_id)).first()
        if row is None or row.status not in OPEN_STATUSES:
            return "nothing", None, 0.0
        # The delay before the first action (rule 2); a retry's act_after is only its due
        # time for the sweeper, and an early copy of a retry may run.
        if row.started_at is None and row.act_after is not None and row.act_after > row.now:
            return "wait", None, (row.act_after - row.now).total_seconds()
        lock_xact(s, "correction-breaker")
        if breaker_tripped(s) is not None:
            _append(s, task_id, _entry("held", "the correction breaker is tripped", ok=False),
                    status="held")
            return "held", None, 0.0
        task = s.execute(
            update(AutoCorrectionTask)
            .where(AutoCorrectionTask.id == task_id,
                   AutoCorrectionTask.status.in_(OPEN_STATUSES))
            .values(status="processing", attempts=AutoCorrectionTask.attempts + 1,
                    started_at=func.coalesce(AutoCorrectionTask.started_at, func.now()))
            .returning(AutoCorrectionTask)
        ).scalar_one_or_none()
        return ("run", task, 0.0) if task is not None else ("nothing", None, 0.0)


def _superseded(task: AutoCorrectionTask, failed_at: datetime | None) -> bool:
    """Whether we received a newer upsert of the document (its outcome governs)."""
    if failed_at is None:
        return False
    with session_scope() as s:
        return s.execute(
            select(FileEvent.id).where(
                FileEvent.document_id == task.file_document_id,
                FileEvent.id != task.file_event_id,
                FileEvent.entry_updated_at > failed_at,
                FileEvent.event.in_(("entry.create", "entry.update", "entry.publish")),
                FileEvent.status != "ignored",
            ).limit(1)
        ).first() is not None


def _failed_version(task: AutoCorrectionTask) -> datetime | None:
    """The ``updatedAt`` of the version whose failure planned the correction."""
    with session_scope() as s:
        return s.execute(select(FileEvent.entry_updated_at)
                         .where(FileEvent.id == task.file_event_id)).scalar_one_or_none()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def verify_against_cms(task: AutoCorrectionTask, cms: CmsClient,
                       failed_at: datetime | None) -> tuple[list[str], str]:
    """Rule 3: the actions that may run now, and why (an empty list means skip).

    Raises :class:`TransientError` when the CMS cannot answer: nothing is done then.
    """
    try:
        current = cms.get_file(task.file_document_id)
    except FileNotFound:
        return [CHROMA_DELETE], "the CMS entry is gone: only our chunks may be removed"
    now_at = _parse_time(current.get("updatedAt"))
    reasons = []
    if failed_at is None or now_at is None or now_at != failed_at:
        reasons.append(f"the CMS entry is at updatedAt {current.get('updatedAt')}, the failed "
                       f"version was {failed_at.isoformat() if failed_at else 'unknown'}")
    if current.get("storage_key") != task.storage_key:
        reasons.append("the CMS entry now points at another storage_key")
    if reasons:
        if failed_at is not None:
            with session_scope() as s:  # a newer version gets processed
                store_current_entry(s, current, newer_than=failed_at)
        return [], "skipped: " + "; ".join(reasons)
    return list(task.correction_actions), "the CMS entry is still the failed version"


def _act(action: str, task: AutoCorrectionTask, svc: CorrectionServices) -> tuple[bool, str]:
    """Run one action: (done, what happened). Raises if it could not be done."""
    if action == S3_DELETE:
        if not task.storage_key:
            return False, "kept S3: the failed attempt's key is unknown (no proof)"
        return svc.s3.delete_if_unchanged(task.storage_key, task.object_etag, task.object_size)
    if action == CMS_DELETE:
        deleted = svc.cms.delete_file(task.file_document_id)
        return True, "deleted the CMS entry" if deleted else "CMS entry already gone"
    if action == CHROMA_DELETE:
        removed = svc.vectors.delete_document(task.file_document_id)
        return True, f"deleted {removed} chunks" if removed else "no chunks stored"
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
    metrics.CORRECTION_OUTCOMES.labels(status).inc()


@binds(correction_id="task_id")
def run_correction(task_id: int, svc: CorrectionServices,
                   on_final_failure: Callable[[AutoCorrectionTask], None] | None = None,
                   ) -> CorrectionOutcome:
    """Carry out one correction by the rules above; safe to run again."""
    verdict, task, wait = _gate(task_id)
    if verdict == "wait":
        return CorrectionOutcome("wait", retry_in=wait, detail="waiting for act_after")
    if task is None:
        return CorrectionOutcome(verdict, detail="already finished or held")
    bind(document_id=task.file_document_id, batch_id=task.batch_id)
    if not svc.settings.enable_auto_correction:
        _finish(task, "completed", "auto-correction disabled: plan recorded, nothing done",
                None)
        return CorrectionOutcome("completed", task.batch_id, detail="disabled")
    try:
        with held_lock(task.file_document_id):
            failed_at = _failed_version(task)
            if _superseded(task, failed_at):
                return _skip(task, "skipped: a newer version of the document was received")
            actions, why = verify_against_cms(task, svc.cms, failed_at)
            with session_scope() as s:
                _append(s, task.id, _entry("verified", why, ok=bool(actions)))
            if not actions:
                return _skip(task, why)
            for action in actions:
                if getattr(task, FLAGS[action]):
                    continue
                done, detail = _act(action, task, svc)
                if not done:
                    return _skip(task, "skipped: " + detail)
                with session_scope() as s:
                    _append(s, task.id, _entry(action, detail), **{FLAGS[action]: True})
    except Exception as exc:
        return _failed_attempt(task, exc, svc.settings, on_final_failure)
    _finish(task, "completed", "all actions done", ("auto_corrected", "auto_correction"))
    log.info("correction %s for %s completed", task.id, task.file_document_id)
    return CorrectionOutcome("completed", task.batch_id)


def _skip(task: AutoCorrectionTask, why: str) -> CorrectionOutcome:
    _finish(task, "skipped", why, ("ignored", "ignored"))
    log.warning("correction %s for %s %s", task.id, task.file_document_id, why)
    return CorrectionOutcome("skipped", task.batch_id, detail=why)


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
    metrics.CORRECTION_OUTCOMES.labels("retry").inc()
    with session_scope() as s:
        _append(s, task.id, _entry("attempt", f"attempt {task.attempts} failed: {message}",
                                   ok=False), status="pending",
                act_after=func.now() + timedelta(seconds=delay))
    log.warning("correction %s attempt %d failed (%s); retry in %.1fs", task.id,
                task.attempts, message, delay)
    return CorrectionOutcome("retry", task.batch_id, retry_in=delay, detail=message)


def corrections_to_redrive(stuck_after: timedelta, unstarted_after: timedelta,
                           limit: int = 200) -> list[int]:
    """Corrections whose task was lost: ``pending`` and overdue by ``unstarted_after`` (a
    lost first countdown, a retry lost with its worker or with the broker's messages, or
    released by an operator), or ``processing`` since ``stuck_after`` (an attempt that died).

    ``act_after`` of a re-driven pending one is moved to now, so a busy queue gets one more
    copy per ``unstarted_after``, not one per sweep.
    """
    with session_scope() as s:
        now = func.now()
        due = (AutoCorrectionTask.status == "pending") & (
            func.coalesce(AutoCorrectionTask.act_after, AutoCorrectionTask.created_at)
            < now - unstarted_after)
        stuck = ((AutoCorrectionTask.status == "processing")
                 & (AutoCorrectionTask.started_at < now - stuck_after))
        ids = list(s.execute(
            select(AutoCorrectionTask.id)
            .where(or_(due, stuck))
            .limit(limit).with_for_update(skip_locked=True)
        ).scalars())
        if ids:
            s.execute(update(AutoCorrectionTask)
                      .where(AutoCorrectionTask.id.in_(ids),
                             AutoCorrectionTask.status == "pending")
                      .values(act_after=now))
        return ids

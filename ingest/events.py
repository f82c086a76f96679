"""Webhook payloads (Strapi 5), the dedupe key, and the outbox writes of ``file_events``.

A received file event is stored before anything is published: the row is the outbox. The
dedupe key ``{kind}:{documentId}:{updatedAt}`` (DESIGN §7) makes a duplicate delivery, the
draft-then-publish pair of a draft & publish CMS and a reconciled CMS entry meet on the
same row, so each version of a document is processed once.

Publishing follows one idiom, :func:`publish_then_mark_enqueued`: the row is committed
first, then published, then marked ``enqueued``; a publish that fails leaves the row for
the outbox relay (:func:`events_to_relay`), so nothing is lost when the broker is down.
The web process marks through :class:`EnqueuedMarks`, which gathers the marks of a few
webhooks into one UPDATE off the request path; a mark that never happens leaves the row
``received``, and the relay publishes it again (a second message, which the claim makes
harmless).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest.db import autocommit, reconnecting
from ingest.models import FileEvent

log = logging.getLogger(__name__)
FILE_MODEL = "file"
PREFERENCE_MODEL = "user-notification-preference"
BOT_SETTING_MODEL = "bot-notification-setting"
UPSERT_EVENTS = frozenset({"entry.create", "entry.update", "entry.publish"})
DELETE_EVENTS = frozenset({"entry.delete", "entry.unpublish"})

Kind = Literal["upsert", "delete"]


# What the tables can hold: company and bot ids are PostgreSQL ``integer``s, sizes
# ``bigint``s. A value outside is refused at the door, not by a failing worker.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")
_DIGITS = re.compile(r"[0-9]{1,18}")


def _relation_id(value: Any) -> Any:
    """Accept a relation given as ``{"id": 42}`` as well as a plain ``42``."""
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    return value


def _integer(value: Any) -> Any:
    """A JSON integer (``4`` or, as JSON Schema counts it, ``4.0``), and nothing else that
    pydantic would coerce (``true``, ``"4"``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _integer_or_digits(value: Any) -> Any:
    """A JSON integer or a string of digits (Strapi sends a ``biginteger`` as a string)."""
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise ValueError("must be an integer or a string of at most 18 digits")
        return int(value)
    return _integer(value)


def _iso_datetime(value: Any) -> Any:
    """An ISO 8601 date-time string, as Strapi sends (not pydantic's unix seconds)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 date-time such as 2026-11-23T08:58:14.511Z")
    return value


_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
# A company or bot: an integer, or a relation ``{"id": …}``.
TenantId = Annotated[
    int, Field(ge=0, le=INT32_MAX),
    BeforeValidator(_integer), BeforeValidator(_relation_id),
    WithJsonSchema({"anyOf": [_ID_SCHEMA, {"type": "object", "required": ["id"],
                                           "properties": {"id": _ID_SCHEMA}}]}),
]
# A size in bytes: an integer or its digits.
ByteSize = Annotated[
    int, Field(ge=0, le=INT64_MAX), BeforeValidator(_integer_or_digits),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                              {"type": "string", "pattern": "^[0-9]{1,18}$"}]}),
]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]


class WebhookEnvelope(BaseModel):
    """The outer shape of every Strapi webhook: ``{event, createdAt, model, uid, entry}``."""

    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1, max_length=100)
    createdAt: IsoDateTime | None = None  # noqa: N815 - Strapi's field name
    model: str | None = Field(default=None, max_length=100)
    uid: str | None = Field(default=None, max_length=200)
    entry: dict[str, Any] | None = None


class FileEntry(BaseModel):
    """A ``file`` entry as Strapi sends it (``size_bytes`` arrives as a string)."""

    model_config = ConfigDict(extra="allow")

    documentId: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_-]+$")  # noqa: N815
    updatedAt: IsoDateTime  # noqa: N815
    name: str | None = Field(default=None, min_length=1, max_length=1024)
    storage_key: str | None = Field(default=None, min_length=1, max_length=1024)
    company_id: TenantId | None = None
    bot_id: TenantId | None = None
    # Only a notification field: never a reason to refuse the entry (DESIGN §8). The usable
    # address is decided at join time (ingest.addresses).
    user_email: Annotated[str | None, WithJsonSchema(
        {"description": "Any value; one that is not a string counts as missing"})] = None
    size_bytes: ByteSize | None = None
    mime_type: str | None = Field(default=None, max_length=255)

    @field_validator("user_email", mode="before")
    @classmethod
    def _any_email(cls, value: Any) -> str | None:
        return value[:1024] if isinstance(value, str) else None

    @field_validator("updatedAt")
    @classmethod
    def _has_a_utc_time(cls, value: datetime) -> datetime:
        try:
            _utc(value)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None
        return value

    def is_complete(self) -> bool:
        """Whether the entry carries everything processing needs (else ask the CMS)."""
        return None not in (self.name, self.storage_key, self.company_id, self.bot_id)


class PreferenceEntry(BaseModel):
    """The part of a ``user-notification-preference`` entry that names whose cache to drop."""

    model_config = ConfigDict(extra="allow")

    company_id: TenantId
    bot_id: TenantId
    user_email: str = Field(min_length=1, max_length=1024)  # as the CMS stores it


class BotSettingEntry(BaseModel):
    """The part of a ``bot-notification-setting`` entry that names whose channels to drop."""

    model_config = ConfigDict(extra="allow")

    company_id: TenantId
    bot_id: TenantId


class PreferenceUpdate(BaseModel):
    """Seed 001's ``POST /webhooks/preference-updated`` body."""

    model_config = ConfigDict(extra="allow")

    action: Literal["created", "updated", "deleted"]
    company_id: TenantId
    bot_id: TenantId
    user_email: str = Field(min_length=1, max_length=1024)
    preferences: dict[str, Any] | None = None
    timestamp: IsoDateTime | None = None


def event_kind(event: str) -> Kind | None:
    """``upsert``, ``delete``, or None for events this service ignores."""
    if event in UPSERT_EVENTS:
        return "upsert"
    if event in DELETE_EVENTS:
        return "delete"
    return None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dedupe_key(kind: Kind, document_id: str, updated_at: datetime) -> str:
    """``{kind}:{documentId}:{updatedAt}`` with the time normalised to UTC milliseconds."""
    return f"{kind}:{document_id}:{_utc(updated_at).isoformat(timespec='milliseconds')}"


@dataclass(frozen=True)
class Stored:
    """The outcome of storing an event: its id, and whether it was new."""

    event_id: int
    created: bool


# The outbox statements, built once: a webhook runs them for every request, and building
# them per call cost more CPU than running them (SQLAlchemy caches their compiled SQL).
# Core statements on the table: no ORM objects of these rows are held while they run.
_EVENTS = FileEvent.__table__
_INSERT_EVENT = (
    insert(_EVENTS)
    .values({name: bindparam(name) for name in (
        "event", "model", "document_id", "entry_updated_at", "payload", "dedupe_key")})
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(_EVENTS.c.id)
)
_EVENT_BY_KEY = select(_EVENTS.c.id).where(_EVENTS.c.dedupe_key == bindparam("dedupe_key"))
# Never over a live attempt: a worker may take the message and claim the event between its
# publish and this mark; set back to enqueued, that attempt could not end the event.
_MARK_ENQUEUED = (
    update(_EVENTS)
    .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)),
           _EVENTS.c.status.in_(bindparam("from_statuses", expanding=True)),
           _EVENTS.c.running_since.is_(None) | _EVENTS.c.lease_until.is_(None)
           | (_EVENTS.c.lease_until <= func.now()))
    .values(status="enqueued", updated_at=func.now())
)


def store_file_event(
    session: Session | Connection, event: str, entry: FileEntry, payload: dict[str, Any]
) -> Stored:
    """INSERT the event unless its dedupe key exists; the caller commits before publishing
    (on an :func:`ingest.db.autocommit` connection the INSERT is committed as it returns)."""
    kind = event_kind(event)
    if kind is None:
        raise ValueError(f"not a file event: {event}")
    key = dedupe_key(kind, entry.documentId, entry.updatedAt)
    inserted = session.execute(_INSERT_EVENT, {
        "event": event, "model": FILE_MODEL, "document_id": entry.documentId,
        "entry_updated_at": _utc(entry.updatedAt), "payload": payload, "dedupe_key": key,
    }).scalar_one_or_none()
    if inserted is not None:
        return Stored(inserted, True)
    existing = session.execute(_EVENT_BY_KEY, {"dedupe_key": key}).scalar_one()
    return Stored(existing, False)


def publish_then_mark_enqueued(
    session: Session | Connection, event_ids: Sequence[int], publish: Callable[[int], object], *,
    relayed: bool = False,
) -> list[int]:
    """Publish each (committed) event with ``publish``, then mark the published ones
    ``enqueued`` in ``session``; return their ids.

    ``publish`` raises when the broker cannot take the message: the first failure stops the
    loop and the rest stay as they are, for the outbox relay. Without ``relayed`` only
    ``received`` rows move (a worker may already have claimed the event); the relay passes
    ``relayed=True`` to re-drive any unfinished row and restart its clock. A row that a
    live attempt holds (claimed after the publish: the relay does not lock the events whose
    message was lost) is left to that attempt.
    """
    published = _publish_each(event_ids, publish)
    if published:
        from_statuses = ["received", "enqueued", "processing"] if relayed else ["received"]
        session.execute(_MARK_ENQUEUED, {"ids": published, "from_statuses": from_statuses})
    return published


def _publish_each(event_ids: Sequence[int], publish: Callable[[int], object]) -> list[int]:
    """Publish the events in order until one fails; the ids that went out."""
    published: list[int] = []
    for event_id in event_ids:
        try:
            publish(event_id)
        except Exception as exc:  # any failure: the row is committed, the relay publishes it
            log.warning("publishing event %s failed (%s); %d left for the outbox relay",
                        event_id, type(exc).__name__, len(event_ids) - len(published))
            break
        published.append(event_id)
    return published


#: How long :class:`EnqueuedMarks` lets marks gather before one UPDATE writes them: far
#: below the relay's ``OUTBOX_RELAY_AFTER_SECONDS``, so a row whose message went out is
#: not published again while its mark waits.
MARK_ENQUEUED_AFTER_SECONDS = 0.05


class EnqueuedMarks:
    """:func:`publish_then_mark_enqueued` for the web process, with the mark deferred: the
    ``received`` → ``enqueued`` UPDATEs of the webhooks published in the last
    :data:`MARK_ENQUEUED_AFTER_SECONDS` are one statement, run by a daemon thread on an
    autocommit connection (:func:`ingest.db.autocommit`), not by the request.

    The outbox rule holds: a row is marked only after its publish succeeded, and only while
    still ``received`` (a worker may have claimed it already). A mark that never happens —
    the process died first, or the UPDATE failed — leaves the row ``received``: the beat
    relay publishes it again, and the second message finds the event claimed or finished.
    What is pending is written at interpreter exit (a gunicorn worker's graceful stop).
    The thread starts with the first mark, in the process that makes it (never before a
    fork).
    """

    def __init__(self, after_seconds: float = MARK_ENQUEUED_AFTER_SECONDS) -> None:
        self.after_seconds = after_seconds
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._pending: list[int] = []
        self._waiting = threading.Event()

    def publish_then_mark(self, event_id: int, publish: Callable[[int], object]) -> bool:
        """Publish the committed event; if it went out, mark it ``enqueued`` soon. Whether
        it went out (if not, it stays ``received`` for the relay)."""
        if not _publish_each([event_id], publish):
            return False
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            self._pending.append(event_id)
            self._waiting.set()
        return True

    def _start(self) -> None:
        """(Re)start the thread in this process (a fork copies the object, not its thread)."""
        self._pid, self._pending = os.getpid(), []
        self._waiting = threading.Event()
        threading.Thread(target=self._run, name="kb-enqueued-marks", daemon=True).start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(self.after_seconds)  # let the marks of the next webhooks gather
            self.flush()

    def flush(self) -> int:
        """Mark what is pending now; how many ids the UPDATE covered."""
        with self._lock:
            ids, self._pending = self._pending, []
            self._waiting.clear()
        if not ids:
            return 0
        try:
            for attempt in reconnecting():
                with attempt, autocommit() as conn:
                    conn.execute(_MARK_ENQUEUED, {"ids": ids, "from_statuses": ["received"]})
        except Exception as exc:  # the rows stay received: the relay publishes them again
            log.warning("marking %d published events enqueued failed (%s: %s); the outbox "
                        "relay publishes them again", len(ids), type(exc).__name__, exc)
        return len(ids)


def events_to_relay(
    session: Session, received_before: datetime, stuck_before: datetime, *,
    broker_emptied: bool = False, limit: int = 500,
) -> list[int]:
    """Events the beat relay must (re)publish, locked against a concurrent relay:

    - ``received`` rows older than a few seconds (the publish after the commit failed, or
      the web process died);
    - ``processing`` rows whose attempt's lease ran out: its worker died (SIGKILL of the
      whole group, OOM, host loss) — see :mod:`ingest.leases`;
    - when the broker lost its data (``broker_emptied``), every ``enqueued`` row and every
      ``processing`` row waiting for a retry: their messages are gone;
    - as a last resort, ``enqueued``/``processing`` rows untouched for longer than the
      broker's visibility timeout allows.

    A message a dead worker had fetched but not started (its event holds no lease) is not
    found here: the relay first restores it on the broker (``workers.orphans``).
    """
    lost = ((FileEvent.status == "processing") & FileEvent.running_since.is_not(None)
            & (FileEvent.lease_until < func.now()))
    if broker_emptied:
        lost = lost | (FileEvent.status == "enqueued") | (
            (FileEvent.status == "processing") & FileEvent.running_since.is_(None))
    rows = session.execute(
        select(FileEvent.id)
        .where(
            ((FileEvent.status == "received") & (FileEvent.received_at < received_before))
            | lost
            | (
                FileEvent.status.in_(("enqueued", "processing"))
                & (FileEvent.updated_at < stuck_before)
            )
        )
        .order_by(FileEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    return list(rows)


def events_awaiting_their_task(session: Session, published_before: datetime,
                               limit: int = 500) -> list[int]:
    """Events published before ``published_before`` whose task has not started: ``enqueued``,
    or ``processing`` without a lease (a retry waiting for its countdown). Their message is
    on the broker, unless a worker died holding it in a way the broker cannot tell
    (``workers.orphans.lost_events`` decides)."""
    return list(session.execute(
        select(FileEvent.id)
        .where(((FileEvent.status == "enqueued")
                | ((FileEvent.status == "processing") & FileEvent.running_since.is_(None))),
               FileEvent.updated_at < published_before)
        .order_by(FileEvent.id)
        .limit(limit)
    ).scalars())


def relay_cutoffs(now: datetime, after_seconds: float, visibility_timeout: int) -> tuple[
    datetime, datetime
]:
    """The two cut-offs of :func:`events_to_relay` for a given moment."""
    return now - timedelta(seconds=after_seconds), now - timedelta(seconds=2 * visibility_timeout)

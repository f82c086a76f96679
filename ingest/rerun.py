"""Operator re-runs: a stored version of a document processed once more (``ingest reprocess``,
``ingest replay``).

A re-run is a new ``file_events`` row that copies the version it re-runs (same ``event``,
``entry_updated_at`` and payload) and goes the normal outbox way: stored ``received``, then
published, else the beat relay publishes it. Its dedupe key ``rerun:{source event id}``
makes a re-run of one event happen once, however often it is asked for; a document with
an unfinished event gets no second one (that event is returned instead). Being the same
version, a re-run is never stale against its source, and a newer version (or a deletion)
still wins over it (``ingest.pipeline.run.superseded``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest.db import lock_xact
from ingest.events import Stored, event_kind
from ingest.models import FileEvent

UNFINISHED = ("received", "enqueued", "processing")


class UnknownDocument(LookupError):
    """No event of this document was ever stored."""


class DocumentDeleted(LookupError):
    """The document's latest stored event is its deletion: there is no version to re-run."""


def rerun_event(session: Session, source: FileEvent) -> Stored:
    """A new event for ``source``'s version (or the one made for it before)."""
    key = f"rerun:{source.id}"
    payload = {**(source.payload or {}), "source": "operator"}
    new_id = session.execute(
        insert(FileEvent)
        .values(event=source.event, model=source.model, document_id=source.document_id,
                entry_updated_at=source.entry_updated_at, payload=payload, dedupe_key=key)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(FileEvent.id)
    ).scalar_one_or_none()
    if new_id is not None:
        return Stored(new_id, True)
    return Stored(session.execute(select(FileEvent.id)
                                  .where(FileEvent.dedupe_key == key)).scalar_one(), False)


def reprocess_document(session: Session, document_id: str) -> Stored:
    """Re-run the document's latest stored version; ``created=False`` when it already has an
    unfinished event (that one is returned)."""
    lock_xact(session, document_id)  # two operators at once create one event
    unfinished = session.execute(
        select(FileEvent.id).where(FileEvent.document_id == document_id,
                                   FileEvent.status.in_(UNFINISHED))
        .order_by(FileEvent.id.desc()).limit(1)
    ).scalar_one_or_none()
    if unfinished is not None:
        return Stored(unfinished, False)
    latest = session.execute(
        select(FileEvent).where(FileEvent.document_id == document_id)
        .order_by(FileEvent.entry_updated_at.desc(), FileEvent.id.desc()).limit(1)
    ).scalar_one_or_none()
    if latest is None:
        raise UnknownDocument(f"no event of document {document_id!r} is stored")
    if event_kind(latest.event) != "upsert":
        raise DocumentDeleted(f"document {document_id!r} was deleted ({latest.event}, event "
                              f"{latest.id}); there is no version to process")
    return rerun_event(session, latest)


def events_in_status(session: Session, status: str, since: timedelta,
                     limit: int = 1000) -> list[FileEvent]:
    """Events in ``status`` updated within the last ``since``, oldest first."""
    return list(session.execute(
        select(FileEvent)
        .where(FileEvent.status == status,
               FileEvent.updated_at >= func.now() - since)
        .order_by(FileEvent.id).limit(limit)
    ).scalars())

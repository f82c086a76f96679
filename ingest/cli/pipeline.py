"""``ingest reprocess``, ``ingest replay`` and ``ingest reconcile``: driving events by hand."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from ingest.cli.output import console, emit_json, fail
from ingest.db import session_scope
from ingest.events import publish_then_mark_enqueued
from ingest.rerun import (
    UNFINISHED,
    DocumentDeleted,
    UnknownDocument,
    events_in_status,
    reprocess_document,
    rerun_event,
)
from ingest.settings import get_settings

REPLAYABLE = ("failed", *UNFINISHED)


def publish(event_ids: list[int]) -> int:
    """Publish each event and mark the published ones enqueued (the outbox way: what is not
    published stays ``received`` for the beat relay); returns how many went out."""
    from webhooks.publisher import Publisher  # a send-only Celery client, no task code

    publisher = Publisher(get_settings().broker_url)
    with session_scope() as s:
        return len(publish_then_mark_enqueued(s, event_ids, publisher.publish_file_event))


def reprocess(args: argparse.Namespace) -> int:
    """Re-run the document's latest stored version through the pipeline."""
    try:
        with session_scope() as s:
            stored = reprocess_document(s, args.document_id)
    except (UnknownDocument, DocumentDeleted) as exc:
        return fail(str(exc))
    published = publish([stored.event_id]) if stored.created else 0
    result = {"document_id": args.document_id, "event_id": stored.event_id,
              "created": stored.created, "published": bool(published)}
    if args.json:
        emit_json(result)
    elif stored.created:
        relay = "" if published else " (broker unreachable: the beat relay publishes it)"
        console.print(f"document {args.document_id}: event {stored.event_id} created{relay}")
    else:
        console.print(f"document {args.document_id}: event {stored.event_id} is already "
                      "waiting or running; nothing new created")
    return 0


def replay(args: argparse.Namespace) -> int:
    """Re-drive the events in a status updated within ``--since``."""
    with session_scope() as s:
        rows = events_in_status(s, args.status, args.since)
        found = [{"event_id": r.id, "document_id": r.document_id, "event": r.event,
                  "status": r.status, "updated_at": r.updated_at.isoformat(),
                  "last_error": r.last_error} for r in rows]
        if args.dry_run:
            to_publish: list[int] = []
        elif args.status == "failed":  # terminal: a re-run of the same version
            to_publish = [st.event_id for r in rows if (st := rerun_event(s, r)).created]
        else:  # unfinished: publishing the same event again is safe (the claim decides)
            to_publish = [r.id for r in rows]
    published = publish(to_publish) if to_publish else 0
    if args.json:
        emit_json({"status": args.status, "since_seconds": args.since.total_seconds(),
                   "dry_run": args.dry_run, "matched": len(found), "replayed": len(to_publish),
                   "published": published, "events": found})
        return 0
    if args.dry_run:
        table = Table("event", "document", "kind", "updated", "last error")
        for row in found:
            table.add_row(str(row["event_id"]), row["document_id"], row["event"],
                          row["updated_at"][:19], (row["last_error"] or "")[:80])
        console.print(table)
        console.print(f"{len(found)} {args.status} event(s) would be replayed")
        return 0
    console.print(f"replayed {len(to_publish)} of {len(found)} {args.status} event(s)"
                  + (f"; {len(to_publish) - published} left for the beat relay"
                     if published < len(to_publish) else ""))
    return 0


def reconcile(args: argparse.Namespace) -> int:
    """Run reconciliation now, in this process (``--now``), or hand it to a worker."""
    from ingest.adapters.cms import CmsClient
    from ingest.reconcile import reconcile as run

    if not args.now:
        from ingest.names import TASK_RECONCILE_CMS
        from webhooks.publisher import Publisher

        Publisher(get_settings().broker_url).celery.send_task(TASK_RECONCILE_CMS)
        console.print("reconciliation queued for a worker (use --now to run it here)")
        return 0
    settings = get_settings()
    cms = CmsClient.from_settings(settings)
    try:
        result = run(cms, settings, since=args.since)
    finally:
        cms.session.close()
    published = publish(result.event_ids) if result.event_ids else 0
    summary: dict[str, Any] = {
        "skipped": result.skipped, "pages": result.pages, "entries_seen": result.entries_seen,
        "events_created": result.events_created, "event_ids": result.event_ids,
        "published": published, "invalid": result.invalid, "error": result.error,
        "checkpoint": result.new_checkpoint.isoformat() if result.new_checkpoint else None,
    }
    if args.json:
        emit_json(summary)
    elif result.skipped:
        console.print("another reconciliation run holds the lock; nothing done")
    else:
        console.print(f"read {result.pages} page(s): {result.entries_seen} entries, "
                      f"{result.events_created} new event(s) ({published} published), "
                      f"{result.invalid} invalid; checkpoint {summary['checkpoint']}")
    if result.error:
        return fail(f"reconciliation stopped early: {result.error}")
    return 0

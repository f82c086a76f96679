"""``ingest status [--batch ID | --user EMAIL | --doc ID | --digests] [--json]``: the status
page in a terminal.

Reads through :mod:`ingest.status_view`, as the ``/status`` pages do. Without an option it
lists the recent batches. ``--json`` prints the same data as JSON (ISO 8601 times).
Exit codes: 0 shown, 1 nothing found, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from ingest.db import session_scope
from ingest.models import BATCH_STATUSES
from ingest.status_view import (
    DEFAULT_PER_PAGE,
    MAX_PER_PAGE,
    BatchDetail,
    BatchFilter,
    BatchPage,
    DigestRow,
    DocumentHistory,
    batch_detail,
    document_history,
    recent_batches,
    recent_digests,
    to_jsonable,
)

STYLES = {"completed": "green", "success": "green", "sent": "green", "done": "green",
          "failed": "red", "held": "red", "partially_completed": "yellow",
          "skipped": "yellow", "processing": "cyan", "pending": "cyan"}


def register(sub: Any) -> None:
    """Add the ``status`` sub-command to the ``ingest`` parser's sub-parsers."""
    p = sub.add_parser("status", help="recent batches, one batch, an uploader or a document")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--batch", metavar="ID",
                       help="one batch: files, stages, errors, e-mails, channels")
    which.add_argument("--user", metavar="EMAIL", help="the uploader's recent batches")
    which.add_argument("--doc", metavar="ID", help="one CMS document's events and outcomes")
    p.add_argument("--digests", action="store_true",
                       help="the recent daily digests (with --user: that recipient's)")
    p.add_argument("--status", choices=BATCH_STATUSES, help="only batches in this status")
    p.add_argument("--limit", type=int, default=DEFAULT_PER_PAGE,
                   help=f"how many batches (1-{MAX_PER_PAGE}, default {DEFAULT_PER_PAGE})")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    """Print what the options ask for; the exit code."""
    if not 1 <= args.limit <= MAX_PER_PAGE:
        print(f"ingest status: --limit must be between 1 and {MAX_PER_PAGE}", file=sys.stderr)
        return 2
    if args.batch is not None:
        try:
            key = uuid.UUID(args.batch)
        except ValueError:
            print(f"ingest status: --batch is not a batch id: {args.batch!r}", file=sys.stderr)
            return 2
        with session_scope() as s:
            detail = batch_detail(s, key)
        if detail is None:
            print(f"ingest status: no batch {key}", file=sys.stderr)
            return 1
        _emit(args, detail, _batch_tables)
        return 0
    if args.digests:
        with session_scope() as s:
            digests = recent_digests(s, args.user, args.limit)
        _emit(args, digests, _digest_list)
        return 0
    if args.doc is not None:
        with session_scope() as s:
            history = document_history(s, args.doc.strip())
        if not history.found:
            print(f"ingest status: no event of document {args.doc!r}", file=sys.stderr)
            return 1
        _emit(args, history, _document_tables)
        return 0
    email = args.user.strip().lower() if args.user else None
    with session_scope() as s:
        page = recent_batches(s, BatchFilter(user_email=email, status=args.status),
                              per_page=args.limit)
    _emit(args, page, _batch_list)
    if email and page.total == 0:
        print(f"ingest status: no batch of {email}", file=sys.stderr)
        return 1
    return 0


def _emit(args: argparse.Namespace, value: Any, tables: Any) -> None:
    if args.json:
        print(json.dumps(to_jsonable(value), indent=2))
    else:
        tables(value, Console(soft_wrap=False))


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "–"


def _s(status: str) -> str:
    style = STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}s"


def _batch_list(page: BatchPage, console: Console) -> None:
    table = Table(title=f"Recent batches ({len(page.items)} of {page.total})")
    for name in ("batch", "uploader", "company/bot", "status", "files", "ok", "failed",
                 "started (UTC)", "e-mail"):
        table.add_column(name, justify="right" if name in ("files", "ok", "failed") else "left")
    for b in page.items:
        table.add_row(str(b.batch_id), b.user_email, f"{b.company_id}/{b.bot_id}",
                      _s(b.status), str(b.total_files), str(b.successful_files),
                      str(b.failed_files), _t(b.started_at),
                      _s("sent") if b.notification_sent
                      else b.email_deferred or b.digest or "not sent")
    console.print(table)


def _digest_list(rows: list[DigestRow], console: Console) -> None:
    table = Table(title=f"Recent daily digests ({len(rows)})")
    for name in ("id", "recipient", "company/bot", "date", "batches", "files", "ok", "failed",
                 "status", "attempts", "sent (UTC)", "error"):
        table.add_column(name)
    for d in rows:
        status = f"{_s(d.status)} ({d.deferred})" if d.deferred else _s(d.status)
        table.add_row(str(d.id), d.recipient, f"{d.company_id}/{d.bot_id}",
                      f"{d.digest_date} {d.timezone}", str(d.batches), str(d.total_files),
                      str(d.successful_files), str(d.failed_files), status, str(d.attempts),
                      _t(d.sent_at), d.error or "")
    console.print(table)


def _batch_tables(d: BatchDetail, console: Console) -> None:
    b = d.batch
    console.print(f"[bold]Batch {b.batch_id}[/] {_s(b.status)}  {b.user_email}  "
                  f"company {b.company_id} bot {b.bot_id}  {b.total_files} files "
                  f"({b.successful_files} ok, {b.failed_files} failed)  "
                  f"started {_t(b.started_at)}  ended {_t(b.ended_at)}")
    files = Table(title="Files")
    for name in ("file", "document", "status", "chunks", "time", "stages", "error"):
        files.add_column(name)
    for f in d.files:
        stages = ", ".join(f"{st.stage} {st.status} {_secs(st.duration_seconds)}"
                           for st in f.stages)
        error = f"{f.error_category}: {f.error_message}" if f.error_category else ""
        files.add_row(f.name, f.document_id, _s(f.status), str(f.chunks),
                      _secs(f.duration_seconds), stages, error)
    console.print(files)
    if d.errors:
        errors = Table(title="Errors")
        for name in ("document", "category", "stage", "message", "suggestion"):
            errors.add_column(name)
        for e in d.errors:
            errors.add_row(e.document_id, e.category, e.stage or "–", e.message, e.suggestion)
        console.print(errors)
    if d.corrections:
        corr = Table(title="Corrections")
        for name in ("id", "document", "status", "actions", "log"):
            corr.add_column(name)
        for c in d.corrections:
            log = "; ".join(f"{x.get('step')}: {x.get('detail', '')}" for x in c.log)
            corr.add_row(str(c.id), c.document_id, _s(c.status), ", ".join(c.actions), log)
        console.print(corr)
    mails = Table(title="E-mails")
    for name in ("type", "to", "status", "attempts", "sent (UTC)", "error"):
        mails.add_column(name)
    for m in d.emails:
        note = m.deferred or m.digest
        status = f"{_s(m.status)} ({note})" if note else _s(m.status)
        mails.add_row(m.type, m.recipient, status, str(m.attempts), _t(m.sent_at),
                      m.error or "")
    console.print(mails)
    if d.deliveries:
        posts = Table(title="Channels")
        for name in ("id", "channel", "target", "status", "attempts", "sent (UTC)", "error"):
            posts.add_column(name)
        for c in d.deliveries:
            posts.add_row(str(c.id), c.channel, c.target, _s(c.status), str(c.attempts),
                          _t(c.sent_at), c.error or "")
        console.print(posts)


def _document_tables(h: DocumentHistory, console: Console) -> None:
    events = Table(title=f"Document {h.document_id}: events")
    for name in ("event id", "event", "status", "attempts", "received (UTC)", "stages",
                 "last error"):
        events.add_column(name)
    for e in h.events:
        stages = ", ".join(f"{st.stage} {st.status}" for st in e.stages)
        events.add_row(str(e.id), e.event, _s(e.status), str(e.attempts), _t(e.received_at),
                       stages, e.last_error or "")
    console.print(events)
    batches = Table(title="In batches")
    for name in ("batch", "file", "status", "chunks", "error", "suggestion"):
        batches.add_column(name)
    for batch_id, f in h.batches:
        batches.add_row(str(batch_id), f.name, _s(f.status), str(f.chunks),
                        f"{f.error_category}: {f.error_message}" if f.error_category else "",
                        f.suggestion or "")
    console.print(batches)
    for c in h.corrections:
        console.print(f"correction {c.id}: {_s(c.status)} {', '.join(c.actions)}")

"""``ingest upload DIR --company ID --bot ID --user EMAIL``: upload as an uploader would.

Each file of DIR goes to S3 under the tenant's prefix (``S3_KEY_PREFIX_TEMPLATE``), then its
entry is created through the CMS's REST API (``POST /api/files``), and the CMS sends the
webhook. The command then follows every file in the database — its event, its stage, its
batch and the batch's e-mail — until each batch's e-mail is sent, skipped or failed.
"""

from __future__ import annotations

import argparse
import mimetypes
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.table import Table
from sqlalchemy import text

from ingest.cli.output import console, emit_json, fail
from ingest.settings import get_settings

#: ``deferred``: held until the uploader's quiet hours end (hours, maybe): nothing to wait for.
EMAIL_FINAL = ("sent", "skipped", "failed", "deferred")
EVENT_FINAL = ("done", "failed", "ignored")

# The newest create/update event of each document, its newest stage row, its batch file and
# the batch's e-mail. A correction's own entry.delete is not the file's outcome: skipped.
PROGRESS_SQL = text("""
SELECT DISTINCT ON (e.document_id)
       e.document_id, e.status, e.last_error,
       (SELECT p.processing_stage || ':' || p.status FROM file_processing_status p
         WHERE p.file_event_id = e.id ORDER BY p.id DESC LIMIT 1) AS stage,
       f.batch_id::text, f.chunks_created, f.error_category,
       b.status AS batch_status,
       CASE WHEN n.send_status = 'pending' AND n.send_not_before > now() THEN 'deferred'
            ELSE n.send_status END AS send_status
FROM file_events e
LEFT JOIN batch_files f ON f.file_event_id = e.id
LEFT JOIN batch_processing_sessions b ON b.batch_id = f.batch_id
LEFT JOIN email_notification_log n ON n.batch_id = f.batch_id
      AND n.email_type = 'batch_completion'
WHERE e.document_id = ANY(:docs) AND e.event IN ('entry.create', 'entry.update', 'entry.publish')
ORDER BY e.document_id, e.entry_updated_at DESC, e.id DESC
""")


@dataclass
class FileProgress:
    """One uploaded file and where it is now."""

    name: str
    document_id: str
    storage_key: str
    event: str = "waiting for the webhook"
    stage: str = ""
    chunks: int = 0
    error: str = ""
    batch_id: str | None = None
    batch: str = ""
    email: str = ""

    @property
    def settled(self) -> bool:
        """Processed, and its batch's e-mail sent, skipped, failed or deferred for quiet
        hours (or no batch: ignored)."""
        if self.event == "ignored":
            return True
        return self.event in EVENT_FINAL and self.email in EMAIL_FINAL

    @property
    def ok(self) -> bool:
        """Processed successfully and its e-mail not failed."""
        return self.event == "done" and self.email != "failed"


def files_of(directory: Path) -> list[Path]:
    """The regular, non-hidden files of ``directory``, by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def refresh(files: list[FileProgress]) -> None:
    """Read every file's state from the database."""
    from ingest.db import session_scope

    with session_scope() as s:
        rows = {r.document_id: r for r in s.execute(
            PROGRESS_SQL, {"docs": [f.document_id for f in files]})}
    for file in files:
        row = rows.get(file.document_id)
        if row is None:
            continue
        file.event, file.stage = row.status, _stage(row.stage)
        file.chunks, file.batch_id = row.chunks_created or 0, row.batch_id
        file.error = row.error_category or (row.last_error or "")[:60]
        file.batch, file.email = row.batch_status or "", row.send_status or ""


def _stage(raw: str | None) -> str:
    """``download:processing`` → ``download…``; ``storage:success`` → ``storage``."""
    if not raw:
        return ""
    name, status = raw.split(":", 1)
    if name == status:  # the "failed" row that ends a failed event
        return name
    return {"processing": f"{name}…", "success": name}.get(status, f"{name} {status}")


def table(files: list[FileProgress]) -> Table:
    """The progress table."""
    grid = Table("file", "document", "event", "stage", "chunks", "batch", "e-mail", "error",
                 title=f"{sum(f.settled for f in files)}/{len(files)} settled")
    colours = {"done": "green", "failed": "red", "ignored": "yellow"}
    for f in files:
        event = f"[{colours[f.event]}]{f.event}[/]" if f.event in colours else f.event
        grid.add_row(f.name, f.document_id, event, f.stage, str(f.chunks or ""),
                     f.batch, f.email, f.error)
    return grid


def upload(args: argparse.Namespace) -> int:
    """Put the files in S3, create their CMS entries, follow them until e-mailed."""
    from ingest.adapters.cms import CmsClient
    from ingest.adapters.s3 import S3Store
    from ingest.errors import IngestError

    directory: Path = args.directory
    if not directory.is_dir():
        return fail(f"DIR: {directory} is not a directory", 2)
    paths = files_of(directory)
    if not paths:
        return fail(f"DIR: {directory} holds no files", 2)
    settings = get_settings()
    prefix = settings.s3_key_prefix_template.format(company_id=args.company, bot_id=args.bot)
    s3, cms = S3Store(settings), CmsClient.from_settings(settings)
    files: list[FileProgress] = []
    try:
        for path in paths:
            data = path.read_bytes()
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            key = prefix + path.name
            s3.put(key, data, mime)
            entry = cms.create_file({
                "name": path.name, "storage_key": key, "company_id": args.company,
                "bot_id": args.bot, "user_email": args.user, "size_bytes": str(len(data)),
                "mime_type": mime})
            files.append(FileProgress(path.name, str(entry["documentId"]), key))
            if not args.json:
                console.print(f"uploaded {key} → CMS entry {entry['documentId']}",
                              markup=False)
    except IngestError as exc:
        return fail(f"upload stopped after {len(files)} of {len(paths)} file(s): {exc}")
    finally:
        cms.session.close()
    if not args.no_wait and not _follow(files, args.timeout, quiet=args.json):
        if args.json:
            emit_json({"files": [asdict(f) for f in files], "timed_out": True})
        return fail(f"not every batch e-mail was settled within {args.timeout:.0f}s")
    return _report(files, args)


def _follow(files: list[FileProgress], timeout: float, quiet: bool) -> bool:
    """Refresh the files (and, unless ``quiet``, the live table) until every one is
    settled; False on timeout."""
    deadline = time.monotonic() + timeout

    def settled() -> bool:
        refresh(files)
        return all(f.settled for f in files)

    if quiet or not console.is_terminal:  # no live redraws into a pipe or a file: one line
        seen: dict[str, tuple[str, ...]] = {}  # per change, unless quiet
        while not settled():
            for f in files if not quiet else []:
                state = (f.event, f.stage, f.batch and f"batch {f.batch}",
                         f.email and f"e-mail {f.email}")
                if seen.get(f.document_id) != state:
                    seen[f.document_id] = state
                    console.print(f"  {f.name:<32} " + "  ".join(x for x in state if x),
                                  markup=False)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True
    with Live(table(files), console=console, refresh_per_second=4, transient=True) as live:
        while not settled():
            live.update(table(files))
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        live.update(table(files))
    return True


def _report(files: list[FileProgress], args: argparse.Namespace) -> int:
    """The summary (or JSON); exit 1 if a file or an e-mail failed."""
    failed = [f for f in files if f.event == "failed" or f.email == "failed"]
    batches = sorted({f.batch_id for f in files if f.batch_id})
    result: dict[str, Any] = {"files": [asdict(f) for f in files], "batches": batches,
                              "failed": len(failed), "waited": not args.no_wait}
    if args.json:
        emit_json(result)
    elif args.no_wait:
        console.print(f"{len(files)} CMS entries created; follow them with "
                      "`ingest status --doc DOCUMENT_ID`")
    else:
        console.print(table(files))
        console.print(f"{len(files) - len(failed)} of {len(files)} file(s) processed, "
                      f"{len(failed)} failed; batch(es): {', '.join(batches) or 'none'}")
    return 1 if failed and not args.no_wait else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``upload`` command."""
    up = sub.add_parser("upload", help="upload a directory's files as an uploader would "
                                       "(S3, then CMS entries) and follow them")
    up.add_argument("directory", type=Path, metavar="DIR")
    up.add_argument("--company", type=int, required=True, help="company id")
    up.add_argument("--bot", type=int, required=True, help="bot id")
    up.add_argument("--user", required=True, help="the uploader's e-mail address")
    up.add_argument("--no-wait", action="store_true",
                    help="return once the CMS entries exist")
    up.add_argument("--timeout", type=float, default=900.0,
                    help="seconds to wait for the batch e-mails (default 900)")
    up.add_argument("--json", action="store_true", help="machine-readable summary")
    up.set_defaults(run=upload)

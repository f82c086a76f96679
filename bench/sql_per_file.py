"""SQL statements and transactions per file, measured on the server (``make bench-sql``).

Starts the stack of ``bench.stack`` (shared with ``make bench``): a throwaway PostgreSQL
with ``pg_stat_statements`` preloaded and a throwaway Redis (data under ``.bench/sql``), a
migrated database ``kb_bench``, and the service's real processes as ``make demo`` starts
them (S3 via moto, Chroma, the SMTP sink, the CMS stand-in, gunicorn, a Celery worker with
the ``hashing`` backend; beat only with ``--beat``). Then ``--files`` text files are uploaded
as ``ingest upload`` does (S3 object, then ``POST /api/files`` to the CMS, which sends the
webhook), spread over four uploaders of unequal size, so some batches seal when full
(``--threshold``) and others after the quiet period.

Once every event is terminal, every batch closed and every e-mail sent, the processes are
stopped (so their backends flush their statistics) and the bench reads, for ``kb_bench``:

- ``pg_stat_statements``: calls by the service's role, grouped by statement, top 20 —
  statements per file, with transaction control (``BEGIN``/``COMMIT``/``ROLLBACK``) counted
  apart, since it is the transactions figure in another form;
- ``pg_stat_database``: ``xact_commit + xact_rollback``, minus the bench's own polling
  (it polls as another role, ``bench_observer``, in autocommit: one transaction each).

Last, the statements needed to render (and to send) the summary e-mail of a closed batch
of 10 and of 1,000 files, built directly in the database: they must be the same (O(1)).

    .venv/bin/python bench/sql_per_file.py [--files 200] [--threshold 50] [--beat]

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import DB, OBSERVER, Server, Stack  # noqa: E402
from devtools import procs  # noqa: E402

BENCH = ROOT / ".bench" / "sql"
SHARES = (0.4, 0.3, 0.2, 0.1)  # of the files, per uploader
TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START TRANSACTION")
QUIET_MINUTES = 0.1


STATEMENTS = """
SELECT r.rolname, s.query, s.calls, s.rows
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""


def statements(server: Server) -> tuple[list[tuple[str, int, int]], int, int, int]:
    """The service's statements ``(query, calls, rows)`` by calls; its transaction-control
    calls and, of them, its ``BEGIN``s; and the observer's calls (each one an autocommit
    transaction)."""
    service, control, begins, observer = [], 0, 0, 0
    for role, query, calls, rows in server.rows(STATEMENTS, (DB,)):
        text = " ".join(query.split())
        if role == OBSERVER:
            observer += calls
        elif text.upper().startswith(TX_CONTROL):
            control += calls
            begins += calls if text.upper().startswith("BEGIN") else 0
        else:
            service.append((text, calls, rows))
    return sorted(service, key=lambda r: -r[1]), control, begins, observer


def transactions(server: Server) -> int:
    (row,) = server.rows("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                         "WHERE datname = %s", (DB,))
    return int(row[0])


def reset(server: Server) -> int:
    """Empty pg_stat_statements; the database's transaction count now."""
    server.rows("SELECT pg_stat_statements_reset()")
    return transactions(server)


PROGRESS = """
SELECT (SELECT count(DISTINCT document_id) FROM file_events),
       (SELECT count(*) FROM file_events WHERE status NOT IN ('done', 'ignored', 'failed')),
       (SELECT count(*) FROM batch_processing_sessions WHERE status = 'processing'),
       (SELECT count(*) FROM email_notification_log WHERE send_status IN ('pending', 'sending')),
       (SELECT count(*) FROM email_notification_log WHERE send_status = 'sent'),
       (SELECT count(*) FROM file_events WHERE status = 'done')
"""


def wait_all_done(server: Server, files: int, timeout: float) -> tuple[int, int]:
    """Wait until every file is terminal and every batch e-mailed; (e-mails, done files)."""
    def settled() -> tuple[int, int] | None:
        docs, unfinished, open_batches, unsent, sent, done = server.rows(PROGRESS,
                                                                         database=DB)[0]
        mails = len(list((BENCH / "mail").glob("*.eml")))
        if docs >= files and not unfinished and not open_batches and not unsent \
                and mails == sent:
            return sent, done
        return None
    return procs.wait_until(settled, timeout, "every file processed and e-mailed", 1.0)


def upload(env: dict[str, str], files: int) -> None:
    """Each file as ``ingest upload`` sends it: the S3 object, then the CMS entry (whose
    webhook the CMS sends); uploaders take turns."""
    from ingest.adapters.cms import CmsClient
    from ingest.adapters.s3 import S3Store
    from ingest.settings import get_settings

    settings = get_settings()
    s3, cms = S3Store(settings), CmsClient.from_settings(settings)
    counts = [round(files * share) for share in SHARES]
    counts[0] += files - sum(counts)
    queue = [(u, n) for u, count in enumerate(counts) for n in range(count)]
    queue.sort(key=lambda item: item[1])  # round robin
    for u, n in queue:
        name = f"notes-{u}-{n:04d}.txt"
        key = f"companies/42/bots/7/bench/{uuid.uuid4().hex}/{name}"
        data = (f"Bench file {n} of uploader {u}.\n\n" + "Some text to index. " * 40).encode()
        s3.put(key, data, "text/plain")
        cms.create_file({"name": name, "storage_key": key, "company_id": 42, "bot_id": 7,
                         "user_email": f"uploader{u}@example.com",
                         "size_bytes": str(len(data)), "mime_type": "text/plain"})
    cms.session.close()


def report(title: str, rows: list[tuple[str, int, int]], control: int, xacts: int,
           files: int, top: int = 20) -> None:
    total = sum(calls for _, calls, _ in rows)
    pings = sum(calls for query, calls, _ in rows if query.upper() in ("SELECT 1", "SELECT $1"))
    print(f"\n== {title} ==")
    print(f"files                       {files}")
    print(f"SQL statements              {total:>7}   {total / files:6.1f} per file"
          f"   (of them SELECT 1 pings: {pings})")
    print(f"transactions (pg_stat_db)   {xacts:>7}   {xacts / files:6.1f} per file"
          f"   (BEGIN/COMMIT/ROLLBACK statements: {control})")
    print(f"\ntop {top} statements by calls (calls, per file, rows, statement):")
    for query, calls, nrows in rows[:top]:
        print(f"  {calls:>6} {calls / files:6.2f} {nrows:>7}  {query[:150]}")


# -- the e-mail of a large batch --------------------------------------------------------------

BUILD_BATCH = """
WITH b AS (
  INSERT INTO batch_processing_sessions (batch_id, company_id, bot_id, user_email,
      batch_start_time, batch_end_time, sealed_at, status, total_files, successful_files,
      failed_files, user_preferences_snapshot)
  VALUES (%(batch)s, 42, 7, 'big@example.com', now(), now(), now(), 'partially_completed',
          %(n)s, %(ok)s, %(n)s - %(ok)s, '{}'::jsonb)
  RETURNING batch_id)
INSERT INTO batch_files (batch_id, file_document_id, file_name, processing_status,
    processing_start_time, processing_end_time, chunks_created, error_category, error_message)
SELECT %(batch)s, 'bigdoc' || i || %(tag)s, 'file-' || lpad(i::text, 5, '0') || '.pdf',
       CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'success' END, now(), now(),
       CASE WHEN i %% 10 = 0 THEN 0 ELSE 3 END,
       CASE WHEN i %% 10 = 0 THEN 'processing_error' END,
       CASE WHEN i %% 10 = 0 THEN 'corrupt file' END
FROM generate_series(1, %(n)s) AS i;
INSERT INTO auto_correction_tasks (file_document_id, batch_id, failure_category,
    original_error_message, correction_actions, status, s3_cleanup_completed,
    cms_cleanup_completed, chroma_cleanup_completed)
SELECT 'bigdoc' || i || %(tag)s, %(batch)s, 'processing_error', 'corrupt file',
       '["s3_delete", "cms_delete", "chroma_delete"]'::jsonb, 'completed', true, true, true
FROM generate_series(10, %(n)s, 10) AS i;
INSERT INTO email_notification_log (batch_id, recipient_email, company_id, bot_id,
    email_subject, send_status)
VALUES (%(batch)s, 'big@example.com', 42, 7, 'pending', 'pending');
"""


def big_batch(server: Server, n: int) -> uuid.UUID:
    batch = uuid.uuid4()
    server.rows(BUILD_BATCH, {"batch": str(batch), "n": n, "ok": n - n // 10,
                              "tag": f"-{batch.hex[:8]}"}, database=DB)
    return batch


def counted(server: Server, fn: Callable[[], object]) -> tuple[int, int]:
    """(statements, transactions) the bench process ran for ``fn`` — as the service's role,
    whose processes are stopped by now; transactions counted by their ``BEGIN``."""
    reset(server)
    fn()
    rows, _, begins, _ = statements(server)
    return sum(calls for _, calls, _ in rows), begins


def email_statements(server: Server) -> None:
    from sqlalchemy import text

    from ingest.db import session_scope
    from ingest.mail.render import render_batch_summary
    from ingest.mail.send import load_summary, send_batch_email
    from ingest.settings import get_settings

    settings = get_settings()
    with session_scope() as s:  # the engine's first connection asks the server a few things
        s.execute(text("SELECT 1"))

    def render(batch: uuid.UUID) -> None:
        summary, prefs = load_summary(batch)
        render_batch_summary(summary, prefs, from_email=settings.from_email,
                             from_name=settings.from_name,
                             unsubscribe_url=settings.unsubscribe_url,
                             list_cap=settings.email_list_cap)

    print("\n== the summary e-mail of a large batch (statements, transactions) ==")
    for n in (10, 1000):
        batch = big_batch(server, n)
        rendered = counted(server, lambda b=batch: render(b))
        sent = counted(server, lambda b=batch: send_batch_email(b, settings))
        print(f"  {n:>5} files: render {rendered[0]} statements in {rendered[1]} "
              f"transaction(s); whole send {sent[0]} statements in {sent[1]} transaction(s)")


# -- the run ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--threshold", type=int, default=50, help="batch size threshold")
    parser.add_argument("--beat", action="store_true",
                        help="also run beat (its sweeps and snapshots count too)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    wanted = {"s3", "chroma", "smtp", "cms", "web", "worker"} | ({"beat"} if args.beat
                                                                  else set())
    overrides = {"DEFAULT_BATCH_SIZE_THRESHOLD": str(args.threshold),
                 "DEFAULT_NOTIFICATION_DELAY_MINUTES": str(QUIET_MINUTES)}
    with Stack(BENCH, "hashing", wanted, overrides) as stack:
        server = stack.server
        time.sleep(2)  # the processes' start-up statistics reach the server first
        xacts_before = reset(server)
        began = time.monotonic()
        upload(stack.env, args.files)
        mails, done = wait_all_done(server, args.files, args.timeout)
        time.sleep(QUIET_MINUTES * 60 + 2)  # countdown hints still due run, as they would
        for name in ("beat", "worker", "web", "cms"):  # their backends exit and flush
            if name in wanted:
                stack.service(name).stop()
        took = time.monotonic() - began
        time.sleep(1.5)
        rows, control, _, observer = statements(server)
        xacts = transactions(server) - xacts_before - observer
        print(f"\n{done} of {args.files} files done, {mails} batch e-mails sent, "
              f"in {took:.0f}s{' (beat running)' if args.beat else ''}")
        report(f"per file: {args.files} files through webhook, worker and e-mail", rows,
               control, xacts, args.files)
        email_statements(server)
    return 0 if done == args.files else 1


if __name__ == "__main__":
    sys.exit(main())

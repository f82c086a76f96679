"""``make chaos``: thousands of uploads while the infrastructure fails under them.

Starts its own PostgreSQL and Redis on free ports (``devtools.throwaway``, never the
machine's), S3 (moto), Chroma, web, worker and beat as ``make demo`` does
(``devtools.demo.services``), and the SMTP sink and the CMS stand-in in this process, where
their fault switches are (``SmtpSink.refuse_for``, ``CmsState.fail_for``). Everything lives
under ``.chaos/`` (user ``postgres`` must be able to reach it: the folder is made 755).

Files are uploaded as ``ingest upload`` does (the S3 object, then ``POST /api/files``; the
CMS sends the webhook) by many uploaders, paced over the upload window, 5 % of them bad
(corrupt PDF, unsupported type, empty: ``processing_error``, which is auto-corrected).
Meanwhile, each while files are in flight:

- the worker's whole process group is SIGKILLed, twice (and a new worker started);
- Redis is restarted empty; PostgreSQL is restarted (fast shutdown); Chroma is restarted;
- SMTP refuses every other session for a while, then every session for longer;
- the CMS answers 503 to everything for a while (uploads included: the uploader retries).

The recovery time of each fault is from its end (the restarted process ready, the refusal
over) until the service makes progress again: one more file terminal (worker, Redis,
PostgreSQL), one more file done (Chroma), one more e-mail accepted (SMTP), one more
correction completed (CMS); also how long until every file that was unfinished when the
fault hit is terminal. Once everything has settled, the checks read the real stores:

- PostgreSQL: every uploaded file terminal, good ones ``done`` and ``success`` in their
  batch, bad ones ``failed`` as ``processing_error``; no event, batch, e-mail or correction
  left in a non-final state;
- the SMTP sink's saved messages: exactly one e-mail per batch, Message-IDs unique, the
  subjects' totals add up to the good and bad files. The one exception is the rare e-mail
  whose worker was killed after the message body left and before the reply was recorded:
  by design it fails as "outcome unknown" with an operator alert and is never sent twice,
  so it may be at the sink once or not at all (the run prints how many);
- corrections only for bad files, each completed; S3 (listing), the CMS (``GET
  /api/files`` over HTTP) and Chroma (the collection) hold every good file and no bad one,
  with as many chunks in Chroma as the batch recorded.

Run settings differ from production defaults only where waiting would make the run long
(quiet period, sweeps, correction delay, reconciliation every 20 s) or where a budget must
outlast the injected outages by design (ingest and correction retries, the correction
breaker — 5 % bad files of thousands are not a "too many at once" accident).

    .venv/bin/python bench/chaos.py [--small] [--files N] [--uploaders N]

Not part of ``make test``; ``make chaos SMALL=1`` (about 500 files) runs in CI.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import requests  # noqa: E402

from devtools import demo, procs  # noqa: E402
from devtools.cms_standin import CmsServer, CmsState  # noqa: E402
from devtools.samples import make_corrupt_pdf  # noqa: E402
from devtools.smtp_sink import SmtpSink  # noqa: E402
from devtools.throwaway import ThrowawayPostgres, ThrowawayRedis  # noqa: E402

CHAOS = ROOT / ".chaos"
MAIL = CHAOS / "mail"
DB = "kb_chaos"
BUCKET = "kb-chaos"
BAD_SHARE = 0.05
FINAL_EVENT = ("done", "ignored", "failed")


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one run; fault times are fractions of the upload window."""

    files: int
    uploaders: int
    upload_seconds: float
    threshold: int  # batch size threshold
    smtp_flaky: float  # every other session refused
    smtp_dead: float  # every session refused
    cms_down: float
    settle_timeout: float  # after the last upload
    at: dict[str, float] = field(default_factory=lambda: {
        "worker-kill-1": 0.06, "smtp": 0.12, "redis": 0.24, "postgres": 0.40,
        "chroma": 0.55, "cms": 0.68, "worker-kill-2": 0.84})


SMALL = Profile(files=500, uploaders=10, upload_seconds=180, threshold=20, smtp_flaky=30,
                smtp_dead=60, cms_down=20, settle_timeout=300)
FULL = Profile(files=10_000, uploaders=100, upload_seconds=1500, threshold=100, smtp_flaky=300,
               smtp_dead=600, cms_down=60, settle_timeout=2400)


# -- the uploads ------------------------------------------------------------------------------

@dataclass
class Upload:
    name: str
    key: str
    data: bytes
    mime: str
    user: int
    bad: str = ""  # why it is bad; "" for a good file
    document_id: str = ""


_TEXT = ("invoice policy travel claim laptop onboarding quarterly review coffee parking badge "
         "server rota warehouse delivery pallet tyre permit garden lease office meeting budget "
         "forecast release train battery desk price support")
WORDS = tuple(_TEXT.split())


def make_uploads(profile: Profile, seed: int = 7) -> list[Upload]:
    """The files, round robin over the uploaders; every twentieth one bad."""
    rng = random.Random(seed)
    out: list[Upload] = []
    for n in range(profile.files):
        user = n % profile.uploaders
        company, bot = 40 + user % 5, 7
        prefix = f"companies/{company}/bots/{bot}/chaos/{n:05d}"
        if n % round(1 / BAD_SHARE) == 19:
            kind = (n // 20) % 3
            name, mime, data, why = [
                (f"scan-{n:05d}.pdf", "application/pdf", make_corrupt_pdf(), "corrupt PDF"),
                (f"tool-{n:05d}.exe", "application/octet-stream", b"MZ\x90\x00\x03\x00",
                 "unsupported type"),
                (f"empty-{n:05d}.txt", "text/plain", b"", "empty file"),
            ][kind]
            out.append(Upload(name, f"{prefix}/{name}", data, mime, user, why))
            continue
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120)))
                      + "." for _ in range(rng.randint(1, 6))]
        text = f"Note {n} of uploader {user}.\n\n" + "\n\n".join(paragraphs) + "\n"
        name, mime = ((f"note-{n:05d}.md", "text/markdown") if n % 7 == 0
                      else (f"note-{n:05d}.txt", "text/plain"))
        out.append(Upload(name, f"{prefix}/{name}", text.encode(), mime, user))
    return out


def company_of(upload: Upload) -> int:
    return int(upload.key.split("/")[1])


class Uploader(threading.Thread):
    """Uploads every file, paced evenly over the window; retries while the CMS is down."""

    def __init__(self, uploads: list[Upload], seconds: float) -> None:
        super().__init__(name="uploader", daemon=True)
        self.uploads, self.seconds = uploads, seconds
        self.done = 0
        self.refused = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def _run(self) -> None:
        from ingest.adapters.cms import CmsClient
        from ingest.adapters.s3 import S3Store
        from ingest.errors import TransientError
        from ingest.settings import get_settings

        settings = get_settings()
        s3, cms = S3Store(settings), CmsClient.from_settings(settings)
        began = time.monotonic()
        gap = self.seconds / max(1, len(self.uploads))
        for n, up in enumerate(self.uploads):
            wait = began + n * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            s3.put(up.key, up.data, up.mime)
            fields = {"name": up.name, "storage_key": up.key, "company_id": company_of(up),
                      "bot_id": 7, "user_email": f"uploader{up.user:03d}@example.com",
                      "size_bytes": str(len(up.data)), "mime_type": up.mime}
            while True:
                try:
                    up.document_id = str(cms.create_file(fields)["documentId"])
                    break
                except TransientError:  # the CMS outage (503): an uploader tries again
                    self.refused += 1
                    time.sleep(1.0)
            self.done += 1
        cms.session.close()


# -- the database, read as the observer -------------------------------------------------------

class Db:
    def __init__(self, pg: ThrowawayPostgres) -> None:
        self.pg = pg

    def rows(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                                dbname=DB, connect_timeout=3)
        conn.autocommit = True
        with closing(conn), conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def value(self, sql: str, args: Any = ()) -> Any:
        try:
            return self.rows(sql, args)[0][0]
        except psycopg2.Error:
            return None  # PostgreSQL is restarting


TERMINAL = "SELECT count(*) FROM file_events WHERE status IN ('done', 'failed')"
DONE = "SELECT count(*) FROM file_events WHERE status = 'done'"
CORRECTED = "SELECT count(*) FROM auto_correction_tasks WHERE status = 'completed'"
UNFINISHED = ("SELECT id FROM file_events WHERE status NOT IN ('done', 'ignored', 'failed')")


# -- faults -----------------------------------------------------------------------------------

@dataclass
class Fault:
    name: str
    at: float  # seconds after the uploads began
    ended: float = 0.0  # monotonic time the fault ended (restart ready, refusal over)
    in_flight: int = 0  # events unfinished when it hit
    recovery: float | None = None
    settled: float | None = None  # until every event unfinished when it hit was terminal
    note: str = ""


class Stack:
    """The processes, and the faults done to them."""

    def __init__(self, env: dict[str, str], pg: ThrowawayPostgres, redis: ThrowawayRedis,
                 services: dict[str, procs.Service], sink: SmtpSink, cms: CmsServer) -> None:
        self.env, self.pg, self.redis = env, pg, redis
        self.services, self.sink, self.cms = services, sink, cms
        self.restarts: Counter[str] = Counter()

    def _restart(self, service: procs.Service, stop: Callable[[], None]) -> None:
        stop()
        self.restarts[service.name] += 1
        if service.log.exists():  # start() truncates its log: keep the old one
            service.log.rename(service.log.with_suffix(f".{self.restarts[service.name]}.log"))
        service.start(self.env)
        service.wait_ready()

    def kill_worker(self) -> None:
        worker = self.services["worker"]
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(30)
        self._restart(worker, lambda: None)

    def restart_redis(self) -> None:
        self._restart(self.redis, lambda: self.redis.stop(5))

    def restart_postgres(self) -> None:
        def fast_shutdown() -> None:
            pid = int((self.pg.folder / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # fast: SIGTERM would wait for pooled connections
            assert self.pg.proc is not None
            self.pg.proc.wait(60)
        self._restart(self.pg, fast_shutdown)

    def restart_chroma(self) -> None:
        chroma = self.services["chroma"]
        self._restart(chroma, lambda: chroma.stop(20))


def wait_in_flight(db: Db, timeout: float = 20.0) -> list[int]:
    """The unfinished events, once at least one is being processed (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = db.rows("SELECT id, status FROM file_events "
                       "WHERE status NOT IN ('done', 'ignored', 'failed')")
        if any(status == "processing" for _, status in rows) or time.monotonic() > deadline:
            return [i for i, _ in rows]
        time.sleep(0.05)


def watch(fault: Fault, db: Db, probe: str | Callable[[], int | None],
          stranded: list[int], timeout: float) -> threading.Thread:
    """Measure the fault's recovery (and when its stranded events settled) in a thread."""
    def count() -> int | None:
        return probe() if callable(probe) else db.value(probe)

    def run() -> None:
        while time.monotonic() < fault.ended:
            time.sleep(0.1)
        base, deadline = count(), fault.ended + timeout
        while base is None and time.monotonic() < deadline:
            time.sleep(0.2)
            base = count()
        while fault.recovery is None and time.monotonic() < deadline:
            now = count()
            if now is not None and base is not None and now > base:
                fault.recovery = time.monotonic() - fault.ended
            else:
                time.sleep(0.2)
        while stranded and time.monotonic() < deadline:
            left = db.value("SELECT count(*) FROM file_events WHERE id = ANY(%s) AND status "
                            "NOT IN ('done', 'ignored', 'failed')", (stranded,))
            if left == 0:
                fault.settled = time.monotonic() - fault.ended
                return
            time.sleep(0.5)
    thread = threading.Thread(target=run, name=f"watch-{fault.name}", daemon=True)
    thread.start()
    return thread


def run_faults(profile: Profile, stack: Stack, db: Db, began: float,
               uploader: Uploader) -> tuple[list[Fault], list[threading.Thread]]:
    """Inject every fault at its time; each watched for its recovery."""
    mails = lambda: len(list(MAIL.glob("*.eml")))  # noqa: E731
    plan: list[tuple[str, str, Callable[[Fault], None], str | Callable[[], int | None]]] = [
        ("worker-kill-1", "worker group SIGKILLed", lambda f: stack.kill_worker(), TERMINAL),
        ("smtp", f"SMTP refuses every other session {profile.smtp_flaky:.0f}s, then all "
                 f"{profile.smtp_dead:.0f}s", lambda f: smtp_outage(stack, f, profile), mails),
        ("redis", "Redis restarted empty", lambda f: stack.restart_redis(), TERMINAL),
        ("postgres", "PostgreSQL restarted", lambda f: stack.restart_postgres(), TERMINAL),
        ("chroma", "Chroma restarted", lambda f: stack.restart_chroma(), DONE),
        ("cms", f"CMS answers 503 for {profile.cms_down:.0f}s",
         lambda f: cms_outage(stack, f, profile), CORRECTED),
        ("worker-kill-2", "worker group SIGKILLed", lambda f: stack.kill_worker(), TERMINAL),
    ]
    faults, watchers = [], []
    for key, title, act, probe in sorted(plan, key=lambda p: profile.at[p[0]]):
        at = profile.at[key] * profile.upload_seconds
        while time.monotonic() - began < at:
            if uploader.error:
                raise RuntimeError(f"uploader failed: {uploader.error!r}")
            time.sleep(0.1)
        stranded = wait_in_flight(db)
        fault = Fault(title, time.monotonic() - began, in_flight=len(stranded))
        print(f"  t={fault.at:6.1f}s  {title}  ({len(stranded)} events unfinished)", flush=True)
        act(fault)
        if not fault.ended:
            fault.ended = time.monotonic()
        faults.append(fault)
        watchers.append(watch(fault, db, probe, stranded, profile.settle_timeout))
    return faults, watchers


def smtp_outage(stack: Stack, fault: Fault, profile: Profile) -> None:
    """Flaky, then dead, without blocking the schedule: a timer switches the phases."""
    stack.sink.refuse_for(profile.smtp_flaky, every=2)
    threading.Timer(profile.smtp_flaky,
                    lambda: stack.sink.refuse_for(profile.smtp_dead)).start()
    fault.ended = time.monotonic() + profile.smtp_flaky + profile.smtp_dead


def cms_outage(stack: Stack, fault: Fault, profile: Profile) -> None:
    stack.cms.state.fail_for(profile.cms_down)
    fault.ended = time.monotonic() + profile.cms_down


# -- settling and the checks ------------------------------------------------------------------

# A file's events: its create webhook, or the entry.update that reconciliation records for
# a document whose webhook never arrived (refused while PostgreSQL restarted).
SETTLED = """
SELECT (SELECT count(*) FROM file_events WHERE status NOT IN ('done', 'ignored', 'failed')),
       (SELECT count(*) FROM batch_processing_sessions WHERE status = 'processing'),
       (SELECT count(*) FROM email_notification_log WHERE send_status IN ('pending', 'sending')),
       (SELECT count(*) FROM auto_correction_tasks
         WHERE status IN ('pending', 'processing', 'held')),
       (SELECT count(DISTINCT document_id) FROM file_events
         WHERE event IN ('entry.create', 'entry.update') AND document_id = ANY(%s)
           AND status IN ('done', 'failed'))
"""


def wait_settled(db: Db, uploads: list[Upload], cms: CmsServer, timeout: float) -> None:
    """Until every file is terminal and nothing is left to do, twice 5 s apart."""
    docs = [u.document_id for u in uploads]
    deadline, calm = time.monotonic() + timeout, 0
    last = ""
    while True:
        cms.state.wait_for_webhooks(5)
        try:
            events, batches, mails, fixes, terminal = db.rows(SETTLED, (docs,))[0]
        except psycopg2.Error as exc:
            events = batches = mails = fixes = terminal = -1
            last = str(exc)
        done = (events, batches, mails, fixes) == (0, 0, 0, 0) and terminal == len(docs)
        calm = calm + 1 if done else 0
        if calm >= 2:
            return
        state = (f"{terminal}/{len(docs)} files terminal, {events} events, {batches} batches, "
                 f"{mails} e-mails, {fixes} corrections unfinished")
        if state != last:
            print(f"    settling: {state}", flush=True)
            last = state
        if time.monotonic() > deadline:
            raise TimeoutError(f"not settled after {timeout:.0f}s: {state}")
        time.sleep(5)


def cms_listing(url: str, token: str) -> set[str]:
    """Every file entry's documentId, paged as reconciliation pages."""
    found: set[str] = set()
    page = 1
    while True:
        body = requests.get(f"{url}/api/files", headers={"Authorization": f"Bearer {token}"},
                            params={"sort": "id:asc", "pagination[page]": page,
                                    "pagination[pageSize]": 100}, timeout=30).json()
        found |= {e["documentId"] for e in body["data"]}
        if page >= body["meta"]["pagination"]["pageCount"]:
            return found
        page += 1


def s3_listing(env: dict[str, str]) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"])
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def chroma_chunks(env: dict[str, str]) -> Counter[str]:
    """Chunks per document_id in the collection."""
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=int(env["CHROMA_PORT"]))
    collection = client.get_collection(env["CHROMA_COLLECTION"])
    chunks: Counter[str] = Counter()
    offset, size = 0, 5000
    while True:
        got = collection.get(include=["metadatas"], limit=size, offset=offset)
        for meta in got["metadatas"] or []:
            chunks[str((meta or {}).get("document_id"))] += 1
        if len(got["ids"]) < size:
            return chunks
        offset += size


SUBJECT = re.compile(r"File Processing Complete - (\d+) Success, (\d+) Failed")


def checks(db: Db, env: dict[str, str], uploads: list[Upload]) -> list[str]:
    """The promises, each read from the store that keeps it."""
    problems: list[str] = []
    good = {u.document_id: u for u in uploads if not u.bad}
    bad = {u.document_id: u for u in uploads if u.bad}
    docs = list(good) + list(bad)

    # PostgreSQL: every file terminal, good ones success, bad ones processing_error
    outcome = {doc: (status, cat) for doc, status, cat in db.rows("""
        SELECT DISTINCT ON (e.document_id) e.document_id, e.status, f.error_category
        FROM file_events e LEFT JOIN batch_files f ON f.file_event_id = e.id
        WHERE e.event IN ('entry.create', 'entry.update') AND e.document_id = ANY(%s)
        ORDER BY e.document_id, e.id DESC""", (docs,))}
    files = {doc: status for doc, status in db.rows("""
        SELECT DISTINCT ON (file_document_id) file_document_id, processing_status
        FROM batch_files WHERE file_document_id = ANY(%s)
        ORDER BY file_document_id, id DESC""", (docs,))}
    wrong_good = [d for d in good if outcome.get(d, ("missing",))[0] != "done"
                  or files.get(d) != "success"]
    wrong_bad = [d for d in bad if outcome.get(d, ("missing", None)) != ("failed",
                                                                       "processing_error")]
    for label, wrong, table in (("good", wrong_good, good), ("bad", wrong_bad, bad)):
        if wrong:
            sample = ", ".join(f"{table[d].name}={outcome.get(d)}/{files.get(d)}"
                               for d in wrong[:5])
            problems.append(f"{len(wrong)} {label} file(s) with the wrong outcome: {sample}")
    stuck = db.rows("""
        SELECT 'event ' || status, count(*) FROM file_events
         WHERE status NOT IN ('done', 'ignored', 'failed') GROUP BY status
        UNION ALL SELECT 'batch ' || status, count(*) FROM batch_processing_sessions
         WHERE status = 'processing' GROUP BY status
        UNION ALL SELECT 'e-mail ' || send_status, count(*) FROM email_notification_log
         WHERE send_status <> 'sent' AND NOT (send_status = 'failed'
               AND error_message LIKE 'SMTP outcome unknown%%') GROUP BY send_status
        UNION ALL SELECT 'correction ' || status, count(*) FROM auto_correction_tasks
         WHERE status <> 'completed' GROUP BY status""")
    problems += [f"{n} {what} (not final, or not the expected final state)" for what, n in stuck]

    # The SMTP sink's saved messages: one per batch, Message-IDs unique, totals add up.
    # An e-mail whose worker died after its body left and before the reply was recorded is
    # "outcome unknown" by design (never sent twice; the operator is alerted): it may be at
    # the sink once or not at all.
    batches = {str(b) for (b,) in db.rows("SELECT batch_id FROM batch_processing_sessions")}
    in_doubt = {str(b): (ok, failed, alerts) for b, ok, failed, alerts in db.rows("""
        SELECT l.batch_id, b.successful_files, b.failed_files,
               (SELECT count(*) FROM operator_alerts a WHERE a.batch_id = l.batch_id
                  AND a.kind = 'email_failed')
        FROM email_notification_log l JOIN batch_processing_sessions b USING (batch_id)
        WHERE l.send_status = 'failed' AND l.error_message LIKE 'SMTP outcome unknown%%'""")}
    logged = {str(b): m for b, m in db.rows(
        "SELECT batch_id, message_id FROM email_notification_log "
        "WHERE email_type = 'batch_completion'")}
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in sorted(MAIL.glob("*.eml"))]
    summaries = [m for m in messages if m["X-Batch-ID"]]
    per_batch = Counter(str(m["X-Batch-ID"]) for m in summaries)
    ids = Counter(str(m["Message-ID"]) for m in summaries)
    problems += [f"Message-ID {i} sent {n} times" for i, n in ids.items() if n > 1]
    problems += [f"batch {b}: {per_batch[b]} e-mails, expected 1" for b in batches
                 if per_batch[b] != 1 and not (b in in_doubt and per_batch[b] == 0)]
    problems += [f"batch {b}: its e-mail's outcome is unknown and no operator was alerted"
                 for b, (_, _, alerts) in in_doubt.items() if alerts != 1]
    problems += [f"an e-mail for an unknown batch {b}" for b in per_batch if b not in batches]
    problems += [f"batch {m['X-Batch-ID']}: Message-ID {m['Message-ID']} is not the logged "
                 f"{logged.get(str(m['X-Batch-ID']))}" for m in summaries
                 if logged.get(str(m["X-Batch-ID"])) != str(m["Message-ID"])]
    totals = [0, 0]
    for m in summaries:
        found = SUBJECT.search(str(m["Subject"]))
        if found is None:
            problems.append(f"unexpected subject {m['Subject']!r}")
            continue
        totals[0] += int(found[1])
        totals[1] += int(found[2])
    for b, (ok, failed, _) in in_doubt.items():
        if per_batch[b] == 0:  # not delivered: its files are counted from the database
            totals[0] += ok
            totals[1] += failed
    if in_doubt:
        print(f"  e-mails whose outcome is unknown (worker killed mid-DATA; operator "
              f"alerted, not sent twice): {len(in_doubt)}, of which "
              f"{sum(per_batch[b] for b in in_doubt)} reached the SMTP sink")
    if totals != [len(good), len(bad)]:
        problems.append(f"the e-mails report {totals[0]} successes and {totals[1]} failures; "
                        f"uploaded {len(good)} good and {len(bad)} bad files")

    # Corrections only for bad files, each completed; the stores keep good and lose bad
    corrected = Counter()
    for doc, status in db.rows("SELECT file_document_id, status FROM auto_correction_tasks"):
        corrected[doc] += 1
        if doc not in bad:
            problems.append(f"a correction ({status}) of a file that is not bad: {doc}")
    problems += [f"bad file {bad[d].name}: {corrected[d]} corrections" for d in bad
                 if corrected[d] != 1]
    keys, entries, chunks = s3_listing(env), cms_listing(env["CMS_API_URL"],
                                                         env["CMS_API_TOKEN"]), chroma_chunks(env)
    made = dict(db.rows("""SELECT DISTINCT ON (file_document_id) file_document_id,
        chunks_created FROM batch_files WHERE processing_status = 'success'
        ORDER BY file_document_id, id DESC"""))
    for label, lost in (
        ("good files missing from S3", [d for d, u in good.items() if u.key not in keys]),
        ("good files missing from the CMS", [d for d in good if d not in entries]),
        ("good files without their chunks in Chroma",
         [d for d in good if not chunks[d] or chunks[d] != made.get(d)]),
        ("bad files still in S3", [d for d, u in bad.items() if u.key in keys]),
        ("bad files still in the CMS", [d for d in bad if d in entries]),
        ("bad files with chunks in Chroma", [d for d in bad if chunks[d]]),
    ):
        if lost:
            names = ", ".join((good | bad)[d].name for d in lost[:5])
            problems.append(f"{len(lost)} {label}: {names}")
    print(f"  checked: {len(good)} good files done and kept in S3 ({len(keys)} objects), the "
          f"CMS ({len(entries)} entries) and Chroma ({sum(chunks.values())} chunks); "
          f"{len(bad)} bad files failed and corrected ({sum(corrected.values())} corrections); "
          f"{len(summaries)} e-mails for {len(batches)} batches")
    return problems


# -- the run ----------------------------------------------------------------------------------

def environment(ports: dict[str, int], pg: ThrowawayPostgres, redis: ThrowawayRedis,
                profile: Profile) -> dict[str, str]:
    return demo.environment(ports, "hashing") | {
        "DATABASE_URL": pg.url(DB), "REDIS_URL": redis.url(0),
        "CELERY_BROKER_URL": redis.url(1), "S3_BUCKET": BUCKET,
        "CHROMA_COLLECTION": "kb_chaos",
        "DEFAULT_BATCH_SIZE_THRESHOLD": str(profile.threshold),
        "DEFAULT_NOTIFICATION_DELAY_MINUTES": "0.1", "BATCH_SWEEP_SECONDS": "2",
        "AUTO_CORRECTION_DELAY_SECONDS": "5", "S3_MISSING_GRACE_SECONDS": "10",
        "RECONCILIATION_EVERY_SECONDS": "20",  # webhooks refused while PostgreSQL is down
        "INGEST_MAX_RETRIES": "10", "MAX_CORRECTION_ATTEMPTS": "12",
        "CORRECTION_RETRY_BASE_SECONDS": "2", "SMTP_RETRY_BASE_SECONDS": "1",
        "CORRECTION_BREAKER_THRESHOLD": str(profile.files),
        "LOG_FORMAT": "text",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true",
                        help="about 500 files from 10 uploaders, short faults (CI)")
    parser.add_argument("--files", type=int)
    parser.add_argument("--uploaders", type=int)
    args = parser.parse_args(argv)
    profile = SMALL if args.small else FULL
    if args.files or args.uploaders:
        profile = Profile(**{**profile.__dict__, "files": args.files or profile.files,
                             "uploaders": args.uploaders or profile.uploaders})
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the in-process CMS's requests
    shutil.rmtree(CHAOS, ignore_errors=True)
    (CHAOS / "logs").mkdir(parents=True)
    os.chmod(CHAOS, 0o755)  # noqa: S103 - user postgres must reach its data folder
    began = time.monotonic()
    problems: list[str] = []
    faults: list[Fault] = []
    uploads = make_uploads(profile)
    pg, redis = ThrowawayPostgres(CHAOS / "pg", preload=()), ThrowawayRedis(CHAOS / "redis")
    ports = {name: procs.free_port() for name in ("s3", "chroma", "smtp", "cms", "web")}
    ports["redis"] = redis.port
    env = environment(ports, pg, redis, profile)
    os.environ.update(env)
    print(f"== chaos: {profile.files} files from {profile.uploaders} uploaders "
          f"({sum(bool(u.bad) for u in uploads)} bad) over {profile.upload_seconds:.0f}s ==")
    sink = SmtpSink(ports["smtp"], directory=MAIL)
    cms = CmsServer(CmsState(demo.CMS_TOKEN, f"http://127.0.0.1:{ports['web']}/webhooks/cms",
                             {"Authorization": f"Bearer {demo.WEBHOOK_TOKEN}"}),
                    port=ports["cms"])
    with procs.Supervisor() as supervisor, sink, cms:
        try:
            supervisor.start([pg, redis])
            with closing(psycopg2.connect(host="127.0.0.1", port=pg.port,
                                          user="postgres", dbname="postgres")) as conn:
                conn.autocommit = True
                conn.cursor().execute(f'CREATE DATABASE "{DB}"')
            subprocess.run([procs.script("ingest"), "db", "upgrade"], env=env, check=True,
                           capture_output=True)
            started = {s.name: s for s in demo.services(ports, "hashing", True, root=CHAOS)
                       if s.name in ("s3", "chroma", "web", "worker", "beat")}
            supervisor.start(list(started.values()), env,
                             lambda s, t: print(f"  {s.name:<7} ready in {t:5.1f}s"))
            import boto3

            boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"]).create_bucket(
                Bucket=BUCKET)
            db, stack = Db(pg), Stack(env, pg, redis, started, sink, cms)
            uploader = Uploader(uploads, profile.upload_seconds)
            t0 = time.monotonic()
            uploader.start()
            faults, watchers = run_faults(profile, stack, db, t0, uploader)
            uploader.join()
            if uploader.error:
                raise RuntimeError(f"uploader failed: {uploader.error!r}")
            print(f"  t={time.monotonic() - t0:6.1f}s  all {len(uploads)} files uploaded "
                  f"({uploader.refused} uploads refused by the CMS outage and retried)")
            wait_settled(db, uploads, cms, profile.settle_timeout)
            settled = time.monotonic() - t0
            print(f"  t={settled:6.1f}s  settled")
            for watcher in watchers:
                watcher.join(1)
            problems += [f"{s} is not running" for s in supervisor.dead()]
            problems += checks(db, env, uploads)
        except KeyboardInterrupt:
            problems.append("interrupted")
        except (procs.ProcError, TimeoutError, RuntimeError,
                subprocess.CalledProcessError) as exc:
            problems.append(str(exc))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            report(faults)
            print("== stopping ==", flush=True)
    print(f"logs: {CHAOS / 'logs'}   e-mails: {MAIL}   wall time {time.monotonic() - began:.0f}s")
    if problems:
        print("CHAOS FAILED:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print("CHAOS OK")
    return 0


def report(faults: list[Fault]) -> None:
    if not faults:
        return
    print("\n== faults ==")
    print(f"  {'fault':<58} {'at':>7} {'unfinished':>10} {'recovery':>9} {'all settled':>11}")
    for f in faults:
        rec = f"{f.recovery:8.1f}s" if f.recovery is not None else "       —"
        sett = f"{f.settled:10.1f}s" if f.settled is not None else "          —"
        print(f"  {f.name:<58} {f.at:6.1f}s {f.in_flight:>10} {rec:>9} {sett:>11}")
    print("  (recovery: from the fault's end until progress resumed; all settled: until every "
          "event unfinished when it hit was terminal)\n")


if __name__ == "__main__":
    sys.exit(main())

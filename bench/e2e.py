"""``make bench``: the service end to end against the intrinsic-work loop, on one machine.

One run, one stack (``bench.stack``: throwaway PostgreSQL and Redis, S3 via moto, a Chroma
server, the SMTP sink, the CMS stand-in, gunicorn ``-w 2``, beat and two prefork workers as
deployed: ``-Q ingest -c 2`` with all-MiniLM-L6-v2 and ``-Q notifications,corrections -c 4``),
the same files and cores for everything:

1. **Throughput** for two workloads — *typical documents* (10–50 KB of prose as txt, md,
   html, pdf, docx) and *one-chunk memos*. The files are put into S3 once. The loop
   (``bench.loop``: two plain processes doing download → extract → chunk → embed → Chroma
   upsert with the worker's own functions) processes them first; then the service gets
   them the real way (``POST /api/files`` to the CMS, which sends each webhook). Service
   files/s = files ÷ (first webhook stored → last ``success`` in ``batch_files``), both
   read from the database. Worker CPU = utime + stime of both workers' process groups
   (``/proc``) over that window; the loop's CPU is its processes' ``getrusage``.
   Orchestration cost per file = worker CPU ms per file − loop CPU ms per file. Two runs
   one after the other drift by a few per cent on shared cores (±50 ms on a 3 s document),
   so the same run is also split: the worker's own ``kb_ingest_stage_cpu_seconds`` (the
   stages the loop runs too) against the rest, and of the rest the part beat's periodic
   tasks take anyway (the settled worker's CPU rate over ``IDLE_SECONDS`` before the run).
   The CPU seconds of every process of the stack in each run are printed too.
2. **SQL statements per file** over the memos, counted as ``bench/sql_per_file.py`` does
   (``pg_stat_statements``, the bench's own polling as another role); here beat runs too.
3. **Latency**: uploaders with one memo and one corrupt PDF each, with
   ``AUTO_CORRECTION_DELAY_SECONDS=0``. E-mail: from the batch's due time (the latest of
   ``close_at``, its files' ends and its corrections' ends) to the SMTP sink's accepting the
   message (the ``.eml`` file's time), over every batch of the run. Correction: from the
   final failure (``processing_errors.created_at``) to ``auto_correction_tasks.started_at``.
4. **A bare Celery no-op** (``bench.noop_app``, ``-c 2`` prefork, the same broker and Celery
   settings): worker CPU per task, the floor under any task's orchestration.
5. **Memory soak**: a fresh worker with ``EMBEDDING_BACKEND=hashing`` takes ``--soak`` memos;
   the RSS of its process group is sampled; growth = end ÷ (RSS once 5 % were done) − 1.
6. **Webhook accept rate** (worker stopped): ``--webhooks`` complete file entries posted by
   8 client threads to the service's ``/webhooks/cms``, then to a bare Flask endpoint that
   inserts one row and publishes (``bench.bare_webhook``, gunicorn ``-w 2``).

Prints a table, writes ``bench/results/latest.json`` and ``latest.png`` (``--quick``:
``quick.json``/``quick.png``). Never part of ``make test``.

    .venv/bin/python -m bench.e2e [--quick] [--typical 60] [--memos 1000] [--soak 10000]
    .venv/bin/python -m bench.e2e --only webhooks [--rounds 3] [--webhooks 1000]
    .venv/bin/python -m bench.e2e --only memos [--rounds 3] [--memos 1000]
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench import sql_per_file  # noqa: E402
from bench.loop import run_loop  # noqa: E402
from bench.stack import DB, Stack, Stored, Upload  # noqa: E402
from devtools import procs, samples  # noqa: E402

FOLDER = ROOT / ".bench" / "e2e"
RESULTS = ROOT / "bench" / "results"
GOALS = {"typical_ratio": 0.97, "memo_ratio": 0.90, "orchestration_ms": 10.0,
         "sql_per_file": 12.0, "webhook_ratio": 0.5, "latency_p95_s": 2.0,
         "rss_growth": 0.10}

#: The stack of a full run: its processes, and settings for the latency phase.
#: Two workers as deployed: ``worker`` takes ``ingest`` (-c 2), ``notifier`` the e-mails,
#: checks and corrections (-c 4), so an e-mail never waits behind a document.
WANTED = ("s3", "chroma", "smtp", "cms", "web", "worker", "notifier", "beat")
#: The demo's 2 s batch sweep is put back to the default (15 s): the bench measures what a
#: deployment runs, and e-mails are sent on time by their own countdowns, not by the sweep.
OVERRIDES = {"AUTO_CORRECTION_DELAY_SECONDS": "0", "CHROMA_COLLECTION": "kb_bench",
             "DEFAULT_BATCH_SIZE_THRESHOLD": "100", "BATCH_SWEEP_SECONDS": "15"}
#: Seconds the settled worker is watched before each service run: the CPU its periodic
#: tasks (beat's sweeps, relay, metrics snapshot) take with no file to process.
IDLE_SECONDS = 30.0


# -- workloads ------------------------------------------------------------------------------

WORDS = (
    "policy", "team", "customer", "invoice", "quarter", "report", "office", "travel",
    "expense", "claim", "receipt", "manager", "approval", "deadline", "budget", "project",
    "meeting", "schedule", "contract", "supplier", "warehouse", "delivery", "safety",
    "training", "laptop", "account", "password", "support", "ticket", "release", "version",
    "server", "backup", "review", "audit", "payment", "refund", "holiday", "leave", "parking",
    "badge", "visitor", "kitchen", "coffee", "printer", "network", "storage", "archive",
    "compliance", "privacy",
)


def prose(rng: random.Random, chars: int) -> list[str]:
    """Paragraphs of plain ASCII sentences, about ``chars`` characters in all."""
    paragraphs, total = [], 0
    while total < chars:
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return paragraphs


MIME = {"txt": "text/plain", "md": "text/markdown", "html": "text/html",
        "pdf": "application/pdf",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


def typical_documents(count: int, seed: int = 1) -> list[Upload]:
    """``count`` documents of 10–50 KB of prose, txt/md/html/pdf/docx in turn."""
    rng, files = random.Random(seed), []
    for n in range(count):
        kind = ("txt", "md", "html", "pdf", "docx")[n % 5]
        paragraphs = prose(rng, 10_000 + (40_000 * n) // max(1, count - 1))
        if kind == "txt":
            data = samples.make_txt("\n\n".join(paragraphs))
        elif kind == "md":
            parts = [f"## Part {i // 4 + 1}\n\n{p}" if i % 4 == 0 else p
                     for i, p in enumerate(paragraphs)]
            data = samples.make_md(f"# Handbook {n}\n\n" + "\n\n".join(parts))
        elif kind == "html":
            data = samples.make_html(f"Handbook {n}", "\n\n".join(paragraphs))
        elif kind == "pdf":
            data = samples.make_pdf("\n\n".join(paragraphs))
        else:
            data = samples.make_docx(paragraphs)
        files.append(Upload(f"handbook-{n:04d}.{kind}", data, MIME[kind]))
    return files


def memos(count: int, seed: int = 2, user: str = "bench@example.com") -> list[Upload]:
    """``count`` one-chunk text memos (a few hundred bytes)."""
    rng = random.Random(seed)
    return [Upload(f"memo-{n:05d}.txt", samples.make_txt(prose(rng, 250)[0]), "text/plain",
                   user) for n in range(count)]


def prose_size(files: list[Upload]) -> float:
    return statistics.fmean(len(f.data) for f in files)


# -- measurements from outside ---------------------------------------------------------------

CLOCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def group_cpu(pid: int) -> float:
    """CPU seconds of a process and of every live descendant, each with its reaped children
    (PostgreSQL's backends are the grandchildren of the process started)."""
    try:
        fields = _stat(pid)
    except FileNotFoundError:
        return 0.0
    # utime stime cutime cstime are fields 14-17 (1-based): 11-14 here
    return sum(int(v) for v in fields[11:15]) / CLOCK + sum(
        group_cpu(child) for child in procs.children(pid))


def group_rss(pid: int) -> int:
    """Resident bytes of a process and its live children."""
    total = 0
    for p in [pid, *procs.children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


def workers_cpu(by_process: dict[str, float]) -> float:
    """The Celery workers' (ingest and notifications) part of :func:`cpu_by_process`."""
    return sum(by_process.get(name, 0.0) for name in ("worker", "notifier"))


def cpu_by_process(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each process the stack started (with its children)."""
    return {s.name: group_cpu(s.proc.pid) for s in stack.supervisor.services if s.proc}


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                  .splitlines() if line.startswith("MemTotal:"))
    return {"cores": os.cpu_count(), "cpu": model, "ram_gb": round(mem_kb / 1024**2, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- phases ----------------------------------------------------------------------------------

@dataclass
class Round:
    """One loop run and one service run of a workload, back to back."""

    service_files_per_s: float
    loop_files_per_s: float
    service_cpu_ms_per_file: float
    loop_cpu_ms_per_file: float
    #: of the worker's CPU, what its processes spent in the stages the loop also runs
    #: (download, extract, chunk, embed, store), from its own ``kb_ingest_stage_cpu_seconds``
    service_stage_cpu_ms_per_file: float
    #: the settled worker's CPU rate before the run, times the run's seconds, per file: the
    #: part of the worker's CPU that beat's periodic tasks would have taken anyway
    background_ms_per_file: float
    service_seconds: float
    loop_seconds: float
    failed: int
    loop_errors: int
    #: the machine's 1-minute load average after the loop and after the service ran (the
    #: bench itself keeps about 2 busy; more means other work shared the cores)
    load_after_loop: float
    load_after_service: float
    #: CPU seconds of each of the stack's processes (and the loop's) during each run: where
    #: the two cores went
    loop_cpu_by_process: dict[str, float]
    service_cpu_by_process: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.service_files_per_s / self.loop_files_per_s

    @property
    def orchestration_ms(self) -> float:
        """Worker CPU per file minus the loop's (two runs one after the other)."""
        return self.service_cpu_ms_per_file - self.loop_cpu_ms_per_file

    @property
    def outside_stages_ms(self) -> float:
        """Worker CPU per file outside the stages, in the same run: no drift between runs."""
        return self.service_cpu_ms_per_file - self.service_stage_cpu_ms_per_file


@dataclass
class Throughput:
    """A workload's rounds; each figure is the median over the rounds."""

    workload: str
    files: int
    mean_bytes: float
    rounds: list[Round]

    def _median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.rounds)

    @property
    def ratio(self) -> float:
        return self._median("ratio")

    @property
    def orchestration_ms(self) -> float:
        return self._median("orchestration_ms")

    @property
    def outside_stages_ms(self) -> float:
        return self._median("outside_stages_ms")

    def summary(self) -> dict[str, Any]:
        medians = {name: self._median(name) for name in (
            "service_files_per_s", "loop_files_per_s", "service_cpu_ms_per_file",
            "loop_cpu_ms_per_file", "service_stage_cpu_ms_per_file", "background_ms_per_file",
            "service_seconds", "loop_seconds")}
        return {"workload": self.workload, "files": self.files, "mean_bytes": self.mean_bytes,
                **medians, "ratio": self.ratio, "orchestration_ms": self.orchestration_ms,
                "outside_stages_ms": self.outside_stages_ms,
                "failed": sum(r.failed for r in self.rounds),
                "loop_errors": sum(r.loop_errors for r in self.rounds),
                "rounds": [asdict(r) | {"ratio": r.ratio, "orchestration_ms":
                                         r.orchestration_ms, "outside_stages_ms":
                                         r.outside_stages_ms} for r in self.rounds]}


def event_marker(stack: Stack) -> int:
    (row,) = stack.server.rows("SELECT coalesce(max(id), 0) FROM file_events", database=DB)
    return int(row[0])


def wait_events(stack: Stack, after: int, count: int, timeout: float,
                progress: Any = None) -> None:
    """Until ``count`` file events stored after event id ``after`` are terminal."""
    def done() -> bool:
        (n,) = stack.server.rows(
            "SELECT count(*) FROM file_events WHERE id > %s "
            "AND status IN ('done', 'failed', 'ignored')", (after,), database=DB)[0]
        if progress:
            progress(n)
        return n >= count
    procs.wait_until(done, timeout, f"{count} files processed", 0.5)


def throughput(stack: Stack, workload: str, files: list[Upload], timeout: float,
               rounds: int = 1, count_sql: bool = False
               ) -> tuple[Throughput, dict[str, Any] | None]:
    """``rounds`` times: the loop, then the service, on the same S3 objects (each service
    round creates new CMS entries for them). SQL is counted in the first round."""
    print(f"\n== {workload}: {len(files)} files, mean {prose_size(files) / 1024:.1f} KB ==")
    stored = stack.put_objects(files, f"{workload}-{uuid.uuid4().hex[:6]}")
    loop_env = {k: v for k, v in stack.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "CHROMA_COLLECTION": f"bench_loop_{workload}"}  # the loop's stages are not the worker's
    done: list[Round] = []
    sql = None
    for n in range(rounds):
        now = datetime.now(UTC).isoformat()
        entries = [(f"loop-{workload}-{n}-{i}",
                    s.entry | {"documentId": f"loop-{workload}-{n}-{i}", "updatedAt": now})
                   for i, s in enumerate(stored)]
        before = cpu_by_process(stack)
        loop = run_loop(entries, loop_env, processes=2)
        load_after_loop = load_average()
        loop_cpu = since(before, cpu_by_process(stack)) | {"loop": loop.cpu_seconds}
        print(f"  loop     {loop.files_per_second:7.2f} files/s   {loop.wall_seconds:6.1f}s   "
              f"CPU {1000 * loop.cpu_seconds / max(1, loop.files):7.1f} ms/file"
              f"{f'   ERRORS {loop.errors}' if loop.errors else ''}")
        service, counted = run_service(stack, stored, timeout, count_sql and n == 0)
        service_cpu = service["by_process"]
        sql = sql or counted
        result = Round(
            service_files_per_s=len(files) / service["seconds"],
            loop_files_per_s=loop.files_per_second,
            service_cpu_ms_per_file=1000 * service["cpu"] / len(files),
            loop_cpu_ms_per_file=1000 * loop.cpu_seconds / max(1, loop.files),
            service_stage_cpu_ms_per_file=1000 * service["stage_cpu"] / len(files),
            background_ms_per_file=1000 * service["idle_cpu_per_s"] * service["seconds"]
            / len(files),
            service_seconds=service["seconds"], loop_seconds=loop.wall_seconds,
            failed=service["failed"], loop_errors=loop.errors,
            load_after_loop=load_after_loop, load_after_service=load_average(),
            loop_cpu_by_process=loop_cpu, service_cpu_by_process=service_cpu)
        done.append(result)
        print(f"  service  {result.service_files_per_s:7.2f} files/s   "
              f"{result.service_seconds:6.1f}s   CPU "
              f"{result.service_cpu_ms_per_file:7.1f} ms/file   ratio {result.ratio:.2f}"
              f"{f'   FAILED {result.failed}' if result.failed else ''}")
        print(f"  worker CPU over the loop's {result.orchestration_ms:+.1f} ms/file; outside "
              f"the stages, same run, {result.outside_stages_ms:+.1f} ms/file (of which "
              f"{result.background_ms_per_file:.1f} periodic tasks)")
        for name, cpu in (("loop", loop_cpu), ("service", service_cpu)):
            print(f"  CPU s, {name} run: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                if v >= 0.05))
        print(f"  load average after the loop {result.load_after_loop:.1f}, after the "
              f"service {result.load_after_service:.1f} ({os.cpu_count()} cores)")
    return Throughput(workload, len(files), prose_size(files), done), sql


def run_service(stack: Stack, stored: list[Stored], timeout: float,
                count_sql: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    marker = event_marker(stack)
    stack.wait_settled(120)
    idle = cpu_by_process(stack)
    time.sleep(IDLE_SECONDS)
    idle_cpu_per_s = workers_cpu(since(idle, cpu_by_process(stack))) / IDLE_SECONDS
    if count_sql:
        sql_per_file.reset(stack.server)
        xacts = sql_per_file.transactions(stack.server)
    by_process, began, stage_cpu = cpu_by_process(stack), time.process_time(), stack.stage_cpu()
    stack.create_entries(stored)
    wait_events(stack, marker, len(stored), timeout)
    by_process, stage_cpu = since(by_process, cpu_by_process(stack)), \
        stack.stage_cpu() - stage_cpu
    cpu = workers_cpu(by_process)
    by_process = by_process | {
        "bench (CMS client)": time.process_time() - began}
    first, last, failed = stack.server.rows(
        """SELECT min(e.received_at), max(f.processing_end_time),
                  count(*) FILTER (WHERE f.processing_status <> 'success')
           FROM file_events e JOIN batch_files f ON f.file_event_id = e.id
           WHERE e.id > %s""", (marker,), database=DB)[0]
    seconds = (last - first).total_seconds()
    sql = None
    if count_sql:
        stack.wait_settled(300)  # the batches' e-mails are part of a file's statements
        time.sleep(2)
        rows, control, _, observer = sql_per_file.statements(stack.server)
        total = sum(calls for _, calls, _ in rows)
        xacts = sql_per_file.transactions(stack.server) - xacts - observer
        sql = {"files": len(stored), "statements": total,
               "statements_per_file": total / len(stored),
               "transactions_per_file": xacts / len(stored),
               "top": [{"query": q[:200], "calls": c} for q, c, _ in rows[:10]]}
        print(f"  SQL      {sql['statements_per_file']:.1f} statements/file, "
              f"{sql['transactions_per_file']:.1f} transactions/file (beat running)")
    return {"seconds": seconds, "cpu": cpu, "stage_cpu": stage_cpu, "by_process": by_process,
            "idle_cpu_per_s": idle_cpu_per_s, "failed": int(failed)}, sql


def latency(stack: Stack, uploaders: int, timeout: float) -> dict[str, Any]:
    """One memo and one corrupt PDF per uploader; then e-mail and correction latencies of
    every batch and correction of the run."""
    print(f"\n== latency: {uploaders} uploaders, one memo and one corrupt PDF each ==")
    files = []
    for u in range(uploaders):
        user = f"latency{u}@example.com"
        files += memos(1, seed=100 + u, user=user)
        files.append(Upload(f"broken-{u}.pdf", samples.make_corrupt_pdf(), "application/pdf",
                            user))
    stored = stack.put_objects(files, f"latency-{uuid.uuid4().hex[:6]}")
    stack.create_entries(stored)
    stack.wait_settled(timeout)
    time.sleep(1)
    due = dict(stack.server.rows(
        """SELECT b.batch_id::text, greatest(b.close_at,
               (SELECT max(f.processing_end_time) FROM batch_files f
                 WHERE f.batch_id = b.batch_id),
               (SELECT max(c.completed_at) FROM auto_correction_tasks c
                 WHERE c.batch_id = b.batch_id))
           FROM batch_processing_sessions b""", database=DB))
    mail = []
    parser = email.parser.BytesHeaderParser()
    for path in (stack.folder / "mail").glob("*.eml"):
        with path.open("rb") as fh:
            batch = parser.parse(fh).get("X-Batch-ID")
        if batch in due and due[batch] is not None:
            mail.append(path.stat().st_mtime - due[batch].timestamp())
    corrections = [float(r[0]) for r in stack.server.rows(
        """SELECT extract(epoch FROM c.started_at - e.created_at)
           FROM auto_correction_tasks c JOIN processing_errors e
             ON e.file_document_id = c.file_document_id
           WHERE c.started_at IS NOT NULL""", database=DB)]
    result = {"emails": len(mail), "email_p50_s": percentile(mail, 0.5),
              "email_p95_s": percentile(mail, 0.95), "corrections": len(corrections),
              "correction_p50_s": percentile(corrections, 0.5),
              "correction_p95_s": percentile(corrections, 0.95)}
    print(f"  e-mail      due → accepted   p50 {fmt(result['email_p50_s'])} s   "
          f"p95 {fmt(result['email_p95_s'])} s   ({len(mail)} e-mails)")
    print(f"  correction  failure → start  p50 {fmt(result['correction_p50_s'])} s   "
          f"p95 {fmt(result['correction_p95_s'])} s   ({len(corrections)} corrections)")
    return result


def noop(stack: Stack, tasks: int) -> dict[str, Any]:
    """CPU per task of a bare Celery no-op on a -c 2 prefork worker, same broker."""
    print(f"\n== bare Celery no-op: {tasks} tasks, -c 2 prefork ==")
    log = stack.folder / "logs" / "noop-worker.log"
    worker = procs.Service("noop-worker", [procs.script("celery"), "-A", "bench.noop_app",
                                           "worker", "-Q", "bench_noop", "-c", "2",
                                           "--loglevel", "INFO"], log,
                           lambda: procs.log_has(log, " ready."), 120)
    stack.supervisor.start([worker], stack.env)
    try:
        from bench.noop_app import app

        key = f"bench-noop-{uuid.uuid4().hex}"
        time.sleep(1)
        assert worker.proc is not None
        cpu, began = group_cpu(worker.proc.pid), time.monotonic()
        with app.producer_or_acquire() as producer:
            for n in range(tasks):
                app.send_task("bench.noop", args=[n], producer=producer)
            app.send_task("bench.mark", args=[key], producer=producer)
        import redis

        client = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
        procs.wait_until(lambda: client.get(key), 600, "the no-op tasks", 0.05)
        took = time.monotonic() - began
        time.sleep(0.5)  # the other child finishes its last task
        cpu = group_cpu(worker.proc.pid) - cpu
    finally:
        worker.stop()
        stack.supervisor.services.remove(worker)
    result = {"tasks": tasks, "cpu_ms_per_task": 1000 * cpu / (tasks + 1),
              "tasks_per_s": (tasks + 1) / took}
    print(f"  {result['cpu_ms_per_task']:.2f} ms CPU per task, "
          f"{result['tasks_per_s']:.0f} tasks/s")
    return result


def soak(stack: Stack, count: int, timeout: float) -> dict[str, Any]:
    """A fresh hashing worker takes ``count`` memos; RSS of its process group over time."""
    print(f"\n== memory soak: {count} memos, EMBEDDING_BACKEND=hashing ==")
    worker = stack.restart_worker("hashing", {"CHROMA_COLLECTION": "bench_soak"})
    assert worker.proc is not None
    pid = worker.proc.pid
    stored = stack.put_objects(memos(count, seed=7), f"soak-{uuid.uuid4().hex[:6]}", 8)
    marker = event_marker(stack)
    samples_: list[tuple[float, int, int]] = []  # (seconds, files done, rss)
    began, done = time.monotonic(), [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples_.append((time.monotonic() - began, done[0], group_rss(pid)))

    start_rss = group_rss(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    creator = threading.Thread(target=stack.create_entries, args=(stored,), daemon=True)
    creator.start()

    def progress(n: int) -> None:
        done[0] = n

    try:
        wait_events(stack, marker, count, timeout, progress)
    finally:
        stop.set()
        sampler.join()
        creator.join(60)
    end_rss = group_rss(pid)
    warm = next((rss for _, n, rss in samples_ if n >= count * 0.05), start_rss)
    took = time.monotonic() - began
    result = {"files": count, "rss_start_mb": start_rss / 2**20, "rss_warm_mb": warm / 2**20,
              "rss_end_mb": end_rss / 2**20, "growth": end_rss / warm - 1,
              "growth_from_start": end_rss / start_rss - 1, "seconds": took,
              "samples": [(round(t, 1), n, round(r / 2**20, 1)) for t, n, r in samples_]}
    print(f"  RSS {result['rss_start_mb']:.0f} MB at start, {result['rss_warm_mb']:.0f} MB "
          f"at 5 %, {result['rss_end_mb']:.0f} MB at the end: {100 * result['growth']:+.1f} % "
          f"({count / took:.1f} files/s)")
    return result


def webhooks(stack: Stack, count: int, threads: int = 8) -> dict[str, Any]:
    """Accepted webhooks per second: the service's, then a bare endpoint's."""
    print(f"\n== webhook accept rate: {count} webhooks, {threads} client threads ==")
    for name in ("worker", "notifier"):  # only the web path is measured
        if any(s.name == name for s in stack.started):
            stack.stop_service(name)
    stack.server.rows("CREATE TABLE IF NOT EXISTS bench_bare_events (id bigserial PRIMARY KEY,"
                      " payload jsonb NOT NULL, received_at timestamptz DEFAULT now())",
                      database=DB, user="postgres")
    token = stack.env["WEBHOOK_TOKEN"]

    def payloads(tag: str) -> list[dict[str, Any]]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return [{"event": "entry.create", "createdAt": now, "model": "file", "uid":
                 "api::file.file", "entry": {
                     "id": n, "documentId": f"hook{tag}{n:06d}", "updatedAt": now,
                     "name": f"memo-{n}.txt", "company_id": 42, "bot_id": 7,
                     "storage_key": f"companies/42/bots/7/hooks/{tag}/{n}.txt",
                     "user_email": "hooks@example.com", "size_bytes": "300",
                     "mime_type": "text/plain"}} for n in range(count)]

    def fire(url: str, bodies: list[dict[str, Any]]) -> tuple[float, int]:
        local = threading.local()

        def post(body: dict[str, Any]) -> int:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            return session.post(url, json=body, timeout=30,
                                headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(post, bodies[:threads * 2]))  # connections and code paths warm
            began = time.monotonic()
            codes = list(pool.map(post, bodies[threads * 2:]))
            took = time.monotonic() - began
        ok = sum(code in (200, 202) for code in codes)
        return ok / took, len(codes) - ok

    service_rate, service_bad = fire(f"http://127.0.0.1:{stack.ports['web']}/webhooks/cms",
                                     payloads(uuid.uuid4().hex[:6]))
    port = procs.free_port()
    log = stack.folder / "logs" / "bare-web.log"
    bare = procs.Service("bare-web", [procs.script("gunicorn"), "-w", "2", "-b",
                                      f"127.0.0.1:{port}", "bench.bare_webhook:create_app()"],
                         log, lambda: procs.http_ok(f"http://127.0.0.1:{port}/health"), 60)
    stack.supervisor.start([bare], stack.env)
    try:
        bare_rate, bare_bad = fire(f"http://127.0.0.1:{port}/webhooks/cms",
                                   payloads(uuid.uuid4().hex[:6]))
    finally:
        bare.stop()
        stack.supervisor.services.remove(bare)
    result = {"webhooks": count, "service_per_s": service_rate, "bare_per_s": bare_rate,
              "ratio": service_rate / bare_rate, "service_refused": service_bad,
              "bare_refused": bare_bad}
    print(f"  service {service_rate:7.1f}/s   bare {bare_rate:7.1f}/s   ratio "
          f"{result['ratio']:.2f}")
    return result


# -- report ----------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(r: dict[str, Any]) -> str:
    t, m = r["throughput"]["typical"], r["throughput"]["memos"]
    lat, mem, hooks, nop, sql = r["latency"], r["soak"], r["webhooks"], r["noop"], r["sql"]
    rounds = r.get("rounds", 1)
    median = f", median of {rounds}" if rounds > 1 else ""

    def split(w: dict[str, Any]) -> tuple[str, ...]:
        """The same run's worker CPU: outside the stages, per file and periodic."""
        outside, periodic = w["outside_stages_ms"], w["background_ms_per_file"]
        return (f"  same run: worker CPU outside the stages, {w['workload']}",
                f"{outside:+.1f} ms", f"stages {fmt(w['service_stage_cpu_ms_per_file'], 1)}",
                f"{outside - periodic:+.1f} per file, {periodic:.1f} periodic", "", "")

    def ok(value: float | None, goal: float, higher: bool = True) -> str:
        if value is None:
            return "?"
        return "yes" if (value >= goal if higher else value <= goal) else "NO"

    rows = [
        ("measure", "service", "baseline", "result", "goal", "met"),
        (f"typical docs files/s ({t['files']}, {t['mean_bytes'] / 1024:.0f} KB avg{median})",
         fmt(t["service_files_per_s"]), fmt(t["loop_files_per_s"]),
         f"ratio {t['ratio']:.2f}", "≥ 0.97", ok(t["ratio"], 0.97)),
        (f"one-chunk memos files/s ({m['files']}{median})", fmt(m["service_files_per_s"], 1),
         fmt(m["loop_files_per_s"], 1), f"ratio {m['ratio']:.2f}", "≥ 0.90",
         ok(m["ratio"], 0.90)),
        ("worker CPU ms/file, typical", fmt(t["service_cpu_ms_per_file"], 0),
         fmt(t["loop_cpu_ms_per_file"], 0), f"{t['orchestration_ms']:+.0f} ms", "≤ 10 ms",
         ok(t["orchestration_ms"], 10, False)),
        ("worker CPU ms/file, memos", fmt(m["service_cpu_ms_per_file"], 1),
         fmt(m["loop_cpu_ms_per_file"], 1), f"{m['orchestration_ms']:+.1f} ms", "≤ 10 ms",
         ok(m["orchestration_ms"], 10, False)),
        *(split(w) for w in (t, m)),
        ("bare Celery no-op CPU ms/task", fmt(nop["cpu_ms_per_task"]), "", "", "", ""),
        ("SQL statements per file (memos)", fmt(sql["statements_per_file"], 1), "", "",
         "≤ 12", ok(sql["statements_per_file"], 12, False)),
        ("webhooks accepted/s", fmt(hooks["service_per_s"], 0), fmt(hooks["bare_per_s"], 0),
         f"ratio {hooks['ratio']:.2f}", "≥ 0.5", ok(hooks["ratio"], 0.5)),
        ("e-mail due → SMTP accepted p50/p95 s",
         f"{fmt(lat['email_p50_s'])} / {fmt(lat['email_p95_s'])}", "", f"n={lat['emails']}",
         "p95 ≤ 2", ok(lat["email_p95_s"], 2, False)),
        ("failure → correction start p50/p95 s",
         f"{fmt(lat['correction_p50_s'])} / {fmt(lat['correction_p95_s'])}", "",
         f"n={lat['corrections']}", "p95 ≤ 2", ok(lat["correction_p95_s"], 2, False)),
        (f"worker RSS over {mem['files']} files (hashing)",
         f"{mem['rss_warm_mb']:.0f} → {mem['rss_end_mb']:.0f} MB", "",
         f"{100 * mem['growth']:+.1f} %", "≤ +10 %", ok(mem["growth"], 0.10, False)),
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(6)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
             + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(r["throughput"].values(), key=lambda t: t["mean_bytes"])
    sizes = [p["mean_bytes"] / 1024 for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, [p["service_files_per_s"] for p in points], "o-", label="service (webhook "
            "→ success, worker -c 2)")
    ax.plot(sizes, [p["loop_files_per_s"] for p in points], "s--", label="intrinsic-work "
            "loop (2 processes)")
    for p, x in zip(points, sizes, strict=True):
        ratio = p["service_files_per_s"] / p["loop_files_per_s"]
        ax.annotate(f"{p['workload']}\nratio {ratio:.2f}",
                    (x, p["service_files_per_s"]), textcoords="offset points", xytext=(8, 8),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean file size (KB)")
    ax.set_ylabel("files/s")
    mach = r["machine"]
    ax.set_title(f"kb-ingest vs intrinsic work — {mach['cores']} cores, {mach['cpu'][:40]}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the run ----------------------------------------------------------------------------------

def webhooks_only(count: int, rounds: int, out: Path | None) -> int:
    """``--only webhooks``: the webhook accept rate ``rounds`` times (service, then bare,
    back to back) on a stack of PostgreSQL, Redis and the web alone; every ratio and their
    median. Writes JSON only to ``out``."""
    print(f"machine: {machine()}")
    began, done = time.monotonic(), []
    with Stack(FOLDER, "hashing", ("web",)) as stack:
        for n in range(rounds):
            done.append(webhooks(stack, count) | {"load_after": load_average()})
            print(f"  round {n + 1}/{rounds}: load average {done[-1]['load_after']:.1f}")
    ratios = [r["ratio"] for r in done]
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "webhooks": count, "rounds": done, "ratio_median": statistics.median(ratios),
              "seconds": round(time.monotonic() - began)}
    print(f"\n== webhook accept rate, {rounds} round(s) of {count}: service "
          + ", ".join(f"{r['service_per_s']:.0f}" for r in done) + "/s; bare "
          + ", ".join(f"{r['bare_per_s']:.0f}" for r in done) + "/s; ratios "
          + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {result['ratio_median']:.2f} "
          f"(goal ≥ {GOALS['webhook_ratio']}) ==")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {out}")
    return 0


def memos_only(count: int, rounds: int, timeout: float, out: Path | None) -> int:
    """``--only memos``: the one-chunk memos' throughput and orchestration (loop, then
    service, ``rounds`` times back to back) on the bench's stack, SQL counted in the first
    round; every round's figures and their medians. Writes JSON only to ``out``."""
    print(f"machine: {machine()}")
    began = time.monotonic()
    with Stack(FOLDER, "minilm", WANTED, OVERRIDES) as stack:
        result, sql = throughput(stack, "memos", memos(count), timeout, rounds, count_sql=True)
    summary = result.summary() | {"sql": sql}
    print(f"\n== memos, {rounds} round(s) of {count}: orchestration "
          + ", ".join(f"{r.orchestration_ms:+.1f}" for r in result.rounds)
          + f" ms/file, median {result.orchestration_ms:+.1f} (goal ≤ "
          f"{GOALS['orchestration_ms']:g}); outside the stages "
          + ", ".join(f"{r.outside_stages_ms:+.1f}" for r in result.rounds)
          + f", median {result.outside_stages_ms:+.1f}; worker CPU median "
          f"{summary['service_cpu_ms_per_file']:.1f} ms/file; ratios "
          + ", ".join(f"{r.ratio:.2f}" for r in result.rounds)
          + f", median {result.ratio:.2f}; SQL {sql['statements_per_file'] if sql else 0:.1f}"
          " statements/file ==")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"when": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "machine": machine(), "memos": summary,
                                   "seconds": round(time.monotonic() - began)},
                                  indent=2, default=str) + "\n")
        print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer files (20 typical, 100 memos, 8 uploaders, 1,000-file "
                             "soak, 300 webhooks, 300 no-ops): a few minutes")
    parser.add_argument("--typical", type=int)
    parser.add_argument("--memos", type=int)
    parser.add_argument("--uploaders", type=int)
    parser.add_argument("--soak", type=int)
    parser.add_argument("--webhooks", type=int)
    parser.add_argument("--noops", type=int)
    parser.add_argument("--rounds", type=int, default=1,
                        help="loop and service back to back this many times per workload; "
                             "the table shows the medians (the cores may be shared)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--only", choices=["webhooks", "memos"],
                        help="only this measurement, --rounds times back to back: webhooks "
                             "(service and bare, on PostgreSQL, Redis and the web: make "
                             "bench-webhooks) or memos (loop and service, files/s, worker "
                             "CPU and SQL per file: make bench-memos)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/"
                        "latest.json, or quick.json with --quick); the PNG goes beside it")
    args = parser.parse_args(argv)
    defaults = (dict(typical=20, memos=100, uploaders=8, soak=1000, webhooks=300, noops=300)
                if args.quick else
                dict(typical=60, memos=1000, uploaders=20, soak=10_000, webhooks=1000,
                     noops=1000))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.only == "webhooks":
        return webhooks_only(args.webhooks, args.rounds, args.out)
    if args.only == "memos":
        return memos_only(args.memos, args.rounds, args.timeout, args.out)
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    began = time.monotonic()
    typical, memo_files = typical_documents(args.typical), memos(args.memos)
    print(f"machine: {machine()}")
    with Stack(FOLDER, "minilm", WANTED, OVERRIDES) as stack:
        t_typical, _ = throughput(stack, "typical", typical, args.timeout, args.rounds)
        t_memos, sql = throughput(stack, "memos", memo_files, args.timeout, args.rounds,
                                  count_sql=True)
        lat = latency(stack, args.uploaders, args.timeout)
        nop = noop(stack, args.noops)
        mem = soak(stack, args.soak, args.timeout)
        hooks = webhooks(stack, args.webhooks)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench" + (" QUICK=1" if args.quick else "")
                   + (f" ROUNDS={args.rounds}" if args.rounds != 1 else ""),
        "machine": machine(),
        "rounds": args.rounds,
        "throughput": {t.workload: t.summary() for t in (t_typical, t_memos)},
        "sql": sql, "latency": lat, "noop": nop, "soak": mem, "webhooks": hooks,
        "goals": GOALS, "seconds": round(time.monotonic() - began),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"\n== kb-ingest bench ({results['command']}, {results['seconds']} s) on "
          f"{results['machine']['cores']} cores, {results['machine']['cpu']}, "
          f"{results['machine']['ram_gb']} GB RAM ==\n")
    print(table(results))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: kb-ingest on real processes, driven by the operator CLI.

Needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust) and ``redis-server`` on PATH.
The scenario: a fresh database ``kb_ingest_demo`` (``ingest db upgrade``); Redis, S3 (moto),
Chroma, the SMTP sink, the CMS (the stand-in, or ``--cms strapi``), web, worker and beat
started by the shared supervisor (``devtools.procs``, logs in ``.demo/logs/``); the sample
files, good and bad, uploaded with ``ingest upload`` (live progress) as alice@example.com;
then the checks — every good file answers a question about itself, every bad file failed,
was reported and was removed by its correction, every batch sent exactly one e-mail and one
signed post to the bot's webhook channel (a local receiver, configured in the CMS as the
bot's ``bot-notification-setting``) — the e-mails and posts received, ``ingest status
--batch``, and ``DEMO OK``.

    python -m devtools.demo [--cms {standin,strapi}] [--embedding {minilm,hashing}]
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from devtools import procs
from devtools.http_receiver import HttpReceiver
from devtools.pg import admin_exec
from devtools.samples import bad_documents, sample_documents
from devtools.strapi import StrapiServer, node_ok
from ingest.settings import Settings

DEMO = procs.ROOT / ".demo"
LOGS, MAIL, UPLOAD = DEMO / "logs", DEMO / "mail", DEMO / "upload"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "kb_ingest_demo"
COMPANY, BOT, USER = 42, 7, "alice@example.com"
CMS_TOKEN, WEBHOOK_TOKEN, STATUS_TOKEN = "demo-cms-token", "demo-webhook-token", "demo-status"
NOTIFY_SECRET = "demo-notify-secret"
CONCURRENCY = 2


def environment(ports: dict[str, int], backend: str) -> dict[str, str]:
    """The one environment of every process: the caller's minus kb-ingest and cloud
    settings, plus the demo's."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ours and not k.upper().startswith(("AWS_", "CELERY_", "CHROMA_"))}
    url = "http://127.0.0.1:{}".format
    env.update({
        "DATABASE_URL": f"{ADMIN_URL.rsplit('/', 1)[0]}/{DB_NAME}",
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/1",
        "CMS_API_URL": url(ports["cms"]), "CMS_API_TOKEN": CMS_TOKEN,
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN, "STATUS_TOKEN": STATUS_TOKEN,
        "S3_BUCKET": "kb-demo", "S3_ENDPOINT_URL": url(ports["s3"]), "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
        "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(ports["chroma"]),
        "CHROMA_COLLECTION": "kb_demo", "EMBEDDING_BACKEND": backend,
        "OUTBOX_RELAY_AFTER_SECONDS": "2", "INGEST_MAX_RETRIES": "3",
        # Short waits so the demo takes minutes: the correction delay, the grace of a
        # missing object, a 6 s quiet period before a batch seals, a sweep every 2 s.
        "AUTO_CORRECTION_DELAY_SECONDS": "5", "S3_MISSING_GRACE_SECONDS": "10",
        "DEFAULT_NOTIFICATION_DELAY_MINUTES": "0.1", "DEFAULT_BATCH_SIZE_THRESHOLD": "100",
        "BATCH_SWEEP_SECONDS": "2", "SMTP_RETRY_BASE_SECONDS": "1",
        "SMTP_SERVER": "127.0.0.1", "SMTP_PORT": str(ports["smtp"]),
        "FROM_EMAIL": "kb-ingest@demo.local", "ENABLE_EMAIL_NOTIFICATIONS": "true",
        "NOTIFY_WEBHOOK_SECRET": NOTIFY_SECRET,
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "ANONYMIZED_TELEMETRY": "False", "LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1",
    })
    return env


def services(ports: dict[str, int], backend: str, standin: bool,
             root: Path = DEMO, notifier: int = 0) -> list[procs.Service]:
    """Infrastructure first, then the CMS stand-in (unless Strapi) and the three processes;
    their logs, data and e-mails under ``root`` (``.demo/``; ``bench/`` passes its own).

    ``notifier``: as deployed (docker-compose, k8s), a second worker of that concurrency
    takes the ``notifications`` and ``corrections`` queues and ``worker`` only ``ingest``;
    with 0 one worker takes all three."""
    url, log = "http://127.0.0.1:{}".format, (root / "logs").joinpath
    gunicorn = procs.script("gunicorn")
    import gunicorn as g  # 27+ opens a shared control socket in ~/.gunicorn: not here

    no_socket = ["--no-control-socket"] if g.version_info >= (27,) else []

    def worker(name: str, queues: str, concurrency: int) -> procs.Service:
        models = concurrency if backend == "minilm" else 0
        worker_log = log(f"{name}.log")
        return procs.Service(
            name, [procs.script("celery"), "-A", "workers", "worker", "-Q", queues, "-c",
                   str(concurrency), "--loglevel", "INFO"], worker_log,
            lambda: procs.log_has(worker_log, " ready.")
            and procs.log_has(worker_log, "embedding model", models), 180)

    workers = ([worker("worker", "ingest", CONCURRENCY),
                worker("notifier", "notifications,corrections", notifier)] if notifier else
               [worker("worker", "ingest,notifications,corrections", CONCURRENCY)])
    found = [
        procs.Service("redis", [shutil.which("redis-server") or "redis-server", "--port",
                                str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(root)], log("redis.log"),
                      lambda: procs.port_open(ports["redis"]), 15),
        procs.Service("s3", [procs.script("moto_server"), "-H", "127.0.0.1", "-p",
                             str(ports["s3"])], log("s3.log"),
                      lambda: procs.http_ok(f"{url(ports['s3'])}/moto-api/"), 30),
        procs.Service("chroma", [procs.script("chroma"), "run", "--path", str(root / "chroma"),
                                 "--host", "127.0.0.1", "--port", str(ports["chroma"])],
                      log("chroma.log"),
                      lambda: procs.http_ok(f"{url(ports['chroma'])}/api/v2/heartbeat"), 60),
        procs.Service("smtp", [sys.executable, "-m", "devtools.smtp_sink", "--port",
                               str(ports["smtp"]), "--dir", str(root / "mail")], log("smtp.log"),
                      lambda: procs.port_open(ports["smtp"]), 15),
    ]
    if standin:
        found.append(procs.Service(
            "cms", [sys.executable, "-m", "devtools.cms_standin", "--port", str(ports["cms"]),
                    "--token", CMS_TOKEN, "--webhook-url", f"{url(ports['web'])}/webhooks/cms",
                    "--webhook-token", WEBHOOK_TOKEN], log("cms.log"),
            lambda: procs.http_ok(f"{url(ports['cms'])}/api/files",
                                  {"Authorization": f"Bearer {CMS_TOKEN}"}), 30))
    return found + [
        procs.Service("web", [gunicorn, "-w", "2", "-b", f"127.0.0.1:{ports['web']}",
                              *no_socket, "webhooks.app:create_app()"], log("web.log"),
                      lambda: procs.http_ok(f"{url(ports['web'])}/health"), 60),
        *workers,
        procs.Service("beat", [procs.script("celery"), "-A", "workers", "beat", "--loglevel",
                               "INFO", "-s", str(root / "celerybeat-schedule")],
                      log("beat.log"), lambda: procs.log_has(log("beat.log"), "beat: Starting")),
    ]


def ingest(env: dict[str, str], *argv: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run the ``ingest`` console script (output to the terminal unless ``capture``)."""
    return subprocess.run([procs.script("ingest"), *argv], env=env, cwd=procs.ROOT, text=True,
                          capture_output=capture, check=False, timeout=900)


def show_status(env: dict[str, str], batch_id: str) -> None:
    """``ingest status --batch ID`` (the status command of the operator CLI), wide enough to
    read when the output is not a terminal."""
    ingest({"COLUMNS": "160", **env}, "status", "--batch", batch_id)


def query(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only query on the demo database."""
    import psycopg2

    with psycopg2.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


# One question per sample document, answered from that document's own chunks.
QUESTIONS = {
    "travel-expense-policy.pdf": "How long do I have to submit a travel expense claim?",
    "engineer-onboarding.docx": "When do new engineers get their laptop?",
    "coffee-machine-cleaning.html": "When is the coffee machine descaled?",
    "payments-restart-runbook.md": "How do I restart the payments service?",
    "support-oncall-rota.csv": "When does the support on-call rota rotate?",
    "product-faq.json": "How long does the Acme Widget Pro battery last?",
    "parking-permits.txt": "How are staff car park permits renewed?",
    "q3-sales-kickoff.pptx": "What is the Nordic sales target for the third quarter?",
    "furniture-price-list.xlsx": "How much does the Orion X2 standing desk cost?",
    "fire-safety-procedure.odt": "How often do fire wardens check the emergency exits?",
    "visitor-wifi.rtf": "When does the guest Wi-Fi password change?",
    "northwind-history.epub": "When and where was Northwind founded?",
    "all-hands-moved.eml": "Where is the quarterly all-hands meeting?",
    "server-room-badges.msg": "Who reviews the server room access badges?",
    "fleet-maintenance.xml": "When do the delivery vans get winter tyres?",
    "office-lease-scan.pdf": "When does the Harbour Street office lease end?",
    "release-whiteboard.png": "How often does the mobile app release train leave?",
    "rooftop-garden-notice.jpg": "When is the rooftop garden watered?",
    "warehouse-deliveries-fax.tiff": "When does the Rotterdam warehouse accept pallet deliveries?",
}


def configure_channel(env: dict[str, str], token: str, receiver: HttpReceiver) -> str:
    """The bot's one channel in the CMS: a signed JSON webhook to ``receiver``; its path."""
    path = f"/hooks/kb-ingest-bot-{BOT}"
    response = requests.post(
        f"{env['CMS_API_URL']}/api/bot-notification-settings", timeout=30,
        headers={"Authorization": f"Bearer {token}"},
        json={"data": {"company_id": COMPANY, "bot_id": BOT,
                       "notification_channels": [f"json://127.0.0.1:{receiver.port}{path}"]}})
    response.raise_for_status()
    return path


def channel_checks(env: dict[str, str], receiver: HttpReceiver, path: str,
                   batches: set[str]) -> list[str]:
    """Every batch posted once, signed, to the bot's webhook channel; printed."""
    from ingest.notify.signing import HEADER, verify

    problems: list[str] = []
    try:
        procs.wait_until(lambda: query(env, "SELECT count(*) FROM channel_deliveries "
                                            "WHERE status IN ('sent', 'failed')")[0][0]
                         >= len(batches), 60, "the channel deliveries")
    except TimeoutError:
        problems.append("the bot's webhook channel was not posted to for every batch")
    posts = receiver.accepted(path)
    print(f"\n== posts received by the bot's webhook channel ({len(posts)}) ==")
    for post in posts:
        body = post.json()
        signed = verify(NOTIFY_SECRET, post.headers.get(HEADER, ""), body["message"])
        summary = json.loads(body["message"])
        print(f"  POST {path}  {HEADER}: {'valid' if signed else 'INVALID'}  "
              f"Idempotency-Key: {post.headers.get('Idempotency-Key')}\n"
              f"    | title: {body['title']}\n"
              f"    | batch {summary['batch_id']}: {summary['status']}, "
              f"{summary['succeeded']} succeeded, {summary['failed']} failed\n"
              + "\n".join(f"    |   failed: {f['name']} ({f['category']})"
                          for f in summary["failures"]))
        if not signed:
            problems.append(f"the post for batch {summary['batch_id']} is not validly signed")
    posted = [json.loads(p.json()["message"])["batch_id"] for p in posts]
    problems += [f"batch {b}: {posted.count(b)} webhook posts, expected 1" for b in batches
                 if posted.count(b) != 1]
    return problems


def checks(env: dict[str, str], backend: str) -> tuple[list[str], set[str]]:
    """The demo's promises; returns the problems found and the batch ids."""
    from ingest.adapters.vectors import VectorStore
    from ingest.pipeline.embedding import get_embedder

    problems: list[str] = []
    docs = dict(query(env, "SELECT DISTINCT payload->'entry'->>'name', document_id "
                           "FROM file_events WHERE event = 'entry.create'"))
    store, embedder = VectorStore(Settings()), get_embedder(backend)
    for sample in sample_documents():
        question = QUESTIONS.get(sample.file_name, sample.topic_sentence)
        (vector,) = embedder.embed([question])
        hits = store.query(vector, n_results=1)
        found = hits[0].metadata.get("file_name") if hits else None
        answer = " ".join(hits[0].text.split())[:90] if hits else ""
        print(f"  asked       {question}\n    answered from {found}: {answer}…")
        if found != sample.file_name:
            problems.append(f"{sample.file_name}: {question!r} is answered from {found}")
    fixed = dict(query(env, "SELECT file_document_id, status FROM auto_correction_tasks"))
    for bad in bad_documents():
        doc = docs.get(bad.file_name)
        print(f"  corrected   {bad.file_name:<32} ({bad.problem}): {fixed.get(doc, 'no task')}")
        if fixed.get(doc) != "completed":
            problems.append(f"{bad.file_name}: correction {fixed.get(doc, 'missing')}")
    batches = {str(b) for (b,) in query(env, "SELECT batch_id FROM batch_processing_sessions")}
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted(MAIL.glob("*.eml"))]
    print(f"\n== e-mails received by the SMTP sink ({len(mails)}) ==")
    for message in mails:
        body = message.get_body(("plain",)).get_content()
        print(f"  To: {message['To']}  Subject: {message['Subject']}  X-Batch-ID: "
              f"{message['X-Batch-ID']}\n" + "\n".join(f"    | {line}"
                                                       for line in body.splitlines()[:40]))
        if message["X-Batch-ID"] not in batches:
            problems.append(f"an e-mail to {message['To']} for no known batch")
        problems += [f"{b.file_name}: not reported in the e-mail" for b in bad_documents()
                     if b.file_name not in body]
    for batch in batches:
        count = sum(m["X-Batch-ID"] == batch for m in mails)
        if count != 1:
            problems.append(f"batch {batch}: {count} e-mails, expected 1")
    return problems, batches


def run(args: argparse.Namespace, supervisor: procs.Supervisor,
        cleanup: contextlib.ExitStack) -> list[str]:
    """The scenario; returns the problems found (empty: DEMO OK)."""
    for path in (DEMO / "chroma", MAIL, UPLOAD, LOGS):
        shutil.rmtree(path, ignore_errors=True)
    LOGS.mkdir(parents=True)
    ports = {name: procs.free_port() for name in ("redis", "s3", "chroma", "smtp", "cms", "web")}
    env = environment(ports, args.embedding)
    os.environ.update(env)  # this process reads the same settings (checks, Chroma)
    admin_exec(ADMIN_URL, f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin_exec(ADMIN_URL, f'CREATE DATABASE "{DB_NAME}"')
    if ingest(env, "db", "upgrade", capture=True).returncode:
        return ["ingest db upgrade failed"]
    print(f"== database {DB_NAME} created and migrated ==")
    uploader_env = dict(env) | ({} if sys.stdout.isatty() else {"COLUMNS": "140"})
    if args.cms == "strapi":
        if not node_ok():
            return ["--cms strapi needs Node.js 20+ and npm on PATH"]
        strapi = StrapiServer(f"http://127.0.0.1:{ports['web']}/webhooks/cms", WEBHOOK_TOKEN)
        cleanup.callback(strapi.stop)  # also after a start that failed half-way
        print("  strapi  starting (the first run installs and builds it: minutes)…")
        strapi.start()
        env.update({"CMS_API_URL": strapi.url, "CMS_API_TOKEN": strapi.kb_token})
        uploader_env.update(env, CMS_API_TOKEN=strapi.token)  # the uploader's own rights
    supervisor.start(services(ports, args.embedding, args.cms == "standin"), env,
                     lambda s, t: print(f"  {s.name:<7} ready in {t:5.1f}s  ({s.log})"))
    import boto3

    boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"]).create_bucket(Bucket="kb-demo")
    receiver = cleanup.enter_context(HttpReceiver())
    channel = configure_channel(env, uploader_env.get("CMS_API_TOKEN", CMS_TOKEN), receiver)
    print(f"  channel  the bot's summaries also go to a signed webhook: {receiver.base_url}"
          f"{channel}")
    print(f"\n  status page: http://127.0.0.1:{ports['web']}/status  (any user, password "
          f"{STATUS_TOKEN})\n")
    UPLOAD.mkdir(parents=True)
    good, bad = sample_documents(), bad_documents()
    for doc in [*good, *bad]:
        (UPLOAD / doc.file_name).write_bytes(doc.data)
    print(f"== ingest upload {UPLOAD} ({len(good)} good files, {len(bad)} bad ones) ==")
    code = ingest(uploader_env, "upload", str(UPLOAD), "--company", str(COMPANY), "--bot",
                  str(BOT), "--user", USER, "--timeout", "600").returncode
    problems = [] if code == 1 else [f"ingest upload exited {code}, expected 1 (bad files)"]
    print("\n== checks ==")
    found, batches = checks(env, args.embedding)
    found += channel_checks(env, receiver, channel, batches)
    for batch in sorted(batches):
        print(f"\n== ingest status --batch {batch} ==")
        show_status(env, batch)
    return problems + found


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every check held."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cms", choices=("standin", "strapi"), default="standin")
    parser.add_argument("--embedding", choices=("minilm", "hashing"), default="minilm")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    began = time.monotonic()
    with procs.Supervisor() as supervisor, contextlib.ExitStack() as cleanup:
        try:
            problems = run(args, supervisor, cleanup)
        except KeyboardInterrupt:
            problems = ["interrupted"]
        except (procs.ProcError, TimeoutError, RuntimeError) as exc:
            problems = [str(exc)]
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
            print("\n== stopping ==")
    print(f"logs: {LOGS}   e-mails: {MAIL}   took {time.monotonic() - began:.0f}s")
    if problems:
        print("DEMO FAILED:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print("DEMO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

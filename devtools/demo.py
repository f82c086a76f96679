"""End-to-end demo of kb-ingest on real processes: ``make demo`` (``python -m devtools.demo``).

It needs PostgreSQL on 127.0.0.1:5432 (trust auth, user ``postgres``) and ``redis-server``
on PATH; everything else runs from the virtualenv. The demo

1. recreates the database ``kb_ingest_demo`` and migrates it (``ingest db upgrade``);
2. starts a capturing SMTP server in this process (``devtools.smtp_sink``: every message
   becomes ``.demo/mail/<n>-<recipient>.eml``), then, each in its own process group on a
   free port, with logs in ``.demo/logs/``: redis-server, moto (S3), ``chroma run``, the
   CMS, gunicorn (web), the Celery worker and beat. The CMS is the Strapi 5 stand-in
   (``--cms standin``, the default) or, with ``--cms strapi``, the real Strapi 5 app of
   ``strapi/`` (``devtools.strapi``: installed and built once in ``~/.cache/kb-ingest/strapi/``,
   started on a throwaway database that is dropped at the end, its webhook pointed at the web
   process, kb-ingest using the API token the app's README documents);
3. stores a notification preference for a second uploader (text e-mails, batches of 2),
   uploads the sample documents to S3 and creates their file entries through the CMS's REST
   API, which sends (Strapi-style) webhooks to the web process (plus an entry whose object
   was never uploaded, one ``entry.update``, and the second uploader's two files);
4. waits until every ``file_events`` row is terminal and prints what became of each file;
5. answers sample questions from the stored chunks;
6. waits until every uploader's batch is closed and its summary e-mail sent, and shows
   each batch with its e-mail as the SMTP server received it;
7. stops everything it started, also on Ctrl-C, and exits non-zero if anything went wrong
   (a batch without exactly one e-mail included).

    python -m devtools.demo [--cms {standin,strapi}] [--embedding {minilm,hashing}]
                            [--keep-running]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import psycopg2
import redis
import requests

from devtools.samples import bad_documents, make_md, make_txt, sample_documents
from devtools.smtp_sink import ReceivedMessage, SmtpSink
from devtools.strapi import TIMINGS as STRAPI_TIMINGS
from devtools.strapi import StrapiServer, node_ok
from ingest.events import event_kind
from ingest.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".demo"
LOG_DIR = DEMO_DIR / "logs"
MAIL_DIR = DEMO_DIR / "mail"
BIN = Path(sys.executable).parent  # the venv's console scripts live next to its python

DB_NAME = "kb_ingest_demo"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BUCKET = "kb-demo"
COLLECTION = "kb_demo"
CMS_TOKEN = "demo-cms-token"
WEBHOOK_TOKEN = "demo-webhook-token"
WEBHOOK_SECRET = "demo-webhook-secret"
COMPANY_ID, BOT_ID, USER_EMAIL = 42, 7, "alice@example.com"
SECOND_UPLOADER = "bob@example.com"  # stores a preference: text e-mails, batches of 2
SECOND_UPLOADER_BATCH_SIZE = 2
FROM_EMAIL = "kb-ingest@demo.local"
WORKER_CONCURRENCY = 2

TRAVEL_FILE = "travel-expense-policy.pdf"
TRAVEL_RENAMED = "travel-expense-policy-2025.pdf"
MISSING_FILE = "lost-slides.pdf"
TERMINAL = ("done", "ignored", "failed")
EVENTS_TIMEOUT = 300.0
BATCHES_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0

# (question, the sample file that should answer it, whether a miss fails the demo)
QUESTIONS = [
    ("How long do I have to submit my travel expenses?", TRAVEL_FILE, True),
    ("When is the coffee machine cleaned?", "coffee-machine-cleaning.html", False),
    ("How do I restart the payments service?", "payments-restart-runbook.md", False),
]

T = TypeVar("T")
Check = Callable[["Service"], bool]  # a readiness check


class DemoError(RuntimeError):
    """Something the demo needs did not happen; the message says what."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; DemoError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, headers: dict[str, str] | None = None) -> Check:
    """A readiness check: ``url`` answers 200."""

    def check(_service: Service) -> bool:
        try:
            return requests.get(url, headers=headers, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return check


def redis_ping(url: str) -> Check:
    """A readiness check: Redis at ``url`` answers PING."""

    def check(_service: Service) -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    return check


def count_by(values: list[str]) -> str:
    """``"2 sent, 1 pending"``: how often each value occurs."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{n} {value}" for value, n in sorted(counts.items()))


def section(title: str) -> None:
    """Print a section heading."""
    print(f"\n== {title} ==", flush=True)


def script(name: str) -> str:
    """A console script of the venv (``celery``, ``gunicorn``, …)."""
    path = BIN / name
    if not path.exists():
        raise DemoError(f"{path} not found: is the project installed in this venv?")
    return str(path)


# ---------------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One subprocess of the demo: its own process group, a log file, a readiness check."""

    name: str
    argv: list[str]
    ready: Check
    timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """Where its stdout and stderr go."""
        return LOG_DIR / f"{self.name}.log"

    def start(self, env: dict[str, str]) -> None:
        """Launch it in a new session (so Ctrl-C in the terminal does not reach it)."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def log_text(self) -> str:
        """Everything it logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        """The last lines of its log, indented."""
        text = "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"
        return textwrap.indent(text, "    | ", lambda _: True)

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self) -> float:
        """Wait until the readiness check passes; returns the seconds it took."""
        started = time.monotonic()
        while not self.ready(self):
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise DemoError(f"{self.name} exited (code {code}) before it was ready; "
                                f"log {self.log_path}:\n{self.tail()}")
            if time.monotonic() - started > self.timeout:
                raise DemoError(f"{self.name} not ready after {self.timeout:.0f}s; "
                                f"log {self.log_path}:\n{self.tail()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to its process group, SIGKILL if it is still there after ``timeout``."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} did not stop within {timeout:.0f}s: SIGKILL", flush=True)
        with suppress(ProcessLookupError):  # the leader is gone: sweep up what is left
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class StrapiService(Service):
    """The real Strapi 5 (``devtools.strapi.StrapiServer``) in the place of a Service: started
    (install, database, launch, admin and API tokens) and stopped (its database dropped) by
    the server object, its log in the install cache."""

    def __init__(self, server: StrapiServer) -> None:
        super().__init__("strapi", [], lambda _service: True, 0.0)
        self.server = server

    @property
    def log_path(self) -> Path:
        """Where Strapi logs (next to its install in the cache)."""
        return self.server.log

    def start(self, env: dict[str, str]) -> None:
        """Install and build if needed, start, provision; blocks until ready."""
        self.server.start()
        self.proc = self.server.proc

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop Strapi and drop its database (also after a start that failed half-way)."""
        self.server.stop()

    def running(self) -> bool:
        """Whether Strapi's process is alive."""
        return self.server.proc is not None and self.server.proc.poll() is None


def strapi_timings() -> str:
    """``npm ci cached, npm run build cached, start 9.1s, …`` of the last start."""
    parts = []
    for step in ("npm ci", "npm run build", "start (until /_health)", "admin + API tokens"):
        seconds = STRAPI_TIMINGS.get(step)
        if seconds is not None:
            label = step.replace(" (until /_health)", "")
            parts.append(f"{label} {'cached' if seconds == 0 else f'{seconds:.1f}s'}")
    return ", ".join(parts)


def log_has(text: str, count: int = 1) -> Check:
    """A readiness check: the service's log contains ``text`` at least ``count`` times."""
    return lambda service: service.log_text().count(text) >= count


def worker_ready(backend: str) -> Check:
    """Celery's "ready." and, with minilm, the model loaded in every child (workers/app.py)."""
    models = WORKER_CONCURRENCY if backend == "minilm" else 0
    return lambda service: log_has(" ready.")(service) and log_has("embedding model",
                                                                   models)(service)


@dataclass(frozen=True)
class Ports:
    """The free ports chosen at start."""

    redis: int = field(default_factory=free_port)
    s3: int = field(default_factory=free_port)
    chroma: int = field(default_factory=free_port)
    cms: int = field(default_factory=free_port)
    web: int = field(default_factory=free_port)

    def url(self, name: str) -> str:
        """``http://127.0.0.1:<port>`` of ``s3``, ``chroma``, ``cms`` or ``web``."""
        return f"http://127.0.0.1:{getattr(self, name)}"


def infrastructure(ports: Ports, env: dict[str, str]) -> list[Service]:
    """Redis, S3 (moto) and Chroma: what the kb-ingest processes talk to."""
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise DemoError("redis-server is not on PATH (apt-get install redis-server)")
    return [
        Service("redis", [redis_bin, "--port", str(ports.redis), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(DEMO_DIR)],
                redis_ping(env["REDIS_URL"]), 15),
        Service("s3", [script("moto_server"), "-H", "127.0.0.1", "-p", str(ports.s3)],
                http_ok(f"{ports.url('s3')}/moto-api/"), 30),
        Service("chroma", [script("chroma"), "run", "--path", str(DEMO_DIR / "chroma"),
                           "--host", "127.0.0.1", "--port", str(ports.chroma)],
                http_ok(f"{ports.url('chroma')}/api/v2/heartbeat"), 60),
    ]


def gunicorn_extra_args() -> list[str]:
    """gunicorn 27 opens a control socket in ~/.gunicorn shared by every instance: not here."""
    import gunicorn

    return ["--no-control-socket"] if gunicorn.version_info >= (27,) else []


def applications(ports: Ports, backend: str, cms: str = "standin") -> list[Service]:
    """The CMS stand-in (unless ``cms`` is ``strapi``: started on its own) and the three
    kb-ingest processes (web, worker, beat)."""
    standin = [
        Service("cms", [sys.executable, "-m", "devtools.cms_standin", "--port", str(ports.cms),
                        "--token", CMS_TOKEN,
                        "--webhook-url", f"{ports.url('web')}/webhooks/cms",
                        "--webhook-token", WEBHOOK_TOKEN],
                http_ok(f"{ports.url('cms')}/api/files",
                        {"Authorization": f"Bearer {CMS_TOKEN}"}), 30),
    ]
    return (standin if cms == "standin" else []) + [
        Service("web", [script("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{ports.web}",
                        *gunicorn_extra_args(), "webhooks.app:create_app()"],
                http_ok(f"{ports.url('web')}/health"), 60),
        Service("worker", [script("celery"), "-A", "workers", "worker",
                           "-Q", "ingest,notifications,corrections",
                           "-c", str(WORKER_CONCURRENCY), "--loglevel", "INFO"],
                worker_ready(backend), 180),
        Service("beat", [script("celery"), "-A", "workers", "beat", "--loglevel", "INFO",
                         "--schedule", str(DEMO_DIR / "celerybeat-schedule")],
                log_has("beat: Starting"), 60),
    ]


def start_services(services: list[Service], env: dict[str, str], started: list[Service]) -> None:
    """Start them all at once, then wait for each in turn (``started`` collects them)."""
    for service in services:
        service.start(env)
        started.append(service)
    for service in services:
        seconds = service.wait_ready()
        print(f"  {service.name:<7} ready in {seconds:5.1f}s   (log: "
              f"{service.log_path.relative_to(ROOT)})", flush=True)


def stop_services(services: list[Service]) -> None:
    """Stop in reverse start order."""
    for service in reversed(services):
        try:
            service.stop()
        except Exception as exc:  # keep stopping the others
            print(f"  could not stop {service.name}: {type(exc).__name__}: {exc}")
    alive = [s.name for s in services if s.running()]
    print(f"stopped {len(services)} processes" + (f"; STILL RUNNING: {alive}" if alive else ""))


# ---------------------------------------------------------------------------------------------
# Environment and database
# ---------------------------------------------------------------------------------------------

# Variables of other tools that could point the demo elsewhere: dropped from the caller's env.
FOREIGN_PREFIXES = ("AWS_", "CELERY_", "CHROMA_")


def build_env(ports: Ports, backend: str, database_url: str, smtp_port: int) -> dict[str, str]:
    """The one environment of every process: the caller's, with every kb-ingest setting set."""
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {
        key: value for key, value in os.environ.items()
        if key.upper() not in settings_names and not key.upper().startswith(FOREIGN_PREFIXES)
    }
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{ports.redis}/1",
        "CMS_API_URL": ports.url("cms"),
        "CMS_API_TOKEN": CMS_TOKEN,
        "CMS_TIMEOUT_SECONDS": "5",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_AUTH_DISABLED": "false",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": ports.url("s3"),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "CHROMA_HOST": "127.0.0.1",  # the Chroma server: safe with -c 2 (DESIGN §5)
        "CHROMA_PORT": str(ports.chroma),
        "CHROMA_PATH": str(DEMO_DIR / "chroma"),
        "CHROMA_COLLECTION": COLLECTION,
        "EMBEDDING_BACKEND": backend,
        "OUTBOX_RELAY_AFTER_SECONDS": "2",
        "INGEST_MAX_RETRIES": "3",
        # The never-uploaded file is looked for during 10 s (not 300) before it counts as
        # not found; corrections wait 5 s (not 60) unless the caller's environment says
        # otherwise (AUTO_CORRECTION_DELAY_SECONDS=60 make demo measures the default).
        "S3_MISSING_GRACE_SECONDS": "10",
        "AUTO_CORRECTION_DELAY_SECONDS": os.environ.get("AUTO_CORRECTION_DELAY_SECONDS", "5"),
        # E-mails go to the demo's SMTP sink. Batches of uploaders without a stored
        # preference seal after a 6 s quiet period (never by size, so alice's files make
        # one batch); the sweeper looks every 2 s, a failed send is retried after ~1 s.
        "ENABLE_EMAIL_NOTIFICATIONS": "true",
        "SMTP_SERVER": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_USE_TLS": "false",
        "SMTP_USE_SSL": "false",
        "SMTP_TIMEOUT_SECONDS": "10",
        "SMTP_RETRY_BASE_SECONDS": "1",
        "FROM_EMAIL": FROM_EMAIL,
        "DEFAULT_NOTIFICATION_DELAY_MINUTES": "0.1",
        "DEFAULT_BATCH_SIZE_THRESHOLD": "100",
        "BATCH_SWEEP_SECONDS": "2",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ANONYMIZED_TELEMETRY": "False",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def apply_env(env: dict[str, str]) -> None:
    """Make this process see exactly ``env`` too (the demo reads settings from it)."""
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)


def demo_urls(admin_url: str) -> tuple[str, str]:
    """(psycopg2 URL, DATABASE_URL) of the demo database on the admin URL's server."""
    plain = urlsplit(admin_url)._replace(path=f"/{DB_NAME}").geturl()
    return plain, plain.replace("postgresql://", "postgresql+psycopg2://", 1)


def reset_database(admin_url: str) -> None:
    """Drop (forcibly) and create the demo database."""
    try:
        conn = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise DemoError(f"PostgreSQL is not reachable at {admin_url}: {exc}".strip()) from exc
    conn.autocommit = True
    with closing(conn), conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DB_NAME}"')


def migrate(env: dict[str, str]) -> None:
    """``ingest db upgrade`` against the demo database."""
    result = subprocess.run([script("ingest"), "db", "upgrade"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise DemoError(f"`ingest db upgrade` failed ({result.returncode}):\n"
                        + textwrap.indent((result.stdout + result.stderr).strip(), "    | "))


def query(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one read-only query."""
    with closing(psycopg2.connect(db_url, connect_timeout=5)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


# ---------------------------------------------------------------------------------------------
# Uploads through S3 and the CMS
# ---------------------------------------------------------------------------------------------


@dataclass
class DemoFile:
    """A file of the demo: what is uploaded, the CMS entry created for it, what must happen."""

    name: str
    mime_type: str
    data: bytes | None  # None: the object is never uploaded
    expect: str  # done | failed
    note: str = ""
    uploader: str = USER_EMAIL
    document_id: str = ""

    @property
    def storage_key(self) -> str:
        """Its S3 key."""
        return f"companies/{COMPANY_ID}/bots/{BOT_ID}/{self.name}"


PRINTER_NOTE = """Printing on the third floor
The shared printer on the third floor is called floor3-laser. Add it on your laptop under
Settings, Printers, Add printer; it prints double-sided by default. Toner cartridges are in
the cupboard next to the printer.
"""

GUEST_WIFI = """# Guest Wi-Fi
Visitors join the network *kb-guest*. The password changes every Monday and is shown on the
screen at reception. Guest access is limited to the internet; the office network is not
reachable from it.
"""


def demo_files() -> list[DemoFile]:
    """Alice's files (the good samples, the bad ones, an entry whose object is missing),
    then the second uploader's two small good files."""
    files = [DemoFile(d.file_name, d.mime_type, d.data, "done") for d in sample_documents()]
    files += [DemoFile(d.file_name, d.mime_type, d.data, "failed", d.problem)
              for d in bad_documents()]
    files.append(DemoFile(MISSING_FILE, "application/pdf", None, "failed", "never uploaded"))
    files += [
        DemoFile("printer-setup.txt", "text/plain", make_txt(PRINTER_NOTE), "done",
                 uploader=SECOND_UPLOADER),
        DemoFile("guest-wifi.md", "text/markdown", make_md(GUEST_WIFI), "done",
                 uploader=SECOND_UPLOADER),
    ]
    return files


class Cms:
    """The CMS's REST API (stand-in or Strapi), as the admin panel would use it."""

    def __init__(self, base_url: str, token: str = CMS_TOKEN) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def create_file(self, file: DemoFile) -> str:
        """POST /api/files; returns the new documentId."""
        data = {
            "name": file.name, "storage_key": file.storage_key, "company_id": COMPANY_ID,
            "bot_id": BOT_ID, "user_email": file.uploader,
            "size_bytes": str(len(file.data or b"")), "mime_type": file.mime_type,
        }
        response = self.session.post(f"{self.base_url}/api/files", json={"data": data},
                                     timeout=10)
        if response.status_code != 201:
            raise DemoError(f"CMS refused {file.name}: {response.status_code} {response.text}")
        return str(response.json()["data"]["documentId"])

    def create_preference(self, user_email: str, **values: Any) -> str:
        """POST /api/user-notification-preferences; returns the new documentId."""
        data = {"company_id": COMPANY_ID, "bot_id": BOT_ID, "user_email": user_email, **values}
        response = self.session.post(f"{self.base_url}/api/user-notification-preferences",
                                     json={"data": data}, timeout=10)
        if response.status_code != 201:
            raise DemoError(f"CMS refused the preference of {user_email}: "
                            f"{response.status_code} {response.text}")
        return str(response.json()["data"]["documentId"])

    def rename_file(self, document_id: str, name: str) -> None:
        """PUT /api/files/{documentId}: the CMS sends ``entry.update``."""
        response = self.session.put(f"{self.base_url}/api/files/{document_id}",
                                    json={"data": {"name": name}}, timeout=10)
        if response.status_code != 200:
            raise DemoError(f"CMS refused the update: {response.status_code} {response.text}")


def send_test_webhook(web_url: str) -> str:
    """What the admin panel's "Trigger" button sends; the receiver must answer 2xx."""
    response = requests.post(f"{web_url}/webhooks/cms", json={"event": "trigger-test"},
                             headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=10)
    if not response.ok:
        raise DemoError(f"the test webhook got {response.status_code}: {response.text}")
    return f"{response.status_code} {response.json().get('status')}"


def create_bucket(env: dict[str, str]) -> Any:
    """The S3 client, with the demo bucket created."""
    s3 = boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=BUCKET)
    return s3


def store_second_preference(cms: Cms) -> None:
    """The second uploader asks for text e-mails and batches of two files (sealed when full;
    the CMS allows only whole minutes of delay, so the size is what closes it quickly)."""
    document_id = cms.create_preference(
        SECOND_UPLOADER, notification_enabled=True, email_format="text",
        batch_size_threshold=SECOND_UPLOADER_BATCH_SIZE, notification_delay_minutes=1,
        include_success_details=True, include_error_details=True,
    )
    print(f"  preference of {SECOND_UPLOADER}: text e-mails, batches of "
          f"{SECOND_UPLOADER_BATCH_SIZE} ({document_id}); {USER_EMAIL} has none: "
          "the service's defaults (HTML, 6 s quiet period)", flush=True)


def upload_and_register(files: list[DemoFile], s3: Any, cms: Cms) -> None:
    """Put each object into S3, then create its CMS entry (the CMS sends the webhook)."""
    for file in files:
        if file.data is not None:
            s3.put_object(Bucket=BUCKET, Key=file.storage_key, Body=file.data,
                          ContentType=file.mime_type)
    for file in files:
        file.document_id = cms.create_file(file)
        print(f"  {file.name:<32} {file.uploader:<18} {file.document_id}  {file.note}".rstrip(),
              flush=True)


# ---------------------------------------------------------------------------------------------
# Waiting for the pipeline and reporting
# ---------------------------------------------------------------------------------------------


@dataclass
class EventRow:
    """One ``file_events`` row."""

    id: int
    event: str
    document_id: str
    status: str
    entry_updated_at: datetime
    updated_at: datetime


def events(db_url: str) -> list[EventRow]:
    """Every ``file_events`` row, oldest first."""
    rows = query(db_url, "SELECT id, event, document_id, status, entry_updated_at, updated_at "
                         "FROM file_events ORDER BY id")
    return [EventRow(*row) for row in rows]


def document_terminal(db_url: str, document_id: str) -> bool:
    """Whether the document has at least one event and all its events are terminal."""
    statuses = [e.status for e in events(db_url) if e.document_id == document_id]
    return bool(statuses) and all(s in TERMINAL for s in statuses)


@dataclass(frozen=True)
class Corrections:
    """The ``auto_correction_tasks`` rows (one per finally failed file), counted."""

    total: int
    unfinished: int  # pending or processing
    cms_deleted: int  # removed the CMS entry: an ``entry.delete`` webhook follows


def corrections(db_url: str) -> Corrections:
    """Count the auto-corrections."""
    (row,) = query(db_url, "SELECT count(*), "
                           "count(*) FILTER (WHERE status IN ('pending', 'processing')), "
                           "count(*) FILTER (WHERE cms_cleanup_completed) "
                           "FROM auto_correction_tasks")
    return Corrections(*row)


def wait_all_terminal(db_url: str, expected: int, timeout: float) -> list[EventRow]:
    """Wait until every auto-correction is finished and at least ``expected`` events (plus
    one ``entry.delete`` per CMS entry a correction removed) exist, all terminal; print
    progress."""
    shown = ""

    def check() -> list[EventRow] | None:
        nonlocal shown
        rows = events(db_url)
        fixes = corrections(db_url)
        want = expected + fixes.cms_deleted
        line = f"  {len(rows)}/{want} events: " + count_by([r.status for r in rows])
        if fixes.total:
            line += f"; auto-corrections: {fixes.total - fixes.unfinished}/{fixes.total} done"
        if line != shown:
            print(line, flush=True)
            shown = line
        done = (len(rows) >= want and all(r.status in TERMINAL for r in rows)
                and not fixes.unfinished)
        return rows if done else None

    return wait_until(check, timeout, "every file event and auto-correction to be terminal",
                      interval=0.5)


def final_status(rows: list[EventRow]) -> str:
    """A document's outcome: its newest create/update event that was not superseded
    (``ignored``); the ``entry.delete`` of an auto-correction does not change it."""
    live = [r for r in rows if r.status != "ignored" and event_kind(r.event) == "upsert"]
    if not live:
        return "ignored"
    return max(live, key=lambda r: (r.entry_updated_at, r.id)).status


def latest_errors(db_url: str) -> dict[str, tuple[str, str]]:
    """documentId → (category, message) of its latest ``processing_errors`` row."""
    rows = query(db_url, "SELECT DISTINCT ON (file_document_id) file_document_id, "
                         "error_category, error_message FROM processing_errors "
                         "ORDER BY file_document_id, id DESC")
    return {doc: (category, message) for doc, category, message in rows}


def chunk_counts(settings: Settings, document_ids: list[str]) -> dict[str, int]:
    """documentId → number of its chunks in Chroma."""
    from ingest.adapters.vectors import VectorStore  # imports chromadb: only when needed

    store = VectorStore(settings)
    return {doc: len(store.chunk_ids(doc)) for doc in document_ids}


@dataclass
class Result:
    """What became of one demo file."""

    file: DemoFile
    name: str
    events: str
    outcome: str
    chunks: int
    category: str  # of the latest processing_errors row, for a failed file
    message: str

    @property
    def ok(self) -> bool:
        """Whether the outcome is as expected: a success stored chunks, a failure none and
        left a ``processing_errors`` row."""
        if self.file.expect == "done":
            return self.outcome == "done" and self.chunks > 0
        return self.outcome == self.file.expect and self.chunks == 0 and bool(self.category)


def collect_results(files: list[DemoFile], rows: list[EventRow], db_url: str,
                    settings: Settings, names: dict[str, str]) -> list[Result]:
    """One Result per demo file, from the database and Chroma."""
    errors = latest_errors(db_url)
    chunks = chunk_counts(settings, [f.document_id for f in files])
    results = []
    for file in files:
        mine = [r for r in rows if r.document_id == file.document_id]
        category, message = errors.get(file.document_id, ("", ""))
        outcome = final_status(mine)
        results.append(Result(
            file=file,
            name=names.get(file.document_id, file.name),
            events=" ".join(f"{r.event.removeprefix('entry.')}:{r.status}" for r in mine),
            outcome=outcome,
            chunks=chunks[file.document_id],
            category=category if outcome == "failed" else "",
            message=message if outcome == "failed" else "",
        ))
    return results


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(results: list[Result]) -> None:
    """The per-file table."""
    header = ("file", "uploader", "type", "events", "outcome", "chunks", "check", "error")
    table = [header] + [
        (r.name, r.file.uploader.split("@")[0], Path(r.name).suffix.lstrip(".") or "-",
         r.events, r.outcome, str(r.chunks), "ok" if r.ok else f"WANT {r.file.expect}",
         r.category)
        for r in results
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for n, row in enumerate(table):
        cells = [cell.rjust(w) if i == 5 else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=False))]
        print("  " + "  ".join(cells + [row[-1]]).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths) + "  -----")
    failures = [r for r in results if r.outcome == "failed"]
    if failures:
        print("\n  failures (processing_errors):")
    for r in failures:
        print(f"    {r.name}: {r.category}: {shorten(r.message, 110)}")


def print_totals(results: list[Result], rows: list[EventRow], first_upload: datetime) -> None:
    """Files, outcomes, wall time from the first upload to the last terminal event, rate."""
    last = max(r.updated_at for r in rows)
    wall = max((last - first_upload).total_seconds(), 1e-6)
    count = {s: sum(r.outcome == s for r in results) for s in TERMINAL}
    print(f"\n  files: {len(results)}   succeeded: {count['done']}   failed: {count['failed']}"
          + (f"   ignored: {count['ignored']}" if count["ignored"] else ""))
    print(f"  events: {len(rows)}   chunks stored: {sum(r.chunks for r in results)}")
    print(f"  wall time, first upload → last terminal event: {wall:.1f}s "
          f"({len(results) / wall:.2f} files/s)")


def ask_questions(settings: Settings, backend: str, files: list[DemoFile],
                  names: dict[str, str]) -> list[str]:
    """Answer the sample questions from Chroma; returns the problems found."""
    from ingest.adapters.vectors import VectorStore
    from ingest.pipeline.embedding import get_embedder

    started = time.perf_counter()
    embedder = get_embedder(backend)
    total = time.perf_counter() - started
    load = getattr(embedder, "load_seconds", None)
    shown = f"model loaded in {load:.2f}s, " if load is not None else ""
    print(f"  embedder {embedder.name} in this process: {shown}{total:.2f}s with imports")
    store = VectorStore(settings)
    by_name = {f.name: f.document_id for f in files}
    problems = []
    for question, expected_file, required in QUESTIONS:
        (vector,) = embedder.embed([question])
        hits = store.query(vector, n_results=1)
        print(f"\n  Q: {question}")
        if not hits:
            print("     (no chunks stored)")
            problems.append(f"no answer to {question!r}")
            continue
        best = hits[0]
        found = str(best.metadata.get("file_name") or names.get(best.document_id, "?"))
        hit_ok = best.document_id == by_name[expected_file]
        print(f"     best: {found}  (distance {best.distance:.3f})"
              + ("" if hit_ok else f"  — expected {expected_file}"))
        print(f"     “{shorten(best.text, 160)}”")
        if required and not hit_ok:
            problems.append(f"{question!r} found {found}, not {expected_file}")
    return problems


# ---------------------------------------------------------------------------------------------
# Batches and their summary e-mails
# ---------------------------------------------------------------------------------------------

EMAIL_FINAL = ("sent", "skipped", "failed")  # send_status values nothing changes any more

BATCH_SQL = """
SELECT b.batch_id::text, b.user_email, b.status, b.total_files, b.successful_files,
       b.failed_files, b.close_at, b.batch_end_time,
       COALESCE(b.user_preferences_snapshot, '{}'::jsonb),
       (SELECT count(*) FROM email_notification_log n WHERE n.batch_id = b.batch_id),
       e.send_status, e.email_subject, COALESCE(e.send_attempts, 0), e.error_message
FROM batch_processing_sessions b
LEFT JOIN email_notification_log e
       ON e.batch_id = b.batch_id AND e.email_type = 'batch_completion'
ORDER BY b.batch_start_time, b.id
"""


@dataclass
class BatchRow:
    """One ``batch_processing_sessions`` row with its summary e-mail's log row, if any."""

    batch_id: str
    user_email: str
    status: str
    total: int
    succeeded: int
    failed: int
    close_at: datetime | None  # when it was due to seal (full, quiet, or too old)
    end_time: datetime | None  # batch_end_time: when it closed (database clock)
    prefs: dict[str, Any]  # the preferences snapshotted on the batch
    email_rows: int  # email_notification_log rows of the batch, of any type
    email_status: str | None
    subject: str | None
    attempts: int
    email_error: str | None

    @property
    def label(self) -> str:
        """The uploader and the start of the batch id."""
        return f"batch {self.batch_id[:8]} of {self.user_email}"

    @property
    def closed(self) -> bool:
        """Whether the batch is closed (completed, partially_completed or failed)."""
        return self.status != "processing"

    @property
    def settled(self) -> bool:
        """Closed, and its e-mail neither pending nor being sent."""
        return self.closed and self.email_status in EMAIL_FINAL

    @property
    def wants_email(self) -> bool:
        """Whether the uploader's preferences ask for e-mails."""
        return bool(self.prefs.get("notification_enabled", True))

    @property
    def email_format(self) -> str:
        """``html`` or ``text``, as the preferences ask."""
        return str(self.prefs.get("email_format", "html"))


def batches(db_url: str) -> list[BatchRow]:
    """Every batch with its e-mail, oldest first."""
    return [BatchRow(*row) for row in query(db_url, BATCH_SQL)]


def wait_batches_settled(db_url: str, uploaders: set[str],
                         timeout: float) -> tuple[list[BatchRow], str | None]:
    """Wait until every uploader has a batch and every batch is settled; print progress.

    Returns the last rows seen and, if that did not happen within ``timeout``, why.
    """
    shown = ""
    rows: list[BatchRow] = []

    def check() -> bool:
        nonlocal shown, rows
        rows = batches(db_url)
        line = (f"  {len(rows)} batches: {count_by([b.status for b in rows]) or 'none yet'}"
                f"; e-mails: {count_by([b.email_status or 'none' for b in rows]) or 'none'}")
        if line != shown:
            print(line, flush=True)
            shown = line
        have = {b.user_email for b in rows}
        return uploaders <= have and all(b.settled for b in rows)

    try:
        wait_until(check, timeout, "every batch to close and send its e-mail", interval=0.5)
    except DemoError as exc:
        return rows, str(exc)
    return rows, None


def messages_by_batch(messages: list[ReceivedMessage]) -> dict[str, list[ReceivedMessage]]:
    """The sink's messages grouped by their ``X-Batch-ID`` header ("" when missing)."""
    grouped: dict[str, list[ReceivedMessage]] = {}
    for message in messages:
        grouped.setdefault(message.header.get("X-Batch-ID", ""), []).append(message)
    return grouped


def relative(path: Path) -> str:
    """``path`` relative to the project, for shorter lines."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def print_batch(n: int, batch: BatchRow, received: list[ReceivedMessage]) -> None:
    """One batch: counts, its e-mail log row, and the message(s) the sink received."""
    print(f"  {n}. {batch.user_email}  {batch.status}: {batch.total} files, "
          f"{batch.succeeded} succeeded, {batch.failed} failed   (batch {batch.batch_id})")
    attempts = f"{batch.attempts} attempt{'s' if batch.attempts != 1 else ''}"
    print(f"     e-mail    {batch.email_status or 'no log row'} after {attempts} "
          f"({batch.email_format}): {batch.subject or '-'}")
    if batch.email_error and batch.email_status != "sent":
        print(f"     error     {shorten(batch.email_error, 100)}")
    if batch.close_at is not None and batch.end_time is not None:
        print(f"     closed    {(batch.end_time - batch.close_at).total_seconds():.2f}s after "
              "it was due (close_at → batch_end_time)")
    for message in received:
        delay = ("?" if batch.end_time is None
                 else f"{(message.received_at - batch.end_time).total_seconds():.2f}s")
        print(f"     received  {delay} after the batch closed (message #{message.number} of "
              f"the sink, to {', '.join(message.recipients)})")
        print(f"     .eml      {relative(message.path)}")
        if message.html_path is not None:
            print(f"     .html     {relative(message.html_path)}")


def batch_problems(batch: BatchRow, received: list[ReceivedMessage]) -> list[str]:
    """What is wrong with a batch: not closed, or not exactly one e-mail (when wanted)."""
    problems = []
    if not batch.closed:
        problems.append(f"{batch.label} is still {batch.status}")
    if batch.email_rows != 1:
        problems.append(f"{batch.label} has {batch.email_rows} e-mail log rows, expected 1")
    if not batch.wants_email:
        if received:
            problems.append(f"{batch.label}: notifications are off, yet {len(received)} "
                            "e-mails arrived")
        return problems
    if batch.email_status != "sent":
        problems.append(f"{batch.label}: e-mail {batch.email_status or 'never logged'}"
                        + (f" ({batch.email_error})" if batch.email_error else ""))
    if len(received) != 1:
        problems.append(f"{batch.label}: the SMTP sink received {len(received)} e-mails, "
                        "expected exactly 1")
    elif (received[0].html_path is not None) != (batch.email_format == "html"):
        problems.append(f"{batch.label}: asked for {batch.email_format} e-mails, got "
                        + ("HTML" if received[0].html_path else "text only"))
    return problems


def report_batches(db_url: str, files: list[DemoFile], sink: SmtpSink) -> list[str]:
    """Wait for every batch and its e-mail, print them; returns the problems found."""
    uploaders = {f.uploader for f in files}
    rows, problem = wait_batches_settled(db_url, uploaders, BATCHES_TIMEOUT)
    problems = [problem] if problem else []
    problems += [f"no batch for {u}" for u in sorted(uploaders - {b.user_email for b in rows})]
    grouped = messages_by_batch(sink.received)
    for n, batch in enumerate(rows, 1):
        received = grouped.pop(batch.batch_id, [])
        print()
        print_batch(n, batch, received)
        problems += batch_problems(batch, received)
    for batch_id, stray in grouped.items():
        problems.append(f"{len(stray)} e-mail(s) for an unknown batch {batch_id or '(none)'}: "
                        + ", ".join(relative(m.path) for m in stray))
    print(f"\n  SMTP sink {sink.host}:{sink.port}: {sink.count} messages for {len(rows)} "
          f"batches, in {relative(MAIL_DIR)}/")
    return problems


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _s3_has(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


def report_corrections(db_url: str, files: list[DemoFile], s3: Any, cms: Cms,
                       settings: Settings, sink: SmtpSink) -> list[str]:
    """Show, per failed file, its correction and that S3, the CMS and Chroma hold nothing."""
    rows = query(db_url, "SELECT file_document_id, file_name, failure_category, status, "
                         "correction_actions, extract(epoch FROM completed_at - created_at) "
                         "FROM auto_correction_tasks ORDER BY id")
    by_doc = {f.document_id: f for f in files}
    chunks = chunk_counts(settings, [r[0] for r in rows])
    problems: list[str] = []
    for doc, name, category, status, actions, took in rows:
        file = by_doc.get(doc)
        in_s3 = file is not None and file.data is not None and _s3_has(
            s3, settings.s3_bucket, file.storage_key)
        in_cms = cms.session.get(f"{cms.base_url}/api/files/{doc}", timeout=10).status_code
        print(f"  {name:<28} {category:<17} {status:<10} actions: {', '.join(actions)}")
        print(f"  {'':<28} S3 {'still there' if in_s3 else 'gone'} · CMS GET → {in_cms} · "
              f"Chroma chunks: {chunks.get(doc, 0)} · done in {float(took or 0):.2f}s "
              f"after the failure")
        if status != "completed" or in_s3 or in_cms != 404 or chunks.get(doc, 0):
            problems.append(f"{name}: not removed from every store ({status})")
    told = [m for m in sink.received
            if "Removed automatically" in m.message.get_body(("plain",)).get_content()]
    print(f"  the summary e-mail reports the removals: {'yes' if told else 'NO'}")
    if rows and not told:
        problems.append("the summary e-mail does not report the removals")
    return problems


def prepare_demo_dir() -> None:
    """A fresh ``.demo/`` (Chroma data, e-mails and beat schedule of an earlier run removed)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(DEMO_DIR / "chroma", ignore_errors=True)
    shutil.rmtree(MAIL_DIR, ignore_errors=True)
    for path in DEMO_DIR.glob("celerybeat-schedule*"):
        path.unlink()
    for path in LOG_DIR.glob("*.log"):
        path.unlink()


def start_sink(sink: SmtpSink) -> None:
    """Start the SMTP sink in this process (DemoError if it cannot listen)."""
    try:
        sink.start()
    except OSError as exc:
        raise DemoError(f"the SMTP sink cannot listen on {sink.host}: {exc}") from exc


def run(args: argparse.Namespace, started: list[Service], sink: SmtpSink) -> list[str]:
    """The demo itself; returns the problems found (empty: success)."""
    prepare_demo_dir()
    start_sink(sink)
    ports = Ports()
    db_plain, db_url = demo_urls(args.postgres_url)
    env = build_env(ports, args.embedding, db_url, sink.port)
    apply_env(env)
    settings = load_settings()

    section(f"database {DB_NAME}")
    reset_database(args.postgres_url)
    migrate(env)
    print("  created and migrated (ingest db upgrade)")

    section(f"services (embedding backend: {args.embedding}, CMS: {args.cms})")
    print(f"  smtp    listening on {sink.host}:{sink.port} (in this process; "
          f"mail: {relative(MAIL_DIR)}/)", flush=True)
    start_services(infrastructure(ports, env), env, started)
    s3 = create_bucket(env)
    cms = Cms(ports.url("cms"))
    if args.cms == "strapi":
        cms = start_strapi(ports, env, started, args.postgres_url)
        settings = load_settings()
    start_services(applications(ports, args.embedding, args.cms), env, started)

    section("uploads: S3 objects, then CMS entries (the CMS sends the webhooks)")
    files = demo_files()
    store_second_preference(cms)
    first_upload = datetime.now(UTC)
    upload_and_register(files, s3, cms)
    travel = next(f for f in files if f.name == TRAVEL_FILE)
    wait_until(lambda: document_terminal(db_plain, travel.document_id), EVENTS_TIMEOUT,
               f"{TRAVEL_FILE} to be processed")
    cms.rename_file(travel.document_id, TRAVEL_RENAMED)
    print(f"  renamed {TRAVEL_FILE} → {TRAVEL_RENAMED} (entry.update: re-processed)")
    names = {travel.document_id: TRAVEL_RENAMED}
    print(f"  admin panel test webhook (trigger-test): {send_test_webhook(ports.url('web'))}")

    section("processing")
    rows = wait_all_terminal(db_plain, len(files) + 1, EVENTS_TIMEOUT)

    section("results")
    results = collect_results(files, rows, db_plain, settings, names)
    print_table(results)
    print_totals(results, rows, first_upload)
    problems = [f"{r.name}: {r.outcome} with {r.chunks} chunks, expected {r.file.expect}"
                for r in results if not r.ok]

    section("questions")
    problems += ask_questions(settings, args.embedding, files, names)

    section("batches & e-mails")
    problems += report_batches(db_plain, files, sink)

    section("auto-correction of the failed files")
    problems += report_corrections(db_plain, files, s3, cms, settings, sink)

    if args.keep_running:
        keep_running(ports, started, sink, args.embedding, cms.base_url)
    return problems


def start_strapi(ports: Ports, env: dict[str, str], started: list[Service],
                 admin_url: str) -> Cms:
    """Start the real Strapi (its webhook to the web process, which starts later: Strapi
    sends webhooks only when entries change), point ``env`` (and this process) at it with
    the kb-ingest API token, and return the REST helper with the full-access token."""
    if not node_ok():
        raise DemoError("--cms strapi needs Node.js 20+ and npm on PATH")
    print("  strapi  starting (the first run also installs and builds it: a few minutes)…",
          flush=True)
    service = StrapiService(StrapiServer(f"{ports.url('web')}/webhooks/cms", WEBHOOK_TOKEN,
                                         admin_url=admin_url))
    started.append(service)  # stopped (and its database dropped) even if the start fails
    clock = time.monotonic()
    try:
        service.start(env)
    except RuntimeError as exc:
        raise DemoError(f"Strapi did not start: {exc}") from exc
    server = service.server
    print(f"  strapi  ready in {time.monotonic() - clock:5.1f}s   ({strapi_timings()}; "
          f"{server.url}, database {server.db_name}; log: {relative(service.log_path)})",
          flush=True)
    env.update({"CMS_API_URL": server.url, "CMS_API_TOKEN": server.kb_token})
    apply_env(env)
    return Cms(server.url, server.token)


def keep_running(ports: Ports, services: list[Service], sink: SmtpSink, backend: str,
                 cms_url: str) -> None:
    """Leave the services up until Ctrl-C (a normal end) or until one of them dies."""
    section("services left running (Ctrl-C to stop)")
    for name in ("web", "cms", "chroma", "s3"):
        print(f"  {name:<7} {cms_url if name == 'cms' else ports.url(name)}")
    print(f"  redis   redis://127.0.0.1:{ports.redis}/0 (broker: db 1)")
    print(f"  smtp    {sink.host}:{sink.port} (messages: {relative(MAIL_DIR)}/)")
    print(f"  try:    EMBEDDING_BACKEND={backend} CHROMA_HOST=127.0.0.1 "
          f"CHROMA_PORT={ports.chroma} CHROMA_COLLECTION={COLLECTION} "
          f"{BIN / 'ingest'} ask \"…\"", flush=True)
    try:
        while sink.running and all(s.running() for s in services):
            time.sleep(1)
    except KeyboardInterrupt:
        return
    dead = [s.name for s in services if not s.running()] + ([] if sink.running else ["smtp"])
    raise DemoError(f"{', '.join(dead)} stopped while the demo was kept running")


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cms", choices=("standin", "strapi"), default="standin",
                        help="the CMS: the light stand-in (default) or the real Strapi 5 app "
                             "of strapi/ (needs Node.js 20+; the first run installs it)")
    parser.add_argument("--embedding", choices=("minilm", "hashing"), default="minilm",
                        help="EMBEDDING_BACKEND of the worker and the questions (default minilm)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the services up after the demo until Ctrl-C")
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL,
                        help=f"an admin connection to the server (default {DEFAULT_ADMIN_URL})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when everything went as expected."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started: list[Service] = []
    sink = SmtpSink(directory=MAIL_DIR)
    clock = time.monotonic()
    problems: list[str] = []
    try:
        problems = run(args, started, sink)
    except KeyboardInterrupt:
        problems = ["interrupted"]
    except DemoError as exc:
        problems = [str(exc)]
    except Exception as exc:  # an unexpected error: show where, then clean up as usual
        traceback.print_exc()
        problems = [f"{type(exc).__name__}: {exc}"]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not skip clean-up
            signal.signal(sig, signal.SIG_IGN)
        section("shutdown")
        stop_services(started)
        sink.stop()  # after the worker: it may still be talking to it
        print(f"SMTP sink stopped ({sink.count} messages in {MAIL_DIR})")
        print(f"logs: {LOG_DIR}")
    print(f"demo took {time.monotonic() - clock:.0f}s")
    if problems:
        print("\nDEMO FAILED:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print("\nDEMO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

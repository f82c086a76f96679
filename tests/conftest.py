"""Real services for the tests: PostgreSQL, Redis, an S3 server, Chroma, a CMS, a worker.

- PostgreSQL: the machine's server; a throwaway database per run, migrated with Alembic.
- Redis: a private ``redis-server`` on a free port (broker and cache), stopped at the end.
- S3: moto in server mode over HTTP; Chroma: ``chroma run`` over HTTP.
- CMS: the Strapi 5 stand-in of ``devtools.cms_standin`` over HTTP.
- Celery: an in-thread worker (``celery.contrib.testing.worker.start_worker``) on all queues.
- Web: the Flask app served by a threaded werkzeug server.

The environment is set here, before any kb-ingest module reads its settings.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.pg import admin_exec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RUN_ID = uuid.uuid4().hex[:8]
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"kb_ingest_test_{RUN_ID}"
REDIS_PORT = _free_port()
S3_PORT = _free_port()
CHROMA_PORT = _free_port()
CMS_PORT = _free_port()
WEB_PORT = _free_port()
SMTP_PORT = _free_port()
TMP = Path(tempfile.mkdtemp(prefix="kb-ingest-test-"))
# Every process of the run (this one, subprocess workers, gunicorn) shares one metrics
# directory, created empty, as a deployment's processes on one host do.
PROMETHEUS_DIR = TMP / "prometheus"
PROMETHEUS_DIR.mkdir()
WEBHOOK_TOKEN = "test-webhook-token"
WEBHOOK_SECRET = "test-webhook-secret"
STATUS_TOKEN = "test-status-token"
CMS_TOKEN = "test-cms-token"
NOTIFY_SECRET = "test-notify-secret"
BUCKET = "kb-test"

os.environ.update(
    {
        "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME,
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/1",
        "CMS_API_URL": f"http://127.0.0.1:{CMS_PORT}",
        "CMS_API_TOKEN": CMS_TOKEN,
        "CMS_TIMEOUT_SECONDS": "5",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STATUS_TOKEN": STATUS_TOKEN,
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(CHROMA_PORT),
        "CHROMA_COLLECTION": "kb_test",
        "EMBEDDING_BACKEND": "minilm",
        "OUTBOX_RELAY_AFTER_SECONDS": "0.5",
        "INGEST_MAX_RETRIES": "8",  # outlasts a Chroma restart
        "SMTP_SERVER": "127.0.0.1",
        "SMTP_PORT": str(SMTP_PORT),
        "SMTP_TIMEOUT_SECONDS": "5",
        "SMTP_RETRY_WINDOW_MINUTES": "0.5",
        "SMTP_RETRY_BASE_SECONDS": "0.2",
        "FROM_EMAIL": "kb@kb-ingest.test",
        "NOTIFY_WEBHOOK_SECRET": NOTIFY_SECRET,
        "CHANNEL_TIMEOUT_SECONDS": "3",
        "CHANNEL_RETRY_WINDOW_MINUTES": "0.5",
        "CHANNEL_RETRY_BASE_SECONDS": "0.2",
        # No rate limit unless a test sets one (tests/test_email_rate.py).
        "EMAIL_RATE_PER_MINUTE": "0",
        "EMAIL_RATE_PER_DOMAIN_PER_MINUTE": "0",
        "DEFAULT_NOTIFICATION_DELAY_MINUTES": "0.05",
        "DEFAULT_BATCH_SIZE_THRESHOLD": "100",
        "BATCH_SWEEP_SECONDS": "1",
        "CORRECTION_RETRY_BASE_SECONDS": "0.2",
        # Tests of the delay set their own; the others act at once.
        "AUTO_CORRECTION_DELAY_SECONDS": "0",
        # Long enough for an object that lands 8 s after its webhook.
        "S3_MISSING_GRACE_SECONDS": "20",
        # The breaker's own tests set a small limit; the other tests must never trip it.
        "CORRECTION_BREAKER_THRESHOLD": "100000",
        "ADMIN_EMAIL": "ops@kb-ingest.test",
        "FALLBACK_NOTIFICATION_EMAIL": "fallback@kb-ingest.test",
        "LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(PROMETHEUS_DIR),
    }
)


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def _wait_http(url: str, timeout: float = 60.0) -> None:
    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout, 0.2)


def _admin_exec(sql: str) -> None:
    admin_exec(ADMIN_URL, sql)


@pytest.fixture()
def scratch_url() -> Iterator[str]:
    """The URL of an empty throwaway database (no schema), dropped afterwards."""
    name = f"kb_ingest_scratch_{uuid.uuid4().hex[:8]}"
    _admin_exec(f'CREATE DATABASE "{name}"')
    yield os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A throwaway database migrated to head."""
    from alembic import command

    _admin_exec(f'CREATE DATABASE "{DB_NAME}"')
    from ingest.db import alembic_config

    command.upgrade(alembic_config(), "head")
    yield os.environ["DATABASE_URL"]
    from ingest.db import reset_engine

    reset_engine()
    _admin_exec(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """A private redis-server (nothing on disk)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(TMP)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=REDIS_PORT)
    wait_until(lambda: _ping(client), 15)
    yield os.environ["REDIS_URL"]
    proc.terminate()
    proc.wait(10)


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session", autouse=True)
def moto_server() -> Iterator[Any]:
    """moto's S3 in server mode over HTTP (``stop()``/``start()`` simulate an outage)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def s3_server(moto_server: Any) -> Any:
    """A boto3 client of the S3 server, with the bucket created."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


class ChromaProcess:
    """A real Chroma server (``chroma run``) that a test may kill and start again."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{CHROMA_PORT}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        chroma = shutil.which("chroma") or str(Path(os.sys.executable).parent / "chroma")
        with (TMP / "chroma.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [chroma, "run", "--path", str(TMP / "chroma"), "--host", "127.0.0.1",
                 "--port", str(CHROMA_PORT)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_http(f"{self.url}/api/v2/heartbeat")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture(scope="session")
def chroma_process() -> Iterator[ChromaProcess]:
    """The Chroma server process (for tests that kill it)."""
    server = ChromaProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def chroma_server(chroma_process: ChromaProcess) -> str:
    """The Chroma server's URL."""
    return chroma_process.url


@pytest.fixture(scope="session", autouse=True)
def cms() -> Iterator[Any]:
    """The Strapi 5 stand-in over HTTP."""
    from devtools.cms_standin import CmsServer, CmsState

    with CmsServer(CmsState(token=CMS_TOKEN), port=CMS_PORT) as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def smtp_sink() -> Iterator[Any]:
    """A capturing SMTP server (aiosmtpd) on SMTP_PORT for the whole run."""
    from devtools.smtp_sink import SmtpSink

    with SmtpSink(port=SMTP_PORT) as sink:
        yield sink


@pytest.fixture(scope="session")
def celery_app(database: str, redis_server: str) -> Any:
    """The worker's Celery app, configured from the test environment."""
    from workers.app import app

    return app


@pytest.fixture(scope="session")
def worker(celery_app: Any, chroma_server: str, s3_server: Any, cms: Any) -> Iterator[Any]:
    """A real Celery worker in a thread, consuming all three queues."""
    from celery.contrib.testing.worker import start_worker

    from ingest.names import QUEUES
    from ingest.pipeline.embedding import get_embedder

    get_embedder("minilm").embed(["warm up"])  # load once, before timing-sensitive tests
    with start_worker(
        celery_app, pool="solo", concurrency=1, perform_ping_check=False,
        loglevel="WARNING", queues=list(QUEUES), shutdown_timeout=30,
    ) as w:
        yield w


@pytest.fixture(scope="session")
def web(database: str, redis_server: str) -> Iterator[str]:
    """The Flask app on a threaded werkzeug server; yields its base URL."""
    from werkzeug.serving import make_server

    from webhooks.app import create_app

    server = make_server("127.0.0.1", WEB_PORT, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{WEB_PORT}"
    server.shutdown()
    thread.join(10)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    shutil.rmtree(TMP, ignore_errors=True)

"""The service's whole stack on throwaway servers, for the benches (``make bench``,
``make bench-sql``).

A throwaway PostgreSQL with ``pg_stat_statements`` preloaded and a throwaway Redis
(``devtools.throwaway``), a migrated database ``kb_bench`` with an observer role (the
benches poll as ``bench_observer``, so their own queries are not the service's), then the
processes ``make demo`` starts (``devtools.demo.services``: S3 via moto, Chroma, the SMTP
sink, the CMS stand-in, gunicorn, a prefork Celery worker ``-c 2``, and beat if asked),
and the S3 bucket (when S3 is wanted). Files are uploaded as ``ingest upload`` does: the S3
object, then ``POST /api/files`` to the CMS, which sends the webhook.

    with Stack(folder, backend="minilm", wanted={...}, overrides={...}) as stack:
        stack.server.rows("SELECT …", database=DB)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from devtools import demo, procs
from devtools.throwaway import ThrowawayPostgres, ThrowawayRedis

DB = "kb_bench"
SERVICE_ROLE, OBSERVER = "postgres", "bench_observer"
COMPANY, BOT = 42, 7
#: The concurrency of the notifications worker, as in docker-compose.yml.
NOTIFIER = 4


class Server:
    """Autocommit connections to the throwaway cluster: ``postgres`` as the observer.

    :meth:`rows` keeps one connection per database and role: the benches poll twice a
    second, and a new connection per poll cost the server more CPU (a backend started and
    its caches filled each time) than the queries, on the cores the service is measured on.
    """

    def __init__(self, pg: ThrowawayPostgres) -> None:
        self.pg = pg
        self._kept: dict[tuple[str, str], Any] = {}

    def connect(self, database: str = "postgres", user: str = SERVICE_ROLE) -> Any:
        conn = psycopg2.connect(host="127.0.0.1", port=self.pg.port, user=user,
                                dbname=database)
        conn.autocommit = True
        return conn

    def rows(self, sql: str, args: Any = (), database: str = "postgres",
             user: str = OBSERVER) -> list[tuple[Any, ...]]:
        """The query's rows on a kept connection (once more on a new one if the server
        dropped the kept one)."""
        key = (database, user)
        conn = self._kept.get(key)
        if conn is None or conn.closed:
            conn = self._kept[key] = self.connect(*key)
        try:
            return _fetch(conn, sql, args)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if not conn.closed:  # the query failed, not the connection
                raise
            conn = self._kept[key] = self.connect(*key)
            return _fetch(conn, sql, args)

    def close(self) -> None:
        """Close the kept connections."""
        for conn in self._kept.values():
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._kept.clear()


def _fetch(conn: Any, sql: str, args: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


@dataclass(frozen=True)
class Upload:
    """A file to upload: its name, bytes and MIME type, and the uploader's e-mail."""

    name: str
    data: bytes
    mime_type: str
    user_email: str = "bench@example.com"


@dataclass(frozen=True)
class Stored:
    """An uploaded S3 object and the CMS entry fields that point at it."""

    key: str
    entry: dict[str, Any]


class Stack:
    """Throwaway PostgreSQL and Redis, the migrated database and the service's processes.

    ``wanted`` names the processes of ``devtools.demo.services`` to start (``redis`` is
    never one: the throwaway Redis is used). ``overrides`` are added to the environment.
    """

    def __init__(self, folder: Path, backend: str = "hashing",
                 wanted: Iterable[str] = ("s3", "chroma", "smtp", "cms", "web", "worker"),
                 overrides: Mapping[str, str] | None = None, quiet: bool = False) -> None:
        self.folder, self.backend, self.wanted = folder, backend, set(wanted)
        self.overrides = dict(overrides or {})
        self.quiet = quiet
        self.supervisor = procs.Supervisor()
        self.started: list[procs.Service] = []
        self.env: dict[str, str] = {}
        self.ports: dict[str, int] = {}

    # -- start and stop ----------------------------------------------------------------------

    def __enter__(self) -> Stack:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        os.chmod(self.folder, 0o755)  # noqa: S103 - user postgres must reach its data folder
        self.metrics_dir.mkdir()
        self.pg, self.redis = ThrowawayPostgres(self.folder / "pg"), \
            ThrowawayRedis(self.folder / "redis")
        try:
            self.supervisor.start([self.pg, self.redis])
            self.server = Server(self.pg)
            self.server.rows(f'CREATE DATABASE "{DB}"', user=SERVICE_ROLE)
            self.server.rows("CREATE EXTENSION pg_stat_statements", user=SERVICE_ROLE)
            self.server.rows(f"CREATE ROLE {OBSERVER} SUPERUSER LOGIN", user=SERVICE_ROLE)
            self.ports = {name: procs.free_port()
                          for name in ("s3", "chroma", "smtp", "cms", "web")}
            self.ports["redis"] = self.redis.port  # demo's own Redis is not started
            self.env = demo.environment(self.ports, self.backend) | {
                "DATABASE_URL": self.pg.url(DB), "REDIS_URL": self.redis.url(0),
                "CELERY_BROKER_URL": self.redis.url(1),
                # as deployed: every process's metrics in one directory (see stage_cpu)
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            } | self.overrides
            os.environ.update(self.env)  # this process reads the same settings
            from ingest.settings import get_settings

            get_settings.cache_clear()
            subprocess.run([procs.script("ingest"), "db", "upgrade"], env=self.env,
                           check=True, capture_output=True)
            self.started = [s for s in self.services(self.backend) if s.name in self.wanted]
            self.supervisor.start(self.started, self.env, self._report)
            if "s3" in self.wanted:
                import boto3

                boto3.client("s3", endpoint_url=self.env["S3_ENDPOINT_URL"]).create_bucket(
                    Bucket=self.env["S3_BUCKET"])
        except BaseException:
            self.supervisor.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "server"):
            self.server.close()
        self.supervisor.stop()

    @property
    def metrics_dir(self) -> Path:
        return self.folder / "prometheus"

    def stage_cpu(self) -> float:
        """CPU seconds the stack's processes have spent in the pipeline's stages so far
        (``kb_ingest_stage_cpu_seconds_total``, every stage, summed over the processes)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        return sum(sample.value for family in registry.collect()
                   for sample in family.samples
                   if sample.name == "kb_ingest_stage_cpu_seconds_total")

    def _report(self, service: procs.Service, seconds: float) -> None:
        if not self.quiet:
            print(f"  {service.name:<7} ready in {seconds:5.1f}s")

    def services(self, backend: str) -> list[procs.Service]:
        """The processes of ``devtools.demo.services`` with their logs under the folder;
        wanting ``notifier`` splits the queues between two workers as deployed."""
        return demo.services(self.ports, backend, True, root=self.folder,
                             notifier=NOTIFIER if "notifier" in self.wanted else 0)

    def service(self, name: str) -> procs.Service:
        """A started process by name."""
        return next(s for s in self.started if s.name == name)

    def restart_worker(self, backend: str, overrides: Mapping[str, str] | None = None
                       ) -> procs.Service:
        """Stop the worker and start a fresh one with ``backend`` (and ``overrides``)."""
        with contextlib.suppress(StopIteration):
            self.stop_service("worker")
        worker = next(s for s in self.services(backend) if s.name == "worker")
        env = self.env | {"EMBEDDING_BACKEND": backend} | dict(overrides or {})
        self.supervisor.start([worker], env, self._report)
        self.started.append(worker)
        return worker

    def stop_service(self, name: str) -> None:
        """Stop a started process and forget it."""
        service = self.service(name)
        service.stop()
        self.started.remove(service)
        if service in self.supervisor.services:
            self.supervisor.services.remove(service)

    # -- uploads -----------------------------------------------------------------------------

    def put_objects(self, files: list[Upload], tag: str, threads: int = 4) -> list[Stored]:
        """Put each file into S3 under the tenant's prefix; the entries to create."""
        from ingest.adapters.s3 import S3Store
        from ingest.settings import Settings

        s3 = S3Store(Settings())

        def put(item: tuple[int, Upload]) -> Stored:
            n, f = item
            key = f"companies/{COMPANY}/bots/{BOT}/bench/{tag}/{n:05d}/{f.name}"
            s3.put(key, f.data, f.mime_type)
            return Stored(key, {"name": f.name, "storage_key": key, "company_id": COMPANY,
                                "bot_id": BOT, "user_email": f.user_email,
                                "size_bytes": str(len(f.data)), "mime_type": f.mime_type})

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(put, enumerate(files)))

    def create_entries(self, stored: list[Stored], threads: int = 4) -> list[str]:
        """``POST /api/files`` for each (the CMS sends each webhook); the documentIds."""
        from ingest.adapters.cms import CmsClient
        from ingest.settings import Settings

        settings = Settings()
        clients = [CmsClient.from_settings(settings) for _ in range(threads)]

        def create(item: tuple[int, Stored]) -> str:
            n, s = item
            return str(clients[n % threads].create_file(s.entry)["documentId"])

        with ThreadPoolExecutor(threads) as pool:
            ids = list(pool.map(create, enumerate(stored)))
        for client in clients:
            client.session.close()
        return ids

    # -- progress ----------------------------------------------------------------------------

    def wait_terminal(self, document_ids: list[str], timeout: float,
                      what: str = "every file terminal") -> None:
        """Until every document's file row in its batch is terminal (success or failed)."""
        def done() -> bool:
            (n,) = self.server.rows(
                "SELECT count(*) FROM batch_files WHERE file_document_id = ANY(%s) "
                "AND processing_status IN ('success', 'failed')", (document_ids,),
                database=DB)[0]
            return n >= len(document_ids)
        procs.wait_until(done, timeout, what, 0.25)

    def wait_settled(self, timeout: float) -> None:
        """Until no event is unfinished, no batch open and no e-mail or correction pending."""
        def settled() -> bool:
            unfinished, open_batches, unsent, corrections = self.server.rows(
                """SELECT
                 (SELECT count(*) FROM file_events
                   WHERE status NOT IN ('done', 'ignored', 'failed')),
                 (SELECT count(*) FROM batch_processing_sessions WHERE status = 'processing'),
                 (SELECT count(*) FROM email_notification_log
                   WHERE send_status IN ('pending', 'sending')),
                 (SELECT count(*) FROM auto_correction_tasks
                   WHERE status IN ('pending', 'processing'))""",
                database=DB)[0]
            return not (unfinished or open_batches or unsent or corrections)
        procs.wait_until(settled, timeout, "every batch closed and e-mailed", 0.5)

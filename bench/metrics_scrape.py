"""How long a scrape of the web's ``/metrics`` takes with many rows in ``file_events``.

Creates a throwaway database (migrated with Alembic) and a private ``redis-server``,
inserts ``--rows`` file events with webhook-sized payloads, then times:

- **before**: the row-count gauges as they were read on every scrape until now (six
  ``GROUP BY`` queries, rendered), the code path of the former ``webhooks/metrics.py``;
- **after**: ``GET /metrics`` of the real web app (multiprocess registry + Redis reads of
  the snapshot, queue depths and heartbeat; no SQL);
- the snapshot task that beat runs every 15 s instead (``write_snapshot``).

    .venv/bin/python bench/metrics_scrape.py [--rows 100000] [--scrapes 20]

Needs PostgreSQL on ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``) and ``redis-server`` on the PATH. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(fn: Callable[[], object], times: int) -> list[float]:
    fn()  # warm caches and connections once
    out = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _report(label: str, ms: list[float]) -> None:
    print(f"{label:<48} median {statistics.median(ms):8.1f} ms   "
          f"max {max(ms):8.1f} ms   ({len(ms)} runs)")


INSERT = """
INSERT INTO file_events (event, document_id, entry_updated_at, payload, dedupe_key, status,
                         attempts, received_at, updated_at)
SELECT 'entry.create', 'doc' || n, now() - n * interval '1 second',
       jsonb_build_object('event', 'entry.create', 'model', 'file', 'uid', 'api::file.file',
         'entry', jsonb_build_object('documentId', 'doc' || n, 'name', 'report-' || n || '.pdf',
           'storage_key', 'companies/42/bots/7/doc' || n || '/report-' || n || '.pdf',
           'company_id', 42, 'bot_id', 7, 'user_email', 'user' || (n % 500) || '@example.com',
           'size_bytes', '123456', 'mime_type', 'application/pdf',
           'createdAt', now(), 'updatedAt', now(), 'publishedAt', now())),
       'upsert:doc' || n || ':' || n,
       CASE WHEN n % 50 = 0 THEN 'failed' WHEN n % 97 = 0 THEN 'ignored'
            WHEN n % 1000 = 0 THEN 'received' ELSE 'done' END,
       1, now() - n * interval '1 second', now()
FROM generate_series(1, :rows) AS n
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()

    admin = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    db = f"kb_ingest_bench_{uuid.uuid4().hex[:8]}"
    redis_port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="kb-ingest-bench-"))
    (tmp / "prometheus").mkdir()
    os.environ.update({
        "DATABASE_URL": admin.rsplit("/", 1)[0] + "/" + db,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "WEBHOOK_TOKEN": "bench", "LOG_FORMAT": "text",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
    })
    from alembic import command
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from sqlalchemy import func, select, text

    from devtools.pg import admin_exec

    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL)
    admin_exec(admin, f'CREATE DATABASE "{db}"')
    try:
        from ingest.db import alembic_config

        command.upgrade(alembic_config(), "head")

        from ingest.db import reset_engine, session_scope
        from ingest.metrics import ROW_COUNTS, write_snapshot
        from ingest.redis_client import get_redis
        from webhooks.app import create_app

        started = time.perf_counter()
        with session_scope() as s:
            s.execute(text(INSERT), {"rows": args.rows})
        with session_scope() as s:
            s.execute(text("ANALYZE"))
            count = s.execute(text("SELECT count(*) FROM file_events")).scalar_one()
        print(f"inserted {count:,} file_events rows in {time.perf_counter() - started:.1f}s")

        def before() -> bytes:
            """The former per-scrape collector: every GROUP BY at scrape time."""
            registry = CollectorRegistry()
            families = []
            with session_scope() as s:
                for name, doc, column, table, condition in ROW_COUNTS:
                    family = GaugeMetricFamily(name, doc, labels=[column.key])
                    query = select(column, func.count()).select_from(table).group_by(column)
                    if condition is not None:
                        query = query.where(condition)
                    for label, n in s.execute(query):
                        family.add_metric([label], n)
                    families.append(family)

            class Snapshot:
                def collect(self) -> list[GaugeMetricFamily]:
                    return families

            registry.register(Snapshot())
            return generate_latest(registry)

        _wait_redis(redis_port)
        client = create_app().test_client()

        def after() -> bytes:
            response = client.get("/metrics")
            assert response.status_code == 200
            return response.data

        def snapshot() -> object:
            with session_scope() as s:
                return write_snapshot(s, get_redis())

        snapshot()
        body = after()
        assert b'kb_ingest_file_events{status="done"}' in body, "snapshot not shown"
        print(f"scrapes of /metrics with {count:,} rows in file_events:")
        _report("before: GROUP BY on every scrape", _timed(before, args.scrapes))
        _report("after: GET /metrics (snapshot from Redis, no SQL)",
                _timed(after, args.scrapes))
        _report("beat's snapshot task (every 15 s, off the scrape)",
                _timed(snapshot, max(5, args.scrapes // 4)))
        reset_engine()
    finally:
        admin_exec(admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        redis_proc.terminate()
        redis_proc.wait(10)


def _wait_redis(port: int) -> bool:
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            return bool(Redis(port=port).ping())
        except RedisConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"redis-server did not start on port {port}")


if __name__ == "__main__":
    main()

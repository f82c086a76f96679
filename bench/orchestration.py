"""The worker's own CPU per one-chunk memo, in one process (``make bench-orchestration``).

What ``make bench`` calls orchestration (worker CPU per memo minus the intrinsic-work
loop's) drifts by several ms between runs on shared cores, which is the size of the changes
worth measuring here. This bench measures the same code path with the noise taken out: in
this process, ``process_with_others`` (what the ingest task calls) takes ``--files`` stored
memo events in turn, in groups as the worker forms them, on a throwaway PostgreSQL
(``bench.stack``, nothing else started). S3, Chroma and the preference store are in-memory
stand-ins and the embedder is ``hashing``, so what is left is the claims, stage rows, batch
joins and outcomes — the SQL built and run, its results read — plus extraction and
chunking of a 300-byte text (the same in every run). CPU is ``time.process_time()`` of this
process (PostgreSQL's own work is in its processes, not here), so other load on the cores
moves it little.

Each round stores new events (new documents, one uploader); a first round warms the caches
and is not counted. Prints CPU ms, wall ms and SQL statements per file for each round, and
their medians.

    .venv/bin/python -m bench.orchestration [--files 400] [--rounds 5]

To compare two versions of ``ingest``, put the old one first on ``PYTHONPATH`` and run from
another directory (``-m`` puts the working directory first); the first line names the
``ingest`` package that was measured. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.e2e import memos  # noqa: E402
from bench.stack import BOT, COMPANY, Stack  # noqa: E402

FOLDER = ROOT / ".bench" / "orchestration"


class MemoryS3:
    """The objects of the run, by key (``S3Store.open`` only)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def open(self, key: str) -> Any:
        import io

        from ingest.adapters.s3 import ObjectInfo, S3Object

        data = self.objects[key]
        return S3Object(ObjectInfo(key, f'"{hash(data):x}"', len(data)), io.BytesIO(data))


class NullVectors:
    """A vector store that keeps nothing (``replace_documents`` only)."""

    def replace_documents(self, documents: list[Any]) -> list[int]:
        return [len(d.texts) for d in documents]


@dataclass
class FixedPreferences:
    """Every uploader's preferences are these (no Redis, no CMS)."""

    prefs: Any

    def get(self, company_id: int, bot_id: int, user_email: str) -> Any:
        return self.prefs


def services() -> Any:
    from ingest.adapters.cms import CmsClient
    from ingest.pipeline.embedding import get_embedder
    from ingest.pipeline.run import Services
    from ingest.preferences import Preferences
    from ingest.settings import get_settings

    settings = get_settings()
    return Services(settings=settings, cms=CmsClient.from_settings(settings),
                    s3=MemoryS3(),  # type: ignore[arg-type]
                    vectors=NullVectors(),  # type: ignore[arg-type]
                    embedder=get_embedder("hashing"),
                    preferences=FixedPreferences(Preferences.defaults(settings)))  # type: ignore[arg-type]


def store_memos(svc: Any, count: int, tag: str) -> list[int]:
    """``count`` memo events stored and marked enqueued as the webhook leaves them."""
    from ingest.db import session_scope
    from ingest.events import FileEntry, publish_then_mark_enqueued, store_file_event

    now = datetime.now(UTC).isoformat()
    ids = []
    with session_scope() as s:
        for n, memo in enumerate(memos(count, seed=hash(tag) % 1000)):
            doc = f"orch{tag}{n:05d}"
            key = f"companies/{COMPANY}/bots/{BOT}/bench/{tag}/{n:05d}/{memo.name}"
            svc.s3.objects[key] = memo.data
            entry = {"documentId": doc, "updatedAt": now, "name": memo.name,
                     "storage_key": key, "company_id": COMPANY, "bot_id": BOT,
                     "user_email": memo.user_email, "size_bytes": str(len(memo.data)),
                     "mime_type": memo.mime_type}
            payload = {"event": "entry.create", "model": "file", "entry": entry}
            ids.append(store_file_event(s, "entry.create", FileEntry.model_validate(entry),
                                        payload).event_id)
        publish_then_mark_enqueued(s, ids, lambda _: None)
    return ids


@dataclass
class Round:
    files: int
    cpu_ms: float
    wall_ms: float
    statements: float
    outcomes: dict[str, int]


def run_round(svc: Any, count: int) -> Round:
    """Store ``count`` memos, then process each event's message as the worker would."""
    from sqlalchemy import event

    from ingest.db import get_engine
    from ingest.pipeline.together import process_with_others

    ids = store_memos(svc, count, uuid.uuid4().hex[:8])
    outcomes: dict[str, int] = {}

    def tally(outcome: Any) -> None:
        outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1

    me, statements = threading.get_ident(), [0]

    def on_execute(*_: Any) -> None:
        if threading.get_ident() == me:  # not a lease heartbeat
            statements[0] += 1

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", on_execute)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        for event_id in ids:
            tally(process_with_others(event_id, tally, svc))
    finally:
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        event.remove(engine, "before_cursor_execute", on_execute)
    return Round(count, 1000 * cpu / count, 1000 * wall / count, statements[0] / count,
                 outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400, help="memos per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100, help="memos of the uncounted round")
    args = parser.parse_args(argv)
    import ingest

    print(f"ingest from {Path(ingest.__file__).parent}")
    with Stack(FOLDER, "hashing", (), quiet=True):
        svc = services()
        run_round(svc, args.warmup)
        rounds = []
        for n in range(args.rounds):
            r = run_round(svc, args.files)
            rounds.append(r)
            print(f"  round {n + 1}: CPU {r.cpu_ms:6.2f} ms/file   wall {r.wall_ms:6.2f} "
                  f"ms/file   {r.statements:5.2f} statements/file   {r.outcomes}")
    print(f"median of {args.rounds}: CPU "
          f"{statistics.median(r.cpu_ms for r in rounds):.2f} ms/file, wall "
          f"{statistics.median(r.wall_ms for r in rounds):.2f} ms/file, "
          f"{statistics.median(r.statements for r in rounds):.2f} statements/file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The intrinsic-work loop: what processing files costs with no orchestration at all.

``processes`` plain processes (as many as the worker's prefork children) take files from one
queue and do, per file, exactly the stages the worker does, with the same ``ingest/``
functions and adapters (``default_services``): ``S3Store.open().read()`` from the same S3
server, ``_extract_chunks`` (the worker's ``extract_blocks`` + ``chunk_blocks``), the
process's embedder (torch threads = cores ÷ processes, as ``workers/app.py`` sets them) and
``VectorStore.replace_document`` on the same Chroma server (its own collection). No Celery,
no database, no web, no batches, no stage rows.

Each process warms up as a worker's process does when it starts (``warm_up``: adapters,
embedder, tokenizer) before the clock starts; the loop's figures are the wall time from the
common start to the last file, and the CPU time (``getrusage``, all threads) the processes
spent on files.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoopResult:
    """Files done, wall seconds from the common start to the last file, CPU seconds."""

    files: int
    wall_seconds: float
    cpu_seconds: float
    errors: int

    @property
    def files_per_second(self) -> float:
        return self.files / self.wall_seconds if self.wall_seconds else 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _work(env: dict[str, str], processes: int, entries: Any, start: Any, out: Any) -> None:
    os.environ.clear()  # exactly ``env``: no metrics directory of the service's, say
    os.environ.update(env)
    from ingest.events import FileEntry
    from ingest.pipeline.embedding import limit_torch_threads
    from ingest.pipeline.run import _chunk_metadata, _extract_chunks, warm_up
    from ingest.settings import get_settings

    settings = get_settings()
    if settings.embedding_backend == "minilm":
        limit_torch_threads(processes)
    svc = warm_up()  # what a worker's process does when it starts
    s3, vectors, embedder = svc.s3, svc.vectors, svc.embedder
    _ = vectors.collection, vectors.max_batch_size  # the worker has used them before too
    start.wait()
    began, cpu, done, errors, last = time.monotonic(), _cpu(), 0, 0, time.monotonic()
    while True:
        item = entries.get()
        if item is None:
            break
        document_id, fields = item
        try:
            entry = FileEntry.model_validate(fields)
            data = s3.open(entry.storage_key).read(settings.max_file_bytes)
            chunks = _extract_chunks(data, entry, settings, embedder.name)
            embeddings = embedder.embed([chunk.text for chunk in chunks])
            vectors.replace_document(document_id, embeddings, [c.text for c in chunks],
                                     [_chunk_metadata(entry, n, c)
                                      for n, c in enumerate(chunks)])
            done += 1
        except Exception:  # noqa: BLE001 - counted and reported, the loop goes on
            errors += 1
        last = time.monotonic()
    out.put((done, errors, began, last, _cpu() - cpu))


def run_loop(entries: list[tuple[str, dict[str, Any]]], env: dict[str, str],
             processes: int = 2) -> LoopResult:
    """Process ``(document_id, entry fields)`` in ``processes`` plain processes."""
    ctx = mp.get_context("spawn")
    queue, out, start = ctx.Queue(), ctx.Queue(), ctx.Barrier(processes + 1)
    for item in entries:
        queue.put(item)
    for _ in range(processes):
        queue.put(None)
    workers = [ctx.Process(target=_work, args=(env, processes, queue, start, out))
               for _ in range(processes)]
    for p in workers:
        p.start()
    start.wait(timeout=600)
    results = [out.get(timeout=3600) for _ in workers]
    for p in workers:
        p.join(30)
    began = min(r[2] for r in results)
    ended = max(r[3] for r in results)
    return LoopResult(files=sum(r[0] for r in results), wall_seconds=ended - began,
                      cpu_seconds=sum(r[4] for r in results),
                      errors=sum(r[1] for r in results))

"""Embedding throughput of 2 worker processes: torch threads = cores vs cores ÷ concurrency.

Measures the setting ``workers/app.py`` applies in every prefork child
(``limit_torch_threads``) against torch's default (one thread per core in each child).
Both variants run in this same invocation; the result is printed as a ratio.

    .venv/bin/python bench/embedding_threads.py [--texts 256] [--processes 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def _work(threads: int, texts: list[str], start: mp.Barrier, out: mp.Queue) -> None:
    import torch

    from ingest.pipeline.embedding import MiniLMEmbedder

    torch.set_num_threads(threads)
    embedder = MiniLMEmbedder()
    embedder.embed(texts[:8])  # warm-up
    start.wait()
    began = time.perf_counter()
    embedder.embed(texts)
    out.put(time.perf_counter() - began)


def run(threads: int, processes: int, texts: list[str]) -> float:
    """Texts per second over all processes, each with ``threads`` torch threads."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(threads, texts, barrier, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    took = max(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return processes * len(texts) / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cores = os.cpu_count() or 1
    sentence = ("Employees must submit travel expense claims within thirty days of the trip, "
                "with receipts attached for every item above twenty-five euros. ")
    texts = [f"{n}: " + sentence * 6 for n in range(args.texts)]
    split = max(1, cores // args.processes)
    baseline = run(cores, args.processes, texts)
    tuned = run(split, args.processes, texts)
    print(f"cores={cores} processes={args.processes} texts/process={args.texts}")
    print(f"torch default ({cores} threads/process): {baseline:8.1f} texts/s  (baseline)")
    print(f"cores/concurrency ({split}/process):     {tuned:8.1f} texts/s  "
          f"ratio {tuned / baseline:.2f}x")


if __name__ == "__main__":
    main()

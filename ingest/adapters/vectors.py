"""Chroma: the HTTP client when ``CHROMA_HOST`` is set, else the embedded persistent client.

The embedded ``PersistentClient`` is not safe for several processes writing one directory
(Chroma's documented system constraints), so the worker pins itself to one process when
it is used (see ``workers/app.py``); multi-process deployments run ``chroma run`` and set
``CHROMA_HOST``. Embeddings are always computed by kb-ingest, never by Chroma.

Every write is sent in batches no larger than the server's ``max_batch_size`` (asked once
per client). Errors: Chroma refusing our arguments is a bug (:class:`InternalError`);
anything else — transport errors such as ``httpx.ReadError`` or ``RemoteProtocolError``
while Chroma restarts, 5xx answers — is a :class:`TransientError` of category
``infrastructure_error``. Neither ever leads to a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import chromadb
import httpx
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import InvalidArgumentError

from ingest.errors import IngestError, InternalError, TransientError
from ingest.settings import Settings

# The collection's HNSW graph, set when kb-ingest creates it. With Chroma's defaults
# (ef 100/100) the bot's top 3 missed 1-3 % of the facts an exact search finds, on short
# chunks that differ in one name or number; at 200/200 hit@3 still varied 0.944-0.955 from
# one build to the next; at 400/400 it is 0.960 in every build, 0.001 under exact search,
# for 35 % more insert time in Chroma (bench/retrieval.py, 14,000 chunks). ``ef_search``
# can be raised on an existing collection (``collection.modify``); the rest cannot change.
HNSW: dict[str, Any] = {"space": "cosine", "ef_construction": 400, "ef_search": 400}


@dataclass(frozen=True)
class Hit:
    """One chunk found by a query."""

    id: str
    document_id: str
    text: str
    distance: float
    metadata: dict[str, Any]


def _transport_failure(exc: BaseException | None) -> bool:
    """Whether a transport error is behind ``exc`` (chromadb wraps a refused connection
    in a ``ValueError``)."""
    while exc is not None:
        if isinstance(exc, httpx.TransportError | OSError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _classify(exc: Exception, action: str) -> IngestError:
    name = type(exc).__name__
    if not _transport_failure(exc) and isinstance(
            exc, InvalidArgumentError | TypeError | ValueError):
        return InternalError(f"Chroma refused our {action}: {name}: {exc}")
    return TransientError(f"Chroma failed during {action}: {name}: {exc}")


@dataclass(frozen=True)
class Replacement:
    """A document's new chunks: what :meth:`VectorStore.replace_documents` writes."""

    document_id: str
    embeddings: list[list[float]]
    texts: list[str]
    metadatas: list[dict[str, Any]]


def batches(count: int, size: int) -> list[slice]:
    """Slices covering ``range(count)`` in pieces of at most ``size``."""
    return [slice(start, min(start + size, count)) for start in range(0, count, max(1, size))]


def make_client(settings: Settings) -> Any:
    """The Chroma client the settings ask for (telemetry off: this machine has no network)."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(
            host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
        )
    return chromadb.PersistentClient(path=settings.chroma_path, settings=chroma_settings)


class VectorStore:
    """One Chroma collection holding every chunk, keyed ``{documentId}:{n}``."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self._client = client
        self._collection: Any | None = None
        self._max_batch: int | None = None

    @property
    def client(self) -> Any:
        """The Chroma client, connected on first use: a worker that starts while Chroma is
        down retries its tasks instead of failing them."""
        if self._client is None:
            try:
                self._client = make_client(self.settings)
            except Exception as exc:
                raise _classify(exc, "connect") from exc
        return self._client

    @property
    def collection(self) -> Any:
        """The collection of every chunk (created on first use)."""
        if self._collection is None:
            try:
                self._collection = self.client.get_or_create_collection(
                    name=self.settings.chroma_collection,
                    configuration={"hnsw": HNSW},  # ignored for an existing collection
                    embedding_function=None,
                )
            except IngestError:
                raise
            except Exception as exc:
                raise _classify(exc, "collection") from exc
        return self._collection

    @property
    def max_batch_size(self) -> int:
        """The server's largest accepted batch (asked once)."""
        if self._max_batch is None:
            try:
                size = int(self.client.get_max_batch_size())
            except IngestError:
                raise
            except Exception as exc:
                raise _classify(exc, "pre-flight check") from exc
            self._max_batch = size if size > 0 else 1000
        return self._max_batch

    def _delete_ids(self, ids: list[str]) -> None:
        for part in batches(len(ids), self.max_batch_size):
            self.collection.delete(ids=ids[part])

    def chunk_ids(self, document_id: str) -> list[str]:
        """Ids of the document's stored chunks."""
        try:
            return self._chunk_ids_of([document_id])
        except IngestError:
            raise
        except Exception as exc:
            raise _classify(exc, "get") from exc

    def _chunk_ids_of(self, document_ids: list[str]) -> list[str]:
        where = ({"document_id": document_ids[0]} if len(document_ids) == 1
                 else {"document_id": {"$in": document_ids}})
        return list(self.collection.get(where=where, include=[])["ids"])

    def replace_document(
        self,
        document_id: str,
        embeddings: list[list[float]],
        texts: list[str],
        metadatas: list[dict[str, Any]],
    ) -> int:
        """Upsert the document's new chunks, then delete its older ones that are left over.

        Upsert-then-delete leaves no moment in which the document has no chunks at all.
        """
        return self.replace_documents([Replacement(document_id, embeddings, texts,
                                                   metadatas)])[0]

    def replace_documents(self, documents: list[Replacement]) -> list[int]:
        """:meth:`replace_document` for several documents at once: one read of their stored
        chunk ids, upserts of at most the server's batch size, one delete of what is left
        over. Returns each document's number of chunks, in order."""
        ids = [[f"{d.document_id}:{n}" for n in range(len(d.texts))] for d in documents]
        flat_ids = [i for doc_ids in ids for i in doc_ids]
        embeddings = [e for d in documents for e in d.embeddings]
        texts = [t for d in documents for t in d.texts]
        metadatas = [m for d in documents for m in d.metadatas]
        try:
            old = set(self._chunk_ids_of([d.document_id for d in documents]))
            for part in batches(len(flat_ids), self.max_batch_size):
                self.collection.upsert(ids=flat_ids[part], embeddings=embeddings[part],
                                       documents=texts[part], metadatas=metadatas[part])
            leftover = sorted(old - set(flat_ids))
            if leftover:
                self._delete_ids(leftover)
        except IngestError:
            raise
        except Exception as exc:
            raise _classify(exc, "upsert") from exc
        return [len(doc_ids) for doc_ids in ids]

    def delete_document(self, document_id: str) -> int:
        """Delete every chunk of the document; returns how many there were (0 = already gone)."""
        ids = self.chunk_ids(document_id)
        try:
            self._delete_ids(ids)
        except IngestError:
            raise
        except Exception as exc:
            raise _classify(exc, "delete") from exc
        return len(ids)

    def query(
        self, embedding: list[float], n_results: int = 3, where: dict[str, Any] | None = None
    ) -> list[Hit]:
        """The stored chunks nearest to ``embedding``."""
        try:
            result = self.collection.query(
                query_embeddings=[embedding],
                n_results=n_results,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        except IngestError:
            raise
        except Exception as exc:
            raise _classify(exc, "query") from exc
        return [
            Hit(
                id=chunk_id,
                document_id=str(meta.get("document_id")),
                text=doc,
                distance=float(dist),
                metadata=dict(meta),
            )
            for chunk_id, doc, meta, dist in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]

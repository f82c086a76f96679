"""Engine and short-lived sessions.

Sessions are opened for a read or a write and closed before slow I/O (S3, embedding,
Chroma): read → work with no session → write. :func:`reset_engine` is called in every
forked worker process so no connection is shared across a fork. The one lock idiom:
PostgreSQL advisory locks named by a string (:func:`lock_xact`, :func:`held_lock`); the
writers of one document use its ``documentId`` as the name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from ingest.settings import get_settings

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    """The process's engine, created on first use."""
    global _engine, _factory
    if _engine is None:
        _engine = create_engine(
            get_settings().database_url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            future=True,
        )
        _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after a fork); the next use creates a fresh pool."""
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _factory = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: commit on success, roll back on error, always close."""
    get_engine()
    assert _factory is not None
    session = _factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock_xact(session: Session, name: str) -> None:
    """Take the advisory lock ``name`` until the session's transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:n, 0))"), {"n": name})


@contextmanager
def held_lock(name: str) -> Iterator[None]:
    """Hold the advisory lock ``name`` across several short transactions (own connection)."""
    with get_engine().connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": name})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})
            conn.commit()

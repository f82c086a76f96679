"""Engine and short-lived sessions.

Sessions are opened for a read or a write and closed before slow I/O (S3, embedding,
Chroma): read → work with no session → write. :func:`reset_engine` is called in every
forked worker process so no connection is shared across a fork.

The one lock idiom: PostgreSQL advisory locks named by a string, hashed with
``hashtextextended`` — :func:`lock_xact` for the rest of a transaction, :func:`held_lock`
across several transactions (optionally without waiting). The writers of one document use
its ``documentId`` as the name.

The migrations ship inside the package (``ingest/migrations``, Alembic's
``ingest:migrations`` resource form), so :func:`alembic_config` works from an installed wheel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ingest.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
MIGRATIONS = "ingest:migrations"
_LOCK_KEY = "hashtextextended(:n, 0)"

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
    session.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"), {"n": name})


@contextmanager
def held_lock(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the advisory lock ``name`` across several short transactions; yields whether it
    is held (always True when ``wait``; False when not waiting and another holder has it).

    The lock lives on a connection of its own in autocommit mode, so no transaction stays
    open while it is held. A connection whose unlock failed is discarded, never pooled.
    """
    conn = get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
    held = False
    try:
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        result = conn.execute(text(f"SELECT {function}({_LOCK_KEY})"), {"n": name}).scalar()
        held = wait or bool(result)
        yield held
    finally:
        try:
            if held:
                conn.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"), {"n": name})
        except SQLAlchemyError:
            log.warning("could not release the advisory lock %r; dropping its connection", name)
            conn.invalidate()
        conn.close()


def alembic_config() -> Config:
    """Alembic's configuration for the packaged migrations (no ``alembic.ini`` needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config

"""Engine and short-lived sessions.

Sessions are opened for a read or a write and closed before slow I/O (S3, embedding,
Chroma): read → work with no session → write. :func:`reset_engine` is called in every
forked worker process so no connection is shared across a fork.

The one lock idiom: PostgreSQL advisory locks named by a string, hashed with
``hashtextextended`` — :func:`lock_xact` for the rest of a transaction, :func:`held_lock`
across several transactions (optionally without waiting). The writers of one document use
its ``documentId`` as the name.

No ping before each use: a connection is checked out as it is (``pool_pre_ping`` cost one
``SELECT 1`` round trip per transaction, a third of all statements). Pooled connections are
replaced after :data:`POOL_RECYCLE_SECONDS`, and one found dead (PostgreSQL restarted) fails
its statement with a disconnect error, upon which SQLAlchemy discards the whole pool; the work
is then run again: Celery's ``autoretry_for=DB_CONNECTION_ERRORS`` for tasks, and
:func:`reconnecting` for the webhook, which Strapi never re-sends.

The one idiom for a statement a hot path runs per file: :class:`Prebuilt`, built once at
import with bind parameters and run on the session's connection, in its transaction.

The migrations ship inside the package (``ingest/migrations``, Alembic's
``ingest:migrations`` resource form), so :func:`alembic_config` works from an installed wheel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Executable,
    Row,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ingest.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
MIGRATIONS = "ingest:migrations"
_LOCK_KEY = "hashtextextended(:n, 0)"
#: Pooled connections older than this are replaced at checkout (below the idle timeouts of
#: common firewalls and proxies, so those never hand us a connection they dropped).
POOL_RECYCLE_SECONDS = 1800
#: What a lost or refused database connection raises (a retry gets a fresh connection),
#: and a pool with no connection free in time (a retry waits for one).
DB_CONNECTION_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError,
                                                     PoolTimeoutError)

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_autocommit_engine: Engine | None = None


def _create_engine(**options: Any) -> Engine:
    return create_engine(get_settings().database_url, pool_recycle=POOL_RECYCLE_SECONDS,
                         pool_size=5, max_overflow=10, future=True, **options)


def get_engine() -> Engine:
    """The process's engine, created on first use."""
    global _engine, _factory
    if _engine is None:
        _engine = _create_engine()
        _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engines (after a fork); the next use creates fresh pools."""
    global _engine, _factory, _autocommit_engine
    for engine in (_engine, _autocommit_engine):
        if engine is not None:
            engine.dispose(close=False)
    _engine = _autocommit_engine = None
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


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A connection on which each statement is a transaction of its own, committed when the
    statement returns: one round trip, no ``BEGIN`` and no ``COMMIT``. For work that is one
    statement, or statements that need no transaction around them (the webhook's outbox
    INSERT and its mark-enqueued UPDATE).

    Its pool is its own (created on first use, so only in processes that use it): switching
    a pooled connection of :func:`get_engine` to autocommit and back costs psycopg2 a
    ``SET default_transaction_isolation`` round trip at every return to the pool."""
    global _autocommit_engine
    if _autocommit_engine is None:
        _autocommit_engine = _create_engine(isolation_level="AUTOCOMMIT")
    with _autocommit_engine.connect() as conn:
        yield conn


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection was lost (the pool has been discarded)."""
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def reconnecting(attempts: int = 3) -> Retrying:
    """Run a unit of work again when its connection turned out to be dead::

        for attempt in reconnecting():
            with attempt, session_scope() as s:
                ...

    Only for work that is safe to repeat (idempotent by its rows), and only on a disconnect:
    the next try takes a fresh connection at once, a later one after a short jittered wait.
    """
    return Retrying(retry=retry_if_exception(is_disconnect), stop=stop_after_attempt(attempts),
                    wait=wait_exponential_jitter(initial=0.05, max=1.0), reraise=True)


#: Every :class:`Prebuilt` statement (``tests/test_prebuilt_sql.py`` checks their bind names).
PREBUILT: list[Prebuilt] = []


@dataclass(frozen=True)
class Prebuilt:
    """A statement built once, with bind parameters for what changes per call, and run on
    the Core connection of a session (in its transaction) or on a connection.

    Building a statement per call through the ORM Session cost about three times the CPU of
    running a prebuilt one on the connection (SQLAlchemy caches the compiled SQL, not the
    construct, and the ORM's execution path adds its own work), for the 10 statements a file
    runs. Bind names must not be column names of a table the statement writes, also in a
    CTE: SQLAlchemy adds an execution parameter named like a column to that INSERT's
    columns or that UPDATE's SET.
    """

    statement: Executable

    def __post_init__(self) -> None:
        PREBUILT.append(self)

    def run(self, session: Session | Connection, /, **params: Any) -> CursorResult[Any]:
        """Execute the statement with ``params`` for its bind parameters."""
        conn = session.connection() if isinstance(session, Session) else session
        return conn.execute(self.statement, params)


def advisory_xact_lock(name: Any) -> ColumnElement[Any]:
    """The call that takes the advisory lock ``name`` (a string or a bind parameter) until
    the transaction ends, for a SELECT list."""
    return func.pg_advisory_xact_lock(func.hashtextextended(name, 0))


def lock_xact(session: Session, name: str, *also: ColumnElement[Any]) -> Row[Any]:
    """Take the advisory lock ``name`` until the session's transaction ends; the row also
    holds the ``also`` columns, read in the same statement.

    Those are read in the statement's snapshot, taken before the lock was granted: what a
    holder of the lock committed while we waited is not in them. Only pass columns for
    which that holder's writes do not matter (rows it did not write under the lock).
    """
    return session.execute(select(advisory_xact_lock(name), *also)).one()


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

"""Database load: what one file costs in SQL, and what replaced the ping before each use.

``bench/sql_per_file.py`` (``make bench-sql``) measures the whole path on a server with
``pg_stat_statements``; this test keeps the worker's share from creeping back up, by counting
the statements SQLAlchemy sends while one file is processed and its batch checked.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import requests
from sqlalchemy import event, text

from devtools.pg import admin_exec
from ingest.batches import check_batch
from ingest.db import autocommit, get_engine, reconnecting, session_scope
from ingest.pipeline.embedding import get_embedder
from ingest.pipeline.run import default_services, process_event
from ingest.settings import get_settings
from tests.conftest import ADMIN_URL, DB_NAME
from tests.helpers import envelope, file_entry, post, store_event, upload, uploader, wait_terminal

#: Statements of processing the first file of an uploader (2 of them open its batch) and
#: checking its batch (2), in 6 transactions. It was 24 in 7 before the stage transitions,
#: the claim's checks, the batch join and the final store became one statement each, and
#: about 30 in 12, with a ping each, before that (README "Database load" has the numbers).
MAX_STATEMENTS = 12
MAX_TRANSACTIONS = 6


def test_processing_one_file_runs_a_bounded_number_of_statements(s3_server: Any,
                                                                 cms: Any) -> None:
    entry = file_entry("load.txt", "text/plain", user_email=uploader())
    upload(s3_server, entry, b"A sentence about database load. " * 40)
    event_id = store_event(entry)
    svc = replace(default_services(), embedder=get_embedder("hashing"))
    engine, me = get_engine(), threading.get_ident()
    statements: list[str] = []
    transactions: list[int] = []

    # Only this thread: an in-thread worker of another module, or a lease heartbeat, may run.
    def on_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me:
            statements.append(" ".join(statement.split()))

    def on_begin(conn: Any) -> None:
        if threading.get_ident() == me:
            transactions.append(1)

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "begin", on_begin)
    try:
        outcome = process_event(event_id, svc)
        assert outcome.batch_id is not None
        check_batch(outcome.batch_id, get_settings())
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "begin", on_begin)
    assert outcome.status == "done", outcome.detail
    listing = "\n".join(statements)
    assert len(statements) <= MAX_STATEMENTS, f"{len(statements)} statements:\n{listing}"
    assert len(transactions) <= MAX_TRANSACTIONS, f"{len(transactions)} transactions"
    assert "SELECT 1" not in statements, "a ping before each use is back"

    # A second message of the finished event (a file processed together with another one
    # keeps its own message on the broker) costs one statement.
    statements.clear()
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert process_event(event_id, svc).status == "skipped"
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert len(statements) == 1, statements


def test_a_webhook_after_postgresql_dropped_every_connection_is_stored(
    web: str, worker: Any, s3_server: Any
) -> None:
    """No ping before each use: the pooled connection the webhook takes first is dead, and
    the webhook is stored anyway (Strapi would never send it again)."""
    with session_scope() as s:  # at least one pooled connection to lose
        s.execute(text("SELECT 1"))
    with autocommit() as conn:  # and one of the pool the webhook stores with
        conn.execute(text("SELECT 1"))
    _drop_every_connection()
    entry = file_entry("after-restart.txt", "text/plain")
    upload(s3_server, entry, b"Stored although every pooled connection was dead.")
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202, response.text
    # This process's main pool lost its connections too (the webhook stores through the
    # autocommit pool, so nothing has reset it yet): the test's own first read may meet one.
    for attempt in reconnecting():
        with attempt:
            assert wait_terminal(response.json()["event_id"]).status == "done"


def test_readiness_holds_after_postgresql_dropped_every_connection(web: str) -> None:
    """A restart that is over does not fail a probe on the dead pooled connection."""
    assert requests.get(f"{web}/readyz", timeout=10).status_code == 200  # fills the pool
    _drop_every_connection()
    answer = requests.get(f"{web}/readyz", timeout=10)
    assert answer.status_code == 200, answer.text


def _drop_every_connection() -> None:
    admin_exec(ADMIN_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          f"WHERE datname = '{DB_NAME}' AND pid <> pg_backend_pid()")

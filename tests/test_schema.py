"""The Alembic migration: upgrade and downgrade both work, and the constraints hold."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError

from ingest.db import alembic_config
from ingest.models import Base
from tests.helpers import table_names


def _psycopg2(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def test_upgrade_head_then_downgrade_base(scratch_url: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    from ingest.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", scratch_url)
    get_settings.cache_clear()
    try:
        cfg = alembic_config()
        command.upgrade(cfg, "head")
        assert set(Base.metadata.tables) <= table_names(scratch_url)
        command.downgrade(cfg, "base")
        assert table_names(scratch_url) == {"alembic_version"}
        command.upgrade(cfg, "head")
        assert set(Base.metadata.tables) <= table_names(scratch_url)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def _engine() -> sa.Engine:
    return sa.create_engine(_psycopg2(os.environ["DATABASE_URL"]))


def test_check_constraints_hold() -> None:
    with _engine().begin() as conn, pytest.raises(IntegrityError, match="chk_event_status"):
        conn.execute(sa.text(
            "INSERT INTO file_events (event, document_id, entry_updated_at, payload, "
            "dedupe_key, status) VALUES ('entry.create', 'd', now(), '{}', :k, 'bogus')"),
            {"k": uuid.uuid4().hex})


def _open_batch(conn: sa.Connection, sealed: bool = False) -> None:
    conn.execute(sa.text(
        "INSERT INTO batch_processing_sessions (batch_id, company_id, bot_id, user_email, "
        "batch_start_time, sealed_at) VALUES (:b, 1, 2, 'u@example.com', now(), "
        + ("now()" if sealed else "NULL") + ")"), {"b": uuid.uuid4()})


def test_only_one_open_batch_per_uploader() -> None:
    engine = _engine()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM batch_processing_sessions WHERE company_id = 1"))
            _open_batch(conn, sealed=True)
            _open_batch(conn, sealed=True)
            _open_batch(conn)
        with engine.begin() as conn, pytest.raises(IntegrityError,
                                                   match="uq_batch_sessions_open_per_user"):
            _open_batch(conn)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM batch_processing_sessions WHERE company_id = 1"))
        engine.dispose()


def test_one_email_per_batch_and_type() -> None:
    engine = _engine()
    batch = uuid.uuid4()
    insert = sa.text(
        "INSERT INTO email_notification_log (batch_id, recipient_email, company_id, bot_id, "
        "email_subject) VALUES (:b, 'u@example.com', 3, 4, 's')")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO batch_processing_sessions (batch_id, company_id, bot_id, "
                "user_email, batch_start_time) VALUES (:b, 3, 4, 'u@example.com', now())"),
                {"b": batch})
            conn.execute(insert, {"b": batch})
        with engine.begin() as conn, pytest.raises(IntegrityError, match="uq_email_batch_type"):
            conn.execute(insert, {"b": batch})
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM email_notification_log WHERE company_id = 3"))
            conn.execute(sa.text("DELETE FROM batch_processing_sessions WHERE company_id = 3"))
        engine.dispose()


def test_models_match_the_migrated_schema() -> None:
    """The models and the migrations describe the same schema: Alembic's autogenerate,
    run against the test database migrated to head, proposes no change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = _engine()
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []

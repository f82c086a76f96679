"""Alembic environment: the URL comes from kb-ingest's settings (DATABASE_URL)."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from ingest.logging_setup import configure_logging
from ingest.models import Base
from ingest.settings import get_settings

config = context.config
# kb-ingest's one logging configuration (JSON lines), not alembic.ini's.
if config.attributes.get("configure_logger", True):
    configure_logging()

config.set_main_option("sqlalchemy.url", get_settings().database_url.replace("%", "%%"))
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

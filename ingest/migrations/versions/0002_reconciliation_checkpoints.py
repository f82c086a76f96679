"""Reconciliation checkpoints: how far the CMS poll for missed webhooks has read.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:42:58.736225
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reconciliation_checkpoints',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('last_updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('entries_seen', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('events_created', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('reconciliation_checkpoints')

"""Event leases: who runs an event's attempt, and until when it is presumed alive.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('file_events', sa.Column('lease_until', sa.DateTime(timezone=True),
                                           nullable=True))
    op.add_column('file_events', sa.Column('claimed_by', sa.Text(), nullable=True))
    op.create_index('idx_file_events_lease', 'file_events', ['status', 'lease_until'])


def downgrade() -> None:
    op.drop_index('idx_file_events_lease', table_name='file_events')
    op.drop_column('file_events', 'claimed_by')
    op.drop_column('file_events', 'lease_until')

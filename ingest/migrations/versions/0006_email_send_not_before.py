"""E-mail log: the earliest instant a batch's summary may be sent (the end of the user's
quiet hours when the batch closed inside them; NULL = at once).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('email_notification_log',
                  sa.Column('send_not_before', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('email_notification_log', 'send_not_before')

"""E-mail log: when the message body began to go out to SMTP, so a crash leaves a row that
says whether the e-mail may have been delivered.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('email_notification_log',
                  sa.Column('body_started_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('email_notification_log', 'body_started_at')

"""Safe auto-correction: what each attempt saw, worker losses, correction delay and hold,
the correction breaker and operator alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'processing', 'completed', 'failed')"
NEW_STATUSES = ("status IN ('pending', 'processing', 'completed', 'failed', 'held', "
                "'skipped', 'discarded')")


def upgrade() -> None:
    op.add_column('file_events', sa.Column('object_key', sa.Text(), nullable=True))
    op.add_column('file_events', sa.Column('object_etag', sa.Text(), nullable=True))
    op.add_column('file_events', sa.Column('object_size', sa.BigInteger(), nullable=True))
    op.add_column('file_events', sa.Column('object_missing_since', sa.DateTime(timezone=True),
                                           nullable=True))
    op.add_column('file_events', sa.Column('running_since', sa.DateTime(timezone=True),
                                           nullable=True))
    op.add_column('file_events', sa.Column('worker_losses', sa.Integer(), server_default='0',
                                           nullable=False))
    op.create_check_constraint('chk_event_worker_losses', 'file_events', 'worker_losses >= 0')

    op.add_column('auto_correction_tasks', sa.Column('object_etag', sa.Text(), nullable=True))
    op.add_column('auto_correction_tasks', sa.Column('object_size', sa.BigInteger(),
                                                     nullable=True))
    op.add_column('auto_correction_tasks', sa.Column('act_after', sa.DateTime(timezone=True),
                                                     nullable=True))
    op.drop_constraint('chk_correction_status', 'auto_correction_tasks', type_='check')
    op.create_check_constraint('chk_correction_status', 'auto_correction_tasks', NEW_STATUSES)

    op.create_table(
        'correction_breaker',
        sa.Column('name', sa.String(length=50), nullable=False),
        sa.Column('tripped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'operator_alerts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=50), nullable=False),
        sa.Column('dedupe_key', sa.Text(), nullable=False),
        sa.Column('subject', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('batch_id', sa.UUID(), nullable=True),
        sa.Column('document_id', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'skipped')",
                           name='chk_alert_status'),
        sa.CheckConstraint('attempts >= 0', name='chk_alert_attempts'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dedupe_key', name='uq_alert_dedupe_key'),
    )
    op.create_index('idx_operator_alerts_status', 'operator_alerts', ['status', 'created_at'])


def downgrade() -> None:
    op.drop_index('idx_operator_alerts_status', table_name='operator_alerts')
    op.drop_table('operator_alerts')
    op.drop_table('correction_breaker')
    op.execute("UPDATE auto_correction_tasks SET status = 'completed' "
               "WHERE status IN ('held', 'skipped', 'discarded')")
    op.drop_constraint('chk_correction_status', 'auto_correction_tasks', type_='check')
    op.create_check_constraint('chk_correction_status', 'auto_correction_tasks', OLD_STATUSES)
    op.drop_column('auto_correction_tasks', 'act_after')
    op.drop_column('auto_correction_tasks', 'object_size')
    op.drop_column('auto_correction_tasks', 'object_etag')
    op.drop_constraint('chk_event_worker_losses', 'file_events', type_='check')
    for column in ('worker_losses', 'running_since', 'object_missing_since', 'object_size',
                   'object_etag', 'object_key'):
        op.drop_column('file_events', column)

"""Channel deliveries: one row per batch and bot channel (Slack, Teams, signed webhook),
with its own idempotency key and attempt log; batches record when their channels were
planned. Operator alerts gain escalation: rounds sent, the last one, the acknowledgement.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'pending', 'sending', 'sent', 'failed'"
KINDS = "'slack', 'teams', 'webhook'"


def upgrade() -> None:
    op.add_column('batch_processing_sessions',
                  sa.Column('channels_planned_at', sa.DateTime(timezone=True), nullable=True))
    # Batches closed before this release are not notified on channels after the upgrade.
    op.execute("UPDATE batch_processing_sessions SET channels_planned_at = "
               "COALESCE(batch_end_time, now()) WHERE status <> 'processing'")
    # The sweeper's question "closed and not planned?" reads only this small index.
    op.create_index('idx_batches_unplanned', 'batch_processing_sessions', ['batch_end_time'],
                    postgresql_where=sa.text(
                        "channels_planned_at IS NULL AND status <> 'processing'"))
    op.create_table(
        'channel_deliveries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('batch_id', postgresql.UUID(as_uuid=True),
                  sa.ForeignKey('batch_processing_sessions.batch_id'), nullable=False),
        sa.Column('channel', sa.String(20), nullable=False),
        sa.Column('target_url', sa.Text(), nullable=False),
        sa.Column('target_label', sa.Text(), nullable=False),
        sa.Column('idempotency_key', sa.String(100), nullable=False),
        sa.Column('status', sa.String(20), server_default='pending', nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name='chk_delivery_status'),
        sa.CheckConstraint(f"channel IN ({KINDS})", name='chk_delivery_channel'),
        sa.CheckConstraint('attempts >= 0', name='chk_delivery_attempts'),
        sa.UniqueConstraint('idempotency_key', name='uq_delivery_idempotency_key'),
    )
    op.create_index('idx_channel_deliveries_batch', 'channel_deliveries', ['batch_id'])
    op.create_index('idx_channel_deliveries_status', 'channel_deliveries',
                    ['status', 'updated_at'])
    op.create_table(
        'channel_delivery_attempts',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('delivery_id', sa.Integer(),
                  sa.ForeignKey('channel_deliveries.id', ondelete='CASCADE'), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('success', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempted_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint('attempt > 0', name='chk_delivery_attempt'),
    )
    op.create_index('idx_channel_delivery_attempts_delivery', 'channel_delivery_attempts',
                    ['delivery_id'])
    op.add_column('operator_alerts', sa.Column('rounds', sa.Integer(), server_default='0',
                                               nullable=False))
    op.add_column('operator_alerts',
                  sa.Column('last_round_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('operator_alerts',
                  sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('operator_alerts', sa.Column('acked_by', sa.String(100), nullable=True))
    # Alerts already sent count as their first round and are not repeated after the upgrade.
    op.execute("UPDATE operator_alerts SET rounds = 1, last_round_at = sent_at, "
               "acked_at = now(), acked_by = 'upgrade' WHERE status <> 'pending'")


def downgrade() -> None:
    for column in ('acked_by', 'acked_at', 'last_round_at', 'rounds'):
        op.drop_column('operator_alerts', column)
    op.drop_table('channel_delivery_attempts')
    op.drop_table('channel_deliveries')
    op.drop_index('idx_batches_unplanned', table_name='batch_processing_sessions')
    op.drop_column('batch_processing_sessions', 'channels_planned_at')

"""Daily digests: one ``email_digests`` row per (company, bot, recipient, local date), and
on ``email_notification_log`` the batches left to a digest (``for_digest``) and the digest
that covers them (``digest_id``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'email_digests',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('company_id', sa.Integer(), nullable=False),
        sa.Column('bot_id', sa.Integer(), nullable=False),
        sa.Column('recipient_email', sa.String(255), nullable=False),
        sa.Column('digest_date', sa.Date(), nullable=False),
        sa.Column('timezone', sa.String(64), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cut_off', sa.DateTime(timezone=True), nullable=False),
        sa.Column('batch_count', sa.Integer(), server_default='0', nullable=False),
        sa.Column('total_files', sa.Integer(), server_default='0', nullable=False),
        sa.Column('successful_files', sa.Integer(), server_default='0', nullable=False),
        sa.Column('failed_files', sa.Integer(), server_default='0', nullable=False),
        sa.Column('email_subject', sa.Text(), nullable=False),
        sa.Column('email_content_html', sa.Text(), nullable=True),
        sa.Column('email_content_text', sa.Text(), nullable=True),
        sa.Column('message_id', sa.String(255), nullable=True),
        sa.Column('send_status', sa.String(20), server_default='pending', nullable=False),
        sa.Column('send_attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('send_not_before', sa.DateTime(timezone=True), nullable=True),
        sa.Column('first_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('body_started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('smtp_response', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("send_status IN ('pending', 'sending', 'sent', 'failed')",
                           name='chk_digest_send_status'),
        sa.CheckConstraint('send_attempts >= 0', name='chk_digest_attempts'),
        sa.UniqueConstraint('company_id', 'bot_id', 'recipient_email', 'digest_date',
                            name='uq_digest_user_day'),
    )
    op.create_index('idx_email_digests_status', 'email_digests', ['send_status', 'updated_at'])
    op.add_column('email_notification_log',
                  sa.Column('for_digest', sa.Boolean(), server_default='false', nullable=False))
    op.add_column('email_notification_log',
                  sa.Column('digest_id', sa.Integer(), sa.ForeignKey('email_digests.id'),
                            nullable=True))
    op.create_index('idx_email_notification_log_digest', 'email_notification_log',
                    ['digest_id'])
    op.create_index('idx_email_notification_log_awaiting_digest', 'email_notification_log',
                    ['company_id', 'bot_id', 'recipient_email'],
                    postgresql_where=sa.text('for_digest AND digest_id IS NULL'))


def downgrade() -> None:
    op.drop_index('idx_email_notification_log_awaiting_digest', 'email_notification_log')
    op.drop_index('idx_email_notification_log_digest', 'email_notification_log')
    op.drop_column('email_notification_log', 'digest_id')
    op.drop_column('email_notification_log', 'for_digest')
    op.drop_table('email_digests')

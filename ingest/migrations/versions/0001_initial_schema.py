"""Initial schema: every table of DESIGN §3 (seed 000 + seed 001 columns, file_events,
batch due-time columns with the one-open-batch-per-uploader partial unique index, and the
e-mail idempotency key).

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 22:54:42.544050
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batch_processing_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('bot_id', sa.Integer(), nullable=False),
    sa.Column('user_email', sa.String(length=255), nullable=False),
    sa.Column('batch_start_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('batch_end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('total_files', sa.Integer(), server_default='0', nullable=False),
    sa.Column('successful_files', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed_files', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=20), server_default='processing', nullable=False),
    sa.Column('notification_sent', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('notification_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('user_preferences_snapshot', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('last_file_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('close_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('processing', 'completed', 'partially_completed', 'failed')", name='chk_batch_status'),
    sa.CheckConstraint('batch_end_time IS NULL OR batch_end_time >= batch_start_time', name='chk_batch_time_order'),
    sa.CheckConstraint('total_files >= 0 AND successful_files >= 0 AND failed_files >= 0 AND successful_files + failed_files <= total_files', name='chk_file_counts'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id')
    )
    op.create_index('idx_batch_sessions_batch_id', 'batch_processing_sessions', ['batch_id'], unique=False)
    op.create_index('idx_batch_sessions_close_at', 'batch_processing_sessions', ['close_at'], unique=False)
    op.create_index('idx_batch_sessions_company_bot', 'batch_processing_sessions', ['company_id', 'bot_id'], unique=False)
    op.create_index('idx_batch_sessions_created_at', 'batch_processing_sessions', ['created_at'], unique=False)
    op.create_index('idx_batch_sessions_notification_sent', 'batch_processing_sessions', ['notification_sent'], unique=False)
    op.create_index('idx_batch_sessions_status', 'batch_processing_sessions', ['status'], unique=False)
    op.create_index('idx_batch_sessions_user_email', 'batch_processing_sessions', ['user_email'], unique=False)
    op.create_index('uq_batch_sessions_open_per_user', 'batch_processing_sessions', ['company_id', 'bot_id', 'user_email'], unique=True, postgresql_where=sa.text('sealed_at IS NULL'))
    op.create_table('file_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=50), nullable=False),
    sa.Column('model', sa.String(length=100), server_default='file', nullable=False),
    sa.Column('document_id', sa.Text(), nullable=False),
    sa.Column('entry_updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('dedupe_key', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='received', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('received', 'enqueued', 'processing', 'done', 'ignored', 'failed')", name='chk_event_status'),
    sa.CheckConstraint('attempts >= 0', name='chk_event_attempts'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    op.create_index('idx_file_events_document', 'file_events', ['document_id', 'entry_updated_at'], unique=False)
    op.create_index('idx_file_events_status', 'file_events', ['status', 'updated_at'], unique=False)
    op.create_table('auto_correction_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('file_document_id', sa.Text(), nullable=False),
    sa.Column('file_event_id', sa.Integer(), nullable=True),
    sa.Column('file_name', sa.Text(), nullable=True),
    sa.Column('storage_key', sa.Text(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('bot_id', sa.Integer(), nullable=True),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('failure_category', sa.String(length=50), nullable=False),
    sa.Column('original_error_message', sa.Text(), nullable=False),
    sa.Column('error_details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('correction_actions', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('s3_cleanup_completed', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('cms_cleanup_completed', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('chroma_cleanup_completed', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('execution_log', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error_during_correction', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed')", name='chk_correction_status'),
    sa.CheckConstraint('attempts >= 0', name='chk_correction_attempts'),
    sa.CheckConstraint('started_at IS NULL OR completed_at IS NULL OR completed_at >= started_at', name='chk_correction_time_order'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ),
    sa.ForeignKeyConstraint(['file_event_id'], ['file_events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_auto_correction_tasks_batch_id', 'auto_correction_tasks', ['batch_id'], unique=False)
    op.create_index('idx_auto_correction_tasks_company_bot', 'auto_correction_tasks', ['company_id', 'bot_id'], unique=False)
    op.create_index('idx_auto_correction_tasks_document_id', 'auto_correction_tasks', ['file_document_id'], unique=False)
    op.create_index('idx_auto_correction_tasks_failure_category', 'auto_correction_tasks', ['failure_category'], unique=False)
    op.create_index('idx_auto_correction_tasks_status', 'auto_correction_tasks', ['status'], unique=False)
    op.create_table('batch_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('file_document_id', sa.Text(), nullable=False),
    sa.Column('file_event_id', sa.Integer(), nullable=True),
    sa.Column('file_name', sa.Text(), nullable=False),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('processing_status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('processing_start_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processing_end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processing_time_seconds', sa.Integer(), nullable=True),
    sa.Column('chunks_created', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('error_category', sa.String(length=50), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("processing_status IN ('pending', 'processing', 'success', 'failed')", name='chk_file_status'),
    sa.CheckConstraint('chunks_created >= 0', name='chk_chunks_created'),
    sa.CheckConstraint('file_size_bytes >= 0', name='chk_file_size'),
    sa.CheckConstraint('processing_start_time IS NULL OR processing_end_time IS NULL OR processing_end_time >= processing_start_time', name='chk_file_time_order'),
    sa.CheckConstraint('processing_time_seconds >= 0', name='chk_processing_time'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['file_event_id'], ['file_events.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'file_document_id', name='uq_batch_files_document')
    )
    op.create_index('idx_batch_files_batch_id', 'batch_files', ['batch_id'], unique=False)
    op.create_index('idx_batch_files_created_at', 'batch_files', ['created_at'], unique=False)
    op.create_index('idx_batch_files_document_id', 'batch_files', ['file_document_id'], unique=False)
    op.create_index('idx_batch_files_status', 'batch_files', ['processing_status'], unique=False)
    op.create_table('email_notification_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('recipient_email', sa.String(length=255), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('bot_id', sa.Integer(), nullable=False),
    sa.Column('email_type', sa.String(length=50), server_default='batch_completion', nullable=False),
    sa.Column('email_subject', sa.Text(), nullable=False),
    sa.Column('email_content_html', sa.Text(), nullable=True),
    sa.Column('email_content_text', sa.Text(), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('send_status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('send_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default='3', nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('smtp_response', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("email_type IN ('batch_completion', 'error_alert', 'summary')", name='chk_email_type'),
    sa.CheckConstraint("send_status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name='chk_email_send_status'),
    sa.CheckConstraint('send_attempts >= 0', name='chk_email_attempts'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'email_type', name='uq_email_batch_type')
    )
    op.create_index('idx_email_notification_log_batch_id', 'email_notification_log', ['batch_id'], unique=False)
    op.create_index('idx_email_notification_log_company_bot', 'email_notification_log', ['company_id', 'bot_id'], unique=False)
    op.create_index('idx_email_notification_log_recipient', 'email_notification_log', ['recipient_email'], unique=False)
    op.create_index('idx_email_notification_log_status', 'email_notification_log', ['send_status'], unique=False)
    op.create_table('file_processing_status',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('file_event_id', sa.Integer(), nullable=False),
    sa.Column('file_document_id', sa.Text(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('processing_stage', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('stage_start_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('stage_end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('error_details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("processing_stage IN ('download', 'processing', 'storage', 'completed', 'failed')", name='chk_stage'),
    sa.CheckConstraint("status IN ('pending', 'processing', 'success', 'failed')", name='chk_stage_status'),
    sa.CheckConstraint('stage_end_time IS NULL OR stage_end_time >= stage_start_time', name='chk_processing_time_order'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ),
    sa.ForeignKeyConstraint(['file_event_id'], ['file_events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_file_processing_status_batch_id', 'file_processing_status', ['batch_id'], unique=False)
    op.create_index('idx_file_processing_status_document_id', 'file_processing_status', ['file_document_id'], unique=False)
    op.create_index('idx_file_processing_status_event_id', 'file_processing_status', ['file_event_id'], unique=False)
    op.create_index('idx_file_processing_status_stage', 'file_processing_status', ['processing_stage'], unique=False)
    op.create_index('idx_file_processing_status_status', 'file_processing_status', ['status'], unique=False)
    op.create_table('notification_retry_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('retry_attempt', sa.Integer(), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('retry_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('success', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('retry_attempt > 0', name='chk_retry_attempt'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_notification_retry_log_batch_id', 'notification_retry_log', ['batch_id'], unique=False)
    op.create_index('idx_notification_retry_log_retry_at', 'notification_retry_log', ['retry_at'], unique=False)
    op.create_index('idx_notification_retry_log_success', 'notification_retry_log', ['success'], unique=False)
    op.create_table('processing_errors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('file_event_id', sa.Integer(), nullable=True),
    sa.Column('file_document_id', sa.Text(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('error_category', sa.String(length=50), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=False),
    sa.Column('error_details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('stack_trace', sa.Text(), nullable=True),
    sa.Column('processing_stage', sa.String(length=50), nullable=True),
    sa.Column('retry_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('auto_correction_triggered', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('resolution_status', sa.String(length=20), server_default='unresolved', nullable=False),
    sa.Column('resolution_action', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("resolution_action IS NULL OR resolution_action IN ('auto_correction', 'manual_fix', 'ignored')", name='chk_resolution_action'),
    sa.CheckConstraint("resolution_status IN ('unresolved', 'auto_corrected', 'manual_fix', 'ignored')", name='chk_error_resolution'),
    sa.CheckConstraint('retry_count >= 0', name='chk_retry_count'),
    sa.ForeignKeyConstraint(['batch_id'], ['batch_processing_sessions.batch_id'], ),
    sa.ForeignKeyConstraint(['file_event_id'], ['file_events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_processing_errors_batch_id', 'processing_errors', ['batch_id'], unique=False)
    op.create_index('idx_processing_errors_category', 'processing_errors', ['error_category'], unique=False)
    op.create_index('idx_processing_errors_document_id', 'processing_errors', ['file_document_id'], unique=False)
    op.create_index('idx_processing_errors_status', 'processing_errors', ['resolution_status'], unique=False)


def downgrade() -> None:
    op.drop_index('idx_processing_errors_status', table_name='processing_errors')
    op.drop_index('idx_processing_errors_document_id', table_name='processing_errors')
    op.drop_index('idx_processing_errors_category', table_name='processing_errors')
    op.drop_index('idx_processing_errors_batch_id', table_name='processing_errors')
    op.drop_table('processing_errors')
    op.drop_index('idx_notification_retry_log_success', table_name='notification_retry_log')
    op.drop_index('idx_notification_retry_log_retry_at', table_name='notification_retry_log')
    op.drop_index('idx_notification_retry_log_batch_id', table_name='notification_retry_log')
    op.drop_table('notification_retry_log')
    op.drop_index('idx_file_processing_status_status', table_name='file_processing_status')
    op.drop_index('idx_file_processing_status_stage', table_name='file_processing_status')
    op.drop_index('idx_file_processing_status_event_id', table_name='file_processing_status')
    op.drop_index('idx_file_processing_status_document_id', table_name='file_processing_status')
    op.drop_index('idx_file_processing_status_batch_id', table_name='file_processing_status')
    op.drop_table('file_processing_status')
    op.drop_index('idx_email_notification_log_status', table_name='email_notification_log')
    op.drop_index('idx_email_notification_log_recipient', table_name='email_notification_log')
    op.drop_index('idx_email_notification_log_company_bot', table_name='email_notification_log')
    op.drop_index('idx_email_notification_log_batch_id', table_name='email_notification_log')
    op.drop_table('email_notification_log')
    op.drop_index('idx_batch_files_status', table_name='batch_files')
    op.drop_index('idx_batch_files_document_id', table_name='batch_files')
    op.drop_index('idx_batch_files_created_at', table_name='batch_files')
    op.drop_index('idx_batch_files_batch_id', table_name='batch_files')
    op.drop_table('batch_files')
    op.drop_index('idx_auto_correction_tasks_status', table_name='auto_correction_tasks')
    op.drop_index('idx_auto_correction_tasks_failure_category', table_name='auto_correction_tasks')
    op.drop_index('idx_auto_correction_tasks_document_id', table_name='auto_correction_tasks')
    op.drop_index('idx_auto_correction_tasks_company_bot', table_name='auto_correction_tasks')
    op.drop_index('idx_auto_correction_tasks_batch_id', table_name='auto_correction_tasks')
    op.drop_table('auto_correction_tasks')
    op.drop_index('idx_file_events_status', table_name='file_events')
    op.drop_index('idx_file_events_document', table_name='file_events')
    op.drop_table('file_events')
    op.drop_index('uq_batch_sessions_open_per_user', table_name='batch_processing_sessions', postgresql_where=sa.text('sealed_at IS NULL'))
    op.drop_index('idx_batch_sessions_user_email', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_status', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_notification_sent', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_created_at', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_company_bot', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_close_at', table_name='batch_processing_sessions')
    op.drop_index('idx_batch_sessions_batch_id', table_name='batch_processing_sessions')
    op.drop_table('batch_processing_sessions')

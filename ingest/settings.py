"""Typed settings read from the environment, validated once at start.

Every process (web, worker, beat, CLI) calls :func:`get_settings`; a bad value stops the
process with a message that names the environment variable at fault. `.env.example` lists
every setting with its default and meaning.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised when the environment holds a missing or invalid setting."""


class Settings(BaseSettings):
    """All of kb-ingest's configuration; field names are the env names in lower case."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    # Infrastructure
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/kb_ingest"
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None  # defaults to REDIS_URL
    visibility_timeout_seconds: int = Field(3600, ge=60)

    # CMS (Strapi 5)
    cms_api_url: str = "http://127.0.0.1:1337"
    cms_api_token: str | None = None
    cms_timeout_seconds: float = Field(10.0, gt=0)

    # Webhook receiver
    webhook_token: str | None = None
    webhook_secret: str | None = None
    webhook_auth_disabled: bool = False
    webhook_replay_window_seconds: int = Field(300, ge=1)
    webhook_max_body_bytes: int = Field(1_048_576, ge=1024)
    webhook_max_json_depth: int = Field(64, ge=8, le=500)
    outbox_relay_after_seconds: float = Field(5.0, ge=0)

    # Operations
    # Read-only credential of /status (Bearer, or the password of basic auth); never the
    # webhook secret. Unset: /status answers 404.
    status_token: str | None = None
    # A worker also serves its own /metrics on this port (0: off; the web's /metrics shows
    # every process that shares PROMETHEUS_MULTIPROC_DIR on one host).
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    # `ingest probe beat` fails when beat's last tick is older than this.
    beat_heartbeat_max_age_seconds: float = Field(120, gt=0)

    # S3
    s3_bucket: str = "kb-ingest"
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1)
    # A NoSuchKey is re-checked this long before the file counts as not found (presigned
    # upload flows create the CMS entry before the object lands).
    s3_missing_grace_seconds: float = Field(300, ge=0)
    # Where a tenant's objects live; a key outside it is neither read nor deleted.
    # Empty turns the check off (see README: any entry could then name any object).
    s3_key_prefix_template: str = "companies/{company_id}/bots/{bot_id}/"

    # Vector store
    chroma_path: str = "./chroma-data"
    chroma_host: str | None = None
    chroma_port: int = Field(8000, ge=1, le=65535)
    chroma_collection: str = "kb_chunks"

    # Pipeline
    embedding_backend: Literal["minilm", "hashing"] = "minilm"
    chunk_size: int = Field(1000, ge=100, le=20_000)
    chunk_overlap: int = Field(200, ge=0)
    # minilm: chunk length in the model's tokens ([CLS]/[SEP] and heading included; 0 = the
    # model's window, its max_seq_length; never more) and the overlap of consecutive chunks.
    # 64, not the 256 window: fact lookups hit far more often (bench/retrieval.py, README)
    chunk_tokens: int = Field(40, ge=0, le=8192)
    chunk_overlap_tokens: int = Field(10, ge=0)
    # Records (CSV rows, JSON objects) are packed whole, up to this many tokens a chunk
    # (0: one record per chunk, so a one-row fact is not diluted among other rows)
    chunk_record_tokens: int = Field(0, ge=0, le=8192)
    ingest_max_retries: int = Field(5, ge=0, le=20)
    # Small files waiting in the outbox are processed together: one embedding call and one
    # Chroma write for at most INGEST_GROUP_FILES files of INGEST_GROUP_MAX_BYTES in all
    # (by their entries' size_bytes; 1 file: each alone). Each file of a group holds a
    # database connection while the group's Chroma write runs: at most 12 of the pool's 15
    # per worker child.
    ingest_group_files: int = Field(8, ge=1, le=12)
    ingest_group_max_bytes: int = Field(64 * 1024, ge=0)
    # Resource caps per file (DESIGN §8): over a cap, the file fails as processing_error.
    max_unzipped_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_extracted_chars: int = Field(10_000_000, ge=1000)
    max_chunks_per_file: int = Field(100_000, ge=1)
    extract_timeout_seconds: float = Field(120, gt=0)
    # OCR of images and scanned PDF pages (Tesseract): languages in tesseract's -l syntax;
    # a file with more pages to OCR than OCR_MAX_PAGES fails as processing_error "too large".
    ocr_languages: str = Field("eng", pattern=r"^[A-Za-z0-9_/]+(\+[A-Za-z0-9_/]+)*$")
    ocr_max_pages: int = Field(20, ge=1, le=10_000)
    ocr_dpi: int = Field(300, ge=72, le=600)
    tesseract_cmd: str = Field("tesseract", min_length=1)
    # After this many deliveries that died with their worker, the file fails as
    # resource_limit (no deletion) instead of killing the next worker process.
    max_worker_losses: int = Field(2, ge=1, le=20)
    # A running attempt holds its event this long, renewed every third of it by a
    # heartbeat; a dead worker's event is re-driven once its lease has run out.
    event_lease_seconds: float = Field(60, ge=5, le=600)
    # The beat relay puts back on its queue a broker message that a worker fetched this
    # long ago and that no live worker holds (its worker died before acking it).
    broker_orphan_grace_seconds: float = Field(30, ge=1, le=600)

    # E-mail
    smtp_server: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_use_tls: bool = False
    smtp_use_ssl: bool = False
    from_email: str = "noreply@kb-ingest.local"
    from_name: str = "Knowledge Bot"
    enable_email_notifications: bool = True
    admin_email: str | None = None
    # Escalation of operator alerts: Apprise URLs (comma- or space-separated) that get every
    # alert besides ADMIN_EMAIL; an alert not acknowledged (`ingest alerts ack ID`) within
    # ALERT_REPEAT_MINUTES is sent again, at most ALERT_MAX_REPEATS times.
    alert_urls: str | None = None
    alert_repeat_minutes: float = Field(60, gt=0)
    alert_max_repeats: int = Field(3, ge=0, le=100)
    # Receives the summaries of files whose user_email is missing or not an address;
    # without it those summaries are recorded as skipped.
    fallback_notification_email: str | None = None
    unsubscribe_url: str | None = None
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    # Transient SMTP failures are retried (capped backoff, jitter) for this long after the
    # batch closed, as mail servers retry a queued message: an outage of hours loses nothing.
    smtp_retry_window_minutes: float = Field(1440, gt=0)
    smtp_retry_base_seconds: float = Field(30.0, ge=0)
    email_list_cap: int = Field(50, ge=1, le=10_000)
    # Summary e-mails leaving per minute, in all and per recipient domain (0 = no limit);
    # one over the limit waits for its turn, never dropped and never an SMTP attempt
    # (ingest/ratelimit.py: token buckets in Redis, ten seconds of burst).
    email_rate_per_minute: int = Field(100, ge=0)
    email_rate_per_domain_per_minute: int = Field(0, ge=0)

    # Chat and webhook channels of a bot (ingest/notify/): the HMAC-SHA256 key of the
    # signed JSON webhook (X-KB-Signature); without it a webhook channel is not posted to.
    notify_webhook_secret: str | None = None
    channel_timeout_seconds: float = Field(10.0, gt=0, le=120)
    channel_retry_base_seconds: float = Field(10.0, ge=0)
    channel_retry_window_minutes: float = Field(1440, gt=0)

    # Batches (delays may be fractional minutes for demos and tests)
    default_notification_delay_minutes: float = Field(30, gt=0, le=1440)
    default_batch_size_threshold: int = Field(5, ge=1, le=100)
    max_batch_age_hours: float = Field(24, gt=0)
    # A file still unfinished this long after it joined is reported as timed out. It must
    # cover two whole attempts (a worker lost near the hard limit, then a full retry) plus
    # recovery, so a recovered file is never reported timed out (checked below).
    batch_file_timeout_minutes: float = Field(90, gt=0)
    preferences_cache_ttl_seconds: int = Field(300, ge=1)
    batch_sweep_seconds: float = Field(15, gt=0)

    # Auto-correction
    enable_auto_correction: bool = True
    max_correction_attempts: int = Field(3, ge=1, le=20)
    correction_retry_base_seconds: float = Field(5.0, ge=0)
    # The first destructive action waits this long, so a quick re-upload or a late
    # webhook wins (seed 000).
    auto_correction_delay_seconds: float = Field(60, ge=0)
    # More corrections than this planned within the window trip the breaker: every
    # correction is then held for an operator (`ingest corrections release|discard`).
    correction_breaker_threshold: int = Field(20, ge=1)
    correction_breaker_window_seconds: float = Field(600, gt=0)

    # Reconciliation (Strapi never retries a webhook)
    reconciliation_every_seconds: float = Field(300, gt=0)
    reconciliation_lookback_hours: float = Field(24, gt=0)
    reconciliation_overlap_seconds: float = Field(60, ge=0)
    reconciliation_page_size: int = Field(100, ge=1, le=100)

    @field_validator(
        "cms_api_token", "webhook_token", "webhook_secret", "s3_endpoint_url", "chroma_host",
        "celery_broker_url", "smtp_user", "smtp_password", "admin_email", "unsubscribe_url",
        "fallback_notification_email", "status_token", "notify_webhook_secret", "alert_urls",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg2://")):
            raise ValueError("must be a postgresql:// URL")
        return value.replace("postgresql://", "postgresql+psycopg2://", 1)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHUNK_OVERLAP must be smaller than CHUNK_SIZE")
        if self.chunk_tokens and self.chunk_tokens < 32:
            raise ValueError("CHUNK_TOKENS must be 0 (the model's window) or at least 32")
        if self.chunk_overlap_tokens >= (self.chunk_tokens or 256) // 2:  # 256: MiniLM
            raise ValueError("CHUNK_OVERLAP_TOKENS must be less than half of CHUNK_TOKENS "
                             "(half of 256 when CHUNK_TOKENS=0)")
        if self.s3_key_prefix_template:
            try:
                self.s3_key_prefix_template.format(company_id=1, bot_id=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    "S3_KEY_PREFIX_TEMPLATE may only use {company_id} and {bot_id}"
                ) from exc
        needed = self.visibility_timeout_seconds + 2 * self.event_lease_seconds + 60
        if self.batch_file_timeout_minutes * 60 < needed:
            raise ValueError(
                f"BATCH_FILE_TIMEOUT_MINUTES must be at least {needed / 60:g}: two attempts "
                "of the hard time limit (VISIBILITY_TIMEOUT_SECONDS / 2 each) plus recovery "
                "(2 × EVENT_LEASE_SECONDS + 60 s), or a recovered file is reported timed out")
        if self.smtp_use_tls and self.smtp_use_ssl:
            raise ValueError("SMTP_USE_TLS and SMTP_USE_SSL are exclusive")
        return self

    @property
    def broker_url(self) -> str:
        """The Celery broker: CELERY_BROKER_URL, else REDIS_URL."""
        return self.celery_broker_url or self.redis_url


def load_settings() -> Settings:
    """Read the environment; raise :class:`SettingsError` naming every bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()

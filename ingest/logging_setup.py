"""The one logging configuration of every process: web, worker, beat, migrations, CLI.

One line per record on stderr: a JSON object (python-json-logger) by default, or a readable
line with ``LOG_FORMAT=text``. Each line carries the fields bound in
:mod:`ingest.log_context` (``task_id``, ``event_id``, ``document_id``, ``batch_id``, …).
The values of the secret settings (tokens, passwords, the passwords inside URLs) are
replaced by ``***`` in every line, whatever logged them. ``LOG_LEVEL`` sets the level
(default INFO). Celery processes come here through its ``setup_logging`` signal
(``workers.app``), so Celery installs no handlers of its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from pythonjsonlogger.json import JsonFormatter

from ingest import log_context
from ingest.settings import SettingsError

SECRET_ENV = ("CMS_API_TOKEN", "WEBHOOK_TOKEN", "WEBHOOK_SECRET", "SMTP_PASSWORD",
              "NOTIFY_WEBHOOK_SECRET", "ALERT_URLS", "STATUS_TOKEN", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "FLOWER_BASIC_AUTH")
URL_ENV = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CHROMA_HOST", "S3_ENDPOINT_URL")
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words in the lines
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "botocore", "boto3", "s3transfer")


class ContextFilter(logging.Filter):
    """Copy the bound context fields onto each record (an explicit ``extra`` wins).

    Celery's lines about a task outside its run ("received", "retry", "failed" in the main
    process) carry the task in ``extra={"data": {"id", "name"}}``: those become
    ``task_id``/``task_name`` too, so one search finds every line of a task.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context.current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        data = getattr(record, "data", None)
        if isinstance(data, dict) and "id" in data and not hasattr(record, "task_id"):
            record.task_id = data["id"]
            record.task_name = data.get("name")
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value…`` with the context fields that are set."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        fields = " ".join(f"{k}={getattr(record, k)}" for k in log_context.FIELDS
                          if getattr(record, k, None) is not None)
        line = super().formatMessage(record)
        return f"{line} [{fields}]" if fields else line


def json_formatter() -> logging.Formatter:
    """One JSON object per record: ts, level, logger, message, context fields, exc."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exc"},
        timestamp="ts", json_ensure_ascii=False,
    )


class Redacting(logging.Formatter):
    """Wraps a formatter; replaces every secret value in its output by ``***``."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner
        # A secret may appear as is or JSON-escaped (inside a JSON line).
        forms = {form for s in secrets for form in (s, json.dumps(s)[1:-1])}
        ordered = sorted(forms, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        return self.pattern.sub("***", line) if self.pattern else line


def secret_values(env: Mapping[str, str] = os.environ) -> list[str]:
    """The secret values of this process's environment that are long enough to mask."""
    values = [env.get(name, "") for name in SECRET_ENV]
    values += re.split(r"[\s,]+", env.get("ALERT_URLS", ""))  # each URL of the list too
    for name in URL_ENV:
        try:
            values.append(urlsplit(env.get(name, "")).password or "")
        except ValueError:
            continue
    return [v for v in values if len(v) >= MIN_SECRET_LENGTH]


def handler(fmt: str | None = None) -> logging.Handler:
    """A stderr handler in ``fmt`` (``LOG_FORMAT``: json or text), context and redaction on."""
    fmt = fmt or os.environ.get("LOG_FORMAT") or "json"
    if fmt not in ("json", "text"):
        raise SettingsError(f"invalid configuration: LOG_FORMAT: must be json or text, "
                            f"not {fmt!r}")
    inner = TextFormatter() if fmt == "text" else json_formatter()
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(Redacting(inner, secret_values()))
    out.addFilter(ContextFilter())
    return out


def configure_logging(level: str | int | None = None) -> None:
    """Configure the root logger once per process tree (idempotent; a fork inherits it).

    ``LOG_LEVEL`` wins over ``level`` (e.g. Celery's ``--loglevel``, which may come after a
    first call); default INFO. Python's warnings become log records too.
    """
    root = logging.getLogger()
    if getattr(root, "_kb_configured", False):
        if level and not os.environ.get("LOG_LEVEL"):
            root.setLevel(level)
        return
    try:
        root.setLevel(os.environ.get("LOG_LEVEL") or level or "INFO")
    except ValueError as exc:
        raise SettingsError(f"invalid configuration: LOG_LEVEL: {exc}") from None
    root.addHandler(handler())
    logging.captureWarnings(True)
    # One INFO line per HTTP request of a client library drowns the process's own log.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root._kb_configured = True  # type: ignore[attr-defined]

"""What every command shares: rich output, ``--json``, durations, masking of secrets."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console

# soft_wrap: a long line (a URL, an error) is never broken in two; tables still fit the width.
console = Console(highlight=False, soft_wrap=True)  # stdout, resolved at each print
errors = Console(stderr=True, highlight=False, soft_wrap=True)

#: Settings shown as ``***`` by ``check-config``; URLs also lose their password.
SECRETS = frozenset({"cms_api_token", "webhook_token", "webhook_secret", "smtp_password",
                     "status_token", "notify_webhook_secret", "alert_urls"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def emit_json(value: Any) -> None:
    """Write ``value`` as JSON to stdout, the only thing a ``--json`` command prints there."""
    sys.stdout.write(json.dumps(value, default=str, indent=2) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> int:
    """Print ``ingest: message`` on stderr; return the exit code."""
    errors.print(f"ingest: {message}", markup=False)
    return code


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` → timedelta (an argparse ``type``)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and s, m, h or d (90s, 15m, 2h, 1d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def mask_url(value: str) -> str:
    """``postgresql://u:secret@host/db`` → ``postgresql://u:***@host/db``; others unchanged."""
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        password = None
        parts = None
    if parts is None or password is None:
        # Not parseable as a URL with a password: still never show "user:pass@".
        return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", value)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def shown_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings as ``check-config`` shows them: secrets and URL passwords masked."""
    shown: dict[str, Any] = {}
    for name, value in sorted(values.items()):
        if name in SECRETS and value:
            value = "***"
        elif isinstance(value, str):
            value = mask_url(value)
        shown[name.upper()] = value
    return shown

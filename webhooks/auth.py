"""Webhook authentication (DESIGN §6/§7).

A request is authenticated when it carries the valid Bearer token (if ``WEBHOOK_TOKEN``
is set) or a valid HMAC signature within the replay window (if ``WEBHOOK_SECRET`` is set):
``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>`` with
``X-Webhook-Timestamp`` in unix seconds. Comparisons are constant-time; secrets are never
logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from ingest.settings import Settings

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class AuthError(Exception):
    """The request is not authenticated; the message is safe to return to the caller."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Webhook-Signature`` value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _bearer_ok(headers: Mapping[str, str], token: str) -> bool:
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.encode())


def _signature_problem(
    headers: Mapping[str, str], body: bytes, secret: str, window: int, now: float
) -> str | None:
    timestamp = headers.get("X-Webhook-Timestamp", "")
    signature = headers.get("X-Webhook-Signature", "")
    if not timestamp or not signature:
        return "missing credentials"
    if not _TIMESTAMP.fullmatch(timestamp):
        # Unix seconds in ASCII digits; also keeps int() of a 400-digit value from
        # overflowing the float comparison below.
        return "invalid X-Webhook-Timestamp"
    sent = int(timestamp)
    if abs(now - sent) > window:
        return "stale or future X-Webhook-Timestamp"
    if not hmac.compare_digest(signature.encode(), sign(secret, timestamp, body).encode()):
        return "invalid signature"
    return None


def authenticate(
    headers: Mapping[str, str], body: bytes, settings: Settings, now: float | None = None
) -> None:
    """Raise :class:`AuthError` unless the request is authenticated."""
    if settings.webhook_auth_disabled:
        return
    if settings.webhook_token and _bearer_ok(headers, settings.webhook_token):
        return
    if settings.webhook_secret:
        problem = _signature_problem(
            headers, body, settings.webhook_secret, settings.webhook_replay_window_seconds,
            time.time() if now is None else now,
        )
        if problem is None:
            return
        if headers.get("X-Webhook-Signature") or headers.get("X-Webhook-Timestamp"):
            raise AuthError(problem)
    raise AuthError("missing or invalid credentials")


def check_configured(settings: Settings) -> None:
    """Refuse to start with no authentication unless explicitly disabled."""
    if not (settings.webhook_token or settings.webhook_secret or settings.webhook_auth_disabled):
        raise RuntimeError(
            "set WEBHOOK_TOKEN and/or WEBHOOK_SECRET (or WEBHOOK_AUTH_DISABLED=true for "
            "development only)"
        )

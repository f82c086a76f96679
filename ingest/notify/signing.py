"""The signature of kb-ingest's JSON webhook: ``X-KB-Signature: t=<unix time>,v1=<hex>``.

``v1`` is HMAC-SHA256, keyed with ``NOTIFY_WEBHOOK_SECRET``, of ``"<t>.<message>"``, where
``message`` is the ``message`` field of the JSON body as sent: our JSON document of the
batch summary, as a string. Apprise builds the envelope around it (``version``, ``title``,
``type``), so only ``message`` is signed and a receiver must trust nothing else. A receiver
also rejects a ``t`` outside its replay window (five minutes here) and de-duplicates on the
``Idempotency-Key`` header, which a retry repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-KB-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_WINDOW_SECONDS = 300


def sign(secret: str, message: str, timestamp: int | None = None) -> str:
    """The ``X-KB-Signature`` value of ``message``, at ``timestamp`` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{message}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str, message: str, *, now: float | None = None,
           window: int = REPLAY_WINDOW_SECONDS) -> bool:
    """True if ``header`` signs ``message`` with ``secret`` within ``window`` seconds of now."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > window:
        return False
    return hmac.compare_digest(sign(secret, message, t), f"t={t},v1={given}")

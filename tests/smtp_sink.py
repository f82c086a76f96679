"""A capturing test SMTP server on aiosmtpd, with fault injection.

``with SmtpSink() as sink:`` listens on 127.0.0.1 on a free port (``sink.port``) and keeps
every accepted message in ``sink.messages`` (parsed with ``email.policy.default``) and
``sink.envelopes``. Faults apply to the next connections / commands, then wear off:

- ``refuse_connections(n)``: the next ``n`` connections are closed before the greeting
  (``reply=None``) or answered with a greeting like ``"421 4.3.2 try later"`` and closed.
- ``reject_rcpt(code, times)``: the next ``times`` RCPT TO commands answer ``code``
  (``550 5.1.1 no such user`` for 5xx, ``451 4.3.0 try later`` for 4xx, or ``reply``).
- ``drop_after_data(times)``: the message is captured (the server "queued" it) but the
  connection is cut before the final reply — the client cannot know it was delivered.
- ``delay_data_reply(seconds, times)``: the message is captured and the final reply comes
  only after ``seconds`` (a client with a shorter timeout sees a timeout after the body).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command


@dataclass(frozen=True)
class CapturedEnvelope:
    """What the server received for one message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes


class _Refuser(asyncio.Protocol):
    """Closes the connection at once, optionally after one greeting line."""

    def __init__(self, reply: str | None) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.reply is not None:
            transport.write(self.reply.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()  # flushes the greeting first


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.sink._take("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        number = self.sink._capture(envelope)
        fault = self.sink._take("data")
        if fault == "drop":
            assert server.transport is not None
            server.transport.abort()  # no reply at all; the client sees a reset/EOF
        elif fault is not None:
            await asyncio.sleep(float(fault))
        return f"250 2.0.0 Ok: queued as M{number}"


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, port: int = 0, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), hostname=HOST, port=port, **kwargs)
        self.sink = sink

    def factory(self) -> asyncio.Protocol:  # type: ignore[override]
        refusal = self.sink._on_connect()
        if refusal is not None:
            return _Refuser(refusal or None)
        return super().factory()

    def _trigger_server(self) -> None:
        if self.port == 0:  # learn the port the OS chose before aiosmtpd's self-test
            assert self.server is not None
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """A local SMTP server that records messages; see the module docstring."""

    def __init__(self, port: int = 0, **smtp_kwargs: Any) -> None:
        """``port`` 0 picks a free port. ``smtp_kwargs`` go to aiosmtpd's ``Controller``
        (``ssl_context`` for implicit TLS) and :class:`aiosmtpd.smtp.SMTP` (``tls_context``
        for STARTTLS, ``auth_callback``, ...).
        """
        self._smtp_kwargs = smtp_kwargs
        self._port = port
        self._cond = threading.Condition()
        self._controller: _Controller | None = None
        self._starting = False
        self._faults: dict[str, list[str]] = {"connect": [], "rcpt": [], "data": []}
        self._refuse_until = 0.0
        self._after_capture: Any = None
        self.port = 0
        self.connections = 0
        self.messages: list[EmailMessage] = []
        self.envelopes: list[CapturedEnvelope] = []

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SmtpSink:
        """Start listening (a stopped sink can be started again, on a new port)."""
        assert self._controller is None, "already started"
        self._starting = True
        controller = _Controller(self, port=self._port, **self._smtp_kwargs)
        try:
            controller.start()
        finally:
            self._starting = False
        self._controller = controller
        self.port = controller.port
        return self

    def stop(self) -> None:
        """Stop listening; captured messages stay readable."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget captured messages, the connection count and pending faults."""
        with self._cond:
            self.messages.clear()
            self.envelopes.clear()
            self.connections = 0
            for queue in self._faults.values():
                queue.clear()
            self._refuse_until = 0.0
            self._after_capture = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages arrived; return them (AssertionError if not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    # -- faults -----------------------------------------------------------------------

    def refuse_connections(self, n: int, reply: str | None = None) -> None:
        """Close the next ``n`` connections before the greeting, or after ``reply``."""
        with self._cond:
            self._faults["connect"].extend([reply or ""] * n)

    def refuse_for(self, seconds: float) -> None:
        """Close every connection before the greeting for the next ``seconds`` (an outage)."""
        with self._cond:
            self._refuse_until = time.monotonic() + seconds

    def after_capture(self, callback: Any) -> None:
        """Run ``callback()`` once, after the next message is captured and before its 250."""
        with self._cond:
            self._after_capture = callback

    def reject_rcpt(self, code: int = 550, times: int = 1, reply: str | None = None) -> None:
        """Answer the next ``times`` RCPT TO commands with ``code`` (or ``reply``)."""
        if reply is None:
            reply = f"{code} 5.1.1 no such user" if code >= 500 else f"{code} 4.3.0 try later"
        with self._cond:
            self._faults["rcpt"].extend([reply] * times)

    def drop_after_data(self, times: int = 1) -> None:
        """Capture the next ``times`` messages, then cut the connection without a reply."""
        with self._cond:
            self._faults["data"].extend(["drop"] * times)

    def delay_data_reply(self, seconds: float, times: int = 1) -> None:
        """Capture the next ``times`` messages, then wait ``seconds`` before replying."""
        with self._cond:
            self._faults["data"].extend([str(seconds)] * times)

    # -- called from the server thread ------------------------------------------------

    def _on_connect(self) -> str | None:
        """None: serve normally; else a refusal ("" = drop before the greeting)."""
        with self._cond:
            if self._starting:  # aiosmtpd's own start-up probe: not counted, no faults
                return None
            self.connections += 1
            if time.monotonic() < self._refuse_until:
                return ""
            queue = self._faults["connect"]
            return queue.pop(0) if queue else None

    def _take(self, kind: str) -> str | None:
        with self._cond:
            queue = self._faults[kind]
            return queue.pop(0) if queue else None

    def _capture(self, envelope: Envelope) -> int:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._cond:
            self.envelopes.append(CapturedEnvelope(
                str(envelope.mail_from), tuple(envelope.rcpt_tos), raw))
            self.messages.append(message)  # type: ignore[arg-type]
            self._cond.notify_all()
            callback, self._after_capture = self._after_capture, None
            count = len(self.messages)
        if callback is not None:
            callback()
        return count

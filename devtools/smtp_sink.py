"""A capturing SMTP server on ``aiosmtpd.controller.Controller``, for the tests and the demo.

``with SmtpSink() as sink:`` listens on 127.0.0.1 on a free port (``sink.port``) and keeps
every accepted message: ``sink.messages`` (parsed with ``email.policy.default``) and
``sink.received`` (the same with its envelope, arrival time and files). Nothing is relayed.
With ``directory``, each message is also written there as ``<n>-<recipient>.eml`` and, when
it has an HTML part, ``<n>-<recipient>.html`` to open in a browser.

Faults for the tests apply to the next connections or commands, then wear off:
``refuse_connections(n)`` / ``refuse_for(seconds, every=1)`` (closed before the greeting, or
after a ``421`` greeting; ``every=2`` refuses every other session of the outage),
``reject_rcpt(code, before_reply=callback)``, ``drop_after_data()`` (captured, then the
connection is cut before the reply), ``delay_data_reply(seconds)``; ``after_capture(callback)``
runs once between a capture and its ``250``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: its envelope, when it arrived, and where it was written."""

    number: int
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    received_at: datetime  # UTC, at the end of DATA
    message: EmailMessage
    path: Path | None = None  # the .eml file (with a directory)
    html_path: Path | None = None  # its text/html part, if it has one

    @property
    def header(self) -> dict[str, str]:
        """A few headers as plain strings (missing ones are absent)."""
        return {name: str(self.message[name]) for name in
                ("Subject", "From", "To", "Message-ID", "X-Batch-ID") if name in self.message}


class _Refuser(asyncio.Protocol):
    """Closes the connection at once, after one greeting line if given."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.reply:
            transport.write(self.reply.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()  # flushes the greeting first


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.sink._take("rcpt")
        if reply is not None:
            with self.sink._cond:
                callback, self.sink._before_reject = self.sink._before_reject, None
            if callback is not None:
                callback()
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        number = self.sink._capture(envelope)
        fault = self.sink._take("data")
        if fault == "drop":
            assert server.transport is not None
            server.transport.abort()  # no reply at all: the client sees a reset or EOF
        elif fault is not None:
            await asyncio.sleep(float(fault))
        return f"250 2.0.0 Ok: queued as M{number}"


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), hostname=sink.host, port=sink.port, **kwargs)
        self.sink = sink

    def factory(self) -> asyncio.Protocol:  # type: ignore[override]
        refusal = self.sink._on_connect()
        return super().factory() if refusal is None else _Refuser(refusal)

    def _trigger_server(self) -> None:
        if self.port == 0:  # learn the port the OS chose before aiosmtpd's self-test
            assert self.server is not None
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """A local SMTP server that records messages; see the module docstring."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1",
                 directory: Path | None = None, **smtp_kwargs: Any) -> None:
        """``port`` 0 picks a free port. ``smtp_kwargs`` go to aiosmtpd's ``Controller``
        (``ssl_context`` for implicit TLS) and ``SMTP`` (``tls_context`` for STARTTLS,
        ``auth_callback``, …)."""
        self.host, self.port, self.directory = host, port, directory
        self._smtp_kwargs = {"enable_SMTPUTF8": True} | smtp_kwargs
        self._cond = threading.Condition()
        self._controller: _Controller | None = None
        self._starting = False
        self._faults: dict[str, list[str]] = {"connect": [], "rcpt": [], "data": []}
        self._refuse_until = 0.0
        self._refuse_every, self._refuse_seen = 1, 0
        self._after_capture: Callable[[], object] | None = None
        self._before_reject: Callable[[], object] | None = None
        self.connections = 0
        self.received: list[ReceivedMessage] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        """Listen (OSError if the address cannot be bound)."""
        if self._controller is not None:
            raise RuntimeError("the SMTP sink is already running")
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        controller = _Controller(self, **self._smtp_kwargs)
        self._starting = True
        try:
            controller.start()
        finally:
            self._starting = False
        self._controller, self.port = controller, controller.port
        return self

    def stop(self) -> None:
        """Stop listening (idempotent); the captured messages stay readable."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._controller is not None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- messages ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[EmailMessage]:
        """The accepted messages, oldest first (a copy)."""
        with self._cond:
            return [r.message for r in self.received]

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        with self._cond:
            return len(self.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages arrived; return them (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count,
                                       max(deadline - time.monotonic(), 0)):
                raise TimeoutError(f"{len(self.received)} of {count} messages arrived within "
                                   f"{timeout:g}s")
            return [r.message for r in self.received]

    def reset(self) -> None:
        """Forget captured messages, the connection count and pending faults."""
        with self._cond:
            self.received.clear()
            self.connections = 0
            for queue in self._faults.values():
                queue.clear()
            self._refuse_until = 0.0
            self._after_capture = self._before_reject = None

    # -- faults ------------------------------------------------------------------------------

    def refuse_connections(self, n: int, reply: str | None = None) -> None:
        """Close the next ``n`` connections before the greeting, or after ``reply``."""
        with self._cond:
            self._faults["connect"].extend([reply or ""] * n)

    def refuse_for(self, seconds: float, every: int = 1) -> None:
        """Close connections before the greeting for the next ``seconds`` (an outage): every
        one, or with ``every=n`` each n-th (2: every other session, a flaky server)."""
        if every < 1:
            raise ValueError("every must be at least 1")
        with self._cond:
            self._refuse_until = time.monotonic() + seconds
            self._refuse_every, self._refuse_seen = every, 0

    def after_capture(self, callback: Callable[[], object]) -> None:
        """Run ``callback()`` once, after the next message is captured and before its 250."""
        with self._cond:
            self._after_capture = callback

    def reject_rcpt(self, code: int = 550, times: int = 1, reply: str | None = None,
                    before_reply: Callable[[], object] | None = None) -> None:
        """Answer the next ``times`` RCPT TO commands with ``code`` (or ``reply``), running
        ``before_reply()`` (if given) before the first of them."""
        if reply is None:
            reply = f"{code} 5.1.1 no such user" if code >= 500 else f"{code} 4.3.0 try later"
        with self._cond:
            self._faults["rcpt"].extend([reply] * times)
            self._before_reject = before_reply

    def drop_after_data(self, times: int = 1) -> None:
        """Capture the next ``times`` messages, then cut the connection without a reply."""
        with self._cond:
            self._faults["data"].extend(["drop"] * times)

    def delay_data_reply(self, seconds: float, times: int = 1) -> None:
        """Capture the next ``times`` messages, then wait ``seconds`` before replying."""
        with self._cond:
            self._faults["data"].extend([str(seconds)] * times)

    # -- called from the server thread -------------------------------------------------------

    def _on_connect(self) -> str | None:
        """None: serve normally; else a refusal ("" = close before the greeting)."""
        with self._cond:
            if self._starting:  # aiosmtpd's own start-up probe: not counted, no faults
                return None
            self.connections += 1
            if time.monotonic() < self._refuse_until:
                self._refuse_seen += 1
                if self._refuse_seen % self._refuse_every == 0:
                    return ""
            queue = self._faults["connect"]
            return queue.pop(0) if queue else None

    def _take(self, kind: str) -> str | None:
        with self._cond:
            queue = self._faults[kind]
            return queue.pop(0) if queue else None

    def _capture(self, envelope: Envelope) -> int:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        recipients = tuple(str(r) for r in envelope.rcpt_tos)
        with self._cond:
            number = len(self.received) + 1
            path, html_path = self._write(number, recipients, raw, message)
            self.received.append(ReceivedMessage(number, str(envelope.mail_from), recipients,
                                                 raw, datetime.now(UTC), message, path,
                                                 html_path))
            self._cond.notify_all()
            callback, self._after_capture = self._after_capture, None
        if callback is not None:
            callback()
        return number

    def _write(self, number: int, recipients: tuple[str, ...], raw: bytes,
               message: EmailMessage) -> tuple[Path | None, Path | None]:
        if self.directory is None:
            return None, None
        stem = f"{number}-{_UNSAFE.sub('_', recipients[0] if recipients else 'nobody')[:100]}"
        path = self.directory / f"{stem}.eml"
        path.write_bytes(raw)
        html = message.get_body(preferencelist=("html",))
        if html is None:
            return path, None
        html_path = self.directory / f"{stem}.html"
        html_path.write_text(str(html.get_content()), encoding="utf-8")  # type: ignore[attr-defined]
        return path, html_path


def main(argv: list[str] | None = None) -> int:
    """``python -m devtools.smtp_sink --port P --dir D``: run in the foreground until SIGTERM."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="devtools.smtp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=None, help="write each message here")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        sink = SmtpSink(args.port, host=args.host, directory=args.dir).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    print(f"stopped after {len(sink.received)} message(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

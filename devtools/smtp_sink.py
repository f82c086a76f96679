"""A local SMTP server that accepts every message and keeps it as an ``.eml`` file.

For development only (``make demo``, trying templates by hand): nothing is relayed, no
authentication or TLS is offered. Each accepted message is written to the mail directory
as ``<n>-<recipient>.eml`` (the bytes as received, ``n`` counting from 1); when it has a
``text/html`` part, that part is also written as ``<n>-<recipient>.html`` so it can be
opened in a browser. In a program::

    with MailSink(Path(".demo/mail")) as sink:  # listens on 127.0.0.1, a free port
        ...  # point SMTP_SERVER / SMTP_PORT at sink.host / sink.port
        sink.wait_for(1, timeout=30)
        print(sink.messages[0].path)

or on its own::

    python -m devtools.smtp_sink [--host 127.0.0.1] [--port 1025] [--dir .demo/mail]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import FrameType

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
IDENT = "kb-ingest smtp sink"
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: its envelope, when it arrived, where it was written."""

    number: int
    mail_from: str
    recipients: tuple[str, ...]
    received_at: datetime  # UTC, when the end of DATA was received
    path: Path  # the .eml file
    html_path: Path | None  # its text/html part, if it has one
    message: EmailMessage  # parsed with email.policy.default

    @property
    def header(self) -> dict[str, str]:
        """A few headers as plain strings (missing ones are absent)."""
        return {name: str(self.message[name]) for name in
                ("Subject", "From", "To", "Message-ID", "X-Batch-ID") if name in self.message}


def file_stem(number: int, recipients: tuple[str, ...]) -> str:
    """``<n>-<first recipient>``, with anything unusual in the address replaced by ``_``."""
    recipient = _UNSAFE.sub("_", recipients[0] if recipients else "nobody")[:100]
    return f"{number}-{recipient}"


def html_part(message: EmailMessage) -> str | None:
    """The message's ``text/html`` body, if it has one."""
    part = message.get_body(preferencelist=("html",))
    return None if part is None else str(part.get_content())  # type: ignore[attr-defined]


class _Handler:
    """aiosmtpd handler: every RCPT is accepted, every DATA stored by the sink."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = self.sink._store(envelope)
        return f"250 2.0.0 Ok: queued as M{received.number}"


class MailSink:
    """The capturing SMTP server, run on an event loop in a background thread."""

    def __init__(self, directory: Path, host: str = DEFAULT_HOST, port: int = 0) -> None:
        """``port`` 0 lets the system pick a free port (read ``port`` after ``start``)."""
        self.directory = directory
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> MailSink:
        """Listen; raises OSError if the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("the SMTP sink is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="smtp-sink",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the SMTP sink did not start within {START_TIMEOUT:.0f}s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = self._loop = None
            raise self._error
        log.info("SMTP sink listening on %s:%d, writing to %s", self.host, self.port,
                 self.directory)
        return self

    def stop(self) -> None:
        """Stop listening (idempotent); the stored messages stay readable."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        self._thread = self._loop = self._server = None

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        """The server thread: bind, report readiness, run until stopped, clean up."""
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                loop.create_server(self._protocol, self.host, self.port))
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:  # reported to start()
            self._error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:  # open SMTP sessions
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def _protocol(self) -> SMTP:
        return SMTP(_Handler(self), hostname="smtp-sink.local", ident=IDENT,
                    data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True)

    # -- messages -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        with self._lock:
            return len(self._messages)

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The accepted messages, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; TimeoutError if they do not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages arrived "
                                       f"within {timeout:.0f}s")
                self._lock.wait(left)
            return list(self._messages)

    def _store(self, envelope: Envelope) -> ReceivedMessage:
        """Write one accepted message to disk and remember it (called on the server loop)."""
        received_at = datetime.now(UTC)
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        recipients = tuple(str(r) for r in envelope.rcpt_tos)
        with self._lock:
            number = len(self._messages) + 1
            stem = file_stem(number, recipients)
            path = self.directory / f"{stem}.eml"
            path.write_bytes(raw)
            html = html_part(message)
            html_path = None
            if html is not None:
                html_path = self.directory / f"{stem}.html"
                html_path.write_text(html, encoding="utf-8")
            received = ReceivedMessage(number, str(envelope.mail_from), recipients,
                                       received_at, path, html_path, message)
            self._messages.append(received)
            self._lock.notify_all()
        log.info("message %d from %s to %s: %s (%s)", number, received.mail_from,
                 ", ".join(recipients), received.header.get("Subject", "(no subject)"), path)
        return received


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.smtp_sink",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=1025, help="0: a free port (printed)")
    parser.add_argument("--dir", type=Path, default=Path(".demo/mail"),
                        help="where the .eml files go (default .demo/mail)")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the sink in the foreground until Ctrl-C or SIGTERM."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        sink = MailSink(args.dir, args.host, args.port).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        while sink.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    log.info("stopped after %d message(s)", sink.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SMTP delivery with retry-safe error classification (stdlib :mod:`smtplib`).

:func:`deliver` speaks SMTP in explicit phases — connect/greeting, EHLO, STARTTLS, AUTH,
MAIL, RCPT, DATA, body — so that every failure is classified by *type and reply code*,
never by message text:

- :class:`SmtpTransient` (retry later): the connection was refused, reset or dropped, or
  timed out, *before the message body was sent*; or the server answered 4xx at any phase
  (greeting 421, 454 on STARTTLS/AUTH, 451 on MAIL/RCPT/DATA, 452, ...).
- :class:`SmtpPermanent` (do not retry): the server answered 5xx at any phase (550
  recipient refused, 554, 535 authentication failed, ...); the server lacks something the
  settings require (STARTTLS, AUTH, SMTPUTF8); the TLS certificate does not verify; or the
  message has no To address.
- A timeout or disconnect *after the whole body, including the final ``.``, was handed to
  the network but before the server's final reply* is :class:`SmtpPermanent` with an
  "outcome unknown" message: the server may already have queued the message, and a retry
  could deliver it twice — the user must never get two e-mails.

Two optional hooks let the caller keep a durable record of the moments that decide what a
crash leaves behind: ``before_body()`` runs once every recipient is accepted, just before
``DATA`` (an exception from it aborts the attempt, nothing sent); ``on_accepted(reply)``
runs as soon as the server's 250 to the body arrives, before ``QUIT``.

Every recipient must be accepted; if any RCPT is refused nothing is sent (5xx wins over 4xx
when several are refused). The envelope sender is ``settings.from_email``; the recipients
are the message's ``To`` addresses (a ``Bcc`` header is stripped, never delivered). The
SMTP password never appears in an exception message or in the exception chain.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY
from email.utils import getaddresses
from io import BytesIO

from ingest.settings import Settings

__all__ = ["SmtpError", "SmtpPermanent", "SmtpTransient", "deliver", "recipients_of"]


class SmtpError(Exception):
    """An SMTP delivery failed.

    ``code`` is the server's reply code and ``response`` its reply (``"550 5.1.1 ..."``) if
    there was one; both are ``None``/``""`` for connection failures and unknown outcomes.
    """

    def __init__(self, message: str, *, code: int | None = None, response: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.response = response


class SmtpTransient(SmtpError):
    """Nothing was delivered and a later attempt may succeed: retry with backoff."""


class SmtpPermanent(SmtpError):
    """Retrying cannot help, or could deliver twice: fail at once."""


_OK = (250,)
_RCPT_OK = (250, 251)


@functools.cache
def _local_hostname() -> str:
    return socket.getfqdn()


def recipients_of(message: EmailMessage) -> list[str]:
    """The bare addresses of the message's ``To`` header(s), in order, without duplicates."""
    found: list[str] = []
    for _name, addr in getaddresses([str(v) for v in message.get_all("To", [])]):
        if addr and addr not in found:
            found.append(addr)
    return found


def _wire_bytes(message: EmailMessage, *, utf8: bool) -> bytes:
    """The message as DATA bytes: CRLF line ends, dot-stuffed, terminated by ``.``."""
    if "Bcc" in message or "Resent-Bcc" in message:
        message = copy.copy(message)  # smtplib's trick: __delitem__ rebinds the header list
        del message["Bcc"]
        del message["Resent-Bcc"]
    buf = BytesIO()
    BytesGenerator(buf, policy=SMTPUTF8_POLICY if utf8 else SMTP_POLICY).flatten(message)
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", buf.getvalue())
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _Session:
    """One delivery attempt; knows its phase so failures can be classified."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.where = f"{settings.smtp_server}:{settings.smtp_port}"
        self.timeout = timeout
        self.phase = "connect"
        self.body_sent = False
        self.client: smtplib.SMTP | None = None

    # -- classification ---------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        password = self.settings.smtp_password
        return text.replace(password, "***") if password else text

    def _text(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return self._scrub(" ".join(text.split()))

    def fail(self, cls: type[SmtpError], what: str, *, code: int | None = None,
             response: str = "", detail: str = "") -> SmtpError:
        """An exception of ``cls`` naming the server, the phase and the reply (or detail)."""
        tail = response or self._scrub(detail)
        return cls(f"SMTP {self.phase} at {self.where} {what}" + (f": {tail}" if tail else ""),
                   code=code, response=response)

    def reply_error(self, code: int, raw: bytes | str) -> SmtpError:
        """The exception for a reply that is not the expected one, chosen by its code."""
        response = f"{code} {self._text(raw)}".rstrip()
        if 400 <= code < 500:
            return self.fail(SmtpTransient, "was refused (temporary)", code=code,
                             response=response)
        if 500 <= code < 600:
            return self.fail(SmtpPermanent, "was refused", code=code, response=response)
        if self.body_sent:
            return self.unknown_outcome(f"unexpected reply {response}")
        return self.fail(SmtpTransient, "got an unexpected reply", code=code, response=response)

    def check(self, reply: tuple[int, bytes | str], ok: tuple[int, ...]) -> str:
        """Return the reply text if its code is in ``ok``, else raise by code."""
        code, raw = reply
        if code in ok:
            return self._text(raw)
        raise self.reply_error(code, raw)

    def unknown_outcome(self, detail: str) -> SmtpPermanent:
        """The body went out but no final reply came: retrying could deliver twice."""
        return SmtpPermanent(
            f"SMTP outcome unknown at {self.where}: the message body was sent but no final "
            f"reply arrived ({self._scrub(detail)}); not retrying, as that could deliver it "
            "twice"
        )

    # -- phases -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect, read the greeting, EHLO, STARTTLS (+EHLO) and AUTH as configured."""
        s = self.settings
        # Passing the host to the constructor connects at once (SMTPConnectError on a
        # non-220 greeting) and records it for TLS certificate/hostname checks.
        if s.smtp_use_ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_server, s.smtp_port, local_hostname=_local_hostname(),
                timeout=self.timeout, context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(s.smtp_server, s.smtp_port,
                                  local_hostname=_local_hostname(), timeout=self.timeout)
        self.client = client
        self.phase = "EHLO"
        client.ehlo_or_helo_if_needed()
        if s.smtp_use_tls:
            self.phase = "STARTTLS"
            if not client.has_extn("starttls"):
                raise self.fail(SmtpPermanent, "is not offered by the server (SMTP_USE_TLS)")
            self.check(client.starttls(context=ssl.create_default_context()), (220,))
            self.phase = "EHLO"
            client.ehlo_or_helo_if_needed()
        if s.smtp_user:
            self.phase = "AUTH"
            if not client.has_extn("auth"):
                raise self.fail(SmtpPermanent, "is not offered by the server (SMTP_USER set;"
                                " does it require TLS?)")
            try:
                client.login(s.smtp_user, s.smtp_password or "")
            except smtplib.SMTPResponseException as exc:  # 535, 454, ...
                raise self.reply_error(exc.smtp_code, exc.smtp_error) from None
            except smtplib.SMTPNotSupportedError:
                raise self.fail(SmtpPermanent, "is not supported by the server") from None
            except smtplib.SMTPServerDisconnected:
                raise
            except smtplib.SMTPException as exc:  # e.g. "No suitable authentication method"
                raise self.fail(SmtpPermanent, "failed", detail=str(exc)) from None

    def send(self, message: EmailMessage, recipients: list[str],
             before_body: Callable[[], None] | None = None) -> str:
        """MAIL, RCPT for every recipient, DATA, body; return the final reply."""
        client = self.client
        assert client is not None, "open() first"
        self.phase = "MAIL FROM"
        sender = self.settings.from_email
        international = not all(a.isascii() for a in [sender, *recipients])
        options: list[str] = []
        if international:
            if not client.has_extn("smtputf8"):
                raise self.fail(SmtpPermanent, "needs SMTPUTF8, which the server lacks")
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        payload = _wire_bytes(message, utf8=international)
        if not international and not payload.isascii() and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        self.check(client.mail(sender, options), _OK)
        self.phase = "RCPT TO"
        refused: list[tuple[int, str]] = []
        for rcpt in recipients:
            code, raw = client.rcpt(rcpt)
            if code not in _RCPT_OK:
                refused.append((code, raw.decode("utf-8", "replace")))
        if refused:
            # A 5xx anywhere makes the whole attempt permanent; else the first 4xx.
            permanent = [r for r in refused if 500 <= r[0] < 600]
            self.check((permanent or refused)[0], _RCPT_OK)
        if before_body is not None:
            before_body()
        self.phase = "DATA"
        self.check(client.docmd("DATA"), (354,))
        self.phase = "message body"
        client.send(payload)
        self.body_sent = True  # the final "." is out: from here on a retry may duplicate
        self.phase = "end of DATA"
        code, raw = client.getreply()
        text = self.check((code, raw), _OK)
        return f"{code} {text}".rstrip()

    def close(self) -> None:
        """QUIT politely; ignore every error (the outcome is already decided)."""
        if self.client is None:
            return
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.client.quit()
        with contextlib.suppress(OSError):
            self.client.close()


def deliver(message: EmailMessage, settings: Settings, *, timeout: float = 30.0,
            before_body: Callable[[], None] | None = None,
            on_accepted: Callable[[str], None] | None = None) -> str:
    """Send ``message`` to its ``To`` addresses; return the server's final reply to DATA.

    Raises :class:`SmtpTransient` or :class:`SmtpPermanent` as the module docstring
    describes; ``timeout`` (seconds) applies to every socket operation. ``before_body`` and
    ``on_accepted`` are the hooks the module docstring describes.
    """
    recipients = recipients_of(message)
    if not recipients:
        raise SmtpPermanent("message has no To address")
    session = _Session(settings, timeout)
    try:
        session.open()
        reply = session.send(message, recipients, before_body)
    except SmtpError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise session.fail(SmtpPermanent, "failed: TLS certificate not trusted",
                           detail=str(exc)) from None
    except smtplib.SMTPResponseException as exc:  # e.g. SMTPHeloError
        raise session.reply_error(exc.smtp_code, exc.smtp_error) from None
    except (OSError, smtplib.SMTPException) as exc:
        # Refused, reset, dropped, timed out (smtplib turns most of these into
        # SMTPServerDisconnected). Before the body was complete nothing was delivered.
        detail = f"{type(exc).__name__}: {exc}"
        if session.body_sent:
            raise session.unknown_outcome(detail) from None
        raise session.fail(SmtpTransient, "failed (connection)", detail=detail) from None
    else:  # outside the handlers above: the hook's own errors never look like SMTP's
        if on_accepted is not None:
            on_accepted(reply)
        return reply
    finally:
        session.close()

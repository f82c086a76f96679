"""Saved e-mails: ``.eml`` (stdlib :mod:`email`) and Outlook ``.msg`` (olefile).

A mail becomes a header block (From, To, Date, Subject; the subject is its section), its body
(text/plain preferred, else HTML as text) and the blocks of each attachment of a supported
type, extracted through :func:`~ingest.pipeline.extract.extract_blocks` with section
``Attachment: <name>``. Attachments nest at most ``MAX_ATTACHMENT_DEPTH`` deep; deeper ones,
unsupported ones and unreadable ones are only listed by name: an attachment never fails the
mail. extract-msg is GPL, so ``.msg`` is read from its compound file with olefile (BSD):
the MAPI properties are streams named ``__substg1.0_<tag><type>`` ([MS-OXMSG]).
"""

from __future__ import annotations

import contextvars
import email
import email.policy
import io
import struct
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.parser import HeaderParser

import olefile

from ingest.errors import ProcessingError
from ingest.pipeline.formats.base import Block, ExtractLimits, decode
from ingest.pipeline.formats.collect import BlockCollector
from ingest.pipeline.formats.text_formats import html_sections

MAX_ATTACHMENT_DEPTH = 2  # a mail's attachments (1), and those of a mail attached to it (2)
_DEPTH = contextvars.ContextVar("mail_attachment_depth", default=0)
# What email's header parsing can raise on malformed values (most land in .defects instead).
_HEADER_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, LookupError,
                                               IndexError, AttributeError)
# What olefile raises on a malformed compound file (its OleFileError is an OSError).
_MSG_ERRORS: tuple[type[Exception], ...] = (OSError, struct.error, ValueError, IndexError,
                                            KeyError, TypeError)
_KNOWN_HEADERS = ("from", "to", "cc", "date", "subject", "message-id", "mime-version")


@dataclass(frozen=True)
class _Mail:
    """What both formats yield before it becomes blocks."""

    headers: list[tuple[str, str]]
    subject: str
    plain: str | None
    html: bytes | None
    attachments: list[tuple[str, str | None, bytes | None]]  # name, MIME type, data (None: skip)


def extract_eml(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Headers, body and attachments of an RFC 5322 message."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(message, EmailMessage) or not any(
            key.lower() in _KNOWN_HEADERS for key in message):
        raise ProcessingError("corrupt or unreadable EML: it has no mail headers")
    headers = [(name, _header(message, name)) for name in ("From", "To", "Cc", "Date",
                                                           "Subject")]
    plain_part = message.get_body(preferencelist=("plain",))
    html_part = None if plain_part else message.get_body(preferencelist=("html",))
    attachments: list[tuple[str, str | None, bytes | None]] = []
    for number, part in enumerate(message.iter_attachments(), start=1):
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            payload = bytes(inner[0]) if isinstance(inner, list) and inner else None
            attachments.append((part.get_filename() or f"attached-{number}.eml",
                                "message/rfc822", payload))
        else:
            attachments.append((part.get_filename() or f"attachment-{number}",
                                part.get_content_type(), part.get_payload(decode=True)))
    mail = _Mail(headers, _header(message, "Subject"),
                 _text_of(plain_part) if plain_part else None,
                 html_part.get_payload(decode=True) if html_part else None, attachments)
    return _blocks(mail, "EML", limits)


def _header(message: EmailMessage, name: str) -> str:
    try:
        return " ".join(str(message.get(name, "")).split())
    except _HEADER_ERRORS:
        return ""


def _text_of(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True) or b""
    try:
        return payload.decode(part.get_content_charset() or "utf-8")
    except (LookupError, UnicodeDecodeError):  # unknown or wrong charset: guess
        return decode(payload)


# --- MSG ----------------------------------------------------------------------------------

_ATTACH_PREFIX = "__attach_version1.0_#"
_PROPS = {"subject": "0037", "sender_name": "0C1A", "sender_email": "0C1F",
          "sent_as_email": "0065", "to": "0E04", "cc": "0E03", "headers": "007D",
          "body": "1000", "html": "1013", "att_long_name": "3707", "att_name": "3704",
          "att_mime": "370E", "att_data": "3701"}


def extract_msg(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Headers, body and attachments of an Outlook message (a compound file)."""
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            mail = _read_msg(ole)
    except _MSG_ERRORS as exc:
        raise ProcessingError(f"corrupt or unreadable MSG: {type(exc).__name__}: {exc}") from exc
    return _blocks(mail, "MSG", limits)


def _read_msg(ole: olefile.OleFileIO) -> _Mail:
    def text(prop: str, storage: str = "") -> str:
        stem = f"{storage}__substg1.0_{_PROPS[prop]}"
        if ole.exists(stem + "001F"):  # PT_UNICODE: UTF-16LE
            return ole.openstream(stem + "001F").read().decode("utf-16-le", "replace")
        if ole.exists(stem + "001E"):  # PT_STRING8: the message's code page, usually cp1252
            return decode(ole.openstream(stem + "001E").read())
        return ""

    def binary(prop: str, storage: str = "") -> bytes | None:
        stem = f"{storage}__substg1.0_{_PROPS[prop]}0102"
        return ole.openstream(stem).read() if ole.exists(stem) else None

    if not ole.exists("__properties_version1.0") and not ole.exists(
            f"__substg1.0_{_PROPS['subject']}001F"):
        raise ProcessingError("corrupt or unreadable MSG: not an Outlook message")
    sender = text("sender_name").strip("\x00 ")
    address = (text("sender_email") or text("sent_as_email")).strip("\x00 ")
    if address and address != sender:
        sender = f"{sender} <{address}>" if sender else address
    transport = HeaderParser().parsestr(text("headers").strip("\x00"))
    subject = text("subject").strip("\x00 ")
    headers = [("From", sender), ("To", text("to").strip("\x00 ")),
               ("Cc", text("cc").strip("\x00 ")), ("Date", str(transport.get("Date", ""))),
               ("Subject", subject)]
    storages = sorted({entry[0] for entry in ole.listdir(streams=True, storages=True)
                       if entry[0].startswith(_ATTACH_PREFIX)})
    attachments: list[tuple[str, str | None, bytes | None]] = []
    for number, storage in enumerate(storages, start=1):
        path = storage + "/"
        name = (text("att_long_name", path) or text("att_name", path)).strip("\x00 ")
        attachments.append((name or f"attachment-{number}",
                            text("att_mime", path).strip("\x00 ") or None,
                            binary("att_data", path)))  # None: an embedded message (skipped)
    body = text("body").strip("\x00")
    return _Mail(headers, subject, body or None, None if body else binary("html"), attachments)


# --- both ---------------------------------------------------------------------------------


def _blocks(mail: _Mail, label: str, limits: ExtractLimits) -> list[Block]:
    from ingest.pipeline.extract import extract_blocks  # extract imports this module

    subject = mail.subject or None
    out = BlockCollector(label, limits)
    out.add("\n".join(f"{name}: {value}" for name, value in mail.headers if value), subject)
    if mail.plain is not None:
        out.add(mail.plain, subject)
    elif mail.html:
        for block in html_sections(mail.html, limits):
            out.add(block.text, block.section or subject)
    skipped: list[str] = []
    depth = _DEPTH.get()
    for name, mime, payload in mail.attachments:
        if not payload or depth >= MAX_ATTACHMENT_DEPTH:
            skipped.append(name)
            continue
        remaining = replace(limits, max_chars=max(limits.max_chars - out.chars, 0))
        token = _DEPTH.set(depth + 1)
        try:
            inner = extract_blocks(payload, name, mime, limits=remaining)
        except ProcessingError:  # unsupported, corrupt or empty: listed, never fails the mail
            skipped.append(name)
            continue
        finally:
            _DEPTH.reset(token)
        for block in inner:
            out.add(block.text, f"Attachment: {name}", block.page)
    if skipped:
        out.add("Attachments not extracted: " + ", ".join(skipped), subject)
    return out.blocks

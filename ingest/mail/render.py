"""Render notification e-mails: Jinja2 templates → text (+ HTML with inlined CSS) → message.

Pure functions: no database, no Flask, no Celery. The invariants this module keeps:

- **Nothing user-controlled reaches a header.** Headers carry only the recipient address
  (validated as one addr-spec), the configured sender, fixed text, counts and the batch id.
  Every header value is checked for CR/LF/control characters (``ValueError``), so a file
  name such as ``"x\\r\\nBcc: …"`` can never add a header: file names only go to bodies.
- **HTML is autoescaped** (``.html`` templates only); the text body is never HTML-escaped.
  Names and error messages are cleaned of control and bidi-override characters and
  truncated before they reach either body.
- **Totals are always true.** File lists are capped at ``list_cap`` lines each and end with
  "… and N more", where N comes from the summary's counts, so a caller may pass only the
  first ``list_cap`` files of each kind of a very large batch.
- ``email_format="text"`` → one text/plain part; ``"html"`` → multipart/alternative with the
  text part first and the HTML part (CSS inlined by ``css_inline``) second.

Adding an e-mail type is adding a folder ``ingest/templates/email/<folder>/``
(``subject.txt``, ``body.txt``, ``body.html`` extending ``email/base.html``) and one
:class:`EmailType` entry in ``TEMPLATE_FOLDERS``. The templates are package data: loaded
through the package, so an installed wheel needs no source tree.
"""

from __future__ import annotations

import enum
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import css_inline
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ingest.errors import (
    FILE_NOT_FOUND,
    INFRASTRUCTURE_ERROR,
    INTERNAL_ERROR,
    INVALID_KEY,
    PROCESSING_ERROR,
    RESOURCE_LIMIT,
    S3_ERROR,
    STORAGE_ERROR,
    TIMEOUT,
    UNSUPPORTED,
)
from ingest.pipeline.formats.supported import SUPPORTED_EXTENSIONS

if TYPE_CHECKING:
    from ingest.preferences import Preferences

TEMPLATES_DIR = files("ingest") / "templates"

NAME_MAX_CHARS = 200
ERROR_MAX_CHARS = 300
CORRECTION_MAX_CHARS = 500


class EmailType(enum.StrEnum):
    """E-mail types: ``email_notification_log.email_type`` values, and the operator alert
    (whose rows are ``operator_alerts``)."""

    BATCH_COMPLETION = "batch_completion"
    DIGEST = "digest"  # rows in ``email_digests``
    OPERATOR_ALERT = "operator_alert"

    @property
    def folder(self) -> str:
        """The template folder under ``templates/email/``."""
        return TEMPLATE_FOLDERS[self]


#: The registry: e-mail type → its template folder (``subject.txt``, ``body.txt``, ``body.html``).
TEMPLATE_FOLDERS: dict[EmailType, str] = {
    EmailType.BATCH_COMPLETION: "batch_summary",
    EmailType.DIGEST: "digest",
    EmailType.OPERATOR_ALERT: "operator_alert",
}

#: What the user should do about a failed file, by error category (``ingest.errors``).
SUGGESTIONS: dict[str, str] = {
    FILE_NOT_FOUND: (
        "The file was missing from storage when we went to read it. Upload it again."
    ),
    S3_ERROR: (
        "We could not fetch this file from storage (access was refused or the file is too "
        "large). Check the file is within the upload size limit and upload it again; if it "
        "keeps failing, contact support."
    ),
    PROCESSING_ERROR: (
        "We could not read text from this file: check it opens, is not password-protected, "
        "and is one of " + " ".join(SUPPORTED_EXTENSIONS) + " (scans and photos of text "
        "are read by OCR), then upload it again."
    ),
    STORAGE_ERROR: (
        "A temporary problem on our side stopped us saving this file to the knowledge base. "
        "Upload it again later; if it keeps failing, contact support."
    ),
    TIMEOUT: (
        "Processing took too long and was stopped. Very large or complex files can do this: "
        "split it into smaller files and upload them again; if it keeps failing, contact "
        "support."
    ),
    INFRASTRUCTURE_ERROR: (
        "A problem on our side (storage or search service unavailable or misconfigured) "
        "stopped this file. Your file was kept and our operators have been alerted; you do "
        "not need to upload it again."
    ),
    RESOURCE_LIMIT: (
        "This file needed more time or memory than our processing allows. It was kept, not "
        "deleted, and our operators have been alerted. If you can, split it into smaller "
        "files and upload those."
    ),
    INVALID_KEY: (
        "This file's storage location does not belong to your bot, so we did not read it. "
        "It was not deleted; our operators have been alerted. Upload it again through the "
        "usual upload form."
    ),
    UNSUPPORTED: (
        "Our service cannot read this kind of file at the moment (for example, text "
        "recognition for images and scanned pages is not set up). Your file was kept, not "
        "deleted, and our operators have been alerted; you do not need to upload it again."
    ),
    INTERNAL_ERROR: (
        "An unexpected error on our side stopped this file. It was kept and our operators "
        "have been alerted; if it keeps failing after you upload it again, contact support."
    ),
}
DEFAULT_SUGGESTION = (
    "Something unexpected went wrong. Upload the file again; if it keeps failing, contact "
    "support."
)

#: Short labels of the error categories, shown before the reason.
CATEGORY_LABELS: dict[str, str] = {
    FILE_NOT_FOUND: "File missing",
    S3_ERROR: "Could not fetch the file",
    PROCESSING_ERROR: "Could not read the file",
    STORAGE_ERROR: "Could not save to the knowledge base",
    TIMEOUT: "Timed out",
    INFRASTRUCTURE_ERROR: "Service problem on our side",
    RESOURCE_LIMIT: "Too demanding to process",
    INVALID_KEY: "Storage location not allowed",
    INTERNAL_ERROR: "Unexpected error on our side",
    UNSUPPORTED: "Cannot be read here yet",
}
DEFAULT_CATEGORY_LABEL = "Processing failed"

#: Batch status (``batch_processing_sessions.status``) in words.
STATUS_WORDS: dict[str, str] = {
    "completed": "Completed: every file was processed.",
    "partially_completed": "Partially completed: some files could not be processed.",
    "failed": "Failed: no file could be processed.",
    "processing": "Still processing.",
}


# --- input and output ------------------------------------------------------------------


@dataclass(frozen=True)
class FileLine:
    """One file of a batch as the e-mail shows it."""

    name: str
    succeeded: bool
    chunks: int = 0
    error_category: str | None = None
    error_message: str | None = None
    correction: str | None = None  # what auto-correction removed, in one sentence


@dataclass(frozen=True)
class BatchSummary:
    """A closed batch: true counts plus its files (all of them, or the first few of each)."""

    batch_id: uuid.UUID
    user_email: str
    company_id: int
    bot_id: int
    status: str
    total: int
    succeeded: int
    failed: int
    started_at: datetime
    finished_at: datetime
    files: list[FileLine] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedEmail:
    """The rendered parts and the ready-to-send message built from them."""

    subject: str
    text: str
    html: str | None
    message: EmailMessage


# --- templates -------------------------------------------------------------------------

_env = Environment(
    loader=PackageLoader("ingest", "templates"),
    autoescape=select_autoescape(
        enabled_extensions=("html",), default_for_string=False, default=False
    ),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

# Keep @media rules in a <style> block (mobile tweaks); never fetch remote stylesheets.
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def render_templates(
    email_type: EmailType, context: Mapping[str, Any], *, html: bool = True
) -> tuple[str, str, str | None]:
    """Render ``(subject, text, html)`` of one e-mail type; ``html`` is None when not wanted.

    The subject is collapsed to one line; the HTML body has its CSS inlined.
    """
    folder = f"email/{email_type.folder}"
    subject = " ".join(_env.get_template(f"{folder}/subject.txt").render(context).split())
    text = _env.get_template(f"{folder}/body.txt").render(context)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    body_html = None
    if html:
        body_html = _inliner.inline(_env.get_template(f"{folder}/body.html").render(context))
    return subject, text, body_html


# --- cleaning of user-controlled text --------------------------------------------------

_BIDI_CONTROLS = dict.fromkeys(
    [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)], None
)


def clean_text(value: str | None, limit: int) -> str:
    """One line of display text: control characters → spaces, bidi overrides dropped,
    whitespace collapsed, cut to ``limit`` characters with an ellipsis."""
    if not value:
        return ""
    value = value.translate(_BIDI_CONTROLS)
    value = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def humanise_duration(delta: timedelta) -> str:
    """``timedelta`` → "45 s", "2 min 5 s", "1 h 3 min", "2 d 4 h" (negative → "0 s")."""
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "min")]
    elif minutes:
        parts = [(minutes, "min"), (secs, "s")]
    else:
        return f"{secs} s"
    return " ".join(f"{n} {unit}" for n, unit in parts if n)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- header safety ---------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL = re.compile(r"^(https?://|mailto:)[^\s<>\"]+$", re.IGNORECASE)


def _header_safe(name: str, value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain CR, LF or other control characters")
    return value


def _address(name: str, value: str) -> Address:
    """Exactly one plain ASCII addr-spec (``user@example.com``), else ``ValueError``."""
    _header_safe(name, value)
    value = value.strip()
    if not value.isascii():
        raise ValueError(f"{name} must be an ASCII e-mail address")
    try:
        address = Address(addr_spec=value)
    except Exception as exc:  # the parser raises several types (defects, IndexError)
        raise ValueError(f"{name} is not a valid e-mail address: {value!r}") from exc
    if not address.username or not re.fullmatch(r"[A-Za-z0-9.-]+", address.domain or ""):
        raise ValueError(f"{name} is not a valid e-mail address: {value!r}")
    return address


def build_message(
    *,
    subject: str,
    text: str,
    html: str | None,
    to: str,
    from_email: str,
    from_name: str,
    message_id: str,
    date: datetime,
    extra_headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """Assemble the message; raises ``ValueError`` on any unsafe header value."""
    sender = _address("from_email", from_email)
    recipient = _address("user_email", to)
    msg = EmailMessage()
    msg["From"] = formataddr((_header_safe("from_name", from_name), sender.addr_spec))
    msg["To"] = recipient.addr_spec
    msg["Subject"] = _header_safe("subject", subject)
    msg["Date"] = format_datetime(_utc(date))
    msg["Message-ID"] = _header_safe("Message-ID", message_id)
    for key, value in (extra_headers or {}).items():
        msg[key] = _header_safe(key, value)
    msg.set_content(text, subtype="plain", charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


# --- the batch summary -----------------------------------------------------------------


@dataclass(frozen=True)
class _SuccessView:
    name: str
    chunks: int


@dataclass(frozen=True)
class _FailureView:
    name: str
    label: str
    reason: str
    suggestion: str
    correction: str


def _name(value: str) -> str:
    return clean_text(value, NAME_MAX_CHARS) or "(unnamed file)"


def batch_summary_context(
    summary: BatchSummary,
    prefs: Preferences,
    *,
    from_name: str,
    unsubscribe_url: str | None = None,
    list_cap: int = 50,
) -> dict[str, Any]:
    """The template context of the batch summary (lists capped, remainders true)."""
    cap = max(list_cap, 0)
    successes = [f for f in summary.files if f.succeeded]
    failures = [f for f in summary.files if not f.succeeded]
    shown_ok = successes[:cap] if prefs.include_success_details else []
    shown_bad = failures[:cap] if prefs.include_error_details else []
    duration = humanise_duration(summary.finished_at - summary.started_at)
    return {
        "batch_id": str(summary.batch_id),
        "status": summary.status,
        "status_text": STATUS_WORDS.get(
            summary.status, summary.status.replace("_", " ").capitalize() + "."
        ),
        "total": summary.total,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "duration": duration,
        "finished": _utc(summary.finished_at).strftime("%Y-%m-%d %H:%M UTC"),
        "show_successes": prefs.include_success_details,
        "show_failures": prefs.include_error_details,
        "successes": [_SuccessView(_name(f.name), f.chunks) for f in shown_ok],
        "successes_more": max(max(summary.succeeded, len(successes)) - len(shown_ok), 0),
        "failures": [
            _FailureView(
                name=_name(f.name),
                label=CATEGORY_LABELS.get(f.error_category or "", DEFAULT_CATEGORY_LABEL),
                reason=clean_text(f.error_message, ERROR_MAX_CHARS),
                suggestion=SUGGESTIONS.get(f.error_category or "", DEFAULT_SUGGESTION),
                correction=clean_text(f.correction, CORRECTION_MAX_CHARS),
            )
            for f in shown_bad
        ],
        "failures_more": max(max(summary.failed, len(failures)) - len(shown_bad), 0),
        "from_name": clean_text(from_name, NAME_MAX_CHARS),
        "unsubscribe_url": unsubscribe_url,
        "preheader": (
            f"{summary.succeeded} succeeded, {summary.failed} failed "
            f"of {summary.total} files in {duration}."
        ),
    }


def _checked_domain(from_email: str, unsubscribe_url: str | None) -> str:
    """The sender's domain (for the Message-ID), after checking the configured values."""
    if unsubscribe_url is not None:
        _header_safe("unsubscribe_url", unsubscribe_url)
        if not _URL.match(unsubscribe_url):
            raise ValueError("unsubscribe_url must be an http(s):// or mailto: URL")
    return str(_address("from_email", from_email).domain)


def _summary_headers(ids: dict[str, str], unsubscribe_url: str | None) -> dict[str, str]:
    """The extra headers of a user's summary: ``ids`` (numbers and UUIDs only),
    Auto-Submitted and, with an unsubscribe URL, List-Unsubscribe (+ one-click)."""
    headers = {**ids, "Auto-Submitted": "auto-generated"}
    if unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        if not unsubscribe_url.lower().startswith("mailto:"):  # RFC 8058 one-click: a web URL
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def render_batch_summary(
    summary: BatchSummary,
    prefs: Preferences,
    *,
    from_email: str,
    from_name: str,
    unsubscribe_url: str | None = None,
    list_cap: int = 50,
    date: datetime | None = None,
) -> RenderedEmail:
    """Render the batch summary e-mail per the user's preferences.

    ``date`` is the Date header (default: now). Raises ``ValueError`` for an invalid
    recipient or sender, or CR/LF in any header value (``from_name``, ``unsubscribe_url``).
    """
    domain = _checked_domain(from_email, unsubscribe_url)
    batch_id = uuid.UUID(str(summary.batch_id))  # a UUID, never free text, in the headers
    context = batch_summary_context(
        summary, prefs, from_name=from_name, unsubscribe_url=unsubscribe_url, list_cap=list_cap
    )
    subject, text, html = render_templates(
        EmailType.BATCH_COMPLETION, context, html=prefs.email_format == "html"
    )
    headers = _summary_headers({"X-Batch-ID": str(batch_id)}, unsubscribe_url)
    message = build_message(
        subject=subject,
        text=text,
        html=html,
        to=summary.user_email,
        from_email=from_email,
        from_name=from_name,
        message_id=f"<batch-{batch_id}@{domain}>",
        date=date or datetime.now(UTC),
        extra_headers=headers,
    )
    return RenderedEmail(subject=subject, text=text, html=html, message=message)


# --- the daily digest ------------------------------------------------------------------


@dataclass(frozen=True)
class DigestSummary:
    """A daily digest: its batches (closed, oldest first) with the preferences of each."""

    digest_id: int
    user_email: str
    digest_date: date
    period_start: datetime | None
    cut_off: datetime
    batches: list[tuple[BatchSummary, Preferences]] = field(default_factory=list)


def digest_subject(day: date, succeeded: int, failed: int) -> str:
    """The digest's subject (its template, with numbers and the date only)."""
    return " ".join(_env.get_template(f"email/{EmailType.DIGEST.folder}/subject.txt").render(
        {"date": day.isoformat(), "succeeded": succeeded, "failed": failed}).split())


def digest_context(digest: DigestSummary, *, from_name: str,
                   unsubscribe_url: str | None = None, list_cap: int = 50) -> dict[str, Any]:
    """The digest's template context: true totals over every batch, then at most
    ``list_cap`` batch sections (the newest), each with the batch summary's own rules."""
    cap = max(list_cap, 0)
    shown = digest.batches[-cap:] if cap else []
    sections = [batch_summary_context(summary, prefs, from_name=from_name, list_cap=list_cap)
                for summary, prefs in shown]
    succeeded = sum(summary.succeeded for summary, _ in digest.batches)
    failed = sum(summary.failed for summary, _ in digest.batches)
    total = sum(summary.total for summary, _ in digest.batches)
    since = (_utc(digest.period_start).strftime("%Y-%m-%d %H:%M UTC")
             if digest.period_start else None)
    return {
        "date": digest.digest_date.isoformat(),
        "digest_id": digest.digest_id,
        "since": since,
        "until": _utc(digest.cut_off).strftime("%Y-%m-%d %H:%M UTC"),
        "uploads": len(digest.batches),
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "sections": sections,
        "sections_more": len(digest.batches) - len(shown),
        "from_name": clean_text(from_name, NAME_MAX_CHARS),
        "unsubscribe_url": unsubscribe_url,
        "preheader": (f"{len(digest.batches)} upload{'s' if len(digest.batches) != 1 else ''}:"
                      f" {succeeded} succeeded, {failed} failed of {total} files."),
    }


def render_digest(
    digest: DigestSummary,
    prefs: Preferences,
    *,
    from_email: str,
    from_name: str,
    unsubscribe_url: str | None = None,
    list_cap: int = 50,
    date: datetime | None = None,
) -> RenderedEmail:
    """Render the daily digest in the user's ``email_format`` (``prefs``: the newest
    batch's); ``ValueError`` as :func:`render_batch_summary`."""
    domain = _checked_domain(from_email, unsubscribe_url)
    digest_id = int(digest.digest_id)  # a number, never free text, in the headers
    context = digest_context(digest, from_name=from_name, unsubscribe_url=unsubscribe_url,
                             list_cap=list_cap)
    subject, text, html = render_templates(EmailType.DIGEST, context,
                                           html=prefs.email_format == "html")
    message = build_message(
        subject=subject, text=text, html=html, to=digest.user_email, from_email=from_email,
        from_name=from_name, message_id=f"<digest-{digest_id}@{domain}>",
        date=date or datetime.now(UTC),
        extra_headers=_summary_headers({"X-Digest-ID": str(digest_id)}, unsubscribe_url),
    )
    return RenderedEmail(subject=subject, text=text, html=html, message=message)

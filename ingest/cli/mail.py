"""``ingest email test|preview|resend``: the SMTP check, a batch e-mail on disk, a re-send;
``ingest channels resend``: a failed channel delivery posted again."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from ingest.cli.output import console, emit_json, fail
from ingest.settings import get_settings


def _batch_id(text: str) -> uuid.UUID:
    """An argparse ``type``: a batch id is a UUID."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a batch id (a UUID): {text!r}") from None


def test(args: argparse.Namespace) -> int:
    """Connect to the configured SMTP server and send one small message to ``--to``."""
    from ingest.mail.render import build_message
    from ingest.mail.smtp import SmtpError, deliver

    settings = get_settings()
    where = f"{settings.smtp_server}:{settings.smtp_port}"
    security = "SSL" if settings.smtp_use_ssl else "STARTTLS" if settings.smtp_use_tls else "plain"
    auth = f"as {settings.smtp_user}" if settings.smtp_user else "without AUTH"
    try:
        message = build_message(
            subject="kb-ingest SMTP test",
            text=(f"This is a test message from kb-ingest (ingest email test), sent through "
                  f"{where} ({security}, {auth}).\nIf you can read it, e-mail delivery "
                  "works.\n"),
            html=None, to=args.to, from_email=settings.from_email,
            from_name=settings.from_name,
            message_id=make_msgid("smtp-test", settings.from_email.rpartition("@")[2]),
            date=datetime.now(UTC))
    except ValueError as exc:
        return fail(f"--to: {exc}", 2)
    console.print(f"SMTP {where} ({security}, {auth}): sending a test message to {args.to}…")
    try:
        reply = deliver(message, settings, timeout=settings.smtp_timeout_seconds)
    except SmtpError as exc:  # the message never carries the password (ingest.mail.smtp)
        return fail(f"SMTP test failed: {exc}")
    console.print(f"sent: the server answered {reply}")
    return 0


def preview(args: argparse.Namespace) -> int:
    """Render the batch's e-mail as the sender would, into ``BATCH_ID.eml`` and ``.html``."""
    from sqlalchemy.exc import NoResultFound

    from ingest.mail.render import render_batch_summary
    from ingest.mail.send import load_summary

    settings = get_settings()
    try:
        summary, prefs = load_summary(args.batch_id)
    except NoResultFound:
        return fail(f"no batch {args.batch_id}")
    options = {"from_email": settings.from_email, "from_name": settings.from_name,
               "unsubscribe_url": settings.unsubscribe_url, "list_cap": settings.email_list_cap}
    try:
        rendered = render_batch_summary(summary, prefs, **options)
        # A text-only uploader's e-mail has no HTML part; the .html shows that template too.
        html = rendered.html if rendered.html is not None else render_batch_summary(
            summary, prefs.model_copy(update={"email_format": "html"}), **options).html
    except ValueError as exc:
        return fail(f"the e-mail cannot be built: {exc}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    eml, page = out / f"{args.batch_id}.eml", out / f"{args.batch_id}.html"
    eml.write_bytes(rendered.message.as_bytes())
    page.write_text(html or "", encoding="utf-8")
    result = {"batch_id": str(args.batch_id), "to": summary.user_email,
              "subject": rendered.subject, "format": prefs.email_format,
              "eml": str(eml), "html": str(page)}
    if args.json:
        emit_json(result)
    else:
        console.print(f"{rendered.subject} → {summary.user_email} ({prefs.email_format}); "
                      f"nothing sent\n  {eml}\n  {page}", markup=False)
    return 0


def _report(noun: str, ref: object, outcome: Any, ok: tuple[str, ...]) -> int:
    """Print a re-send's outcome; 0 when it is in ``ok``."""
    style = {"sent": "green", "retry": "yellow", "deferred": "yellow"}.get(outcome.status, "red")
    console.print(f"{noun} {ref}: [{style}]{outcome.status}[/]"
                  + (f" ({outcome.detail})" if outcome.detail else ""))
    return 0 if outcome.status in ok else 1


def resend(args: argparse.Namespace) -> int:
    """Send a failed or skipped batch e-mail once more, now."""
    from ingest.mail.send import resend as run

    return _report("batch", args.batch_id, run(args.batch_id, get_settings()),
                   ("sent", "retry", "deferred"))


def resend_digest(args: argparse.Namespace) -> int:
    """Send a failed daily digest once more, now."""
    from ingest.mail.digest import resend_digest as run

    return _report("digest", args.digest_id, run(args.digest_id, get_settings()),
                   ("sent", "retry", "deferred"))


def resend_channel(args: argparse.Namespace) -> int:
    """Post a failed channel delivery once more, now (same idempotency key)."""
    from ingest.notify.deliveries import resend as run

    return _report("delivery", args.delivery_id, run(args.delivery_id, get_settings()),
                   ("sent", "retry"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``email`` command and its actions."""
    email = sub.add_parser("email", help="batch e-mails and the SMTP check").add_subparsers(
        dest="action", required=True)
    check = email.add_parser("test", help="send one test message through the SMTP server")
    check.add_argument("--to", required=True, help="the recipient address")
    check.set_defaults(run=test)
    show = email.add_parser("preview", help="write a batch's e-mail to BATCH_ID.eml/.html "
                                            "without sending")
    show.add_argument("batch_id", type=_batch_id)
    show.add_argument("--out", type=Path, default=Path("."), help="directory (default .)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(run=preview)
    again = email.add_parser("resend", help="re-send a failed or skipped batch e-mail")
    again.add_argument("batch_id", type=_batch_id)
    again.set_defaults(run=resend)
    digest = email.add_parser("resend-digest", help="re-send a failed daily digest (its id: "
                                                    "ingest status --digests)")
    digest.add_argument("digest_id", type=int)
    digest.set_defaults(run=resend_digest)
    channels = sub.add_parser("channels", help="batch summaries on the bots' channels"
                              ).add_subparsers(dest="action", required=True)
    post = channels.add_parser("resend", help="post a failed channel delivery again "
                                              "(its id: ingest status --batch ID)")
    post.add_argument("delivery_id", type=int)
    post.set_defaults(run=resend_channel)

"""The batch summary e-mail: subject, headers, MIME structure, escaping, caps, preferences."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from ingest.errors import CATEGORIES
from ingest.mail.render import (
    SUGGESTIONS,
    TEMPLATE_FOLDERS,
    TEMPLATES_DIR,
    BatchSummary,
    EmailType,
    FileLine,
    RenderedEmail,
    clean_text,
    humanise_duration,
    render_batch_summary,
)
from ingest.preferences import Preferences

BATCH_ID = uuid.UUID("0b7c2f1e-5d7a-4c1b-9a55-3f2e8d6c1a90")
START = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)
XSS_NAME = "<img src=x onerror=alert(1)>.pdf"
CRLF_NAME = "evil\r\nBcc: x@y.z.pdf"
SENDER = {"from_email": "noreply@kb.example.com", "from_name": "Knowledge Bot"}


def summary(files: list[FileLine], *, status: str = "partially_completed",
            seconds: int = 125, user_email: str = "alice@example.com") -> BatchSummary:
    ok = sum(f.succeeded for f in files)
    return BatchSummary(
        batch_id=BATCH_ID, user_email=user_email, company_id=7, bot_id=3, status=status,
        total=len(files), succeeded=ok, failed=len(files) - ok,
        started_at=START, finished_at=START + timedelta(seconds=seconds), files=files,
    )


def mixed_files() -> list[FileLine]:
    return [
        FileLine("handbook.pdf", True, chunks=42),
        FileLine("faq.md", True, chunks=1),
        FileLine(XSS_NAME, False, error_category="processing_error",
                 error_message="PDF is encrypted",
                 correction="We removed the upload and its CMS entry."),
        FileLine(CRLF_NAME, False, error_category="file_not_found",
                 error_message="object missing"),
    ]


def render(files: list[FileLine] | None = None, *, prefs: Preferences | None = None,
           **kwargs) -> RenderedEmail:
    return render_batch_summary(summary(mixed_files() if files is None else files),
                                prefs or Preferences(), **{**SENDER, **kwargs})


def parse(rendered: RenderedEmail) -> EmailMessage:
    return email.message_from_bytes(rendered.message.as_bytes(), policy=email.policy.default)


def parts(msg: EmailMessage) -> tuple[str, str | None]:
    """(text body, html body) of a parsed message."""
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return text.get_content(), (html.get_content() if html is not None else None)


# --- subject and headers ---------------------------------------------------------------


def test_subject_counts_successes_and_failures() -> None:
    rendered = render()
    msg = parse(rendered)
    assert msg["Subject"] == "File Processing Complete - 2 Success, 2 Failed"
    assert rendered.subject == msg["Subject"]


def test_headers_are_deterministic_and_mark_automation() -> None:
    msg = parse(render())
    assert msg["Message-ID"] == f"<batch-{BATCH_ID}@kb.example.com>"
    assert msg["X-Batch-ID"] == str(BATCH_ID)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"] == "alice@example.com"
    assert msg["From"].addresses[0].addr_spec == "noreply@kb.example.com"
    assert msg["From"].addresses[0].display_name == "Knowledge Bot"
    assert msg["Date"].datetime is not None
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None


def test_list_unsubscribe_only_when_configured() -> None:
    url = "https://kb.example.com/unsubscribe?u=alice&t=1"
    msg = parse(render(unsubscribe_url=url))
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    _, html = parts(msg)
    assert 'href="https://kb.example.com/unsubscribe?u=alice&amp;t=1"' in html


def test_date_header_uses_given_date() -> None:
    when = datetime(2025, 3, 4, 12, 30, tzinfo=UTC)
    msg = parse(render(date=when))
    assert msg["Date"].datetime == when


# --- MIME structure --------------------------------------------------------------------


def test_html_format_is_multipart_alternative_text_first() -> None:
    rendered = render(prefs=Preferences(email_format="html"))
    msg = parse(rendered)
    assert msg.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "text/html"]
    text_part, html_part = list(msg.iter_parts())
    assert text_part.get_content_charset() == "utf-8"
    assert html_part.get_content_charset() == "utf-8"
    assert text_part.get_content() == rendered.text
    assert "<html" in html_part.get_content()


def test_html_has_inlined_css_and_a_mobile_layout() -> None:
    _, html = parts(parse(render()))
    assert 'style="' in html
    assert "max-width: 600px" in html  # the container, inlined
    assert '<body style="' in html
    assert 'name="viewport"' in html
    assert 'role="presentation"' in html
    # only @media rules stay in a <style> block; ordinary rules were inlined
    assert ".item {" not in html
    assert "@media" in html


def test_text_format_is_single_text_plain_part() -> None:
    rendered = render(prefs=Preferences(email_format="text"))
    msg = parse(rendered)
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert rendered.html is None
    assert "handbook.pdf" in msg.get_content()


# --- hostile file names ----------------------------------------------------------------


def test_html_escapes_file_names_and_text_does_not() -> None:
    msg = parse(render())
    text, html = parts(msg)
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in html
    assert "<img src=x" not in html
    assert XSS_NAME in text  # the text part is not HTML-escaped


def test_file_names_never_reach_a_header() -> None:
    msg = parse(render())
    for name, value in msg.items():
        assert "img" not in str(value), name
        assert "evil" not in str(value), name
        assert "handbook" not in str(value), name


def test_crlf_file_name_adds_no_header_and_is_shown_on_one_line() -> None:
    rendered = render()
    raw = rendered.message.as_bytes()
    msg = parse(rendered)
    assert msg["Bcc"] is None
    assert b"\nBcc:" not in raw
    text, html = parts(msg)
    assert "evil Bcc: x@y.z.pdf" in text
    assert "evil Bcc: x@y.z.pdf" in html
    assert not any(line.startswith("Bcc:") for line in text.splitlines())


@pytest.mark.parametrize("bad", [
    "alice@example.com\r\nBcc: x@y.z",
    "alice@example.com\nBcc: x@y.z",
    "alice@example.com, mallory@example.com",
    "not-an-address",
    "Alice <alice@example.com>",
])
def test_invalid_recipient_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        render_batch_summary(summary(mixed_files(), user_email=bad), Preferences(), **SENDER)


@pytest.mark.parametrize("kwargs", [
    {"from_name": "Bot\r\nBcc: x@y.z"},
    {"from_email": "noreply@kb.example.com\r\nBcc: x@y.z"},
    {"unsubscribe_url": "https://kb.example.com/u\r\nBcc: x@y.z"},
    {"unsubscribe_url": "javascript:alert(1)"},
])
def test_crlf_or_bad_values_in_configured_headers_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        render(**kwargs)


def test_clean_text_drops_controls_and_bidi_overrides_and_truncates() -> None:
    assert clean_text("a\r\n\tb\x00c", 50) == "a b c"
    assert clean_text("invoice\u202egpj.exe", 50) == "invoicegpj.exe"
    clipped = clean_text("x" * 400, 300)
    assert len(clipped) == 300 and clipped.endswith("…")
    assert clean_text(None, 10) == ""


# --- content ---------------------------------------------------------------------------


def test_body_has_totals_time_batch_id_and_status() -> None:
    text, html = parts(parse(render()))
    for body in (text, html):
        assert str(BATCH_ID) in body
        assert "2 min 5 s" in body
        assert "Partially completed" in body
    assert "Total files:      4" in text
    assert "Succeeded:        2" in text
    assert "Failed:           2" in text
    assert "handbook.pdf (42 chunks)" in text
    assert "faq.md (1 chunk)" in text
    assert "PDF is encrypted" in text
    assert "We removed the upload and its CMS entry." in text
    assert "We removed the upload and its CMS entry." in html


def test_success_details_can_be_hidden_but_totals_stay() -> None:
    prefs = Preferences(include_success_details=False)
    text, html = parts(parse(render(prefs=prefs)))
    for body in (text, html):
        assert "handbook.pdf" not in body
        assert "faq.md" not in body
        assert "PDF is encrypted" in body  # failures still listed
        assert "turned off in your notification preferences" in body
    assert "Succeeded:        2" in text


def test_error_details_can_be_hidden_but_totals_stay() -> None:
    prefs = Preferences(include_error_details=False)
    text, html = parts(parse(render(prefs=prefs)))
    for body in (text, html):
        assert "PDF is encrypted" not in body
        assert "onerror" not in body
        assert "evil" not in body
        assert SUGGESTIONS["processing_error"] not in body
        assert "handbook.pdf" in body  # successes still listed
    assert "Failed:           2" in text


def test_large_batch_is_capped_with_true_remainders_and_totals() -> None:
    files = [FileLine(f"doc-{i:04d}.txt", True, chunks=3) for i in range(900)]
    files += [FileLine(f"bad-{i:04d}.pdf", False, error_category="timeout") for i in range(60)]
    rendered = render(files, list_cap=50)
    text, html = parts(parse(rendered))
    assert rendered.subject == "File Processing Complete - 900 Success, 60 Failed"
    for body in (text, html):
        assert "doc-0049.txt" in body
        assert "doc-0050.txt" not in body
        assert "bad-0049.pdf" in body
        assert "bad-0050.pdf" not in body
        assert "and 850 more processed files" in body
        assert "and 10 more failed files" in body
    assert sum(line.startswith("- doc-") for line in text.splitlines()) == 50
    assert "Total files:      960" in text
    assert "Succeeded:        900" in text
    assert len(html) < 102_000  # under Gmail's clipping size


def test_remainder_uses_true_counts_when_only_a_prefix_of_files_is_given() -> None:
    files = [FileLine(f"doc-{i}.txt", True, chunks=1) for i in range(5)]
    big = BatchSummary(
        batch_id=BATCH_ID, user_email="alice@example.com", company_id=1, bot_id=1,
        status="completed", total=862, succeeded=862, failed=0,
        started_at=START, finished_at=START + timedelta(minutes=3), files=files,
    )
    rendered = render_batch_summary(big, Preferences(), **SENDER, list_cap=5)
    assert "and 857 more processed files" in rendered.text
    assert "Total files:      862" in rendered.text
    assert "FAILED FILES" not in rendered.text


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_has_an_actionable_suggestion_in_both_bodies(category: str) -> None:
    files = [FileLine("x.pdf", False, error_category=category, error_message="boom")]
    text, html = parts(parse(render(files)))
    suggestion = SUGGESTIONS[category]
    assert suggestion in text
    assert suggestion in html
    assert "upload" in suggestion.lower() or "contact support" in suggestion


def test_unknown_category_gets_a_default_suggestion() -> None:
    files = [FileLine("x.pdf", False, error_category=None, error_message=None)]
    text = render(files).text
    assert "Something unexpected went wrong" in text


def test_long_error_messages_are_truncated() -> None:
    files = [FileLine("x.pdf", False, error_category="storage_error",
                      error_message="Traceback\n" + "y" * 5000)]
    text = render(files).text
    assert "Traceback " + "y" * 289 + "…" in text  # 300 characters in all
    assert "y" * 400 not in text
    assert "Traceback y" in text  # newlines collapsed


@pytest.mark.parametrize(("seconds", "expected"), [
    (0, "0 s"), (45, "45 s"), (60, "1 min"), (125, "2 min 5 s"), (3600, "1 h"),
    (3780, "1 h 3 min"), (90_061, "1 d 1 h"), (-5, "0 s"),
])
def test_humanise_duration(seconds: int, expected: str) -> None:
    assert humanise_duration(timedelta(seconds=seconds)) == expected


def test_processing_time_in_body_is_humanised() -> None:
    rendered = render_batch_summary(
        summary(mixed_files(), seconds=3780), Preferences(), **SENDER
    )
    assert "Processing time:  1 h 3 min" in rendered.text


# --- the registry ----------------------------------------------------------------------


def test_every_email_type_has_a_template_folder() -> None:
    assert EmailType.BATCH_COMPLETION.folder == "batch_summary"
    for email_type in EmailType:
        folder = TEMPLATES_DIR / "email" / TEMPLATE_FOLDERS[email_type]
        for name in ("subject.txt", "body.txt", "body.html"):
            assert (folder / name).is_file(), folder / name
        assert '{% extends "email/base.html" %}' in (folder / "body.html").read_text()

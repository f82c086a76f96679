"""The summary e-mail end to end: worker → SMTP server (aiosmtpd) → parsed MIME message."""

from __future__ import annotations

import time
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.db import session_scope
from ingest.models import EmailNotificationLog, NotificationRetryLog
from ingest.names import TASK_CHECK_BATCH
from tests.conftest import wait_until
from tests.helpers import (
    closed,
    emails_of,
    envelope,
    file_entry,
    post,
    prefer,
    quiet_until,
    sealed_finished_batch,
    upload,
    uploader,
)

pytestmark = pytest.mark.usefixtures("worker")


def mail_to(sink: Any, email: str, count: int = 1, timeout: float = 60) -> list[EmailMessage]:
    """Wait for ``count`` messages to ``email``; return them."""
    return wait_until(
        lambda: (found := [m for m in sink.messages if m["To"] == email]) and
        len(found) >= count and found, timeout, 0.1)


def upload_batch(web: str, s3: Any, cms: Any, email: str, files: list[tuple[str, bytes]],
                 **prefs: Any) -> None:
    """The uploader's preferences seal the batch at len(files); send every file's webhook."""
    prefer(cms, email, batch_size_threshold=len(files), notification_delay_minutes=5, **prefs)
    for name, data in files:
        entry = file_entry(name, "text/plain" if name.endswith(".txt") else "application/pdf",
                           user_email=email)
        entry["storage_key"] = f"companies/42/bots/7/{entry['documentId']}"  # names may be hostile
        upload(s3, entry, data)
        assert post(web, envelope("entry.create", entry)).status_code == 202


def quiet_outbox() -> None:
    """Wait until no e-mail of earlier tests is being sent or retried (the sink is shared).

    Rows left ``pending`` and never tried belong to batches closed by direct checks in
    other tests; no task will send them here (no beat runs in the tests).
    """
    def idle() -> bool:
        with session_scope() as s:
            return not s.execute(select(EmailNotificationLog.id).where(
                (EmailNotificationLog.send_status == "sending")
                | ((EmailNotificationLog.send_status == "pending")
                   & (EmailNotificationLog.send_attempts > 0)))).first()
    wait_until(idle, 60, 0.2)


def test_html_summary_structure_headers_and_counts(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    email = uploader()
    upload_batch(web, s3_server, cms, email, [
        ("minutes.txt", make_txt("Board minutes.")),
        ("budget.txt", make_txt("Budget 2027.")),
        ("scan.pdf", make_corrupt_pdf()),
    ])
    (batch,) = closed(email)
    (message,) = mail_to(smtp_sink, email)
    assert message["Subject"] == "File Processing Complete - 2 Success, 1 Failed"
    assert message["X-Batch-ID"] == str(batch.batch_id)
    assert message["Message-ID"] == f"<batch-{batch.batch_id}@kb-ingest.test>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] is None  # UNSUBSCRIBE_URL is not configured
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "minutes.txt" in body and "scan.pdf" in body and str(batch.batch_id) in body
    assert "style=" in html  # CSS inlined
    (log,) = wait_until(lambda: [e for e in emails_of(batch.batch_id)
                                 if e.send_status == "sent"], 10)
    assert log.send_attempts == 1
    assert log.message_id == message["Message-ID"]
    assert log.email_content_text and log.email_content_html and log.smtp_response.startswith(
        "250")
    wait_until(lambda: closed(email)[0].notification_sent, 10)


def test_hostile_file_names_are_escaped_and_never_reach_a_header(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    email = uploader()
    xss = "<img src=x onerror=alert(1)>.pdf"
    crlf = "evil\r\nBcc: attacker@evil.test\r\nX-Injected: 1.txt"
    upload_batch(web, s3_server, cms, email, [(xss, make_corrupt_pdf()),
                                              (crlf, make_txt("Innocent text."))])
    (message,) = mail_to(smtp_sink, email)
    headers = "\n".join(f"{k}: {v}" for k, v in message.items())
    assert "onerror" not in headers and "evil" not in headers
    assert message["Bcc"] is None and message["X-Injected"] is None
    html = message.get_body(("html",)).get_content()
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in html
    assert "<img src=x" not in html
    text = message.get_body(("plain",)).get_content()
    assert "evil Bcc: attacker@evil.test X-Injected: 1.txt" in " ".join(text.split())
    envelope_ = [e for e in smtp_sink.received if email in e.recipients]
    assert list(envelope_[0].recipients) == [email]


def test_text_only_user_gets_text_plain(web: str, s3_server: Any, cms: Any,
                                        smtp_sink: Any) -> None:
    email = uploader()
    upload_batch(web, s3_server, cms, email, [("plain.txt", make_txt("Plain."))],
                 email_format="text")
    (message,) = mail_to(smtp_sink, email)
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert "plain.txt" in message.get_content()


def test_disabled_user_gets_no_mail_and_the_skip_is_logged(
    web: str, s3_server: Any, cms: Any, smtp_sink: Any
) -> None:
    email = uploader()
    upload_batch(web, s3_server, cms, email, [("quiet.txt", make_txt("Quiet."))],
                 notification_enabled=False)
    (batch,) = closed(email)
    (log,) = emails_of(batch.batch_id)
    assert log.send_status == "skipped" and log.send_attempts == 0
    time.sleep(1)
    assert not [m for m in smtp_sink.messages if m["To"] == email]


def _retry_rows(batch_id: Any) -> list[tuple[int, bool]]:
    with session_scope() as s:
        rows = s.execute(select(NotificationRetryLog.retry_attempt, NotificationRetryLog.success)
                         .where(NotificationRetryLog.batch_id == batch_id)
                         .order_by(NotificationRetryLog.retry_attempt)).all()
    return [(r[0], r[1]) for r in rows]


def test_smtp_refusing_three_connections_delivers_exactly_once(
    celery_app: Any, smtp_sink: Any
) -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email)
    quiet_outbox()
    smtp_sink.refuse_connections(3)
    time.sleep(0.2)
    celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])
    mail_to(smtp_sink, email)
    wait_until(lambda: emails_of(batch_id)[0].send_status == "sent", 30)
    (log,) = emails_of(batch_id)
    assert log.send_attempts == 4
    assert _retry_rows(batch_id) == [(1, False), (2, False), (3, False), (4, True)]
    time.sleep(1)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_recipient_refused_with_550_fails_without_retry(celery_app: Any,
                                                         smtp_sink: Any) -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email)
    quiet_outbox()
    smtp_sink.reject_rcpt(550, 1)
    time.sleep(0.2)
    celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])
    wait_until(lambda: emails_of(batch_id) and emails_of(batch_id)[0].send_status == "failed",
               30)
    time.sleep(1)
    (log,) = emails_of(batch_id)
    assert log.send_attempts == 1
    assert log.smtp_response.startswith("550")
    assert _retry_rows(batch_id) == [(1, False)]
    assert not [m for m in smtp_sink.messages if m["To"] == email]


def test_an_smtp_outage_longer_than_any_fixed_count_still_delivers_exactly_once(
    celery_app: Any, smtp_sink: Any
) -> None:
    """Every connection refused for 8 s (SMTP_RETRY_WINDOW_MINUTES is 0.5 in the tests):
    retried until the server is back, then delivered once."""
    email = uploader()
    batch_id = sealed_finished_batch(email)
    quiet_outbox()
    smtp_sink.refuse_for(8)
    celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])
    mail_to(smtp_sink, email, timeout=60)
    wait_until(lambda: emails_of(batch_id)[0].send_status == "sent", 30)
    time.sleep(1)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1
    rows = _retry_rows(batch_id)
    assert rows[-1][1] and not any(ok for _, ok in rows[:-1]) and len(rows) >= 2


def test_an_outage_beyond_the_window_fails_alerts_and_resend_delivers_once(
    smtp_sink: Any, capsys: Any
) -> None:
    from ingest.batches import check_batch
    from ingest.cli import main
    from ingest.mail.send import send_batch_email
    from ingest.settings import get_settings

    settings = get_settings().model_copy(update={"smtp_retry_window_minutes": 0.05,
                                                 "smtp_retry_base_seconds": 0.1})
    email = uploader()
    batch_id = sealed_finished_batch(email)
    quiet_outbox()
    wait_until(lambda: check_batch(batch_id, settings).email_pending, 10)
    smtp_sink.refuse_for(30)
    try:
        outcomes = []
        while not outcomes or outcomes[-1].status == "retry":
            outcomes.append(send_batch_email(batch_id, settings))
            time.sleep(outcomes[-1].retry_in)
    finally:
        smtp_sink.refuse_for(0)
    assert outcomes[-1].status == "failed" and len(outcomes) >= 2
    _failed_and_alerted(batch_id, "SMTP_RETRY_WINDOW_MINUTES")
    assert not [m for m in smtp_sink.messages if m["To"] == email]
    # The operator fixed the mail server: one more send, logged as a new attempt.
    assert main(["email", "resend", str(batch_id)]) == 0
    assert f"batch {batch_id}: sent" in capsys.readouterr().out
    assert len(mail_to(smtp_sink, email)) == 1
    assert _retry_rows(batch_id)[-1] == (len(outcomes) + 1, True)
    assert main(["email", "resend", str(batch_id)]) == 1  # sent: nothing to re-send
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def _failed_and_alerted(batch_id: Any, why: str) -> None:
    """The batch's e-mail failed for ``why`` and one operator alert says how to resend it."""
    from ingest.models import OperatorAlert

    (log,) = emails_of(batch_id)
    assert log.send_status == "failed" and why in log.error_message
    with session_scope() as s:
        (alert,) = s.execute(select(OperatorAlert).where(
            OperatorAlert.batch_id == batch_id)).scalars()
    assert alert.kind == "email_failed" and f"ingest email resend {batch_id}" in alert.body


def _email_due() -> tuple[str, Any]:
    """(uploader, batch id) of a closed batch whose summary e-mail is pending, its task not
    yet run (the shared sink quiet)."""
    from ingest.batches import check_batch
    from ingest.settings import get_settings

    email = uploader()
    batch_id = sealed_finished_batch(email)
    quiet_outbox()
    wait_until(lambda: check_batch(batch_id, get_settings()).email_pending, 10)
    return email, batch_id


def _send_through_a_database_cut(batch_id: Any, arm: Any) -> Any:
    """Send the batch's e-mail while ``arm(cut)`` has the SMTP sink call ``cut()`` at its
    moment: the test database then refuses new connections and ends the open ones, for
    three seconds."""
    import threading

    from devtools.pg import admin_exec
    from ingest.mail.send import send_batch_email
    from ingest.settings import get_settings
    from tests.conftest import ADMIN_URL, DB_NAME

    def restore() -> None:
        admin_exec(ADMIN_URL, f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS true')

    def cut() -> None:
        admin_exec(ADMIN_URL, f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS false')
        admin_exec(ADMIN_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              f"WHERE datname = '{DB_NAME}' AND pid <> pg_backend_pid()")
        threading.Timer(3, restore).start()

    arm(cut)
    try:
        return send_batch_email(batch_id, get_settings())
    finally:
        restore()


def _met_the_outage(caplog: Any) -> bool:
    return any("Retrying" in r.getMessage() and r.name == "ingest.mail.outbox"
               for r in caplog.records)


def test_the_database_cut_right_after_the_250_never_causes_a_second_send(
    smtp_sink: Any, caplog: Any
) -> None:
    from ingest.mail.send import emails_to_redrive

    email, batch_id = _email_due()
    # The server has the message; its 250 is about to leave.
    outcome = _send_through_a_database_cut(batch_id, smtp_sink.after_capture)
    assert outcome.status == "sent"
    assert _met_the_outage(caplog), "the record of the 250 never met the outage"
    (log,) = emails_of(batch_id)
    assert log.send_status == "sent"
    # Nothing is left for the sweeper to send again.
    assert batch_id not in emails_to_redrive(timedelta(0), timedelta(0), timedelta(0))
    time.sleep(1)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_a_refusal_recorded_during_a_database_outage_leaves_the_email_retryable(
    smtp_sink: Any, caplog: Any
) -> None:
    """Found by ``make chaos``: SMTP refused while PostgreSQL restarted, the refusal could
    not be written, and the row stayed ``sending`` (claimed, no task left to finish it)
    until the sweeper's 15-minute re-drive. The record now waits out the outage."""
    from ingest.mail.send import send_batch_email
    from ingest.settings import get_settings

    email, batch_id = _email_due()
    outcome = _send_through_a_database_cut(
        batch_id, lambda cut: smtp_sink.reject_rcpt(451, before_reply=cut))
    assert outcome.status == "retry"
    assert _met_the_outage(caplog), "the record of the refusal never met the outage"
    (log,) = emails_of(batch_id)
    assert (log.send_status, log.send_attempts) == ("pending", 1)
    assert _retry_rows(batch_id) == [(1, False)]
    assert send_batch_email(batch_id, get_settings()).status == "sent"
    assert len(mail_to(smtp_sink, email)) == 1


def test_a_connection_lost_between_claim_and_smtp_leaves_the_email_claimable(
    smtp_sink: Any,
) -> None:
    """The claim commits with the message it renders: the connection lost while the batch
    is read (after the claim, before SMTP) rolls the claim back, where it used to leave the
    row ``sending`` for the sweeper's 15-minute re-drive."""
    import threading

    import psycopg2
    from sqlalchemy.exc import DBAPIError

    from devtools.pg import admin_exec
    from ingest.mail.send import send_batch_email
    from ingest.settings import get_settings
    from tests.conftest import ADMIN_URL, DB_NAME

    email, batch_id = _email_due()
    raised: list[BaseException] = []

    def send() -> None:
        try:
            send_batch_email(batch_id, get_settings())
        except DBAPIError as exc:
            raised.append(exc)

    locker = psycopg2.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}")
    try:
        with locker.cursor() as cur:  # the send claims, then waits to read batch_files
            cur.execute("LOCK TABLE batch_files IN ACCESS EXCLUSIVE MODE")
        sender = threading.Thread(target=send)
        sender.start()
        # The send's backend (its statements carry the batch id inline), not another test's
        # that the lock holds up as well.
        with locker.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (locker_pid,) = cur.fetchone()
        ours = (f"datname = '{DB_NAME}' AND {locker_pid} = ANY(pg_blocking_pids(pid)) "
                f"AND query LIKE '%{batch_id}%'")

        def blocked() -> bool:
            with locker.cursor() as cur:  # a transaction sees one snapshot of the activity
                cur.execute("SELECT pg_stat_clear_snapshot()")
                cur.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {ours}")
                return cur.fetchone()[0] == 1

        wait_until(blocked, 10)
        admin_exec(ADMIN_URL, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              f"WHERE {ours}")
        sender.join(10)
    finally:
        locker.rollback()
        locker.close()
    assert raised, "the send did not meet the lost connection"
    (log,) = emails_of(batch_id)
    assert (log.send_status, log.send_attempts) == ("pending", 0)
    assert send_batch_email(batch_id, get_settings()).status == "sent"
    assert len(mail_to(smtp_sink, email)) == 1


def test_a_retry_lost_with_its_worker_is_redriven_once_it_is_overdue(smtp_sink: Any) -> None:
    """Found by ``make chaos``: an e-mail whose retry countdown died with its worker (the
    worker holds a countdown's message) was re-driven only after ``retry_after`` (longer
    than any backoff: 11 minutes). Its retry's due time is in the retry log; the sweeper
    re-drives it once that is overdue, once per ``new_after``."""
    from ingest.mail.send import emails_to_redrive, send_batch_email
    from ingest.settings import get_settings

    email, batch_id = _email_due()
    smtp_sink.refuse_connections(1)
    outcome = send_batch_email(batch_id, get_settings())
    assert outcome.status == "retry"

    def redriven(new_after: float) -> bool:
        return batch_id in emails_to_redrive(timedelta(seconds=new_after),
                                             timedelta(minutes=11), timedelta(minutes=15))

    # Its retry's message is gone. Not overdue yet: left to its countdown.
    assert not redriven(30)
    # Overdue (as if its due time was retry_in + 1 s ago): re-driven.
    assert redriven(-(outcome.retry_in + 1))
    assert send_batch_email(batch_id, get_settings()).status == "sent"
    assert len(mail_to(smtp_sink, email)) == 1


def _send_in_a_process_killed(batch_id: Any, arm: Any) -> None:
    """Send the batch's e-mail in a child process that ``arm(kill)`` has SIGKILLed at the
    moment of its choosing (the chaos run's worker group killed during SMTP)."""
    from tests.procs import killed_during

    killed_during("import sys, uuid\nfrom ingest.mail.send import send_batch_email\n"
                  "from ingest.settings import get_settings\n"
                  "send_batch_email(uuid.UUID(sys.argv[1]), get_settings())\n",
                  str(batch_id), arm)


def _settled(batch_id: Any) -> bool:
    """Run the sweeper as if the ``sending`` row were old; whether it re-drives the batch."""
    from ingest.mail.send import emails_to_redrive

    return batch_id in emails_to_redrive(timedelta(0), timedelta(0), timedelta(0))


def test_a_worker_killed_before_the_body_left_is_sent_again_once(smtp_sink: Any) -> None:
    """Killed at RCPT: the row stays ``sending`` without ``body_started_at``, so nothing
    can have been delivered and the sweeper sends it again."""
    from ingest.mail.send import send_batch_email
    from ingest.settings import get_settings

    email, batch_id = _email_due()
    _send_in_a_process_killed(batch_id, lambda kill: smtp_sink.reject_rcpt(
        451, before_reply=kill))
    (log,) = emails_of(batch_id)
    assert (log.send_status, log.body_started_at) == ("sending", None)
    assert _settled(batch_id)
    assert send_batch_email(batch_id, get_settings()).status == "sent"
    assert len(mail_to(smtp_sink, email)) == 1
    time.sleep(0.5)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_a_worker_killed_after_the_body_left_is_never_sent_twice(smtp_sink: Any) -> None:
    """Killed between the body's end and the 250 (the full chaos run's duplicate): the
    outcome is unknown, so the e-mail is not sent again; it fails as such and the operator
    is alerted, with the command to send it if the user did not get it."""

    email, batch_id = _email_due()
    _send_in_a_process_killed(batch_id, smtp_sink.after_capture)
    (log,) = emails_of(batch_id)
    assert log.send_status == "sending" and log.body_started_at is not None
    assert not _settled(batch_id)
    _failed_and_alerted(batch_id, "outcome unknown")
    assert not _settled(batch_id)  # settled once: no second alert, no send
    time.sleep(0.5)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_a_worker_killed_after_the_250_with_the_database_away_is_recorded_sent(
    smtp_sink: Any, redis_server: str
) -> None:
    """Killed after the 250 while PostgreSQL was away: the marker written to Redis at the
    250 tells the sweeper the e-mail was delivered."""
    import threading

    from devtools.pg import admin_exec
    from ingest.db import get_engine
    from ingest.mail.send import SENT_MARKER
    from ingest.redis_client import get_redis
    from tests.conftest import ADMIN_URL, DB_NAME

    email, batch_id = _email_due()
    (log,) = emails_of(batch_id)
    marker = SENT_MARKER.format(log.id)

    def restore() -> None:
        admin_exec(ADMIN_URL, f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS true')

    def arm(kill: Any) -> None:
        def cut_then_kill() -> None:
            admin_exec(ADMIN_URL, f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS false')
            admin_exec(ADMIN_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE datname = '{DB_NAME}' AND pid <> pg_backend_pid()")

            def later() -> None:  # once the 250 is in Redis, while the record waits
                wait_until(lambda: get_redis().exists(marker), 20, 0.05)
                kill()
                restore()
            threading.Thread(target=later).start()
        smtp_sink.after_capture(cut_then_kill)

    try:
        _send_in_a_process_killed(batch_id, arm)
    finally:
        restore()
    get_engine().dispose()  # this process's pooled connections were ended by the cut
    (log,) = emails_of(batch_id)
    assert log.send_status == "sending"
    assert not _settled(batch_id)
    (log,) = emails_of(batch_id)
    assert log.send_status == "sent"
    time.sleep(0.5)
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


def test_a_batch_closing_in_quiet_hours_closes_now_and_is_mailed_once_when_they_end(
    smtp_sink: Any
) -> None:
    """The batch closes on time; its row waits (``send_not_before``) and nothing publishes
    it; the claim refuses it until then; the first sweep after the end re-drives it, even
    inside ``new_after``, and only that sweep."""
    from datetime import UTC, datetime

    from ingest.batches import check_batch
    from ingest.mail.send import emails_to_redrive, send_batch_email
    from ingest.settings import get_settings

    def redriven() -> bool:  # the sweeper's own intervals
        return batch_id in emails_to_redrive(timedelta(seconds=30), timedelta(minutes=11),
                                             timedelta(minutes=15))

    email = uploader()
    quiet = quiet_until(5)
    batch_id = sealed_finished_batch(email, **quiet)
    quiet_outbox()
    check = wait_until(lambda: (c := check_batch(batch_id, get_settings())).closed_status
                       and c, 10)
    assert check.closed_status == "completed" and not check.email_pending
    (batch,) = closed(email)
    assert batch.batch_end_time < check.email_deferred_until
    (log,) = emails_of(batch_id)
    assert (log.send_status, log.send_not_before) == ("pending", check.email_deferred_until)
    end = datetime.strptime(quiet["quiet_hours_end"], "%H:%M:%S").time()
    assert log.send_not_before.astimezone(ZoneInfo(quiet["timezone"])).time() == end
    # Held: neither the sweeper nor a stray task sends it while the window lasts.
    assert not redriven()
    assert send_batch_email(batch_id, get_settings()).status == "nothing"
    assert datetime.now(UTC) < log.send_not_before, "the window ended during the checks"
    wait_until(lambda: datetime.now(UTC) > log.send_not_before, 10, 0.05)
    assert redriven()
    assert not redriven()  # once
    assert send_batch_email(batch_id, get_settings()).status == "sent"
    (message,) = mail_to(smtp_sink, email)
    (log,) = emails_of(batch_id)
    assert log.sent_at >= log.send_not_before and log.send_attempts == 1

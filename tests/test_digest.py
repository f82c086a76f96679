"""The daily digest: its due time (pure, DST), its creation and coverage on the real
database (idempotent, concurrent sweepers, a batch after the cut-off), its content, and
the shared send path's crash rules. The end-to-end run is ``tests/test_digest_flow.py``."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ingest.batches import check_batch
from ingest.db import session_scope
from ingest.digests import DIGEST_REASON, create_due_digests, digest_date, digest_due
from ingest.models import EmailDigest, EmailNotificationLog, OperatorAlert
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import emails_of, sealed_finished_batch, uploader

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- when a digest falls due (pure) ----------------------------------------------------------


def test_an_ordinary_day_is_due_at_the_local_hour() -> None:
    assert digest_due(date(2026, 6, 1), 8, BERLIN) == _utc(2026, 6, 1, 6)  # CEST
    assert digest_due(date(2026, 12, 1), 8, BERLIN) == _utc(2026, 12, 1, 7)  # CET
    assert digest_due(date(2026, 6, 1), 0, ZoneInfo("Asia/Kathmandu")) == _utc(
        2026, 5, 31, 18, 15)


def test_an_hour_skipped_by_spring_forward_is_due_when_the_clock_jumps_past_it() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:xx never happens.
    due = digest_due(date(2026, 3, 29), 2, BERLIN)
    assert due == _utc(2026, 3, 29, 1)
    assert due.astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"
    assert digest_date(due - timedelta(seconds=1), 2, BERLIN) is None
    assert digest_date(due, 2, BERLIN) == date(2026, 3, 29)
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    assert digest_due(date(2026, 3, 8), 2, NEW_YORK) == _utc(2026, 3, 8, 7)


def test_an_hour_repeated_by_fall_back_is_due_once_at_its_first_occurrence() -> None:
    # New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    due = digest_due(date(2026, 11, 1), 1, NEW_YORK)
    assert due == _utc(2026, 11, 1, 5)  # 01:00 EDT
    second = _utc(2026, 11, 1, 6, 30)  # 01:30 EST, the repeat
    assert digest_date(second, 1, NEW_YORK) == date(2026, 11, 1)  # the same date: one digest
    # Berlin, 2026-10-25: 02:00-03:00 twice.
    assert digest_due(date(2026, 10, 25), 2, BERLIN) == _utc(2026, 10, 25, 0)


def test_midnight_belongs_to_the_new_day() -> None:
    tz = ZoneInfo("Asia/Tokyo")
    assert digest_date(_utc(2026, 6, 1, 14, 59, 59), 0, tz) == date(2026, 6, 1)  # 23:59:59
    assert digest_date(_utc(2026, 6, 1, 15), 0, tz) == date(2026, 6, 2)  # 00:00 next day
    # Havana skips midnight (2026-03-08 00:00 CST → 01:00 CDT): due at the jump.
    havana = ZoneInfo("America/Havana")
    assert digest_due(date(2026, 3, 8), 0, havana).astimezone(havana).hour == 1


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe")])
@pytest.mark.parametrize("hour", [0, 1, 2, 3, 8, 23])
def test_every_local_date_of_2026_gets_exactly_one_due_instant(tz: ZoneInfo,
                                                              hour: int) -> None:
    """A sweep every 15 minutes through the year sees each date become due once, in order,
    never before its hour (Lord Howe shifts by half an hour)."""
    moment, end = _utc(2026, 1, 1), _utc(2027, 1, 1)
    seen: list[date] = []
    while moment < end:
        day = digest_date(moment, hour, tz)
        if day is not None and (not seen or seen[-1] != day):
            seen.append(day)
            assert moment >= digest_due(day, hour, tz)
            local = moment.astimezone(tz)
            assert local.date() == day and local.hour >= hour - 1  # never before the hour
        moment += timedelta(minutes=15)
    assert seen == sorted(set(seen))
    first = seen[0]
    assert len(seen) >= 364 and seen == [first + timedelta(days=n) for n in range(len(seen))]


# --- creation and coverage (real database) --------------------------------------------------


def closed_daily_batch(email: str, **prefs: Any) -> uuid.UUID:
    """A daily user's batch, closed through the domain API (hour 0 UTC: always due today)."""
    values = {"frequency": "daily", "digest_hour_local": 0, "timezone": "UTC", **prefs}
    batch_id = sealed_finished_batch(email, **values)
    wait_until(lambda: check_batch(batch_id, get_settings()).closed_status
               or emails_of(batch_id), 10)
    return batch_id


def digests_of(email: str) -> list[EmailDigest]:
    with session_scope() as s:
        return list(s.execute(select(EmailDigest).where(EmailDigest.recipient_email == email)
                              .order_by(EmailDigest.id)).scalars())


def covered_by(batch_id: uuid.UUID) -> int | None:
    (row,) = emails_of(batch_id)
    return row.digest_id


def test_a_daily_users_batch_closes_on_time_and_waits_for_the_digest() -> None:
    email = uploader()
    batch_id = sealed_finished_batch(email, frequency="daily", digest_hour_local=0)
    check = wait_until(lambda: (c := check_batch(batch_id, get_settings())).closed_status
                       and c, 10)
    assert check.closed_status == "completed"
    assert not check.email_pending  # no per-batch e-mail task
    (row,) = emails_of(batch_id)
    assert (row.send_status, row.error_message, row.for_digest, row.digest_id) == (
        "skipped", DIGEST_REASON, True, None)
    assert row.send_not_before is None


def test_the_sweeper_twice_or_two_at_once_create_one_digest_covering_each_batch_once(
) -> None:
    email = uploader()
    first, second = closed_daily_batch(email), closed_daily_batch(email)
    barrier = threading.Barrier(3)
    made: list[list[int]] = []

    def sweep() -> None:
        barrier.wait()
        made.append(create_due_digests())

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (digest,) = digests_of(email)
    assert sum(ids.count(digest.id) for ids in made) == 1  # one sweeper created and sends it
    assert digest.id not in create_due_digests()  # and later sweeps do nothing
    assert covered_by(first) == covered_by(second) == digest.id
    assert (digest.batch_count, digest.total_files, digest.successful_files,
            digest.failed_files) == (2, 2, 2, 0)
    assert digest.digest_date == datetime.now(UTC).date() and digest.period_start is None
    assert digest.email_subject.startswith(f"Daily Digest {digest.digest_date} - 2 Success")
    assert digest.send_status == "pending" and digest.send_not_before is None


def test_sweepers_of_two_dates_at_once_still_cover_each_batch_once() -> None:
    """Around the hour one sweeper may pick today and another tomorrow: the batch goes to
    whichever digest claims its row first; the other digest is not created."""
    email = uploader()
    batch_id = closed_daily_batch(email)
    barrier = threading.Barrier(2)
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    def sweep(now: datetime | None) -> None:
        barrier.wait()
        create_due_digests(now=now)

    threads = [threading.Thread(target=sweep, args=(n,)) for n in (None, tomorrow)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (digest,) = digests_of(email)
    assert covered_by(batch_id) == digest.id and digest.batch_count == 1


def test_a_batch_closing_after_the_cut_off_goes_to_the_next_days_digest() -> None:
    email = uploader()
    early = closed_daily_batch(email)
    create_due_digests()
    (today,) = digests_of(email)
    late = closed_daily_batch(email)
    assert today.id not in create_due_digests()
    assert len(digests_of(email)) == 1 and covered_by(late) is None  # waits for tomorrow
    created = create_due_digests(now=datetime.now(UTC) + timedelta(days=1))
    _, tomorrow = digests_of(email)
    assert tomorrow.id in created
    assert (covered_by(early), covered_by(late)) == (today.id, tomorrow.id)
    assert tomorrow.digest_date == today.digest_date + timedelta(days=1)
    assert tomorrow.period_start == today.cut_off and tomorrow.batch_count == 1


def test_no_digest_before_the_users_hour() -> None:
    email = uploader()
    batch_id = closed_daily_batch(email, timezone="Europe/Berlin", digest_hour_local=8)
    day = datetime.now(UTC).date() + timedelta(days=3)
    due = digest_due(day, 8, BERLIN)
    create_due_digests(now=due - timedelta(seconds=1))
    assert not digests_of(email) and covered_by(batch_id) is None
    create_due_digests(now=due)
    (digest,) = digests_of(email)
    assert digest.digest_date == day and digest.timezone == "Europe/Berlin"


def test_a_digest_due_in_quiet_hours_is_held_until_they_end() -> None:
    from ingest.mail.digest import send_digest
    from tests.helpers import quiet_until

    email = uploader()
    quiet = quiet_until(600, "Asia/Kathmandu")
    closed_daily_batch(email, **quiet)
    create_due_digests()
    (digest,) = digests_of(email)
    end = digest.send_not_before
    assert end is not None and end > datetime.now(UTC)
    assert end.astimezone(ZoneInfo("Asia/Kathmandu")).strftime("%H:%M:%S") == quiet[
        "quiet_hours_end"]
    assert send_digest(digest.id, get_settings()).status == "nothing"


# --- content and sending ---------------------------------------------------------------------


def _mail_to(sink: Any, email: str) -> list[EmailMessage]:
    return [m for m in sink.messages if m["To"] == email]


def test_the_digest_has_true_totals_per_batch_sections_and_capped_lists(smtp_sink: Any
                                                                        ) -> None:
    from ingest.mail.digest import send_digest

    email = uploader()
    batches = [closed_daily_batch(email) for _ in range(3)]
    (digest_id,) = [d for d in create_due_digests() if d in {x.id for x in digests_of(email)}]
    settings = get_settings().model_copy(update={"email_list_cap": 2})
    assert send_digest(digest_id, settings).status == "sent"
    (message,) = wait_until(lambda: _mail_to(smtp_sink, email), 10)
    day = datetime.now(UTC).date()
    assert message["Subject"] == f"Daily Digest {day} - 3 Success, 0 Failed"
    assert message["Message-ID"] == f"<digest-{digest_id}@kb-ingest.test>"
    assert message["X-Digest-ID"] == str(digest_id) and message["X-Batch-ID"] is None
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "3 uploads finished" in text and "Succeeded:        3" in text
    assert "style=" in html and "Upload 2 of 2" in html
    # Two sections (the cap), the newest; the oldest is counted in the totals.
    assert str(batches[0]) not in text and str(batches[2]) in text
    assert "and 1 earlier upload, counted in the totals above" in text
    (row,) = digests_of(email)
    assert (row.send_status, row.send_attempts, row.message_id) == (
        "sent", 1, message["Message-ID"])
    assert send_digest(digest_id, settings).status == "nothing"  # once


def test_rendering_a_digest_costs_the_same_statements_for_one_batch_or_four() -> None:
    from ingest.mail.digest import load_digest
    from tests.test_status_page import StatementCounter

    counts = []
    for n in (1, 4):
        email = uploader()
        for _ in range(n):
            closed_daily_batch(email)
        create_due_digests()
        (digest,) = digests_of(email)
        with StatementCounter() as counter, session_scope() as s:
            summary, _ = load_digest(s, digest.id)
        assert len(summary.batches) == n
        counts.append(counter.count)
    assert counts[0] == counts[1] <= 5


def _due_digest() -> tuple[str, int]:
    email = uploader()
    closed_daily_batch(email)
    create_due_digests()
    (digest,) = digests_of(email)
    return email, digest.id


def _send_killed(digest_id: int, arm: Any) -> None:
    from tests.procs import killed_during

    killed_during("import sys\nfrom ingest.mail.digest import send_digest\n"
                  "from ingest.settings import get_settings\n"
                  "send_digest(int(sys.argv[1]), get_settings())\n", str(digest_id), arm)


def _redriven(digest_id: int) -> bool:
    from ingest.mail.digest import digests_to_redrive

    return digest_id in digests_to_redrive(timedelta(0), timedelta(0), timedelta(0))


def test_a_worker_killed_before_the_body_left_sends_the_digest_again_once(
    smtp_sink: Any
) -> None:
    from ingest.mail.digest import send_digest

    email, digest_id = _due_digest()
    _send_killed(digest_id, lambda kill: smtp_sink.reject_rcpt(451, before_reply=kill))
    (row,) = digests_of(email)
    assert (row.send_status, row.body_started_at) == ("sending", None)
    assert _redriven(digest_id)
    assert send_digest(digest_id, get_settings()).status == "sent"
    time.sleep(0.5)
    assert len(_mail_to(smtp_sink, email)) == 1


def test_a_worker_killed_after_the_body_left_never_sends_the_digest_twice(
    smtp_sink: Any, capsys: Any
) -> None:
    from ingest.cli import main

    email, digest_id = _due_digest()
    _send_killed(digest_id, smtp_sink.after_capture)
    (row,) = digests_of(email)
    assert row.send_status == "sending" and row.body_started_at is not None
    assert not _redriven(digest_id)
    (row,) = digests_of(email)
    assert row.send_status == "failed" and "outcome unknown" in row.error_message
    with session_scope() as s:
        (alert,) = s.execute(select(OperatorAlert).where(
            OperatorAlert.dedupe_key == f"email_failed:digest-{digest_id}")).scalars()
    assert f"ingest email resend-digest {digest_id}" in alert.body
    assert not _redriven(digest_id)  # settled once
    time.sleep(0.5)
    assert len(_mail_to(smtp_sink, email)) == 1
    # The user did not get it after all: the operator sends it once more.
    assert main(["email", "resend-digest", str(digest_id)]) == 0
    assert f"digest {digest_id}: sent" in capsys.readouterr().out
    assert len(wait_until(lambda: len(_mail_to(smtp_sink, email)) == 2
                          and _mail_to(smtp_sink, email), 10)) == 2
    assert main(["email", "resend-digest", str(digest_id)]) == 1


def test_the_batch_resend_leaves_a_digest_batch_to_its_digest(capsys: Any) -> None:
    from ingest.cli import main

    email = uploader()
    batch_id = closed_daily_batch(email)
    assert main(["email", "resend", str(batch_id)]) == 1
    (row,) = emails_of(batch_id)
    assert row.send_status == "skipped" and row.for_digest
    with session_scope() as s:
        assert s.execute(select(EmailNotificationLog.id).where(
            EmailNotificationLog.batch_id == batch_id)).scalar_one()


def test_the_status_page_and_the_cli_say_which_digest_covers_a_batch(web: str,
                                                                      capsys: Any) -> None:
    import json

    import requests

    from ingest.cli import main
    from ingest.status_view import BatchFilter, batch_detail, recent_batches
    from tests.conftest import STATUS_TOKEN

    email = uploader()
    batch_id = closed_daily_batch(email)
    with session_scope() as s:
        (row,) = recent_batches(s, BatchFilter(user_email=email)).items
    assert row.digest == "waiting for the daily digest"
    create_due_digests()
    (digest,) = digests_of(email)
    note = f"in the daily digest of {digest.digest_date} (pending)"
    with session_scope() as s:
        detail = batch_detail(s, batch_id)
        (row,) = recent_batches(s, BatchFilter(user_email=email)).items
    assert detail is not None and detail.batch.digest == row.digest == note
    assert detail.emails[0].digest == note and detail.emails[0].status == "skipped"
    page = requests.get(f"{web}/status/batches/{batch_id}", auth=("ops", STATUS_TOKEN),
                        timeout=10)
    assert page.status_code == 200 and note in page.text
    listing = requests.get(f"{web}/status", params={"user_email": email},
                           auth=("ops", STATUS_TOKEN), timeout=10)
    assert note in listing.text
    assert main(["status", "--digests", "--user", email, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["batches"], listed["status"]) == (digest.id, 1, "pending")

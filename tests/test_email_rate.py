"""Rate-limited summary e-mails end to end: real worker, Redis buckets, SMTP sink.

The issue's own test (300 e-mails to one domain at 60/min, about five minutes) is marked
``slow`` and runs with ``make test-rate``, not in ``make test``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from ingest.db import session_scope
from ingest.metrics import process_registry
from ingest.models import NotificationRetryLog
from ingest.names import TASK_CHECK_BATCH
from ingest.ratelimit import DOMAIN_KEY, Bucket, capacity, take
from ingest.redis_client import get_redis
from ingest.settings import get_settings
from tests.conftest import wait_until
from tests.helpers import emails_of, sealed_finished_batch

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture()
def rate_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``set(domain=…, overall=…)`` sets the limits the worker reads for this test."""
    def set_limits(domain: int, overall: int = 0) -> None:
        monkeypatch.setenv("EMAIL_RATE_PER_DOMAIN_PER_MINUTE", str(domain))
        monkeypatch.setenv("EMAIL_RATE_PER_MINUTE", str(overall))
        get_settings.cache_clear()

    yield set_limits
    get_settings.cache_clear()  # read again once monkeypatch has put the environment back


def fresh_domain() -> str:
    return f"rate-{uuid.uuid4().hex[:8]}.test"


def due_batches(domain: str, count: int) -> list[tuple[str, uuid.UUID]]:
    """``count`` uploaders at ``domain``, each with a batch due now (no task published)."""
    emails = [f"u{n:03d}@{domain}" for n in range(count)]
    return [(email, sealed_finished_batch(email)) for email in emails]


def publish(celery_app: Any, batches: list[tuple[str, uuid.UUID]]) -> None:
    """The worker closes each batch, which sends its e-mail."""
    for _, batch_id in batches:
        celery_app.send_task(TASK_CHECK_BATCH, args=[str(batch_id)])


def arrivals(sink: Any, domain: str) -> list[tuple[str, datetime]]:
    """(recipient, arrival) of every message the sink took for ``domain``, in order."""
    return sorted(((r, m.received_at) for m in list(sink.received) for r in m.recipients
                   if r.endswith("@" + domain)), key=lambda pair: pair[1])


def max_in_window(times: list[float], window: float) -> int:
    """The most arrivals in any ``window`` seconds (half-open, from an arrival)."""
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def deferred(limit: str) -> float:
    return process_registry().get_sample_value(
        "kb_ingest_email_deferred_total", {"limit": limit}) or 0.0


def retry_rows(batch_id: uuid.UUID) -> list[tuple[int, bool]]:
    with session_scope() as s:
        rows = s.execute(select(NotificationRetryLog.retry_attempt, NotificationRetryLog.success)
                         .where(NotificationRetryLog.batch_id == batch_id)).all()
    return [(r[0], r[1]) for r in rows]


def run_backlog(celery_app: Any, sink: Any, per_minute: int, count: int, timeout: float,
                meanwhile: Callable[[str], None] | None = None) -> list[float]:
    """``count`` e-mails to one fresh domain limited to ``per_minute``, all due at once:
    wait until every one arrived and is recorded sent, check them against the bucket and
    return their arrival times (seconds after the first). ``meanwhile(domain)`` runs once
    half of them are waiting for their turn."""
    domain = fresh_domain()
    batches = due_batches(domain, count)
    before = deferred("domain")
    publish(celery_app, batches)
    if meanwhile is not None:
        wait_until(lambda: deferred("domain") - before >= count // 2, 60, 0.2)
        meanwhile(domain)
    wait_until(lambda: len(arrivals(sink, domain)) >= count, timeout, 0.5)
    wait_until(lambda: all(emails_of(b)[0].send_status == "sent" for _, b in batches), 30, 0.5)
    time.sleep(1)  # a duplicate would come now
    got = arrivals(sink, domain)
    assert sorted(r for r, _ in got) == sorted(e for e, _ in batches)  # each exactly once
    times = [(at - got[0][1]).total_seconds() for _, at in got]
    rate, burst = per_minute / 60, capacity(per_minute)
    # Never faster than the bucket allows (one more for the SMTP conversation's jitter)...
    for window in (1, 5, 10, 20, 60):
        assert max_in_window(times, window) <= burst + rate * window + 1, (window, times)
    # ...and held back for real: the e-mails beyond the burst left at the rate.
    assert times[-1] >= (count - burst - 1) / rate * 0.95, times
    # A wait for the rate limit is no SMTP attempt: one attempt each, one success each.
    for _, batch_id in batches:
        (row,) = emails_of(batch_id)
        assert row.send_attempts == 1 and retry_rows(batch_id) == [(1, True)]
    # Most waited for their turn (not all of the rest: tokens come while the batches close).
    assert deferred("domain") - before >= count // 2
    return times


def test_one_domain_over_its_limit_leaves_at_the_rate_and_others_are_not_held_back(
    celery_app: Any, smtp_sink: Any, rate_limits: Any
) -> None:
    """40 e-mails to one domain at 60/min (10 at once, then one a second: about 30 s)
    under a global limit that does not bind; meanwhile another domain's leave at once."""
    rate_limits(domain=60, overall=600)
    other = fresh_domain()
    others = due_batches(other, 3)

    def meanwhile(domain: str) -> None:
        published = time.monotonic()
        publish(celery_app, others)
        wait_until(lambda: len(arrivals(smtp_sink, other)) == 3, 10, 0.1)
        assert time.monotonic() - published < 5
        assert len(arrivals(smtp_sink, domain)) < 30  # that domain still waits its turns

    run_backlog(celery_app, smtp_sink, 60, 40, timeout=90, meanwhile=meanwhile)
    for _, batch_id in others:
        (row,) = emails_of(batch_id)
        assert row.send_attempts == 1 and retry_rows(batch_id) == [(1, True)]


def test_a_deferred_email_is_no_attempt_and_the_sweeper_leaves_it_to_its_task(
    smtp_sink: Any,
) -> None:
    """Called directly (no task): the rate limit rolls the claim back, moves ``updated_at``
    to the e-mail's turn so the sweeper re-drives it only when that is overdue, and the SMTP
    retry window starts at the first real attempt, not at the wait's start."""
    from ingest.batches import check_batch
    from ingest.mail.send import emails_to_redrive, send_batch_email

    domain = fresh_domain()
    ((email, batch_id),) = due_batches(domain, 1)
    wait_until(lambda: check_batch(batch_id, get_settings()).email_pending, 10)
    settings = get_settings().model_copy(update={"email_rate_per_domain_per_minute": 6,
                                                 "smtp_retry_window_minutes": 0.02})
    full = Bucket("domain", DOMAIN_KEY + domain, 6)
    assert [take(get_redis(), [full]).wait for _ in range(2)] == [0, 0]  # 2 at once
    outcome = send_batch_email(batch_id, settings)
    assert outcome.status == "deferred" and 5 < outcome.retry_in <= 10.5
    (row,) = emails_of(batch_id)
    assert (row.send_status, row.send_attempts) == ("pending", 0)
    assert retry_rows(batch_id) == []

    def redriven(new_after: float) -> bool:
        return batch_id in emails_to_redrive(timedelta(seconds=new_after),
                                             timedelta(minutes=11), timedelta(minutes=15))

    assert not redriven(0)  # its task comes back at its turn
    assert redriven(-(outcome.retry_in + 1))  # as if its turn was 1 s ago and no task came
    # The wait outlasted the retry window (1.2 s) counted from the batch's close; the
    # window starts at the first attempt, so a refusal now is retried, not failed.
    time.sleep(1.5)
    unlimited = settings.model_copy(update={"email_rate_per_domain_per_minute": 0})
    smtp_sink.refuse_connections(1)
    assert send_batch_email(batch_id, unlimited).status == "retry"
    assert send_batch_email(batch_id, unlimited).status == "sent"
    assert retry_rows(batch_id) == [(1, False), (2, True)]
    assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_300_emails_to_one_domain_at_60_a_minute_all_arrive_at_that_rate(
    celery_app: Any, smtp_sink: Any, rate_limits: Any
) -> None:
    """Issue 14, part 3: 300 batch e-mails to one domain against a limit of 60/min."""
    rate_limits(domain=60)
    times = run_backlog(celery_app, smtp_sink, 60, 300, timeout=600)
    after_burst = times[10:]
    rate = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0]) * 60
    print(f"\n300 e-mails at 60/min: first arrival 0.0 s, last {times[-1]:.1f} s; "
          f"{rate:.1f}/min after the burst of {capacity(60):.0f}; overall "
          f"{(len(times) - 1) / times[-1] * 60:.1f}/min; most in any 60 s: "
          f"{max_in_window(times, 60)}; in any 10 s: {max_in_window(times, 10)}")

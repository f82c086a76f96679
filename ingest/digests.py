"""Daily digests: when they fall due and which batches each covers (issue 14, seed 003).

A user whose batch snapshot says ``frequency: daily`` gets no e-mail per batch: the batch
closes on time and its ``email_notification_log`` row is written ``skipped`` ("in the daily
digest", ``for_digest``). Once a day, one ``email_digests`` row per (company, bot,
recipient, local date) sums them up. The rules:

- **Due.** The digest of local date D falls due at ``digest_hour_local``:00 on D in the
  user's ``timezone`` (:func:`digest_due`): the first instant the local clock reads that
  hour or later. An hour a DST change skips (spring forward) is due when the clock jumps
  past it; an hour it repeats (fall back) is due at its first occurrence. Either way each
  local date has one due instant, so one digest.
- **Created** by the beat sweeper (:func:`create_due_digests`) for every user with batches
  waiting, once the user's local clock has reached the hour *today* (:func:`digest_date`)
  and today has no digest yet (the unique key; ``ON CONFLICT DO NOTHING``, so two sweepers
  create one). So there is at most one digest per local day and never one before the hour;
  what closes later that day waits for tomorrow's. A day with nothing waiting at the hour
  sends its digest at the first sweep after its first batch closes (rather than holding
  that batch for a day); before the hour, even yesterday's leftovers wait for it.
- **Covers** every batch of the user waiting for a digest that closed at or before the
  digest's cut-off (the instant it is created, the database clock): ``digest_id`` is set on
  those rows in the transaction that inserts the digest, so a batch is covered exactly once
  and a crash covers nothing. A batch that closes after the cut-off, or whose close commits
  after it, waits for the next date's digest: never dropped, never counted twice. The time
  zone, hour and quiet hours are those of the newest waiting batch's snapshot, so a user
  who switched back to ``immediate`` still gets the digest of what was waiting.
- **Quiet hours**: a digest created inside the user's quiet window is held until it ends
  (``send_not_before``, :func:`ingest.quiet_hours.deferred_until`), like a batch e-mail.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ingest.db import session_scope
from ingest.models import BatchProcessingSession, EmailDigest, EmailNotificationLog
from ingest.preferences import Preferences
from ingest.quiet_hours import deferred_until, zone

log = logging.getLogger(__name__)

#: The reason on a daily user's batch e-mail row (``skipped``, ``for_digest``).
DIGEST_REASON = "in the daily digest"


def digest_due(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """The UTC instant the digest of local ``day`` falls due: the first instant the local
    clock reads ``hour``:00 or later on that day (DST-safe, see the module docstring)."""
    naive = datetime.combine(day, time(hour))
    first, second = sorted(naive.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first  # exists (the first occurrence when it is repeated)
    return second  # skipped: the instant the clock jumps past it


def digest_date(now: datetime, hour: int, tz: ZoneInfo) -> date | None:
    """The local date whose digest may be created at ``now`` (aware): today once its
    digest hour has come, else None."""
    today = now.astimezone(tz).date()
    return today if digest_due(today, hour, tz) <= now else None


def _waiting(company_id: int | None = None, bot_id: int | None = None,
             email: str | None = None) -> list[Any]:
    """The WHERE of batch e-mail rows waiting for a digest (of one user when given)."""
    E = EmailNotificationLog
    where = [E.for_digest, E.digest_id.is_(None), E.send_status == "skipped"]
    if email is not None:
        where += [E.company_id == company_id, E.bot_id == bot_id, E.recipient_email == email]
    return where


def users_waiting(s: Session) -> list[Any]:
    """Users with batches waiting for a digest, one statement: ``company_id, bot_id,
    recipient_email``, ``snapshot`` (the newest waiting batch's preferences) and
    ``last_date`` (their latest digest's local date, or None)."""
    E, B, D = EmailNotificationLog, BatchProcessingSession, EmailDigest
    last_date = (select(func.max(D.digest_date))
                 .where(D.company_id == E.company_id, D.bot_id == E.bot_id,
                        D.recipient_email == E.recipient_email)
                 .correlate(E).scalar_subquery())
    return list(s.execute(
        select(E.company_id, E.bot_id, E.recipient_email,
               B.user_preferences_snapshot.label("snapshot"), last_date.label("last_date"))
        .join(B, B.batch_id == E.batch_id)
        .where(*_waiting())
        .distinct(E.company_id, E.bot_id, E.recipient_email)
        .order_by(E.company_id, E.bot_id, E.recipient_email, B.batch_end_time.desc())
    ).all())


def create_due_digests(limit: int = 500, *, now: datetime | None = None) -> list[int]:
    """Create every digest that is due (at most ``limit``); their ids, to send.

    Safe to run twice or concurrently: the unique key creates one digest per user and
    date, and a batch is covered by the first digest that claims its row. ``now`` (tests:
    another day) picks the dates; the cut-off is always the database clock.
    """
    with session_scope() as s:
        now = now or s.execute(select(func.now())).scalar_one()
        users = users_waiting(s)
    created = []
    for user in users:
        prefs = Preferences.model_validate(user.snapshot or {})
        tz = zone(prefs.timezone) or ZoneInfo("UTC")
        day = digest_date(now, prefs.digest_hour_local, tz)
        if day is None or (user.last_date is not None and user.last_date >= day):
            continue  # not the hour yet, or today's digest exists: wait for the next one
        digest_id = _create(user.company_id, user.bot_id, user.recipient_email, day, tz,
                            prefs)
        if digest_id is not None:
            created.append(digest_id)
            if len(created) >= limit:
                break
    return created


def _create(company_id: int, bot_id: int, email: str, day: date, tz: ZoneInfo,
            prefs: Preferences) -> int | None:
    """Insert the digest of ``day`` and cover the user's waiting batches, in one
    transaction; its id, or None when it exists already or nothing is left to cover."""
    from ingest.mail.render import digest_subject  # the subject is spelled in its template

    D, E, B = EmailDigest, EmailNotificationLog, BatchProcessingSession
    with session_scope() as s:
        previous = (select(func.max(D.cut_off))
                    .where(D.company_id == company_id, D.bot_id == bot_id,
                           D.recipient_email == email).scalar_subquery())
        row = s.execute(
            insert(D)
            .values(company_id=company_id, bot_id=bot_id, recipient_email=email,
                    digest_date=day, timezone=tz.key, period_start=previous,
                    cut_off=func.now(), email_subject="")
            .on_conflict_do_nothing(constraint="uq_digest_user_day")
            .returning(D.id, D.cut_off)
        ).first()
        if row is None:
            return None  # another sweeper made it
        covered = s.execute(
            update(E)
            .where(*_waiting(company_id, bot_id, email),
                   E.batch_id.in_(select(B.batch_id).where(B.batch_end_time <= row.cut_off)))
            .values(digest_id=row.id, updated_at=func.now())
            .returning(E.batch_id)
        ).scalars().all()
        if not covered:  # a concurrent digest of another date took them
            s.rollback()
            return None
        count, total, ok, failed = s.execute(
            select(func.count(), func.sum(B.total_files), func.sum(B.successful_files),
                   func.sum(B.failed_files)).where(B.batch_id.in_(covered))).one()
        s.execute(update(D).where(D.id == row.id).values(
            batch_count=count, total_files=total, successful_files=ok, failed_files=failed,
            email_subject=digest_subject(day, ok, failed),
            send_not_before=deferred_until(row.cut_off, prefs)))
    log.info("daily digest %s of %s created: %d batch(es)", row.id, day.isoformat(), count)
    return int(row.id)

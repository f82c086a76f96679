"""Quiet hours: when a summary that falls due may be sent (seed 004, issue 14).

A user's window is ``quiet_hours_start``–``quiet_hours_end`` in local wall-clock time of
their ``timezone`` (an IANA name), every day. :func:`deferred_until` answers, for the
instant a summary falls due, ``None`` (send now) or the instant the window ends (UTC). The
rules, all deterministic:

- **No window** when either time is missing or ``start == end``.
- **Crossing midnight**: ``start > end`` (22:00–07:00) is a window from ``start`` on one
  day to ``end`` on the next.
- **DST: the window is read at its widest.** A local time that occurs twice (fall-back,
  e.g. 02:30 on the last Sunday of October in Berlin) or never (spring-forward gap, 02:30 on
  the last Sunday of March) has two readings (``fold=0`` and ``fold=1``, PEP 495). A window
  *starts* at the earlier reading and *ends* at the later one, so a DST change never
  shortens quiet hours (it may lengthen them by the size of the shift, one hour):
  an end that occurs twice is its second occurrence; an end inside a gap is read with the
  offset before the jump, so 02:30 in a 02:00→03:00 gap ends at 03:30 summer time, never
  earlier than the window's true end; a start inside a gap begins with the offset after
  the jump (01:30 standard time).
- **Inside the window** means ``start ≤ due < end`` with both ends as instants; the
  window of the day before (it may cross midnight into today) and of the days around are
  all looked at, and the latest end of those that hold ``due`` wins.

An unusable time zone never blocks an e-mail: :func:`zone` answers None and the window is
ignored (``ingest.preferences`` already normalises it so).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from ingest.preferences import Preferences

#: ``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.fff`` (Strapi's ``time`` answers ``22:00:00.000``).
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d)(?:\.\d{1,6})?)?$")
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$")


def zone(name: Any) -> ZoneInfo | None:
    """The IANA time zone called ``name``, or None when it is not one."""
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name) or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def local_time(value: Any) -> time | None:
    """A wall-clock time of day from a ``time`` or a ``HH:MM[:SS[.fff]]`` string; None if
    it is neither (fractions of a second are dropped)."""
    if isinstance(value, time):
        return None if value.tzinfo is not None else value.replace(microsecond=0)
    if not isinstance(value, str) or (match := _TIME.fullmatch(value.strip())) is None:
        return None
    hour, minute, second = match.groups()
    return time(int(hour), int(minute), int(second or 0))


def _readings(day: date, at: time, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The earlier and the later UTC instant of a local wall-clock time (equal unless
    ``day``'s ``at`` is ambiguous or skipped by a DST change)."""
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return min(first, second), max(first, second)


def window_of(day: date, start: time, end: time, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The window that starts on local ``day``, as UTC instants ``[opens, closes)``."""
    opens = _readings(day, start, tz)[0]
    closes = _readings(day + timedelta(days=1) if end < start else day, end, tz)[1]
    return opens, closes


def deferred_until(due: datetime, prefs: Preferences) -> datetime | None:
    """When a summary due at ``due`` (aware) may be sent: None now, else the end of the
    user's quiet window that holds ``due``, in UTC."""
    if due.tzinfo is None:
        raise ValueError("due must be an aware datetime")
    start, end = prefs.quiet_hours_start, prefs.quiet_hours_end
    tz = zone(prefs.timezone)
    if start is None or end is None or start == end or tz is None:
        return None
    today = due.astimezone(tz).date()
    ends = [closes for offset in (-1, 0, 1)
            for opens, closes in [window_of(today + timedelta(days=offset), start, end, tz)]
            if opens <= due < closes]
    return max(ends) if ends else None


def describe(moment: datetime, timezone: str | None) -> str:
    """``2026-03-29 07:00 CEST Europe/Berlin (05:00 UTC)``: an instant in the user's zone
    and in UTC, as the status page and ``ingest status`` show a deferral."""
    tz = zone(timezone)
    utc = moment.astimezone(UTC)
    clock = "%H:%M:%S" if utc.second else "%H:%M"  # seconds only when there are any
    if tz is None or utc.astimezone(tz).tzname() == "UTC":
        return f"{utc.strftime('%Y-%m-%d ' + clock)} UTC"
    local = utc.astimezone(tz)
    when = utc.strftime(clock if local.date() == utc.date() else "%Y-%m-%d " + clock)
    return f"{local.strftime('%Y-%m-%d ' + clock)} {local.tzname()} {tz.key} ({when} UTC)"

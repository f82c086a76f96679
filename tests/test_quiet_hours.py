"""Quiet hours as a pure function (``ingest.quiet_hours``): windows, midnight, DST days.

DST dates used (asserted below, so a tzdata change cannot silently void a test):
Europe/Berlin springs forward 2026-03-29 at 01:00 UTC (02:00 CET → 03:00 CEST) and falls
back 2026-10-25 at 01:00 UTC (03:00 CEST → 02:00 CET); America/New_York springs forward
2026-03-08 at 07:00 UTC (02:00 EST → 03:00 EDT) and falls back 2026-11-01 at 06:00 UTC
(02:00 EDT → 01:00 EST).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from ingest.preferences import Preferences
from ingest.quiet_hours import deferred_until, describe, local_time, zone

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def prefs(tz: str | None, start: str | None, end: str | None) -> Preferences:
    return Preferences(timezone=tz, quiet_hours_start=start, quiet_hours_end=end)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_dst_dates_the_tests_rely_on() -> None:
    for tz, before, after in ((BERLIN, "2026-03-29T00:59", "2026-03-29T01:00"),
                              (BERLIN, "2026-10-25T00:59", "2026-10-25T01:00"),
                              (NEW_YORK, "2026-03-08T06:59", "2026-03-08T07:00"),
                              (NEW_YORK, "2026-11-01T05:59", "2026-11-01T06:00")):
        assert utc(before).astimezone(tz).utcoffset() != utc(after).astimezone(tz).utcoffset()


# --- no window -----------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [
    (None, None), ("22:00", None), (None, "07:00"), ("22:00", "22:00"), ("00:00", "00:00"),
])
def test_no_window(start: str | None, end: str | None) -> None:
    p = prefs("Europe/Berlin", start, end)
    assert (p.quiet_hours_start, p.quiet_hours_end) == (None, None)
    for hour in range(24):
        assert deferred_until(utc(f"2026-01-15T{hour:02d}:30"), p) is None


def test_due_must_be_aware() -> None:
    with pytest.raises(ValueError):
        deferred_until(datetime(2026, 1, 15, 3), prefs("UTC", "22:00", "07:00"))


# --- ordinary days -------------------------------------------------------------------------


@pytest.mark.parametrize(("due", "until"), [
    ("2026-01-15T08:59:59", None),
    ("2026-01-15T09:00:00", "2026-01-15T17:00:00"),
    ("2026-01-15T16:59:59", "2026-01-15T17:00:00"),
    ("2026-01-15T17:00:00", None),
    ("2026-01-15T23:00:00", None),
])
def test_a_window_within_one_day(due: str, until: str | None) -> None:
    got = deferred_until(utc(due), prefs("UTC", "09:00", "17:00"))
    assert got == (utc(until) if until else None)


@pytest.mark.parametrize(("local_due", "local_until"), [
    ("2026-01-15T21:59:59", None),
    ("2026-01-15T22:00:00", "2026-01-16T07:00:00"),  # starts: ends tomorrow morning
    ("2026-01-15T23:59:59", "2026-01-16T07:00:00"),
    ("2026-01-16T00:00:00", "2026-01-16T07:00:00"),  # past midnight: ends this morning
    ("2026-01-16T03:00:00", "2026-01-16T07:00:00"),
    ("2026-01-16T06:59:59", "2026-01-16T07:00:00"),
    ("2026-01-16T07:00:00", None),
    ("2026-01-16T12:00:00", None),
])
def test_a_window_crossing_midnight(local_due: str, local_until: str | None) -> None:
    p = prefs("Europe/Berlin", "22:00", "07:00")
    due = datetime.fromisoformat(local_due).replace(tzinfo=BERLIN)
    got = deferred_until(due, p)
    if local_until is None:
        assert got is None
    else:
        assert got == datetime.fromisoformat(local_until).replace(tzinfo=BERLIN)
        assert got.tzinfo is UTC  # always answered in UTC


def test_the_window_is_in_the_users_zone_not_utc() -> None:
    p = prefs("America/New_York", "22:00", "07:00")
    # 03:00 UTC is 22:00 in New York (EST, -5): quiet until 07:00 EST = 12:00 UTC.
    assert deferred_until(utc("2026-01-15T03:00"), p) == utc("2026-01-15T12:00")
    assert deferred_until(utc("2026-01-15T02:59"), p) is None
    assert deferred_until(utc("2026-01-15T23:00"), prefs("UTC", "22:00", "07:00")) == utc(
        "2026-01-16T07:00")


def test_seconds_count() -> None:
    p = prefs("Asia/Kathmandu", "10:00:00", "10:00:30")  # +05:45
    assert deferred_until(utc("2026-01-15T04:15:10"), p) == utc("2026-01-15T04:15:30")
    assert deferred_until(utc("2026-01-15T04:15:30"), p) is None


# --- DST: Europe/Berlin --------------------------------------------------------------------


@pytest.mark.parametrize(("due", "until"), [
    ("2026-03-28T22:00", "2026-03-29T01:30"),  # 23:00 CET, before the jump
    ("2026-03-29T00:50", "2026-03-29T01:30"),  # 01:50 CET
    ("2026-03-29T01:10", "2026-03-29T01:30"),  # 03:10 CEST: the clock passed 02:30 ...
    ("2026-03-29T01:30", None),                # 03:30 CEST: the window's widest end
])
def test_berlin_an_end_in_the_spring_forward_gap_is_read_before_the_jump(
    due: str, until: str | None
) -> None:
    """02:30 does not exist on 2026-03-29: the window ends at 02:30 read with the offset
    before the jump (+01:00) = 03:30 CEST, never before the clock shows 02:30's worth."""
    got = deferred_until(utc(due), prefs("Europe/Berlin", "22:00", "02:30"))
    assert got == (utc(until) if until else None)
    if got is not None:
        assert got.astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"


@pytest.mark.parametrize(("due", "until"), [
    ("2026-10-24T22:00", "2026-10-25T01:30"),  # 00:00 CEST
    ("2026-10-25T00:29", "2026-10-25T01:30"),  # 02:29 CEST, first pass
    ("2026-10-25T00:45", "2026-10-25T01:30"),  # 02:45 CEST, after the first 02:30
    ("2026-10-25T01:15", "2026-10-25T01:30"),  # 02:15 CET, second pass
    ("2026-10-25T01:30", None),                # the second 02:30
])
def test_berlin_an_ambiguous_end_is_its_second_occurrence(due: str, until: str | None) -> None:
    got = deferred_until(utc(due), prefs("Europe/Berlin", "22:00", "02:30"))
    assert got == (utc(until) if until else None)
    if got is not None:
        local = got.astimezone(BERLIN)
        assert (local.strftime("%H:%M %Z"), local.fold) == ("02:30 CET", 1)


def test_berlin_an_ambiguous_start_is_its_first_occurrence_so_the_window_has_no_hole() -> None:
    p = prefs("Europe/Berlin", "02:30", "06:00")
    # 02:10 CET (second pass) comes after the first 02:30 (CEST): already quiet.
    assert deferred_until(utc("2026-10-25T01:10"), p) == utc("2026-10-25T05:00")
    assert deferred_until(utc("2026-10-25T00:30"), p) == utc("2026-10-25T05:00")
    assert deferred_until(utc("2026-10-25T00:29"), p) is None


def test_berlin_a_start_in_the_gap_begins_with_the_offset_after_the_jump() -> None:
    p = prefs("Europe/Berlin", "02:30", "06:00")
    # 02:30 read at +02:00 is 00:30 UTC (01:30 CET): the widest reading.
    assert deferred_until(utc("2026-03-29T00:29"), p) is None
    assert deferred_until(utc("2026-03-29T00:30"), p) == utc("2026-03-29T04:00")
    assert deferred_until(utc("2026-03-29T01:00"), p) == utc("2026-03-29T04:00")  # 03:00 CEST


# --- DST: America/New_York, windows across midnight and the change ------------------------


def test_new_york_a_night_window_across_spring_forward_lasts_eight_hours() -> None:
    p = prefs("America/New_York", "22:00", "07:00")
    until = utc("2026-03-08T11:00")  # 07:00 EDT
    for due in ("2026-03-08T03:00", "2026-03-08T06:59", "2026-03-08T07:00", "2026-03-08T10:59"):
        assert deferred_until(utc(due), p) == until, due
    assert deferred_until(utc("2026-03-08T02:59"), p) is None  # 21:59 EST
    assert deferred_until(until, p) is None
    assert until - utc("2026-03-08T03:00") == timedelta(hours=8)


def test_new_york_a_night_window_across_fall_back_lasts_ten_hours() -> None:
    p = prefs("America/New_York", "22:00", "07:00")
    until = utc("2026-11-01T12:00")  # 07:00 EST
    for due in ("2026-11-01T02:00", "2026-11-01T05:30", "2026-11-01T06:30", "2026-11-01T11:59"):
        assert deferred_until(utc(due), p) == until, due
    assert until - utc("2026-11-01T02:00") == timedelta(hours=10)


def test_new_york_a_window_across_midnight_ending_in_the_repeated_hour() -> None:
    p = prefs("America/New_York", "23:00", "01:30")
    # 01:30 is 05:30 UTC (EDT) and again 06:30 UTC (EST): the window ends at the second.
    for due in ("2026-11-01T03:00", "2026-11-01T05:29", "2026-11-01T05:45", "2026-11-01T06:10"):
        assert deferred_until(utc(due), p) == utc("2026-11-01T06:30"), due
    assert deferred_until(utc("2026-11-01T06:30"), p) is None


def test_new_york_a_window_across_midnight_ending_in_the_gap() -> None:
    p = prefs("America/New_York", "23:00", "02:30")
    # 02:30 does not exist on 2026-03-08: read at -05:00, it is 07:30 UTC (03:30 EDT).
    for due in ("2026-03-08T04:00", "2026-03-08T06:59", "2026-03-08T07:10"):
        assert deferred_until(utc(due), p) == utc("2026-03-08T07:30"), due
    assert deferred_until(utc("2026-03-08T07:30"), p) is None


# --- every quarter hour around every change, in zones with odd shifts -----------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
         "Asia/Kathmandu", "America/Santiago")
WINDOWS = (("22:00", "07:00"), ("02:30", "03:30"), ("01:30", "02:30"), ("00:00", "02:30"),
           ("09:00", "17:00"), ("23:00", "01:30"), ("02:00", "02:15"))


def _wall_clock_quiet(due: datetime, tz: ZoneInfo, start: time, end: time) -> bool:
    """Inside the window by the clock on the wall (what a user means)."""
    at = due.astimezone(tz).time()
    return start <= at < end if start < end else (at >= start or at < end)


@pytest.mark.parametrize("name", ZONES)
@pytest.mark.parametrize(("start", "end"), WINDOWS)
def test_around_every_change_of_2026(name: str, start: str, end: str) -> None:
    """Every 5 minutes of the days around each offset change of 2026: never sent inside the
    window as the wall clock shows it, sent exactly at the end it gives, never before the
    end's local time has been reached."""
    tz, p = ZoneInfo(name), prefs(name, start, end)
    first, last = time.fromisoformat(start), time.fromisoformat(end)
    changes = [moment for moment in (utc("2026-01-01T00:00") + timedelta(hours=h)
                                     for h in range(365 * 24))
               if moment.astimezone(tz).utcoffset()
               != (moment - timedelta(hours=1)).astimezone(tz).utcoffset()]
    assert len(changes) in (0, 2), changes
    for change in changes or [utc("2026-06-01T00:00")]:
        for step in range(-36 * 12, 36 * 12):
            due = change + timedelta(minutes=5 * step)
            until = deferred_until(due, p)
            if _wall_clock_quiet(due, tz, first, last):
                assert until is not None, due  # no hole in the window
            if until is None:
                continue
            assert due < until <= due + timedelta(hours=25), due
            assert deferred_until(until, p) is None, due  # the end is outside the window
            local = until.astimezone(tz)
            # never before the clock reached the end; past it only by a skipped hour
            late = datetime.combine(local.date(), local.time()) - datetime.combine(
                local.date(), last)
            assert timedelta(0) <= late <= timedelta(hours=1), (due, until)


# --- values: never an error, never a held e-mail ------------------------------------------


@pytest.mark.parametrize(("value", "parsed"), [
    ("22:00", time(22)), ("22:00:00.000", time(22)), ("07:05:09", time(7, 5, 9)),
    ("07:05:09.123456", time(7, 5, 9)), (time(6, 30, 1, 5), time(6, 30, 1)),
    ("24:00", None), ("7:00", None), ("22h", None), ("", None), (None, None), (2200, None),
    ("22:00+01:00", None), (time(6, tzinfo=UTC), None),
])
def test_local_times(value: object, parsed: time | None) -> None:
    assert local_time(value) == parsed


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime",
                                  " UTC", "Europe/Berlin\x00", 42, "x" * 80])
def test_a_bad_zone_drops_the_window(name: object) -> None:
    """Read in the wrong zone, a window could hold mail at any hour of the user's day."""
    assert zone(name) is None
    p = Preferences(timezone=name, quiet_hours_start="00:00", quiet_hours_end="23:59")
    assert (p.timezone, p.quiet_hours_start, p.quiet_hours_end) == ("UTC", None, None)
    assert deferred_until(utc("2026-01-15T12:00"), p) is None


@pytest.mark.parametrize("name", ["", None])
def test_no_zone_is_utc(name: str | None) -> None:
    p = Preferences(timezone=name, quiet_hours_start="00:00", quiet_hours_end="23:59")
    assert (p.timezone, p.quiet_hours_start) == ("UTC", time(0))
    assert deferred_until(utc("2026-01-15T12:00"), p) == utc("2026-01-15T23:59")


def test_schedule_fields_are_normalised_and_survive_a_snapshot() -> None:
    p = Preferences(timezone="Europe/Berlin", quiet_hours_start="22:00:00.000",
                    quiet_hours_end="07:00", frequency="daily", digest_hour_local=6)
    snapshot = p.model_dump(mode="json")
    assert snapshot["quiet_hours_start"] == "22:00:00" and snapshot["frequency"] == "daily"
    assert Preferences.model_validate(snapshot) == p
    odd = Preferences(frequency="weekly", digest_hour_local=24)
    assert (odd.frequency, odd.digest_hour_local) == ("immediate", 8)
    for hour in (-1, True, "7", 7.5, None):
        assert Preferences(digest_hour_local=hour).digest_hour_local == 8
    # A snapshot taken before these fields existed: no quiet hours.
    old = Preferences.model_validate({"batch_size_threshold": 3, "email_format": "text"})
    assert (old.timezone, old.quiet_hours_start, old.frequency) == ("UTC", None, "immediate")


def test_describe() -> None:
    moment = utc("2026-03-29T05:00")
    assert describe(moment, "Europe/Berlin") == "2026-03-29 07:00 CEST Europe/Berlin (05:00 UTC)"
    assert describe(moment, "America/New_York") == (
        "2026-03-29 01:00 EDT America/New_York (05:00 UTC)")
    assert describe(utc("2026-03-29T23:30:15"), "Asia/Tokyo") == (
        "2026-03-30 08:30:15 JST Asia/Tokyo (2026-03-29 23:30:15 UTC)")
    assert describe(moment, "UTC") == describe(moment, "Nowhere/Land") == "2026-03-29 05:00 UTC"

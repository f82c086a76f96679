"""Quiet hours end to end: a real worker and a real beat (subprocesses, their own broker),
the CMS stand-in, the SMTP sink. No clock is frozen: the uploader's window (in their time
zone) began an hour ago and ends a few seconds from now, and ``BATCH_SWEEP_SECONDS=1``
stands in for the default 15 s sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devtools.samples import make_txt
from ingest.db import session_scope
from ingest.events import publish_then_mark_enqueued
from tests.conftest import TMP, wait_until
from tests.helpers import (
    closed,
    cms_file,
    emails_of,
    prefer,
    quiet_until,
    store_event,
    uploader,
)
from tests.procs import BROKER, ready, start_beat, start_worker, stop
from webhooks.publisher import Publisher

WINDOW_SECONDS = 20  # from setting the preference to the end of the quiet hours (room for a
# loaded machine: the file must be processed and two sweeps seen inside the window)
SWEEP_SECONDS = 1


def sweeps_done(log: Path) -> int:
    """How many sweeps the worker has finished (its log)."""
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if "kb_ingest.sweep_batches[" in line and "succeeded" in line)


def test_a_summary_due_in_quiet_hours_is_sent_once_when_they_end(
    s3_server: Any, cms: Any, smtp_sink: Any, chroma_server: str
) -> None:
    worker_log, beat_log = TMP / "quiet-worker.log", TMP / "quiet-beat.log"
    env = {"BATCH_SWEEP_SECONDS": str(SWEEP_SECONDS)}
    worker = start_worker(worker_log, 1, queues="ingest,notifications", **env)
    beat = start_beat(beat_log, **env)
    try:
        wait_until(lambda: ready(worker_log), 60, 0.2)
        email = uploader()
        quiet = quiet_until(WINDOW_SECONDS, "America/New_York")
        prefer(cms, email, batch_size_threshold=1, **quiet)
        entry = cms_file(cms, s3_server, "night-shift.txt", make_txt("Filed at night."),
                         user_email=email)
        event_id = store_event(entry)
        with session_scope() as s:
            publish_then_mark_enqueued(s, [event_id], Publisher(BROKER).publish_file_event)

        # The batch closes on time, counts final; its e-mail waits for the window's end.
        (batch,) = closed(email)
        assert (batch.status, batch.total_files, batch.successful_files) == ("completed", 1, 1)
        (row,) = emails_of(batch.batch_id)
        end = row.send_not_before
        assert end is not None, "the batch closed after the window ended: slow machine?"
        assert batch.batch_end_time < end
        local_end = end.astimezone(ZoneInfo(quiet["timezone"]))
        assert local_end.strftime("%H:%M:%S") == quiet["quiet_hours_end"]

        # During the window: sweeps run, the row stays pending and untried, nothing sent.
        swept = sweeps_done(worker_log)
        wait_until(lambda: sweeps_done(worker_log) >= swept + 2, 10, 0.1)
        (row,) = emails_of(batch.batch_id)
        assert datetime.now(UTC) < end, "the window ended before the sweeps were seen"
        assert (row.send_status, row.send_attempts) == ("pending", 0)
        assert not [m for m in smtp_sink.received if email in m.recipients]

        # When it ends: sent by the next sweep, once.
        sent = wait_until(lambda: [m for m in smtp_sink.received if email in m.recipients],
                          WINDOW_SECONDS + 20, 0.05)
        (message,) = sent
        late = message.received_at - end
        print(f"\nquiet hours ended {end:%H:%M:%S.%f} UTC; sent {late.total_seconds():.2f}s later")
        assert timedelta(0) <= late < timedelta(seconds=SWEEP_SECONDS + 5)
        after = sweeps_done(worker_log)
        wait_until(lambda: sweeps_done(worker_log) >= after + 2, 10, 0.1)
        assert len([m for m in smtp_sink.received if email in m.recipients]) == 1
        (row,) = emails_of(batch.batch_id)
        assert (row.send_status, row.send_attempts) == ("sent", 1)
        assert row.sent_at >= end
    finally:
        stop(worker)
        stop(beat)

"""The daily digest end to end: a real worker and a real beat (subprocesses, their own
broker), the CMS stand-in, the SMTP sink. No clock is frozen: the uploader's time zone is
one whose local hour right now is their ``digest_hour_local``, so the hour has come; beat
(``BATCH_SWEEP_SECONDS=1``) starts only once both batches have closed, so its first sweep
is the moment the digest falls due for them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from devtools.samples import make_corrupt_pdf, make_txt
from ingest.db import session_scope
from ingest.events import publish_then_mark_enqueued
from ingest.models import EmailDigest
from tests.conftest import TMP, wait_until
from tests.helpers import closed, cms_file, emails_of, prefer, store_event, uploader
from tests.procs import BROKER, ready, start_beat, start_worker, stop
from tests.test_quiet_hours_flow import sweeps_done
from webhooks.publisher import Publisher

ZONES = ("UTC", "Asia/Tokyo", "America/New_York", "Asia/Kathmandu")


def _zone_at_its_hour() -> tuple[str, int]:
    """A zone not within ten minutes of its midnight, and its local hour now."""
    for name in ZONES:
        local = datetime.now(UTC).astimezone(ZoneInfo(name))
        if 0 < local.hour * 60 + local.minute - 10 < 23 * 60 + 40:
            return name, local.hour
    raise AssertionError("unreachable: the zones are hours apart")


def _upload(cms: Any, s3: Any, email: str, name: str, data: bytes, mime: str) -> None:
    entry = cms_file(cms, s3, name, data, mime, user_email=email)
    event_id = store_event(entry)
    with session_scope() as s:
        publish_then_mark_enqueued(s, [event_id], Publisher(BROKER).publish_file_event)


def test_a_daily_user_gets_one_digest_of_both_batches_and_no_batch_email(
    s3_server: Any, cms: Any, smtp_sink: Any, chroma_server: str
) -> None:
    worker_log, beat_log = TMP / "digest-worker.log", TMP / "digest-beat.log"
    env = {"BATCH_SWEEP_SECONDS": "1"}
    worker = start_worker(worker_log, 1, queues="ingest,notifications,corrections", **env)
    beat = None
    try:
        wait_until(lambda: ready(worker_log), 60, 0.2)
        email = uploader()
        zone, hour = _zone_at_its_hour()
        prefer(cms, email, batch_size_threshold=1, frequency="daily", timezone=zone,
               digest_hour_local=hour)
        _upload(cms, s3_server, email, "morning.txt", make_txt("Morning notes."), "text/plain")
        first = closed(email)
        _upload(cms, s3_server, email, "broken.pdf", make_corrupt_pdf(), "application/pdf")
        batches = closed(email, 2)
        assert sorted(b.status for b in batches) == ["completed", "failed"]
        for batch in batches:  # closed on time, left to the digest: no e-mail task at all
            (row,) = emails_of(batch.batch_id)
            assert (row.send_status, row.for_digest, row.digest_id, row.send_attempts) == (
                "skipped", True, None, 0)
        assert first[0].batch_id in {b.batch_id for b in batches}
        assert not [m for m in smtp_sink.messages if m["To"] == email]

        beat = start_beat(beat_log, **env)
        (message,) = wait_until(
            lambda: [m for m in smtp_sink.messages if m["To"] == email], 60, 0.1)
        with session_scope() as s:
            (digest,) = s.execute(select(EmailDigest)
                                  .where(EmailDigest.recipient_email == email)).scalars()
        assert digest.send_status == "sent" and digest.timezone == zone
        assert digest.digest_date == datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
        assert message["Subject"] == f"Daily Digest {digest.digest_date} - 1 Success, 1 Failed"
        assert message["Message-ID"] == f"<digest-{digest.id}@kb-ingest.test>"
        text = message.get_body(("plain",)).get_content()
        assert "2 uploads finished" in text and "Total files:      2" in text
        assert "morning.txt" in text and "broken.pdf" in text
        assert "What to do:" in text  # the failure's suggestion, as in a batch summary
        for batch in batches:
            assert emails_of(batch.batch_id)[0].digest_id == digest.id

        # Later sweeps send nothing more.
        after = sweeps_done(worker_log)
        wait_until(lambda: sweeps_done(worker_log) >= after + 3, 15, 0.1)
        assert len([m for m in smtp_sink.messages if m["To"] == email]) == 1
    finally:
        stop(worker)
        if beat is not None:
            stop(beat)

"""Operator alert escalation: ADMIN_EMAIL and ALERT_URLS (Apprise), repeats until acked.

Alerts go to the SMTP sink and to a local HTTP receiver (an Apprise ``json://`` URL); the
sweeper's step (:func:`send_pending_alerts`) is called directly, with a repeat interval of
a few seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from devtools.http_receiver import HttpReceiver
from ingest.cli import main
from ingest.db import session_scope
from ingest.mail.alerts import EMAIL_FAILED, raise_alert, send_pending_alerts
from ingest.models import OperatorAlert
from ingest.settings import Settings, get_settings
from tests.conftest import wait_until

REPEAT_MINUTES = 0.04  # 2.4 s


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


def escalating(receiver: HttpReceiver, **changes: Any) -> Settings:
    return get_settings().model_copy(update={
        "alert_urls": f"json://127.0.0.1:{receiver.port}/alerts",
        "alert_repeat_minutes": REPEAT_MINUTES, "alert_max_repeats": 2, **changes})


def new_alert() -> tuple[int, str]:
    """A fresh alert; its id and the ref its subject carries."""
    ref = f"batch {uuid.uuid4()}"
    with session_scope() as s:
        raise_alert(s, EMAIL_FAILED, ref, ref, "The e-mail could not be delivered.\n")
        alert_id = s.execute(select(OperatorAlert.id).where(
            OperatorAlert.dedupe_key == f"{EMAIL_FAILED}:{ref}")).scalar_one()
    return alert_id, ref


def alert(alert_id: int) -> OperatorAlert:
    with session_scope() as s:
        return s.execute(select(OperatorAlert).where(OperatorAlert.id == alert_id)).scalar_one()


def posts(receiver: HttpReceiver, ref: str) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.accepted("/alerts") if ref in r.json()["title"]]


def mails(sink: Any, ref: str) -> list[Any]:
    return [m for m in sink.messages if ref in m["Subject"]]


def sweep_until(settings: Settings, done: Any, timeout: float = 10) -> None:
    """Run the sweeper's alert step until ``done()``."""
    def step() -> Any:
        send_pending_alerts(settings)
        return done()
    wait_until(step, timeout, 0.2)


def test_an_alert_repeats_until_acknowledged_on_email_and_alert_urls(
        smtp_sink: Any, receiver: HttpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    settings = escalating(receiver)
    alert_id, ref = new_alert()
    send_pending_alerts(settings)
    assert len(posts(receiver, ref)) == 1 and len(mails(smtp_sink, ref)) == 1
    post = posts(receiver, ref)[0]
    assert post["type"] == "failure" and f"ingest alerts ack {alert_id}" in post["message"]
    send_pending_alerts(settings)  # not due yet
    assert len(posts(receiver, ref)) == 1

    sweep_until(settings, lambda: len(posts(receiver, ref)) == 2)
    reminder = mails(smtp_sink, ref)[-1]
    assert "reminder 1 of 2" in reminder["Subject"] and len(mails(smtp_sink, ref)) == 2
    assert reminder["Message-ID"] != mails(smtp_sink, ref)[0]["Message-ID"]

    assert main(["alerts", "list", "--json"]) == 0
    assert f'"id": {alert_id}' in capsys.readouterr().out
    assert main(["alerts", "ack", str(alert_id), "--by", "oncall"]) == 0
    assert main(["alerts", "ack", str(alert_id)]) == 1  # once
    time.sleep(REPEAT_MINUTES * 60 * 2)
    send_pending_alerts(settings)
    assert len(posts(receiver, ref)) == 2 and alert(alert_id).acked_by == "oncall"


def test_an_unacknowledged_alert_is_repeated_at_most_max_repeats_times(
        smtp_sink: Any, receiver: HttpReceiver) -> None:
    settings = escalating(receiver)
    alert_id, ref = new_alert()
    sweep_until(settings, lambda: len(posts(receiver, ref)) == 3)  # the first and 2 repeats
    time.sleep(REPEAT_MINUTES * 60 * 2)
    send_pending_alerts(settings)
    assert len(posts(receiver, ref)) == 3 and len(mails(smtp_sink, ref)) == 3
    assert alert(alert_id).rounds == 3


def test_alert_urls_alone_or_failing_never_lose_the_other_path(
        smtp_sink: Any, receiver: HttpReceiver) -> None:
    # No ADMIN_EMAIL: ALERT_URLS alone carries it.
    alert_id, ref = new_alert()
    send_pending_alerts(escalating(receiver, admin_email=None))
    assert len(posts(receiver, ref)) == 1 and mails(smtp_sink, ref) == []
    assert alert(alert_id).status == "sent"

    # The channel answers 503: the e-mail still goes and the error is kept on the alert.
    alert_id, ref = new_alert()
    receiver.fail_next(503, times=1)
    send_pending_alerts(escalating(receiver, alert_max_repeats=0))
    row = alert(alert_id)
    assert row.status == "sent" and len(mails(smtp_sink, ref)) == 1
    assert "ALERT_URLS" in (row.error or "")

    # Neither configured: recorded as skipped, with the reason.
    alert_id, _ = new_alert()
    send_pending_alerts(escalating(receiver, admin_email=None, alert_urls=None))
    assert alert(alert_id).status == "skipped"
    assert "ALERT_URLS" in (alert(alert_id).error or "")

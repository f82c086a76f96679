"""Bot channels end to end: CMS settings → closed batch → Apprise → a local receiver.

Slack, Teams and the signed webhook post to :class:`devtools.http_receiver.HttpReceiver`
(HTTPS for Teams, whose Apprise plugin only speaks HTTPS). Slack's plugin has one fixed
host, so the test points its ``webhook_url`` class attribute at the receiver: Apprise's
code path is otherwise the one production runs.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from apprise.plugins.slack import NotifySlack
from sqlalchemy import select, text, update

from devtools.http_receiver import HttpReceiver
from ingest.cli import main
from ingest.db import session_scope
from ingest.models import (
    ChannelDelivery,
    ChannelDeliveryAttempt,
    EmailNotificationLog,
    OperatorAlert,
)
from ingest.notify.bot_settings import BotChannelStore, valid_targets
from ingest.notify.channels import parse_target
from ingest.notify.deliveries import deliver, deliveries_to_redrive, plan
from ingest.notify.signing import HEADER, IDEMPOTENCY_HEADER, sign, verify
from ingest.settings import get_settings
from tests.conftest import NOTIFY_SECRET, STATUS_TOKEN, wait_until
from tests.helpers import closed, envelope, file_entry, post, upload, uploader

SLACK_PATH = "/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"
_bots = itertools.count(500)


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def tls_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(tls=True) as r:
        yield r


@pytest.fixture
def slack_here(receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point Apprise's Slack webhook host at the receiver; the channel URL to configure."""
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{receiver.base_url}/slack")
    return f"https://hooks.slack.com/services{SLACK_PATH}"


def teams_url(tls: HttpReceiver) -> str:
    return f"workflows://127.0.0.1:{tls.port}/wf123/sig456/?verify=no"


def webhook_url(receiver: HttpReceiver, name: str) -> str:
    return f"json://127.0.0.1:{receiver.port}/hook/{name}"


def upload_batch(web: str, s3: Any, cms: Any, bot: int, email: str,
                 files: list[tuple[str, bytes]]) -> None:
    """One batch of ``files`` for ``email`` on company 42's ``bot``, sealed at its size."""
    cms.state.put_preference({"company_id": 42, "bot_id": bot, "user_email": email,
                              "batch_size_threshold": len(files),
                              "notification_delay_minutes": 5})
    for name, data in files:
        entry = file_entry(name, "text/plain", user_email=email, bot_id=bot)
        entry["storage_key"] = f"companies/42/bots/{bot}/{entry['documentId']}/f.txt"
        upload(s3, entry, data)
        assert post(web, envelope("entry.create", entry)).status_code == 202


def deliveries(batch_id: uuid.UUID) -> list[ChannelDelivery]:
    with session_scope() as s:
        return list(s.execute(select(ChannelDelivery).where(ChannelDelivery.batch_id == batch_id)
                              .order_by(ChannelDelivery.id)).scalars())


def attempts(delivery_id: int) -> list[ChannelDeliveryAttempt]:
    with session_scope() as s:
        return list(s.execute(select(ChannelDeliveryAttempt)
                              .where(ChannelDeliveryAttempt.delivery_id == delivery_id)
                              .order_by(ChannelDeliveryAttempt.id)).scalars())


def settled(batch_id: uuid.UUID, count: int, timeout: float = 60) -> list[ChannelDelivery]:
    """Wait until the batch has ``count`` deliveries, all sent or failed."""
    return wait_until(lambda: (rows := deliveries(batch_id)) and len(rows) == count
                      and all(r.status in ("sent", "failed") for r in rows) and rows, timeout)


def channel_alerts(batch_id: uuid.UUID) -> list[OperatorAlert]:
    with session_scope() as s:
        return list(s.execute(select(OperatorAlert).where(
            OperatorAlert.batch_id == batch_id, OperatorAlert.kind == "channel_failed")).scalars())


# --- the registry and the signature ------------------------------------------------------


def test_only_slack_teams_and_json_webhooks_are_accepted_and_labels_hide_secrets() -> None:
    slack = parse_target(f"https://hooks.slack.com/services{SLACK_PATH}")
    assert slack.kind == "slack" and "TIiajkdnlazkcOXrIdevi7" not in slack.label
    assert parse_target("workflows://host.example/wf/sig").kind == "teams"
    hook = parse_target("jsons://user:hunter22@hooks.example.com/in")
    assert hook.kind == "webhook" and "hunter22" not in hook.label
    for bad in ("mailto://u:p@gmail.com", "discord://a/b", "nonsense", "", 7, "x" * 2001):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_invalid_and_duplicate_channels_are_dropped_in_order(caplog: Any) -> None:
    urls = ["json://127.0.0.1:1/a", "discord://a/b", "json://127.0.0.1:1/a", 42,
            "workflows://h/wf/sig"]
    assert [t.kind for t in valid_targets(urls, 42, 1)] == ["webhook", "teams"]
    assert "channel #1 ignored" in caplog.text and "discord" not in caplog.text
    assert valid_targets("json://x", 42, 1) == [] and valid_targets(None, 42, 1) == []


def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    message = json.dumps({"batch_id": "b", "failed": 1})
    header = sign("k3y", message, timestamp=1_000_000)
    assert verify("k3y", header, message, now=1_000_100)
    assert not verify("k3y", header, message.replace("1}", "0}"), now=1_000_100)
    assert not verify("other", header, message, now=1_000_100)
    assert not verify("k3y", header, message, now=1_000_000 + 301)
    assert not verify("k3y", "garbage", message, now=1_000_000)


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_a_batch_reaches_the_email_slack_teams_and_the_signed_webhook_once_each(
        web: str, s3_server: Any, cms: Any, smtp_sink: Any, receiver: HttpReceiver,
        tls_receiver: HttpReceiver, slack_here: str) -> None:
    bot, email = next(_bots), uploader()
    hook = webhook_url(receiver, f"all-{bot}")
    cms.state.put_bot_setting(42, bot, [slack_here, teams_url(tls_receiver), hook,
                                        "discord://ignored/x"])
    upload_batch(web, s3_server, cms, bot, email,
                 [("<!channel> hi & bye.txt", b"alpha " * 50), ("b.txt", b"beta " * 50)])
    batch = closed(email)[0]
    rows = settled(batch.batch_id, 3)
    assert {r.channel: r.status for r in rows} == {"slack": "sent", "teams": "sent",
                                                  "webhook": "sent"}
    wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email], 30)

    slack = receiver.accepted(f"/slack{SLACK_PATH}")
    assert len(slack) == 1
    slack_text = json.dumps(slack[0].json())
    assert "&lt;!channel&gt; hi &amp; bye.txt" in slack_text and "<!channel>" not in slack_text
    assert "&amp;lt;" not in slack_text  # escaped once, by Apprise

    teams = tls_receiver.accepted("/workflows/wf123/")
    assert len(teams) == 1
    card = teams[0].json()["attachments"][0]["content"]["body"]
    assert "- b\\.txt \\(2 chunks\\)" in " ".join(b.get("text", "") for b in card)

    hooks = receiver.accepted(f"/hook/all-{bot}")
    assert len(hooks) == 1
    body = hooks[0].json()
    assert verify(NOTIFY_SECRET, hooks[0].headers[HEADER], body["message"])
    doc = json.loads(body["message"])
    assert doc["batch_id"] == str(batch.batch_id) and doc["succeeded"] == 2
    assert doc["failed"] == 0 and doc["bot_id"] == bot
    assert sorted(f["name"] for f in doc["successes"]) == ["<!channel> hi & bye.txt", "b.txt"]
    assert hooks[0].headers[IDEMPOTENCY_HEADER] == doc["idempotency_key"]
    # The README's verification snippet accepts the real post, and only with our secret.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?def verified_summary.*?)```", readme, re.S)
    assert snippet is not None
    scope: dict[str, Any] = {}
    exec(textwrap.dedent(snippet.group(1)), scope)  # noqa: S102 (our own README)
    assert scope["verified_summary"](hooks[0].body, hooks[0].headers[HEADER], NOTIFY_SECRET) == doc
    assert scope["verified_summary"](hooks[0].body, hooks[0].headers[HEADER], "wrong") is None

    # Closing or planning again adds nothing.
    assert plan(batch.batch_id, valid_targets([hook], 42, bot)) == []


@pytest.mark.usefixtures("worker")
def test_retries_deliver_exactly_once_and_a_dead_channel_never_blocks_the_others(
        web: str, s3_server: Any, cms: Any, smtp_sink: Any, receiver: HttpReceiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    bot, email = next(_bots), uploader()
    flaky, dead = webhook_url(receiver, f"flaky-{bot}"), webhook_url(receiver, f"dead-{bot}")
    cms.state.put_bot_setting(42, bot, [flaky, dead])
    receiver.fail_next(503, times=2)  # the first two posts, whichever channel they are for
    upload_batch(web, s3_server, cms, bot, email, [("c.txt", b"gamma " * 50)])
    batch = closed(email)[0]
    wait_until(lambda: len(receiver.accepted(f"/hook/flaky-{bot}"))
               + len(receiver.accepted(f"/hook/dead-{bot}")) == 2, 60)
    rows = settled(batch.batch_id, 2)
    assert all(r.status == "sent" for r in rows)
    assert sum(r.attempts for r in rows) == 4
    for row in rows:
        log = attempts(row.id)
        assert [a.success for a in log][-1] is True and len(log) == row.attempts
        assert all("HTTP 503" in (a.error_message or "") for a in log[:-1])
    keys = {r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests
            if r.path.startswith(f"/hook/flaky-{bot}")}
    assert len(keys) == 1  # every retry repeats the key

    # A channel answering 404 fails at once, alerts, and the e-mail still goes out.
    bot2, email2 = next(_bots), uploader()
    gone = webhook_url(receiver, f"gone-{bot2}")
    ok = webhook_url(receiver, f"ok-{bot2}")
    cms.state.put_bot_setting(42, bot2, [gone, ok])
    receiver.fail_next(404)
    upload_batch(web, s3_server, cms, bot2, email2, [("d.txt", b"delta " * 50)])
    batch2 = closed(email2)[0]
    rows2 = settled(batch2.batch_id, 2)
    statuses = sorted((r.status, r.attempts) for r in rows2)
    assert statuses == [("failed", 1), ("sent", 1)]
    failed = next(r for r in rows2 if r.status == "failed")
    assert "HTTP 404" in (failed.error_message or "")
    assert len(channel_alerts(batch2.batch_id)) == 1
    wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email2], 30)

    # The operator sees both on the status page and in ``ingest status``, and re-sends.
    page = requests.get(f"{web}/status/batches/{batch2.batch_id}", timeout=10,
                        headers={"Authorization": f"Bearer {STATUS_TOKEN}"}).text
    assert "Channels (2)" in page and "HTTP 404" in page and f"/hook/gone-{bot2}" in page
    assert main(["status", "--batch", str(batch2.batch_id)]) == 0
    shown = capsys.readouterr().out
    assert "Channels" in shown and "HTTP 404" in shown
    assert main(["channels", "resend", str(failed.id)]) == 0
    assert len(receiver.accepted(f"/hook/gone-{bot2}")) == 1
    assert main(["channels", "resend", str(failed.id)]) == 1  # sent now: nothing to re-send


@pytest.mark.usefixtures("worker")
def test_an_smtp_outage_does_not_hold_back_the_channels(
        web: str, s3_server: Any, cms: Any, smtp_sink: Any, receiver: HttpReceiver) -> None:
    bot, email = next(_bots), uploader()
    cms.state.put_bot_setting(42, bot, [webhook_url(receiver, f"smtp-down-{bot}")])
    smtp_sink.refuse_for(15)
    upload_batch(web, s3_server, cms, bot, email, [("e.txt", b"eps " * 50)])
    batch = closed(email)[0]
    rows = settled(batch.batch_id, 1)
    assert rows[0].status == "sent"
    with session_scope() as s:
        mail = s.execute(select(EmailNotificationLog.send_status).where(
            EmailNotificationLog.batch_id == batch.batch_id)).scalar_one()
    assert mail in ("pending", "sending")  # still retrying while the channel is done
    wait_until(lambda: [m for m in smtp_sink.messages if m["To"] == email], 60)


def test_duplicate_tasks_post_once_and_a_stale_sending_row_follows_its_channel_rule(
        receiver: HttpReceiver, slack_here: str) -> None:
    from ingest.batches import check_batch
    from tests.helpers import sealed_finished_batch

    settings = get_settings()
    email = uploader()
    batch_id = sealed_finished_batch(email)
    assert wait_until(lambda: check_batch(batch_id, settings).closed_status, 5) == "completed"
    hook = webhook_url(receiver, f"dup-{batch_id.hex[:8]}")
    ids = plan(batch_id, valid_targets([hook, slack_here], 42, 7))
    assert len(ids) == 2
    hook_id, slack_id = ids
    assert deliver(hook_id, settings).status == "sent"
    assert deliver(hook_id, settings).status == "nothing"
    assert len(receiver.accepted(f"/hook/dup-{batch_id.hex[:8]}")) == 1

    # A worker died while posting: the webhook is posted again (same key), Slack is not.
    with session_scope() as s:
        s.execute(update(ChannelDelivery).where(ChannelDelivery.id.in_(ids))
                  .values(status="sending", attempts=1,
                          updated_at=text("now() - interval '20 minutes'")))
    again = deliveries_to_redrive(new_after=timedelta(seconds=30),
                                  sending_after=timedelta(minutes=15))
    assert hook_id in again and slack_id not in again
    rows = {r.id: r for r in deliveries(batch_id)}
    assert rows[hook_id].status == "pending"
    assert rows[slack_id].status == "failed" and "outcome unknown" in rows[slack_id].error_message
    assert len(channel_alerts(batch_id)) == 1
    assert deliver(hook_id, settings).status == "sent"
    posted = receiver.accepted(f"/hook/dup-{batch_id.hex[:8]}")
    assert len(posted) == 2 and len({p.headers[IDEMPOTENCY_HEADER] for p in posted}) == 1


def test_without_a_secret_a_webhook_fails_instead_of_going_unsigned(
        receiver: HttpReceiver) -> None:
    from ingest.batches import check_batch
    from tests.helpers import sealed_finished_batch

    settings = get_settings().model_copy(update={"notify_webhook_secret": None})
    batch_id = sealed_finished_batch(uploader())
    wait_until(lambda: check_batch(batch_id, settings).closed_status, 5)
    path = f"/hook/unsigned-{batch_id.hex[:8]}"
    [delivery_id] = plan(batch_id, valid_targets([f"json://127.0.0.1:{receiver.port}{path}"],
                                                 42, 7))
    outcome = deliver(delivery_id, settings)
    assert outcome.status == "failed" and "NOTIFY_WEBHOOK_SECRET" in outcome.detail
    assert receiver.accepted(path) == []


def test_channel_lookup_uses_the_last_known_list_and_never_guesses_none(
        cms: Any, redis_server: str) -> None:
    import redis as redis_lib

    from ingest.adapters.cms import CmsClient
    from ingest.errors import TransientError

    bot = next(_bots)
    store = BotChannelStore(redis_lib.Redis.from_url(redis_server), CmsClient.from_settings(
        get_settings()), ttl_seconds=1)
    cms.state.fail_next("bot-settings", 503)
    with pytest.raises(TransientError):  # nothing known yet: the caller must retry
        store.channels(42, bot)
    cms.state.put_bot_setting(42, bot, ["json://127.0.0.1:1/x"])
    assert [t.kind for t in store.channels(42, bot)] == ["webhook"]
    wait_until(lambda: not store.redis.exists(f"kb-ingest:bot-channels:42:{bot}"), 5)
    cms.state.fail_next("bot-settings", 503)
    assert [t.kind for t in store.channels(42, bot)] == ["webhook"]  # the last-known list
    assert store.channels(42, next(_bots)) == []  # a bot without an entry has none

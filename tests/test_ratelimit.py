"""The token buckets of ``ingest.ratelimit`` on the test run's real Redis."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from ingest.metrics import process_registry
from ingest.ratelimit import (
    DOMAIN_KEY,
    Bucket,
    Turn,
    capacity,
    email_buckets,
    email_turn,
    recipient_domain,
    take,
)
from ingest.settings import Settings, get_settings
from tests.conftest import _free_port


@pytest.fixture()
def client(redis_server: str) -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def bucket(per_minute: float, name: str = "domain") -> Bucket:
    """A bucket of its own (a fresh key) at ``per_minute``."""
    return Bucket(name, f"test-rate:{uuid.uuid4().hex}", per_minute)


def limits(domain: int = 0, overall: int = 0) -> Settings:
    return get_settings().model_copy(update={"email_rate_per_minute": overall,
                                             "email_rate_per_domain_per_minute": domain})


def drain(client: redis.Redis, *buckets: Bucket) -> int:
    """Take until refused (that refusal books the next turn); how many were taken."""
    return len(drained(client, *buckets)[0])


def drained(client: redis.Redis, *buckets: Bucket) -> tuple[list[Turn], Turn]:
    """Take until refused: the turns taken and the refusal."""
    taken = []
    while (turn := take(client, buckets)).wait == 0:
        taken.append(turn)
    return taken, turn


def test_capacity_is_ten_seconds_of_the_rate_and_at_least_two() -> None:
    assert capacity(60) == 10
    assert capacity(600) == 100
    assert capacity(6) == 2 and capacity(1) == 2


def test_a_fresh_bucket_lets_its_capacity_through_then_says_when_the_next_token_comes(
    client: redis.Redis,
) -> None:
    b = bucket(600)  # 10 a second, 100 at once
    taken, refused = drained(client, b)
    assert len(taken) == 100
    assert 0 < refused.wait <= 0.1 + 0.01 and refused.refused_by == b


def test_after_the_burst_tokens_come_at_the_rate(client: redis.Redis) -> None:
    b = bucket(600)  # 10 a second
    drain(client, b)
    started, taken = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < 3:
        turn = take(client, [b])
        if turn.wait:
            time.sleep(turn.wait)
        else:
            taken += 1
    assert 10 * elapsed - 2 <= taken <= 10 * elapsed + 1


def test_refused_callers_get_successive_turns_instead_of_one_stampede(
    client: redis.Redis,
) -> None:
    b = bucket(60)  # one a second
    _, first = drained(client, b)
    waits = [first.wait] + [take(client, [b]).wait for _ in range(4)]
    for n, wait in enumerate(waits, start=1):
        assert n - 1 < wait <= n + 0.05, waits
    # A booking holds no token: the first token still goes to whoever asks when it comes.
    time.sleep(waits[0])
    assert take(client, [b]).wait == 0


def test_both_buckets_or_neither(client: redis.Redis) -> None:
    overall, domain, other = bucket(30, "global"), bucket(12), bucket(12)  # 5, 2, 2 at once
    assert drain(client, overall, domain) == 2
    refused = take(client, [overall, domain])
    assert refused.wait > 0 and refused.refused_by == domain
    # The refusal took no global token: three are left of five.
    assert drain(client, overall) == 3
    # Now the global bucket refuses, and the other domain keeps both of its tokens.
    refused = take(client, [overall, other])
    assert refused.wait > 0 and refused.refused_by == overall
    assert drain(client, other) == 2


def test_domains_have_buckets_of_their_own(client: redis.Redis) -> None:
    settings = limits(domain=12)  # 2 at once per domain, no global limit
    first, second = f"a-{uuid.uuid4().hex}.test", f"b-{uuid.uuid4().hex}.test"
    assert [email_turn(client, f"u{n}@{first}", settings).wait for n in range(2)] == [0, 0]
    assert email_turn(client, f"u3@{first.upper()}", settings).wait > 0  # same domain
    assert [email_turn(client, f"u{n}@{second}", settings).wait for n in range(2)] == [0, 0]


def test_zero_means_no_limit_and_no_redis_call() -> None:
    dead = redis.Redis(port=_free_port(), socket_connect_timeout=0.2)
    before = _unchecked()
    for _ in range(1000):
        assert email_turn(dead, "someone@example.com", limits()).wait == 0
    assert take(dead, [bucket(0), bucket(0, "global")]).wait == 0
    assert _unchecked() == before  # never asked Redis


def test_a_zero_bucket_beside_a_limited_one_leaves_the_limit_to_the_other(
    client: redis.Redis,
) -> None:
    assert drain(client, bucket(0, "global"), bucket(12)) == 2


def test_many_threads_at_once_never_take_more_than_the_bucket_holds(
    client: redis.Redis,
) -> None:
    b = bucket(120)  # 20 at once, 2 a second
    taken: list[int] = []
    start = threading.Barrier(16)

    def hammer() -> None:
        start.wait()
        taken.append(sum(take(client, [b]).wait == 0 for _ in range(40)))

    started = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert 20 <= sum(taken) <= 20 + 2 * elapsed, (sum(taken), elapsed)


def test_redis_down_fails_open_with_a_warning_and_a_count(caplog: Any) -> None:
    dead = redis.Redis(port=_free_port(), socket_connect_timeout=0.2)
    before = _unchecked()
    with caplog.at_level(logging.WARNING, logger="ingest.ratelimit"):
        turn = email_turn(dead, "someone@example.com", limits(domain=60, overall=100))
    assert turn.wait == 0
    assert _unchecked() == before + 1
    (record,) = [r for r in caplog.records if r.name == "ingest.ratelimit"]
    assert record.levelno == logging.WARNING and "example.com" not in record.getMessage()


def test_the_script_is_loaded_again_after_redis_forgot_it(client: redis.Redis) -> None:
    b = bucket(60)
    assert take(client, [b]).wait == 0
    client.script_flush()
    assert take(client, [b]).wait == 0


@pytest.mark.parametrize(("address", "domain"), [
    ("Alice@Example.COM", "example.com"),
    ('"odd@local"@Sub.Example.org', "sub.example.org"),
    ("bob@xn--exmple-cua.de", "xn--exmple-cua.de"),
])
def test_the_recipient_domain(address: str, domain: str) -> None:
    assert recipient_domain(address) == domain
    assert email_buckets(address, limits(domain=1))[1].key == DOMAIN_KEY + domain


def _unchecked() -> float:
    return process_registry().get_sample_value(
        "kb_ingest_email_rate_limit_unchecked_total") or 0.0

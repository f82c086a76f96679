"""Preferences over real HTTP (the Strapi stand-in) and a real Redis: cache, single flight,
fallback, clamping, invalidation (DESIGN §4 "Preferences", §7)."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import time as clock
from typing import Any

import pytest
import redis
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ingest.adapters.cms import CmsClient
from ingest.preferences import Preferences, PreferenceStore, cache_key, invalidate
from ingest.settings import Settings, get_settings
from tests.conftest import CMS_TOKEN

CALLS = "GET by-user"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user() -> tuple[int, int, str]:
    """Fresh (company, bot, e-mail) so tests never share cache keys or CMS entries."""
    return random.randint(10**6, 10**9), random.randint(10**6, 10**9), "Bob@Example.com"


def _settings() -> Settings:
    """Service defaults that differ from the CMS schema's (5 files / 30 minutes)."""
    return get_settings().model_copy(
        update={"default_batch_size_threshold": 7, "default_notification_delay_minutes": 0.25}
    )


@pytest.fixture()
def client(redis_server: str) -> redis.Redis:
    return redis.Redis.from_url(redis_server)


@pytest.fixture()
def make_store(client: redis.Redis, cms: Any) -> Callable[..., PreferenceStore]:
    def make(ttl_seconds: int = 300, *, cms_client: CmsClient | None = None,
             redis_client: redis.Redis | None = None, **kwargs: Any) -> PreferenceStore:
        return PreferenceStore(
            _settings(),
            redis_client if redis_client is not None else client,
            cms_client or CmsClient(cms.url, CMS_TOKEN, timeout=5),
            ttl_seconds,
            **kwargs,
        )

    return make


def _calls(cms: Any) -> int:
    return cms.state.calls[CALLS]


def _store_pref(cms: Any, company: int, bot: int, **fields: Any) -> dict[str, Any]:
    """Seed a stored preference without the stand-in's range validation."""
    return cms.state.put_preference(
        {"company_id": company, "bot_id": bot, "user_email": "bob@example.com", **fields}
    )


def test_stored_preferences_are_fetched_and_matched_case_insensitively(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, _ = _user()
    _store_pref(cms, company, bot, batch_size_threshold=100, notification_delay_minutes=1,
                email_format="text", include_error_details=False)
    store = make_store()
    before = _calls(cms)

    prefs = store.get(company, bot, "BOB@example.COM")

    assert prefs.source == "cms"
    assert (prefs.batch_size_threshold, prefs.notification_delay_minutes) == (100, 1)
    assert prefs.email_format == "text"
    assert prefs.include_error_details is False and prefs.include_success_details is True
    # Another spelling of the same address is the same cache entry.
    again = store.get(company, bot, " bob@example.com ")
    assert again.source == "cache"
    assert again.model_dump(exclude={"source"}) == prefs.model_dump(exclude={"source"})
    assert _calls(cms) - before == 1


@pytest.fixture()
def raw_cms() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """A CMS answering whatever (status, body) is queued (the stand-in validates ranges)."""
    answers: list[tuple[int, bytes]] = []

    @Request.application
    def app(request: Request) -> Response:
        status, body = answers.pop(0)
        return Response(body, status=status, content_type="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", answers
    server.shutdown()
    thread.join(5)


def test_out_of_range_cms_values_are_clamped(
    raw_cms: tuple[str, list[tuple[int, bytes]]], make_store: Callable[..., PreferenceStore]
) -> None:
    url, answers = raw_cms
    company, bot, email = _user()
    data = {"company_id": company, "bot_id": bot, "user_email": "bob@example.com",
            "notification_enabled": True, "batch_size_threshold": 500,
            "notification_delay_minutes": 0, "email_format": "text"}
    answers.append((200, json.dumps({"data": data, "cache_hit": False,
                                     "fallback_applied": False}).encode()))
    prefs = make_store(cms_client=CmsClient(url, CMS_TOKEN, timeout=5)).get(company, bot, email)
    assert prefs.source == "cms"
    assert (prefs.batch_size_threshold, prefs.notification_delay_minutes) == (100, 1)
    assert prefs.email_format == "text"
    assert not answers


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b'{"data": null}', b"[1, 2]"])
def test_malformed_cms_answer_falls_back(
    raw_cms: tuple[str, list[tuple[int, bytes]]], make_store: Callable[..., PreferenceStore],
    body: bytes,
) -> None:
    url, answers = raw_cms
    company, bot, email = _user()
    answers.append((200, body))
    prefs = make_store(cms_client=CmsClient(url, CMS_TOKEN, timeout=5)).get(company, bot, email)
    assert (prefs.source, prefs.batch_size_threshold) == ("defaults", 7)
    assert not answers


def test_out_of_range_low_and_invalid_values_are_clamped_or_defaulted() -> None:
    prefs = Preferences.from_cms(
        {"batch_size_threshold": 0, "notification_delay_minutes": 99999,
         "email_format": "pdf", "notification_enabled": "yes"},
        _settings(),
    )
    assert prefs.batch_size_threshold == 1
    assert prefs.notification_delay_minutes == 1440
    assert prefs.email_format == "html"
    assert prefs.notification_enabled is True
    bad = Preferences.from_cms({"batch_size_threshold": "many",
                                "notification_delay_minutes": float("nan")}, _settings())
    assert (bad.batch_size_threshold, bad.notification_delay_minutes) == (7, 0.25)


def test_schedule_fields_come_from_the_cms_and_are_cached(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, timezone="America/New_York", quiet_hours_start="22:00:00",
                quiet_hours_end="06:30:00", frequency="daily", digest_hour_local=6)
    store = make_store()
    prefs = store.get(company, bot, email)
    assert prefs.source == "cms"
    assert (prefs.timezone, prefs.quiet_hours_start, prefs.quiet_hours_end) == (
        "America/New_York", clock(22), clock(6, 30))
    assert (prefs.frequency, prefs.digest_hour_local) == ("daily", 6)
    cached = store.get(company, bot, email)
    assert cached.source == "cache"
    assert cached.model_dump(exclude={"source"}) == prefs.model_dump(exclude={"source"})


def test_bad_schedule_values_never_hold_an_email_back(
    raw_cms: tuple[str, list[tuple[int, bytes]]], make_store: Callable[..., PreferenceStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, answers = raw_cms
    store = make_store(cms_client=CmsClient(url, CMS_TOKEN, timeout=5))
    cases = [
        ({"timezone": "Mars/Olympus", "quiet_hours_start": "22:00:00.000",
          "quiet_hours_end": "07:00:00.000"}, ("UTC", None, None)),
        ({"timezone": "Europe/Berlin", "quiet_hours_start": "25:00",
          "quiet_hours_end": "07:00"}, ("Europe/Berlin", None, None)),
        ({"timezone": "Europe/Berlin", "quiet_hours_start": "22:00"},
         ("Europe/Berlin", None, None)),
        ({"timezone": None, "quiet_hours_start": "22:00", "quiet_hours_end": "07:00"},
         ("UTC", clock(22), clock(7))),
    ]
    for values, expected in cases:
        company, bot, email = _user()
        data = {"company_id": company, "bot_id": bot, "user_email": "bob@example.com",
                "frequency": "weekly", "digest_hour_local": 99, **values}
        answers.append((200, json.dumps({"data": data, "cache_hit": False,
                                         "fallback_applied": False}).encode()))
        with caplog.at_level(logging.WARNING, logger="ingest.preferences"):
            prefs = store.get(company, bot, email)
        assert prefs.source == "cms"
        assert (prefs.timezone, prefs.quiet_hours_start, prefs.quiet_hours_end) == expected
        assert (prefs.frequency, prefs.digest_hour_local) == ("immediate", 8)
    assert "Mars/Olympus" in caplog.text and "bob@example.com" not in caplog.text.lower()


def test_a_copy_cached_before_the_schedule_fields_is_still_used(
    cms: Any, client: redis.Redis, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    older = {"notification_enabled": True, "batch_size_threshold": 11,
             "notification_delay_minutes": 3, "email_format": "text",
             "include_success_details": True, "include_error_details": False,
             "source": "cms"}
    client.set(cache_key(company, bot, email), json.dumps(older), ex=60)
    before = _calls(cms)
    prefs = make_store().get(company, bot, email)
    assert (prefs.source, prefs.batch_size_threshold) == ("cache", 11)
    assert (prefs.timezone, prefs.quiet_hours_start) == ("UTC", None)
    assert _calls(cms) == before


def test_fallback_applied_means_the_service_defaults(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    prefs = make_store().get(company, bot, email)
    # The CMS answered its schema defaults (5 / 30) with fallback_applied: the service's own win.
    assert prefs.source == "defaults"
    assert prefs.batch_size_threshold == 7
    assert prefs.notification_delay_minutes == 0.25


def test_one_cms_call_per_ttl_under_load_and_concurrency(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=12)
    store = make_store()
    before = _calls(cms)
    barrier = threading.Barrier(20)
    results: list[Preferences] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(store.get(company, bot, email))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert len(results) == 20
    assert {p.batch_size_threshold for p in results} == {12}
    assert sorted(p.source for p in results).count("cms") == 1
    assert _calls(cms) - before == 1

    sources = {store.get(company, bot, email).source for _ in range(200)}
    assert sources == {"cache"}
    assert _calls(cms) - before == 1


def test_ttl_expiry_asks_the_cms_again(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    store = make_store(ttl_seconds=1)
    before = _calls(cms)
    assert store.get(company, bot, email).source == "defaults"
    assert store.get(company, bot, email).source == "cache"
    assert _calls(cms) - before == 1
    time.sleep(1.2)
    assert store.get(company, bot, email).source == "defaults"
    assert _calls(cms) - before == 2


def test_cms_503_uses_the_last_known_copy(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=42, email_format="text")
    store = make_store(ttl_seconds=1)
    assert store.get(company, bot, email).source == "cms"
    time.sleep(1.2)
    before = _calls(cms)
    cms.state.fail_next("by-user", 503, times=1)

    prefs = store.get(company, bot, email)

    assert prefs.source == "stale_cache"
    assert (prefs.batch_size_threshold, prefs.email_format) == (42, "text")
    assert _calls(cms) - before == 1
    # Right after a failure the CMS is left alone for a moment (the backoff).
    assert store.get(company, bot, email).source == "stale_cache"
    assert _calls(cms) - before == 1


def test_cms_503_without_a_copy_uses_defaults_and_recovers(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=33)
    store = make_store(failure_backoff_seconds=0.3)
    before = _calls(cms)
    cms.state.fail_next("by-user", 503, times=1)

    prefs = store.get(company, bot, email)

    assert prefs.source == "defaults"
    assert (prefs.batch_size_threshold, prefs.notification_delay_minutes) == (7, 0.25)
    time.sleep(0.4)
    recovered = store.get(company, bot, email)  # the failure was not cached
    assert (recovered.source, recovered.batch_size_threshold) == ("cms", 33)
    assert _calls(cms) - before == 2


def test_concurrent_misses_during_an_outage_make_one_call(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=55)
    # The failure marker outlives any scheduling delay of a loaded machine: a thread that
    # starts late must still see it rather than ask again once it expired.
    store = make_store(failure_backoff_seconds=600)
    before = _calls(cms)
    cms.state.fail_next("by-user", 503, times=1)  # a second call would succeed (source "cms")
    barrier = threading.Barrier(10)
    results: list[Preferences] = []

    def worker() -> None:
        barrier.wait()
        results.append(store.get(company, bot, email))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 10
    assert {p.source for p in results} == {"defaults"}
    assert _calls(cms) - before == 1


def test_unreachable_cms_gives_defaults_without_raising_or_leaking(
    make_store: Callable[..., PreferenceStore], caplog: pytest.LogCaptureFixture
) -> None:
    company, bot, email = _user()
    dead = CmsClient(f"http://127.0.0.1:{_closed_port()}", CMS_TOKEN, timeout=1)
    with caplog.at_level(logging.WARNING, logger="ingest.preferences"):
        prefs = make_store(cms_client=dead).get(company, bot, email)
    assert prefs.source == "defaults"
    assert prefs.batch_size_threshold == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert not any(email.lower() in w.lower() or CMS_TOKEN in w for w in warnings)


def test_error_answers_fall_back(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    before = _calls(cms)
    # Non-integer ids: Strapi answers 400 BadRequestError — a failure, not an exception.
    bad_ids: Any = "abc"
    assert make_store().get(bad_ids, bot, email).source == "defaults"
    assert _calls(cms) - before == 1
    # A wrong token (401) and a CMS without the custom route (404) are failures too.
    wrong_token = CmsClient(cms.url, "not-the-token", timeout=5)
    assert make_store(cms_client=wrong_token).get(company, bot, email).source == "defaults"
    no_route = CmsClient(f"{cms.url}/nope", CMS_TOKEN, timeout=5)
    assert make_store(cms_client=no_route).get(company + 1, bot, email).source == "defaults"


def test_unreadable_cached_entry_is_ignored(
    cms: Any, client: redis.Redis, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=9)
    client.set(cache_key(company, bot, email), "{}", ex=60)
    prefs = make_store().get(company, bot, email)
    assert (prefs.source, prefs.batch_size_threshold) == ("cms", 9)


def test_invalidate_makes_the_next_get_see_the_change(
    cms: Any, client: redis.Redis, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    entry = _store_pref(cms, company, bot, batch_size_threshold=10)
    store = make_store()
    before = _calls(cms)
    assert store.get(company, bot, email).batch_size_threshold == 10
    cms.state.put_preference({"documentId": entry["documentId"], "batch_size_threshold": 20})
    assert store.get(company, bot, email).batch_size_threshold == 10  # still cached
    assert _calls(cms) - before == 1

    assert invalidate(client, company, bot, "BOB@EXAMPLE.COM") is True
    assert invalidate(client, company, bot, email) is False  # nothing fresh left

    prefs = store.get(company, bot, email)
    assert (prefs.source, prefs.batch_size_threshold) == ("cms", 20)
    assert _calls(cms) - before == 2
    # The last-known copy survived the invalidation and now holds the new value.
    invalidate(client, company, bot, email)
    cms.state.fail_next("by-user", 503, times=1)
    stale = store.get(company, bot, email)
    assert (stale.source, stale.batch_size_threshold) == ("stale_cache", 20)


def test_invalidation_during_a_fetch_is_not_overwritten(
    cms: Any, client: redis.Redis, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=10)
    racing = CmsClient(cms.url, CMS_TOKEN, timeout=5)

    def webhook_arrives(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        invalidate(client, company, bot, email)  # the preference changed meanwhile

    racing.session.hooks["response"].append(webhook_arrives)
    prefs = make_store(cms_client=racing).get(company, bot, email)
    assert prefs.source == "cms"
    assert client.get(cache_key(company, bot, email)) is None  # the old answer was not cached


def test_redis_down_asks_the_cms_directly(
    cms: Any, make_store: Callable[..., PreferenceStore]
) -> None:
    company, bot, email = _user()
    _store_pref(cms, company, bot, batch_size_threshold=15)
    dead = redis.Redis(port=_closed_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    store = make_store(redis_client=dead)
    before = _calls(cms)

    first = store.get(company, bot, email)
    second = store.get(company, bot, email)

    assert (first.source, first.batch_size_threshold) == ("cms", 15)
    assert (second.source, second.batch_size_threshold) == ("cms", 15)
    assert _calls(cms) - before == 2  # nothing could be cached
    cms.state.fail_next("by-user", 503, times=1)
    assert store.get(company, bot, email).source == "defaults"

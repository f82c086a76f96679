"""User notification preferences: the model, its clamping, and the shared Redis cache.

Values come from the CMS route
``GET {CMS_API_URL}/api/user-notification-preferences/by-user/{company}/{bot}/{email}``, which
answers ``{data: {…}, cache_hit, fallback_applied}`` (seed 001's attributes). The rules
(DESIGN §4 "Preferences", §7):

- **Values.** CMS values are clamped to the seed's ranges (batch size 1–100, delay 1–1440
  minutes); a missing or invalid value takes the service's default. ``fallback_applied:
  true`` means the user has stored nothing: the service's own ``DEFAULT_*`` settings apply
  (which may be fractional minutes for demos), not the CMS's schema defaults.
- **Schedule** (issue 14): ``timezone`` (IANA name, default ``UTC``), ``quiet_hours_start``
  and ``quiet_hours_end`` (local times, ``HH:MM[:SS[.fff]]``; both or neither; equal = no
  window), ``frequency`` (``immediate``, or ``daily``: one digest a day, see
  ``ingest.digests``) and ``digest_hour_local`` (0–23, default 8). An invalid value never
  holds an e-mail back: an unknown time zone becomes ``UTC`` *and drops the window* (a
  window read in the wrong zone could hold mail at any hour of the user's day), an
  unreadable or half-given window is no window, a bad ``frequency`` is ``immediate``, a
  bad hour is 8. The rules apply wherever a ``Preferences`` is built (CMS answer, cache,
  batch snapshot), so an older snapshot or cached copy without these fields reads as "no
  quiet hours".
- **Cache.** :class:`PreferenceStore` keeps every answer in Redis, shared by all workers:
  a *fresh* copy (``cache_key(…)``, TTL ``ttl_seconds``, 5 minutes by default) served with
  ``source="cache"``, and a long-lived *last known* copy (``…:stale``, 7 days). So the CMS is
  asked at most once per user per TTL.
- **Single flight.** On a miss only the holder of a short per-user lock (``SET …:lock NX
  PX``) asks the CMS; the others poll the fresh key for about the CMS timeout and use what
  the holder cached.
- **Failure.** A CMS failure (connection error, timeout, non-200, malformed body) never
  raises: the last-known copy is used (``source="stale_cache"``), else the defaults; a
  warning is logged (no e-mail address, no token). For ``failure_backoff_seconds`` after a
  failure that user's lookups fall back at once instead of asking a CMS that just failed
  (waiters included), so an outage does not stall every worker for a full timeout.
- **Redis down.** Processing goes on: the CMS is asked directly, nothing is cached, and a
  CMS failure then falls back to the defaults.
- **Invalidation.** :func:`invalidate` (a preference webhook) drops the fresh copy and the
  failure marker, and bumps a per-user generation so that a lookup already in flight with
  the old value does not cache it. The last-known copy stays as the stale fallback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from datetime import time as Time
from typing import Any, Literal
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from redis import Redis, RedisError, WatchError
from redis.exceptions import LockError
from redis.lock import Lock

from ingest.adapters.cms import CmsClient
from ingest.errors import IngestError, PermanentError, TransientError
from ingest.quiet_hours import local_time, zone
from ingest.settings import Settings

log = logging.getLogger(__name__)

CACHE_PREFIX = "kb-ingest:prefs"
BATCH_SIZE_RANGE = (1, 100)
DELAY_MINUTES_RANGE = (1, 1440)
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DIGEST_HOUR = 8
FREQUENCIES = ("immediate", "daily")
#: Fields added after copies were cached and snapshotted: absent from an older copy, they
#: take their defaults instead of making the copy unreadable.
SCHEDULE_FIELDS = frozenset({"timezone", "quiet_hours_start", "quiet_hours_end", "frequency",
                             "digest_hour_local"})

DEFAULT_TTL_SECONDS = 300
STALE_TTL_SECONDS = 7 * 24 * 3600
GENERATION_TTL_SECONDS = 24 * 3600
MIN_LOCK_SECONDS = 10.0
POLL_SECONDS = 0.05
BY_USER_PATH = "/api/user-notification-preferences/by-user"


def _clamp(value: float, bounds: tuple[int, int]) -> float:
    return min(max(value, bounds[0]), bounds[1])


class Preferences(BaseModel):
    """One user's notification settings, as snapshotted on a batch.

    ``source`` tells where they came from: ``cms`` (asked now), ``cache`` (fresh cached copy),
    ``stale_cache`` (last-known copy, the CMS failed) or ``defaults`` (``DEFAULT_*`` settings).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    notification_enabled: bool = True
    batch_size_threshold: int = 5
    notification_delay_minutes: float = 30
    email_format: Literal["html", "text"] = "html"
    include_success_details: bool = True
    include_error_details: bool = True
    timezone: str = DEFAULT_TIMEZONE
    quiet_hours_start: Time | None = None
    quiet_hours_end: Time | None = None
    frequency: Literal["immediate", "daily"] = "immediate"
    digest_hour_local: int = DEFAULT_DIGEST_HOUR
    source: Literal["cms", "cache", "stale_cache", "defaults"] = "defaults"

    @field_validator("email_format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        return value if value in ("html", "text") else "html"

    @model_validator(mode="before")
    @classmethod
    def _schedule(cls, data: Any) -> Any:
        """Normalise the schedule fields (see the module docstring): never an error."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        start = local_time(data.get("quiet_hours_start"))
        end = local_time(data.get("quiet_hours_end"))
        name = data.get("timezone")
        if name is None or name == "":
            name = DEFAULT_TIMEZONE
        if zone(name) is None:
            name, start, end = DEFAULT_TIMEZONE, None, None
        if start is None or end is None or start == end:
            start = end = None
        hour = data.get("digest_hour_local", DEFAULT_DIGEST_HOUR)
        if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
            hour = DEFAULT_DIGEST_HOUR
        data.update(timezone=name, quiet_hours_start=start, quiet_hours_end=end,
                    digest_hour_local=hour,
                    frequency=data.get("frequency") if data.get("frequency") in FREQUENCIES
                    else "immediate")
        return data

    @classmethod
    def defaults(cls, settings: Settings) -> Preferences:
        """The service's own defaults (``DEFAULT_*`` settings)."""
        return cls(
            notification_enabled=settings.enable_email_notifications,
            batch_size_threshold=settings.default_batch_size_threshold,
            notification_delay_minutes=settings.default_notification_delay_minutes,
            source="defaults",
        )

    @classmethod
    def from_cms(cls, data: dict[str, Any], settings: Settings) -> Preferences:
        """Validate and clamp a CMS entry to the seed's ranges (bad values → defaults)."""
        base = cls.defaults(settings)

        def number(name: str, bounds: tuple[int, int], fallback: float) -> float:
            value = data.get(name)
            if isinstance(value, bool):
                return fallback
            try:
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return fallback
            return _clamp(number, bounds) if math.isfinite(number) else fallback

        def flag(name: str, fallback: bool) -> bool:
            value = data.get(name)
            return value if isinstance(value, bool) else fallback

        if zone(data.get("timezone") or DEFAULT_TIMEZONE) is None:
            log.warning("ignoring the quiet hours of a preference entry: %r is not an IANA "
                        "time zone", str(data.get("timezone"))[:64])
        return cls(
            timezone=data.get("timezone"),
            quiet_hours_start=data.get("quiet_hours_start"),
            quiet_hours_end=data.get("quiet_hours_end"),
            frequency=data.get("frequency"),
            digest_hour_local=data.get("digest_hour_local"),
            notification_enabled=flag("notification_enabled", True)
            and settings.enable_email_notifications,
            batch_size_threshold=int(number("batch_size_threshold", BATCH_SIZE_RANGE,
                                            base.batch_size_threshold)),
            notification_delay_minutes=number("notification_delay_minutes",
                                              DELAY_MINUTES_RANGE,
                                              base.notification_delay_minutes),
            email_format=data.get("email_format", "html"),
            include_success_details=flag("include_success_details", True),
            include_error_details=flag("include_error_details", True),
            source="cms",
        )


def cache_key(company_id: int, bot_id: int, user_email: str) -> str:
    """The Redis key of one user's cached preferences (e-mail case-insensitive, hashed)."""
    digest = hashlib.sha256(user_email.strip().lower().encode()).hexdigest()[:32]
    return f"{CACHE_PREFIX}:{company_id}:{bot_id}:{digest}"


def _stale_key(key: str) -> str:
    return key + ":stale"


def _lock_key(key: str) -> str:
    return key + ":lock"


def _failed_key(key: str) -> str:
    return key + ":failed"


def _generation_key(key: str) -> str:
    return key + ":gen"


def invalidate(redis: Redis, company_id: int, bot_id: int, user_email: str) -> bool:
    """Drop the fresh cached copy; True if there was one.

    The last-known copy is kept as the stale fallback. The failure marker is dropped too, and
    the user's generation bumped so a lookup in flight does not re-cache the old value.
    """
    key = cache_key(company_id, bot_id, user_email)
    pipe = redis.pipeline(transaction=True)
    pipe.incr(_generation_key(key))
    pipe.expire(_generation_key(key), GENERATION_TTL_SECONDS)
    pipe.delete(key)
    pipe.delete(_failed_key(key))
    return bool(pipe.execute()[2])


def _decode(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse_cached(raw: bytes | str | None) -> Preferences | None:
    """A cached copy, or None when absent or not a complete :class:`Preferences` dump."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not (
                set(Preferences.model_fields) - SCHEDULE_FIELDS <= set(data)):
            raise ValueError("incomplete preferences")
        return Preferences.model_validate(data)
    except (ValueError, ValidationError):
        log.warning("ignoring an unreadable cached preferences entry")
        return None


def _fetch_from_cms(
    cms: CmsClient, company_id: int, bot_id: int, user_email: str
) -> tuple[dict[str, Any], bool]:
    """``(data, fallback_applied)`` from the CMS; :class:`IngestError` on any failure.

    Error messages carry neither the e-mail address nor the token.
    """
    url = f"{cms.base_url}{BY_USER_PATH}/{company_id}/{bot_id}/{quote(user_email, safe='')}"
    try:
        response = cms.session.get(url, timeout=cms.timeout)
    except requests.RequestException as exc:
        raise TransientError(f"CMS unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        # Like CmsClient: 5xx, throttling and auth (an operator fixes it) may pass; the rest won't.
        transient = response.status_code >= 500 or response.status_code in (401, 403, 408, 429)
        error = TransientError if transient else PermanentError
        raise error(f"CMS answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise PermanentError("CMS answered 200 without JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise PermanentError("CMS answered 200 without a preference entry")
    return data, body.get("fallback_applied") is True


class PreferenceStore:
    """Preferences per (company, bot, e-mail): Redis cache, single-flight CMS fetch, fallback.

    Thread-safe and shared-nothing apart from Redis: create one per process and call
    :meth:`get` from any thread or worker.
    """

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        cms: CmsClient,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        stale_ttl_seconds: int = STALE_TTL_SECONDS,
        failure_backoff_seconds: float = 5.0,
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be >= 1")
        self.settings = settings
        self.redis = redis
        self.cms = cms
        self.ttl_seconds = ttl_seconds
        self.stale_ttl_seconds = max(stale_ttl_seconds, ttl_seconds)
        self.failure_backoff_seconds = failure_backoff_seconds
        # requests applies the timeout to connect and to read: a fetch may take twice as long.
        self.lock_seconds = max(MIN_LOCK_SECONDS, 2 * cms.timeout + 1)
        self.wait_seconds = cms.timeout + 1

    def get(self, company_id: int, bot_id: int, user_email: str) -> Preferences:
        """The user's preferences; never raises for a CMS or Redis failure."""
        email = user_email.strip()
        try:
            return self._get_cached(company_id, bot_id, email)
        except RedisError as exc:
            # Only raised before the CMS was asked (see _refresh), so this asks it once.
            log.warning("preferences cache unavailable (%s); asking the CMS directly",
                        type(exc).__name__)
        try:
            return self._from_cms(company_id, bot_id, email)
        except IngestError as exc:
            self._log_failure(company_id, bot_id, exc)
            return Preferences.defaults(self.settings)

    # -- cached path ---------------------------------------------------------------------------

    def _get_cached(self, company_id: int, bot_id: int, email: str) -> Preferences:
        key = cache_key(company_id, bot_id, email)
        cached = self._read_fresh(key)
        if cached is not None:
            return cached
        if self.redis.exists(_failed_key(key)):
            return self._fallback(key)
        lock = self.redis.lock(_lock_key(key), timeout=self.lock_seconds, blocking=False)
        if lock.acquire():
            return self._refresh_locked(key, lock, company_id, bot_id, email)
        return self._wait_for_holder(key, company_id, bot_id, email)

    def _read_fresh(self, key: str) -> Preferences | None:
        cached = _parse_cached(self.redis.get(key))
        return cached.model_copy(update={"source": "cache"}) if cached else None

    def _wait_for_holder(self, key: str, company_id: int, bot_id: int, email: str) -> Preferences:
        """Another worker is asking the CMS: use what it caches, or take over if it left."""
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            cached = self._read_fresh(key)
            if cached is not None:
                return cached
            if self.redis.exists(_failed_key(key)):
                break
            lock = self.redis.lock(_lock_key(key), timeout=self.lock_seconds, blocking=False)
            if lock.acquire():  # the holder finished without caching, or its lock expired
                return self._refresh_locked(key, lock, company_id, bot_id, email)
        else:
            log.warning("gave up waiting %.1fs for another worker's preferences lookup "
                        "(company %s bot %s)", self.wait_seconds, company_id, bot_id)
        return self._fallback(key)

    def _refresh_locked(
        self, key: str, lock: Lock, company_id: int, bot_id: int, email: str
    ) -> Preferences:
        try:
            cached = self._read_fresh(key)  # cached between our miss and our lock
            if cached is not None:
                return cached
            return self._refresh(key, company_id, bot_id, email)
        finally:
            # Expired (it only guards against a stampede) or Redis went away: nothing to do.
            with contextlib.suppress(LockError, RedisError):
                lock.release()

    def _refresh(self, key: str, company_id: int, bot_id: int, email: str) -> Preferences:
        """Ask the CMS (we hold the lock) and cache the answer; fall back on failure.

        A RedisError may only escape before the CMS is asked.
        """
        generation = self.redis.get(_generation_key(key))
        try:
            prefs = self._from_cms(company_id, bot_id, email)
        except IngestError as exc:
            self._log_failure(company_id, bot_id, exc)
            self._mark_failed(key)
            return self._fallback(key)
        self._store(key, prefs, generation)
        return prefs

    def _store(self, key: str, prefs: Preferences, generation: bytes | str | None) -> None:
        """Cache the fresh and last-known copies, unless invalidated since ``generation``."""
        payload = prefs.model_dump_json()
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.watch(_generation_key(key))
                if _decode(pipe.get(_generation_key(key))) != _decode(generation):
                    log.info("preferences changed while fetching; not caching the old answer")
                    return
                pipe.multi()
                pipe.set(key, payload, ex=self.ttl_seconds)
                pipe.set(_stale_key(key), payload, ex=self.stale_ttl_seconds)
                pipe.delete(_failed_key(key))
                pipe.execute()
        except WatchError:
            log.info("preferences changed while fetching; not caching the old answer")
        except RedisError as exc:
            log.warning("could not cache preferences (%s)", type(exc).__name__)

    def _mark_failed(self, key: str) -> None:
        if self.failure_backoff_seconds <= 0:
            return
        backoff_ms = max(1, int(self.failure_backoff_seconds * 1000))
        with contextlib.suppress(RedisError):
            self.redis.set(_failed_key(key), "1", px=backoff_ms)

    def _fallback(self, key: str) -> Preferences:
        """The last-known copy (``stale_cache``), else the defaults."""
        try:
            stale = _parse_cached(self.redis.get(_stale_key(key)))
        except RedisError:
            stale = None
        if stale is not None:
            return stale.model_copy(update={"source": "stale_cache"})
        return Preferences.defaults(self.settings)

    # -- CMS -----------------------------------------------------------------------------------

    def _from_cms(self, company_id: int, bot_id: int, email: str) -> Preferences:
        data, fallback_applied = _fetch_from_cms(self.cms, company_id, bot_id, email)
        if fallback_applied:
            return Preferences.defaults(self.settings)
        return Preferences.from_cms(data, self.settings)

    @staticmethod
    def _log_failure(company_id: int, bot_id: int, exc: IngestError) -> None:
        log.warning("preferences of a user of company %s bot %s unavailable from the CMS (%s); "
                    "using the last-known copy or the defaults", company_id, bot_id, exc)

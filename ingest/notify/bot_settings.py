"""A bot's notification channels, from the CMS's ``bot-notification-setting`` entries.

Read with ``GET {CMS_API_URL}/api/bot-notification-settings?filters[company_id][$eq]=…&
filters[bot_id][$eq]=…`` (Strapi 5's REST API; the entry's ``notification_channels`` is a
JSON list of Apprise URLs). Like the preferences (``ingest.preferences``), answers are kept
in Redis, shared by every worker: a fresh copy for ``ttl_seconds`` (the preferences' TTL)
and a last-known copy for seven days.

The difference is what a failure means. A preference lookup may fall back to defaults; a
channel lookup must not, because "no channels" would silently drop the team's
notifications. So when the CMS fails and no last-known copy exists, :meth:`channels`
raises :class:`~ingest.errors.TransientError` and the caller tries again later. A bot
without an entry has no channels. Invalid URLs are dropped with a warning naming the
position and the reason, never the URL (it holds the channel's secret).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests
from redis import Redis, RedisError

from ingest.adapters.cms import CmsClient
from ingest.errors import TransientError
from ingest.notify.channels import Target, parse_target

log = logging.getLogger(__name__)

PATH = "/api/bot-notification-settings"
CACHE_PREFIX = "kb-ingest:bot-channels"
STALE_TTL_SECONDS = 7 * 24 * 3600
MAX_CHANNELS = 20


def cache_key(company_id: int, bot_id: int) -> str:
    """The Redis key of one bot's cached channel list."""
    return f"{CACHE_PREFIX}:{company_id}:{bot_id}"


def invalidate(redis: Redis, company_id: int, bot_id: int) -> None:
    """Drop the fresh cached copy (a settings webhook); the last-known copy stays."""
    redis.delete(cache_key(company_id, bot_id))


def valid_targets(urls: Any, company_id: int, bot_id: int) -> list[Target]:
    """The usable channels of a ``notification_channels`` value, de-duplicated, in order."""
    if urls is None:
        return []
    if not isinstance(urls, list):
        log.warning("bot %s/%s: notification_channels is not a list; ignored", company_id,
                    bot_id)
        return []
    targets: dict[str, Target] = {}
    for position, url in enumerate(urls[:MAX_CHANNELS]):
        try:
            target = parse_target(url)
        except ValueError as exc:
            log.warning("bot %s/%s: channel #%d ignored: %s", company_id, bot_id, position, exc)
            continue
        targets.setdefault(target.key, target)
    if len(urls) > MAX_CHANNELS:
        log.warning("bot %s/%s: only the first %d channels are used", company_id, bot_id,
                    MAX_CHANNELS)
    return list(targets.values())


class BotChannelStore:
    """Channels per (company, bot): Redis cache, CMS lookup, last-known copy on failure."""

    def __init__(self, redis: Redis, cms: CmsClient, ttl_seconds: int = 300) -> None:
        self.redis = redis
        self.cms = cms
        self.ttl_seconds = max(1, ttl_seconds)

    def channels(self, company_id: int, bot_id: int) -> list[Target]:
        """The bot's valid channels; :class:`TransientError` if they cannot be known now."""
        key = cache_key(company_id, bot_id)
        cached = self._read(key)
        if cached is None:
            try:
                cached = self._fetch(company_id, bot_id)
            except TransientError:
                stale = self._read(key + ":stale")
                if stale is None:
                    raise
                log.warning("bot %s/%s channels: CMS unavailable, using the last-known list",
                            company_id, bot_id)
                cached = stale
            else:
                self._write(key, cached)
        return valid_targets(cached, company_id, bot_id)

    def _read(self, key: str) -> list[Any] | None:
        try:
            raw = self.redis.get(key)
        except RedisError:
            return None
        try:
            value = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def _write(self, key: str, urls: list[Any]) -> None:
        payload = json.dumps(urls)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(key, payload, ex=self.ttl_seconds)
                pipe.set(key + ":stale", payload, ex=STALE_TTL_SECONDS)
                pipe.execute()
        except RedisError as exc:
            log.warning("could not cache bot channels (%s)", type(exc).__name__)

    def _fetch(self, company_id: int, bot_id: int) -> list[Any]:
        params = {"filters[company_id][$eq]": company_id, "filters[bot_id][$eq]": bot_id,
                  "pagination[pageSize]": 1}
        try:
            response = self.cms.session.get(f"{self.cms.base_url}{PATH}", params=params,
                                            timeout=self.cms.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"CMS unreachable: {type(exc).__name__}") from None
        if response.status_code == 404:  # the content type is not installed: no channels
            return []
        if response.status_code != 200:
            raise TransientError(f"CMS answered {response.status_code}")
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            raise TransientError("CMS answered 200 without JSON") from None
        if not isinstance(data, list):
            raise TransientError("CMS answered 200 without a list of entries")
        if not data:
            return []
        channels = data[0].get("notification_channels") if isinstance(data[0], dict) else None
        return channels if isinstance(channels, list) else []

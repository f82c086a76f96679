"""Token buckets in Redis: how fast summary e-mails may leave, globally and per domain.

A bucket holds up to ``capacity`` tokens and gains ``per_minute / 60`` a second; a send
takes one. :func:`take` takes one token from every bucket it is given, or from none (one Lua
script, atomic in Redis), so a token of the global bucket is never spent on an e-mail that
its domain's bucket refuses. The clock is Redis ``TIME``: every worker on every host sees the
same one. A rate of 0 is no limit: that bucket is not consulted. A refused caller is told
when to come back, and that time is its place in a line: a refusal books the next free slot
(``booked``) of the bucket that refused it longest, and only that one, so 300 waiting
senders come back one per token, not all at once for the same token, and one domain's line
never pushes back another's. A booking is only a hint (it holds no token); the bucket alone
decides, so a late or lost waiter never lets more through.

**Capacity: ten seconds of the rate, at least two tokens** (60/min → 10). A full minute of
burst would let an idle bucket pass twice the configured number in its first minute; with
ten seconds no 60-second window holds more than ``1.17 × per_minute`` (``capacity + rate ×
60 s``), and a waiter coming back up to ten seconds late (a busy worker) still finds its
token instead of losing its turn. Summary e-mails gain nothing from a larger burst: they
already waited for their batch's quiet period.

**Redis unavailable: fail open.** :func:`email_turn` then lets the e-mail go, with a WARNING
and ``kb_ingest_email_rate_limit_unchecked_total``. Failing closed would hold every e-mail
for as long as Redis is away (and re-scheduling it needs the broker, by default on the same
Redis); the e-mail must not be lost. The flood this allows is small: with the broker on that
Redis no new task arrives, the e-mails already waiting come back at their booked, spaced,
turns, and a mail server that throttles (4xx) is retried with backoff like any refusal.

The keys share one hash tag, so the script also runs on a Redis Cluster. This module knows
nothing of Celery or Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from ingest import metrics
from ingest.settings import Settings

log = logging.getLogger(__name__)

BURST_SECONDS = 10.0
MIN_CAPACITY = 2.0
GLOBAL_KEY = "{kb-ingest:email-rate}:global"
DOMAIN_KEY = "{kb-ingest:email-rate}:domain:"

# KEYS: the buckets; ARGV: per bucket its rate (tokens a second) and capacity. Takes a token
# from each or, when one refuses, books a slot on the bucket that refused the longest only.
# Returns {wait in seconds as a string (Redis would truncate a number), the 1-based index of
# that bucket, or 0}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local have, booked, wait, refused = {}, {}, 0, 0
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local s = redis.call('HMGET', key, 'tokens', 'at', 'booked')
  local elapsed = math.max(0, now - (tonumber(s[2]) or now))
  have[i] = math.min(cap, (tonumber(s[1]) or cap) + elapsed * rate)
  booked[i] = tonumber(s[3]) or 0
  if have[i] < 1 then
    local slot = math.max(now + (1 - have[i]) / rate, booked[i] + 1 / rate)
    if slot - now > wait then wait, refused = slot - now, i end
  end
end
if refused > 0 then
  local key, rate, cap = KEYS[refused], tonumber(ARGV[2 * refused - 1]), tonumber(ARGV[2 * refused])
  redis.call('HSET', key, 'booked', tostring(now + wait))
  redis.call('EXPIRE', key, math.ceil(wait + cap / rate) + 60)
  return {tostring(wait), refused}
end
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', key, 'tokens', tostring(have[i] - 1), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(math.max(0, booked[i] - now) + cap / rate) + 60)
end
return {'0', 0}
"""


@dataclass(frozen=True)
class Bucket:
    """A bucket: what it limits (for logs and metrics), its Redis key and its rate;
    ``per_minute`` 0 means no limit."""

    name: str
    key: str
    per_minute: float


@dataclass(frozen=True)
class Turn:
    """0 seconds: the tokens were taken, go. Else come back after ``wait`` seconds;
    ``refused_by`` is the bucket that holds the caller back longest."""

    wait: float
    refused_by: Bucket | None = None


@lru_cache(maxsize=8)
def _script(redis: Redis) -> Script:
    """The script bound to this client (redis-py loads it again after a ``NOSCRIPT``)."""
    return redis.register_script(_TAKE)


def capacity(per_minute: float) -> float:
    """How many tokens a bucket of this rate holds (see the module docstring)."""
    return max(MIN_CAPACITY, per_minute * BURST_SECONDS / 60)


def take(redis: Redis, buckets: Sequence[Bucket]) -> Turn:
    """Take one token from every limited bucket, or from none; raises ``RedisError``."""
    limited = [b for b in buckets if b.per_minute > 0]
    if not limited:
        return Turn(0.0)
    args: list[float] = []
    for bucket in limited:
        args += [bucket.per_minute / 60, capacity(bucket.per_minute)]
    wait, refused = _script(redis)(keys=[b.key for b in limited], args=args)
    return Turn(float(wait), limited[int(refused) - 1] if int(refused) else None)


def recipient_domain(address: str) -> str:
    """The lower-cased part after the last ``@`` (internationalised domains are already
    punycode: :func:`ingest.addresses.usable_address`)."""
    return address.rpartition("@")[2].strip().lower()


def email_buckets(recipient: str, settings: Settings) -> list[Bucket]:
    """The global bucket and the recipient domain's, at their configured rates."""
    return [Bucket("global", GLOBAL_KEY, settings.email_rate_per_minute),
            Bucket("domain", DOMAIN_KEY + recipient_domain(recipient),
                   settings.email_rate_per_domain_per_minute)]


def email_turn(redis: Redis, recipient: str, settings: Settings) -> Turn:
    """Whether an e-mail to ``recipient`` may leave now; fails open when Redis fails."""
    try:
        return take(redis, email_buckets(recipient, settings))
    except RedisError as exc:
        metrics.EMAIL_RATE_UNCHECKED.inc()
        log.warning("e-mail rate limit not applied, Redis failed (%s: %s); sending anyway",
                    type(exc).__name__, exc)
        return Turn(0.0)

"""Health probes of the worker and beat processes (``ingest probe worker|beat``).

Both run as container healthchecks every few seconds, so they stay light: Redis and, for
the worker, one Celery control ping (Celery is imported only then; no task modules, no
torch). Each answers a :class:`Probe`: healthy or not, and one line saying why.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from ingest.redis_client import BEAT_HEARTBEAT_KEY, WORKER_REFUSAL_KEY

DEFAULT_NODE = "celery@%h"  # Celery's default node name; %h is this host's name


@dataclass(frozen=True)
class Probe:
    """A probe's verdict: ``ok`` and one line for the operator."""

    ok: bool
    line: str

    @property
    def exit_code(self) -> int:
        """The command's exit status: 0 healthy, 1 not."""
        return 0 if self.ok else 1


def record_beat_heartbeat(client: Redis, at: float | None = None) -> None:
    """Beat ticked at ``at`` (unix time; default now)."""
    client.set(BEAT_HEARTBEAT_KEY, repr(time.time() if at is None else at))


def beat_heartbeat_age(client: Redis, now: float | None = None) -> float | None:
    """Seconds since beat's last recorded tick; None when there is no heartbeat."""
    raw = client.get(BEAT_HEARTBEAT_KEY)
    if raw is None:
        return None
    return (time.time() if now is None else now) - float(raw)


def probe_beat(client: Redis, max_age: float) -> Probe:
    """Healthy when beat ticked within ``max_age`` seconds."""
    try:
        age = beat_heartbeat_age(client)
    except (RedisError, ValueError) as exc:
        return Probe(False, f"beat: cannot read the heartbeat ({type(exc).__name__}: {exc})")
    if age is None:
        return Probe(False, f"beat: no heartbeat ({BEAT_HEARTBEAT_KEY} is not set)")
    if age > max_age:
        return Probe(False, f"beat: last tick {age:.0f}s ago, more than {max_age:g}s "
                            "(BEAT_HEARTBEAT_MAX_AGE_SECONDS)")
    return Probe(True, f"beat: last tick {age:.1f}s ago")


def node_names(names: list[str] | None, host: str | None = None) -> list[str]:
    """Worker node names with ``%h`` replaced by this host's name (Celery's ``-n`` syntax)."""
    host = host or socket.gethostname()
    return [n.replace("%h", host) for n in (names or [DEFAULT_NODE])]


def node_arg(value: str) -> str:
    """``--node``: a Celery node name, ``name@host`` (``%h`` for this host)."""
    name, _, host = value.partition("@")
    if not name or not host:
        raise argparse.ArgumentTypeError(f"{value!r} is not a node name like celery@%h")
    return value


def seconds_arg(value: str) -> float:
    """``--timeout``: a positive number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def worker_refusal(client: Redis, host: str | None = None) -> dict[str, str] | None:
    """The refusal a worker on this host recorded when it would not start (or None)."""
    raw = client.get(WORKER_REFUSAL_KEY.format(host or socket.gethostname()))
    return json.loads(raw) if raw else None


def ping_workers(broker_url: str, nodes: list[str], timeout: float) -> set[str]:
    """The nodes among ``nodes`` that answer Celery's control ping within ``timeout``.

    Raises :class:`ConnectionError` when the broker cannot be reached (one try, not
    kombu's retry loop: a healthcheck must answer within its own timeout).
    """
    from celery import Celery  # here, not at import: ingest/ knows nothing of Celery
    from kombu.exceptions import OperationalError

    app = Celery("kb_ingest-probe")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            replies = app.control.ping(destination=nodes, timeout=timeout,
                                       connection=conn) or []
    except (OperationalError, OSError) as exc:
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        app.close()
    return {name for reply in replies for name in reply if name in nodes}


def probe_worker(client: Redis, broker_url: str, nodes: list[str], timeout: float) -> Probe:
    """Healthy when no worker on this host recorded a refusal and every node answers."""
    try:
        refusal = worker_refusal(client)
    except RedisError:  # the ping below says whether the broker is there
        refusal = None
    if refusal:
        return Probe(False, f"worker: a worker on {refusal['host']} refused to start at "
                            f"{refusal['at']}: {refusal['problem']}")
    try:
        answered = ping_workers(broker_url, nodes, timeout)
    except ConnectionError as exc:
        return Probe(False, f"worker: cannot reach the broker ({exc})")
    silent = [n for n in nodes if n not in answered]
    if silent:
        return Probe(False, f"worker: no answer from {', '.join(silent)} within {timeout:g}s")
    return Probe(True, f"worker: {', '.join(nodes)} answered")

"""Broker messages held by a dead worker, restored to their queue at once (DESIGN §8).

With ``task_acks_late`` a worker's main process keeps every message it has fetched in the
Redis transport's ``unacked`` hash (scored by fetch time in ``unacked_index``) until the
task ends: a task it has received but not yet started, one waiting for its ETA (a retry
countdown), and the running one. When the whole worker dies (SIGKILL of its process group,
OOM of the main process, host loss) nobody restores them; kombu itself only does so after
the visibility timeout (an hour). The event of such a message never got a lease (it stays
``enqueued``, or ``processing`` without ``running_since`` while its retry waits), so the
lease-based relay cannot see it.

:func:`restore_orphans`, called by the beat relay, restores the messages that no live worker
holds: entries of ``unacked_index`` older than ``BROKER_ORPHAN_GRACE_SECONDS`` (a message a
live worker has just fetched is not yet in its reserved list) whose task id none of the
workers answering ``inspect`` reports as reserved, active or scheduled. They go back with
kombu's own ``QoS.restore_by_tag`` (a WATCH/MULTI transaction: an entry acked meanwhile
restores nothing) under the transport's ``unacked_mutex``, which kombu's own periodic
``restore_visible`` also takes.

A message can also be lost outright: kombu's Redis transport takes it off its list (BRPOP)
before it records it in ``unacked``, and a worker killed between the two (``make chaos``
caught one) leaves its event ``enqueued`` with no message anywhere. :func:`lost_events`
finds such events once the ingest queue is empty, and the relay publishes them again.

A mistaken restore (a living worker that did not answer in time) is a duplicate delivery,
which is harmless: the claim of an event is one conditional UPDATE (``ingest.pipeline.run.
claim``: only ``received``/``enqueued``/``processing`` rows without a live lease are taken),
so a copy of a finished event does nothing, and a copy of a running one finds the lease held
by its living owner and does nothing either; the other tasks are idempotent by their
database state as well (DESIGN §5).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.transport.redis import Mutex, MutexHeld
from kombu.utils.encoding import bytes_to_str

from ingest import metrics
from ingest.names import QUEUE_INGEST, TASK_PROCESS_FILE_EVENT

log = logging.getLogger(__name__)

#: How long ``inspect`` waits for the workers' replies (each of three broadcasts).
INSPECT_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Restored:
    """A message put back on its queue."""

    task_id: str
    task_name: str | None
    event_id: int | None


def held_task_ids(app: Celery, timeout: float = INSPECT_TIMEOUT_SECONDS) -> set[str] | None:
    """Ids of the tasks live workers hold (reserved, running, or waiting for their ETA);
    None when no worker answered at all."""
    inspect = app.control.inspect(timeout=timeout)
    replies = [inspect.reserved(), inspect.active(), inspect.scheduled()]
    if not any(replies):
        return None
    held: set[str] = set()
    for reply in replies:
        for requests in (reply or {}).values():
            for request in requests or ():
                request = request.get("request", request)  # scheduled() wraps each one
                if request.get("id"):
                    held.add(request["id"])
    return held


def restore_orphans(app: Celery, grace_seconds: float,
                    inspect_timeout: float = INSPECT_TIMEOUT_SECONDS) -> list[Restored]:
    """Restore the broker messages fetched more than ``grace_seconds`` ago that no live
    worker holds; return them. Nothing to do (and no broadcast) when no message is that
    old; a broker other than Redis has nothing of the kind."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "unacked_index_key"):
            return []
        client = channel.client
        old = client.zrangebyscore(channel.unacked_index_key, "-inf",
                                   time.time() - grace_seconds)
        if not old:
            return []
        # Asked after the entries were listed: a live worker that fetched one of them
        # reports it until it acks it (and then the entry is gone).
        held = held_task_ids(app, inspect_timeout)
        restored: list[Restored] = []
        try:
            with Mutex(client, channel.unacked_mutex_key, channel.unacked_mutex_expire):
                for tag in old:
                    raw = client.hget(channel.unacked_key, tag)
                    if raw is None:  # acked (or restored) meanwhile
                        continue
                    found = _describe(raw)
                    if found is None or (held is not None and found.task_id in held):
                        continue
                    channel.qos.restore_by_tag(bytes_to_str(tag), client=client)
                    restored.append(found)
                    metrics.BROKER_RESTORES.labels(found.task_name or "unknown").inc()
                    log.warning(
                        "restored task %s (%s, event %s) to its queue: no live worker "
                        "holds it (%s)", found.task_id, found.task_name, found.event_id,
                        "no worker answered" if held is None else "its worker died")
        except MutexHeld:  # kombu is restoring right now; the next relay run looks again
            log.info("unacked_mutex held elsewhere: orphaned messages are left for the "
                     "next relay run")
        return restored


def lost_events(app: Celery, candidates: list[int]) -> list[int]:
    """Of ``candidates`` (events published a while ago whose task has not started: see
    ``ingest.events.events_awaiting_their_task``), those whose message is nowhere on the
    broker: not in the ingest queue, not fetched by any worker (``unacked``).

    Answered only while the ingest queue is empty (else ``[]``): a message behind a long
    queue is not lost, and reading a long queue would be costly; a lost one is found when
    the backlog is worked off. A message a worker takes between the two reads may be
    counted lost: its event is then published twice, which is harmless (see above)."""
    if not candidates:
        return []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "unacked_key"):
            return []
        client = channel.client
        if any(client.llen(channel._q_for_pri(QUEUE_INGEST, priority))
               for priority in channel.priority_steps):
            return []
        held = {found.event_id for raw in client.hvals(channel.unacked_key)
                if (found := _describe(raw)) is not None}
    lost = [event_id for event_id in candidates if event_id not in held]
    for event_id in lost:
        metrics.BROKER_RESTORES.labels(TASK_PROCESS_FILE_EVENT).inc()
        log.warning("event %s is enqueued but its message is nowhere on the broker (lost "
                    "with a killed worker): publishing it again", event_id)
    return lost


def _describe(raw: bytes) -> Restored | None:
    """The task of an ``unacked`` entry (``[payload, exchange, routing_key]``), or None
    for anything that is not a Celery task message."""
    try:
        payload = json.loads(bytes_to_str(raw))[0]
        headers = payload.get("headers") or {}
    except (ValueError, TypeError, IndexError, AttributeError):
        return None
    task_id, name = headers.get("id"), headers.get("task")
    if not task_id:
        return None
    return Restored(str(task_id), name,
                    _event_id(payload) if name == TASK_PROCESS_FILE_EVENT else None)


def _event_id(payload: dict[str, Any]) -> int | None:
    """The event id of a ``process_file_event`` message (its first argument)."""
    try:
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (KeyError, ValueError, TypeError, IndexError):
        return None

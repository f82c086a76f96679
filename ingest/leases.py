"""Leases on running attempts: who runs an event, and until when it is presumed alive.

A claim gives the attempt a lease of ``EVENT_LEASE_SECONDS``, owned by ``host:pid``; a
heartbeat thread renews it every third of that while the attempt runs. So:

- a second delivery of an event whose owner is alive finds the lease held and does nothing
  (a slow but living worker is never doubled);
- an owner that died is noticed at once on its own host (its pid is gone: a SIGKILLed or
  OOM-killed pool process, whose message Celery redelivers at once), and everywhere else
  when the lease runs out; the beat relay then re-drives the event
  (:func:`ingest.events.events_to_relay`), well within two minutes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import func, update

from ingest.db import session_scope
from ingest.models import FileEvent

log = logging.getLogger(__name__)


def owner() -> str:
    """This process as a lease owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_dead(claimed_by: str | None) -> bool:
    """Whether ``claimed_by`` is a process of this host that no longer exists."""
    if not claimed_by:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


@contextmanager
def heartbeat(event_ids: int | Sequence[int], lease_seconds: float) -> Iterator[None]:
    """Renew the events' leases (one statement for all) every third of ``lease_seconds``
    until the block ends."""
    ids = [event_ids] if isinstance(event_ids, int) else list(event_ids)
    stop = threading.Event()
    me = owner()

    def beat() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with session_scope() as s:
                    s.execute(update(FileEvent)
                              .where(FileEvent.id.in_(ids), FileEvent.claimed_by == me,
                                     FileEvent.status == "processing")
                              .values(lease_until=func.now()
                                      + timedelta(seconds=lease_seconds)))
            except Exception as exc:  # the next beat tries again; the lease may lapse
                log.warning("lease heartbeat of events %s failed: %s", ids, exc)

    thread = threading.Thread(target=beat, name=f"lease-{ids[0]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)

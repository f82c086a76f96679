"""The process supervisor shared by ``make demo`` and the test fixtures.

Every process runs in its own session (process group), so a stop reaches its children
too (Celery's pool, gunicorn's workers) and a Ctrl-C in the terminal reaches only the
parent, which then stops them in order. Output goes to one log file per process;
readiness is a check polled until it passes, the process dies, or time runs out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts live next to its python
T = TypeVar("T")


class ProcError(RuntimeError):
    """A process exited, or did not get ready in time; the message has its log's tail."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(name: str) -> str:
    """A console script of this venv (``celery``, ``gunicorn``, ``ingest``…)."""
    return str(BIN / name)


def wait_until(check: Callable[[], T], timeout: float, what: str,
               interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def start(argv: list[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr in ``log`` (truncated first, so a
    readiness check never reads an earlier run's lines)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=dict(env if env is not None else os.environ),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process group; SIGKILL it after ``grace`` s, and sweep up stragglers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a worker's pool processes)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def log_has(log: Path, text: str, count: int = 1) -> bool:
    """Whether ``log`` contains ``text`` at least ``count`` times."""
    return log.exists() and log.read_text(errors="replace").count(text) >= count


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str, headers: Mapping[str, str] | None = None) -> bool:
    """Whether ``url`` answers 200."""
    try:
        return requests.get(url, headers=dict(headers or {}), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log, indented."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return textwrap.indent("\n".join(text.splitlines()[-lines:]) or "(empty log)", "    | ",
                           lambda _: True)


@dataclass
class Service:
    """A named process with a log and a readiness check."""

    name: str
    argv: list[str]
    log: Path
    ready: Callable[[], bool]
    timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str] | None = None) -> Service:
        """Launch it (not waiting)."""
        self.proc = start(self.argv, self.log, env)
        return self

    def running(self) -> bool:
        """Whether it is alive."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self) -> float:
        """Wait until ready; the seconds it took. ProcError if it dies or times out."""
        began = time.monotonic()
        while not self.ready():
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise ProcError(f"{self.name} exited ({code}) before it was ready; "
                                f"{self.log}:\n{tail(self.log)}")
            if time.monotonic() - began > self.timeout:
                raise ProcError(f"{self.name} not ready after {self.timeout:.0f}s; "
                                f"{self.log}:\n{tail(self.log)}")
            time.sleep(0.2)
        return time.monotonic() - began

    def stop(self, grace: float = 20.0) -> None:
        """Stop it and its group (a no-op if never started)."""
        if self.proc is not None:
            stop(self.proc, grace)


class Supervisor:
    """Services started together and stopped in reverse order (``with`` stops them all)."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def start(self, services: list[Service], env: Mapping[str, str] | None = None,
              report: Callable[[Service, float], None] | None = None) -> None:
        """Start them all at once, then wait for each in turn."""
        for service in services:
            self.services.append(service.start(env))
        for service in services:
            seconds = service.wait_ready()
            if report:
                report(service, seconds)

    def dead(self) -> list[str]:
        """Names of started services that are no longer running."""
        return [s.name for s in self.services if not s.running()]

    def stop(self) -> None:
        """Stop every service, last started first; keep going past a failure."""
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()
        self.services.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Throwaway PostgreSQL and Redis servers on free ports, for ``make bench`` and ``make chaos``.

They never touch the machine's own servers: each has its own data directory under the
caller's folder, so a benchmark can preload ``pg_stat_statements`` and a chaos run can kill
and restart them at will. Both are :class:`devtools.procs.Service` objects: ``start()`` then
``wait_ready()``, ``stop()``; a restart keeps PostgreSQL's data (Redis keeps nothing).

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user,
who must be able to reach the folder (a ``mkdtemp`` folder needs ``chmod 755``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from devtools.procs import Service, free_port, port_open


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found under /usr/lib/postgresql/*/bin "
                           "(apt-get install postgresql)")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class ThrowawayPostgres(Service):
    """A PostgreSQL cluster in ``folder`` on a free port, trust auth, ``fsync`` off."""

    def __init__(self, folder: Path, port: int | None = None,
                 preload: tuple[str, ...] = ("pg_stat_statements",)) -> None:
        self.folder = folder
        self.port = port or free_port()
        data, sockets = folder / "data", folder / "sockets"
        if not (data / "PG_VERSION").exists():
            self._initdb(data, sockets)
        argv = [_pg_bin("postgres"), "-D", str(data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200"]
        if preload:
            argv += ["-c", f"shared_preload_libraries={','.join(preload)}"]
        super().__init__("postgres", _as_postgres(argv), folder / "postgres.log", self.accepting)

    def _initdb(self, data: Path, sockets: Path) -> None:
        for path in (data, sockets):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            for path in (data, sockets):
                shutil.chown(path, "postgres", "postgres")
        done = subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U",
                                            "postgres", "--auth=trust", "-E", "UTF8",
                                            "--no-sync"]), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"initdb failed (the folder and its parents must be reachable "
                               f"by user postgres): {done.stderr.strip()[-500:]}")

    def accepting(self) -> bool:
        """Whether the server accepts connections (not only listens: recovery refuses)."""
        return subprocess.run([_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                               str(self.port)]).returncode == 0

    def url(self, database: str = "postgres") -> str:
        """An SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"


class ThrowawayRedis(Service):
    """A Redis server on a free port that keeps nothing on disk (a restart starts empty)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(folder)]
        super().__init__("redis", argv, folder / "redis.log", lambda: port_open(self.port))

    def url(self, db: int = 0) -> str:
        """A redis:// URL of database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

"""A real Strapi 5 (the app in ``strapi/``) for the tests and the demo: install, build, start,
stop (``tests/test_strapi.py`` and ``python -m devtools.demo --cms strapi``).

The install is cached under ``~/.cache/kb-ingest/strapi/<hash of package.json and
package-lock.json>/app`` (``KB_STRAPI_CACHE_DIR`` replaces ``~/.cache/kb-ingest/strapi``, so
two checkouts with different Strapi sources do not share one copy): ``npm ci`` runs only
when that copy has no finished install, and ``npm run build`` only when the sources
(``src/``, ``config/``) changed since the last build. The sources are copied afresh at every
install (``node_modules/`` and ``build/`` stay), so a file removed from ``strapi/`` (a
database migration above all) does not linger in the copy.
Each start uses a throwaway PostgreSQL database ``kb_strapi_<random>`` (dropped at stop),
registers the first admin, and creates two API tokens: a full-access one for the callers' own
CRUD (``token``) and the custom one the README documents for kb-ingest (``kb_token``).

The time of every step is kept in :data:`TIMINGS` (seconds) and printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from devtools.pg import admin_exec

PROJECT = Path(__file__).resolve().parent.parent / "strapi"
CACHE_ROOT = Path(os.environ.get("KB_STRAPI_CACHE_DIR")
                  or Path.home() / ".cache" / "kb-ingest" / "strapi")
SKIPPED_TOP_LEVEL = {"node_modules", "build", ".strapi", ".tmp", ".env"}
ADMIN_EMAIL = "admin@kb-ingest.test"
ADMIN_PASSWORD = "Kb-Ingest-Test-Passw0rd"
KB_PERMISSIONS = [
    "api::file.file.find",
    "api::file.file.findOne",
    "api::file.file.delete",
    "api::user-notification-preference.user-notification-preference.find",
    "api::user-notification-preference.user-notification-preference.findByUser",
    "api::user-notification-preference.user-notification-preference.bulkGet",
    "api::bot-notification-setting.bot-notification-setting.find",
]

#: step name → seconds, for the report (``npm ci``, ``npm run build``, ``start``, ...).
TIMINGS: dict[str, float] = {}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().lstrip("v").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def node_ok() -> bool:
    """True when ``node --version`` is 20 or newer and ``npm`` is on the PATH."""
    node = shutil.which("node")
    if not node or not shutil.which("npm"):
        return False
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=15,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return _version_tuple(out)[:1] >= (20,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hash_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def lock_hash(project: Path = PROJECT) -> str:
    """First 16 hex digits of the SHA-256 of package.json and package-lock.json."""
    files = [project / "package.json", project / "package-lock.json"]
    return _hash_files(files, project)[:16]


def sources_hash(app: Path) -> str:
    """SHA-256 of every file under ``app/src`` and ``app/config``."""
    files = [p for d in ("src", "config") for p in (app / d).rglob("*") if p.is_file()]
    return _hash_files(files, app)


def _timed(name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    started = time.monotonic()
    try:
        return func(*args, **kwargs)
    finally:
        TIMINGS[name] = round(time.monotonic() - started, 1)
        print(f"[strapi] {name}: {TIMINGS[name]:.1f}s", flush=True)


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{_tail(log)}")


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _copy_sources(target: Path) -> None:
    """A fresh copy of ``strapi/`` (sources only) at ``target``; its install stays."""
    if target.exists():  # nothing of an older checkout's sources stays
        for old in target.iterdir():
            if old.name in SKIPPED_TOP_LEVEL:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()

    def ignore(directory: str, names: list[str]) -> set[str]:
        return SKIPPED_TOP_LEVEL & set(names) if Path(directory) == PROJECT else set()

    _timed("copy sources", shutil.copytree, PROJECT, target, ignore=ignore,
           dirs_exist_ok=True)


def variant_app(name: str, edit: Callable[[Path], None]) -> Path:
    """Another version of the app (``edit`` changes a fresh copy of the sources, e.g. an
    older content type) sharing the cached install's ``node_modules`` and admin build; pass
    it as ``StrapiServer(app=…)``. The install itself happens at the server's start."""
    main = CACHE_ROOT / lock_hash() / "app"
    target = CACHE_ROOT / lock_hash() / "variants" / name
    target.mkdir(parents=True, exist_ok=True)
    _copy_sources(target)
    edit(target)
    for shared in ("node_modules", "build"):
        link = target / shared
        if not link.is_symlink():
            link.symlink_to(main / shared, target_is_directory=True)
    return target


class StrapiServer:
    """The strapi/ app installed in the cache, started on a free port with its own database."""

    def __init__(self, webhook_url: str, webhook_token: str,
                 admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres", *,
                 app: Path | None = None, database: str | None = None) -> None:
        """``app``: run another version of the sources (:func:`variant_app`) on the same
        install; ``database``: an existing database, neither created nor dropped here (to
        start two versions one after the other on it)."""
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token
        self.admin_url = admin_url
        self.cache = CACHE_ROOT / lock_hash()
        self.main_app = self.cache / "app"
        self.app = app or self.main_app
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.own_database = database is None
        self.db_name = database or f"kb_strapi_{uuid.uuid4().hex[:10]}"
        self.log = self.cache / f"strapi-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.db_created = False
        self.token = ""
        self.kb_token = ""
        self.admin_jwt = ""

    # -- install ---------------------------------------------------------------------------

    def install(self) -> None:
        """Copy the sources into the cache, ``npm ci`` and ``npm run build`` when needed.

        An exclusive file lock on the cache folder serialises concurrent installs (a test run
        and a demo at once) so that neither sees a half-written ``node_modules`` or build.
        """
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        with (self.cache / ".install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._install_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _install_locked(self) -> None:
        _copy_sources(self.main_app)
        marker = self.main_app / "node_modules" / ".kb-installed"
        if marker.exists():
            TIMINGS["npm ci"] = 0.0
            print("[strapi] npm ci: cached", flush=True)
        else:
            _timed("npm ci", _run, ["npm", "ci", "--no-audit", "--no-fund"], self.main_app,
                   self.log)
            marker.touch()
        wanted = sources_hash(self.main_app)
        stamp = self.main_app / "build" / ".kb-sources-hash"
        if stamp.exists() and stamp.read_text().strip() == wanted:
            TIMINGS["npm run build"] = 0.0
            print("[strapi] npm run build: cached", flush=True)
        else:
            _timed("npm run build", _run, ["npm", "run", "build"], self.main_app, self.log)
            stamp.write_text(wanted)

    # -- database --------------------------------------------------------------------------

    def _admin_exec(self, sql: str) -> None:
        admin_exec(self.admin_url, sql)

    # -- start / stop ----------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
        env.update({
            "DATABASE_HOST": "127.0.0.1",
            "DATABASE_PORT": "5432",
            "DATABASE_NAME": self.db_name,
            "DATABASE_USERNAME": "postgres",
            "DATABASE_PASSWORD": "",
            "DATABASE_SSL": "false",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "APP_KEYS": "test-key-a,test-key-b",
            "API_TOKEN_SALT": "test-api-token-salt",
            "ADMIN_JWT_SECRET": "test-admin-jwt-secret",
            "TRANSFER_TOKEN_SALT": "test-transfer-token-salt",
            "JWT_SECRET": "test-jwt-secret",
            "ENCRYPTION_KEY": "test-encryption-key",
            "STRAPI_TELEMETRY_DISABLED": "true",
            "STRAPI_DISABLE_UPDATE_NOTIFICATION": "true",
            "NODE_ENV": "production",
            "BROWSER": "none",
            "KB_INGEST_WEBHOOK_URL": self.webhook_url,
            "KB_INGEST_WEBHOOK_TOKEN": self.webhook_token,
            "KB_INGEST_WEBHOOK_EVENTS": "entry.create,entry.update,entry.delete",
        })
        return env

    def start(self) -> StrapiServer:
        """Install if needed, create the database, start Strapi, create admin and tokens."""
        total = time.monotonic()
        self.install()
        if self.own_database:
            self._admin_exec(f'CREATE DATABASE "{self.db_name}"')
            self.db_created = True
        _timed("start (until /_health)", self._launch)
        _timed("admin + API tokens", self._provision)
        TIMINGS["total setup"] = round(time.monotonic() - total, 1)
        print(f"[strapi] total setup: {TIMINGS['total setup']:.1f}s", flush=True)
        return self

    def _launch(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.proc = subprocess.Popen(
                [str(self.app / "node_modules" / ".bin" / "strapi"), "start"],
                cwd=self.app, env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Strapi exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                if requests.get(f"{self.url}/_health", timeout=2).status_code < 300:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"Strapi did not answer /_health within 120s:\n{_tail(self.log)}")

    def _provision(self) -> None:
        response = requests.post(f"{self.url}/admin/register-admin", json={
            "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
            "firstname": "Kb", "lastname": "Test"}, timeout=30)
        if response.status_code not in (200, 201):
            # An admin exists already: log in, once (the route is rate-limited).
            response = requests.post(f"{self.url}/admin/login", json={
                "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=30)
        response.raise_for_status()
        self.admin_jwt = response.json()["data"]["token"]
        # Token names are unique per database: a second start on one gets its own.
        suffix = "" if self.own_database else f"-{self.port}"
        self.token = self._create_token({"name": f"tests-full-access{suffix}",
                                         "type": "full-access", "lifespan": None})
        self.kb_token = self._create_token({"name": f"kb-ingest{suffix}", "type": "custom",
                                            "lifespan": None, "permissions": KB_PERMISSIONS})

    def _create_token(self, body: dict[str, Any]) -> str:
        response = requests.post(f"{self.url}/admin/api-tokens", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {self.admin_jwt}"})
        if response.status_code != 201:
            raise RuntimeError(f"creating API token {body['name']!r}: {response.status_code} "
                               f"{response.text[:500]}")
        return str(response.json()["data"]["accessKey"])

    def stop(self) -> None:
        """SIGTERM Strapi's process group (SIGKILL after 20 s) and drop its database."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc is not None:
            # Children that outlived the leader (the group id is the leader's pid).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        if self.db_created:
            self._admin_exec(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.db_created = False

    def __enter__(self) -> StrapiServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, token: str | None = None,
                **kwargs: Any) -> requests.Response:
        """A request to Strapi with the full-access token (or ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

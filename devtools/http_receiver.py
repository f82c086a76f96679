"""A local HTTP(S) receiver standing in for Slack, Teams and a team's webhook endpoint.

It records every POST (path, headers, body) and answers 200, or the statuses queued with
:meth:`HttpReceiver.fail_next`. With ``tls=True`` it serves HTTPS with a throwaway
certificate (trustme), as Apprise's Teams workflow plugin only speaks HTTPS (post to it
with ``?verify=no``). Used by the tests and ``make demo``.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1_048_576


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class HttpReceiver:
    """A threaded HTTP(S) server on 127.0.0.1 that records requests; a context manager."""

    def __init__(self, *, tls: bool = False, port: int = 0) -> None:
        self.requests: list[Received] = []
        self._statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
                body = self.rfile.read(length)
                with receiver._lock:
                    status = receiver._statuses.pop(0) if receiver._statuses else 200
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"error")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.tls = tls
        if tls:
            import trustme

            authority = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            authority.issue_cert("127.0.0.1").configure_cert(context)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status``."""
        with self._lock:
            self._statuses.extend([status] * times)

    def accepted(self, path_prefix: str = "") -> list[Received]:
        """The requests answered 2xx whose path starts with ``path_prefix``."""
        with self._lock:
            return [r for r in self.requests
                    if r.path.startswith(path_prefix) and 200 <= r.status < 300]

    def clear(self) -> None:
        """Forget recorded requests and queued statuses."""
        with self._lock:
            self.requests.clear()
            self._statuses.clear()

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

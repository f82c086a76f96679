"""Gunicorn's own lines (boot, workers, errors) through kb-ingest's logging configuration.

    gunicorn -c python:webhooks.gunicorn_conf "webhooks.app:create_app()"   # sets it

Without it gunicorn writes its lines in its own plain format. Requests are logged by the
app itself (``webhooks.requests``), so gunicorn's access log can stay off.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from ingest.logging_setup import configure_logging


class JsonLogger(Logger):
    """gunicorn.error / gunicorn.access propagate to the root handler of ingest.logging_setup."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging()
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True

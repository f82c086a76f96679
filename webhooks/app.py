"""The Flask app factory of the web process: ``gunicorn "webhooks.app:create_app()"``."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, jsonify, request
from redis import Redis
from werkzeug.exceptions import HTTPException

from ingest.events import EnqueuedMarks
from ingest.logging_setup import configure_logging
from ingest.settings import Settings, get_settings
from webhooks.auth import check_configured
from webhooks.batches_api import bp as batches_bp
from webhooks.metrics import bp as metrics_bp
from webhooks.openapi import bp as openapi_bp
from webhooks.publisher import Publisher
from webhooks.routes import bp as routes_bp
from webhooks.status import bp as status_bp

# Probes and scrapes arrive every few seconds: their lines are DEBUG, the rest INFO.
_QUIET_PATHS = frozenset({"/livez", "/readyz", "/health", "/metrics"})
_request_log = logging.getLogger("webhooks.requests")


def create_app(settings: Settings | None = None, publisher: Publisher | None = None) -> Flask:
    """Build the app; refuses to start when webhook authentication is not configured."""
    settings = settings or get_settings()
    check_configured(settings)
    configure_logging()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_body_bytes
    app.extensions["kb_settings"] = settings
    app.extensions["kb_publisher"] = publisher or Publisher(settings.broker_url)
    app.extensions["kb_enqueued_marks"] = EnqueuedMarks()
    app.extensions["kb_redis"] = Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    app.register_blueprint(routes_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(batches_bp)
    app.register_blueprint(status_bp)
    app.register_blueprint(openapi_bp)

    @app.before_request
    def _start_clock() -> None:
        g.kb_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        took = (time.perf_counter() - g.get("kb_started", time.perf_counter())) * 1000
        _request_log.log(
            logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO,
            "%s %s %s %.1fms", request.method, request.path, response.status_code, took,
            extra={"method": request.method, "path": request.path,
                   "status": response.status_code, "duration_ms": round(took, 1)})
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify({"status": "rejected", "error": exc.name}), status

    logging.getLogger(__name__).info("web app ready")
    return app

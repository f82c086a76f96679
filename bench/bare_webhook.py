"""The floor for the webhook: a bare Flask endpoint that inserts one row and publishes.

``make bench`` serves it with gunicorn as the service's web (``-w 2``) and compares the
service's ``POST /webhooks/cms`` accept rate with this one's: no auth, no validation, no
dedupe, no ordering rules — one INSERT of the body, COMMIT, one ``send_task``, 202.
"""

from __future__ import annotations

import os

from celery import Celery
from flask import Flask, request
from sqlalchemy import create_engine, text

TABLE = "bench_bare_events"


def create_app() -> Flask:
    app = Flask(__name__)
    engine = create_engine(os.environ["DATABASE_URL"], pool_size=5)
    celery = Celery("bench_bare", broker=os.environ["CELERY_BROKER_URL"])
    celery.conf.update(task_ignore_result=True, broker_connection_timeout=3)

    @app.post("/webhooks/cms")
    def receive() -> tuple[dict[str, object], int]:
        body = request.get_data(as_text=True)
        with engine.begin() as conn:
            event_id = conn.execute(
                text(f"INSERT INTO {TABLE} (payload) VALUES (CAST(:p AS jsonb)) RETURNING id"),
                {"p": body}).scalar_one()
        celery.send_task("bench.bare", args=[event_id], queue="bench_bare")
        return {"status": "accepted", "event_id": event_id}, 202

    @app.get("/health")
    def health() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    return app

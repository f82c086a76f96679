"""Celery side of kb-ingest: ``celery -A workers worker|beat|flower``."""

from workers.app import app

__all__ = ["app"]

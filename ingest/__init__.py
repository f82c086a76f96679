"""kb-ingest domain: everything that does not need Flask or Celery."""

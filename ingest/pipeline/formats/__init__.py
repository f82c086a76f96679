"""Text extraction by format family; :mod:`ingest.pipeline.extract` registers them."""

"""The exception types that decide what happens to a failed file.

Errors are classified by *type*, never by message text. Adapters translate library
exceptions (botocore, requests, chromadb, pypdf, ...) into these:

- ``TransientError``: the same call may succeed later (network, 5xx, throttling, a lost
  database connection). The task retries it with exponential backoff and jitter; when the
  retries run out, the file fails with the error's ``category``.
- ``PermanentError`` subclasses: retrying cannot help. The file fails once, a
  ``processing_errors`` row is written and (in a later slice) an auto-correction is chained.

``category`` is one of the seed's error categories, which decide the correction actions.
"""

from __future__ import annotations

FILE_NOT_FOUND = "file_not_found"
S3_ERROR = "s3_error"
PROCESSING_ERROR = "processing_error"
STORAGE_ERROR = "storage_error"
TIMEOUT = "timeout"

CATEGORIES = (FILE_NOT_FOUND, S3_ERROR, PROCESSING_ERROR, STORAGE_ERROR, TIMEOUT)


class IngestError(Exception):
    """Base of every error the pipeline classifies."""

    category: str = PROCESSING_ERROR

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class TransientError(IngestError):
    """May succeed on retry; ``category`` is used if the retries run out."""


class PermanentError(IngestError):
    """Retrying cannot help: the file fails once."""


class FileNotFound(PermanentError):
    """The file's object or CMS entry does not exist (a missing S3 object included)."""

    category = FILE_NOT_FOUND


class S3Error(PermanentError):
    """S3 refused for a reason a retry cannot fix (access denied, no such bucket, too big)."""

    category = S3_ERROR


class ProcessingError(PermanentError):
    """Corrupt, empty or unsupported input: no text could be extracted."""

    category = PROCESSING_ERROR


class StorageError(PermanentError):
    """The vector store rejected the chunks for a reason a retry cannot fix."""

    category = STORAGE_ERROR

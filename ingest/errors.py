"""The exception types that decide what happens to a failed file.

Errors are classified by *type*, never by message text. Adapters translate library
exceptions (botocore, requests, chromadb, pypdf, ...) into these. The category decides
whether an auto-correction may ever act (DESIGN §8, ``ingest.corrections``):

- **Properties of the file** (correctable): ``processing_error`` (corrupt, unsupported,
  encrypted, empty, over a configured size or text limit) and ``file_not_found`` (the
  object verified missing after ``S3_MISSING_GRACE_SECONDS`` of re-checks).
- **Never correctable**, reported to the operator: ``infrastructure_error`` (transport
  errors and 5xx of S3, the CMS or Chroma; AccessDenied, NoSuchBucket and other
  configuration faults), ``resource_limit`` (time limit, memory, worker lost N times),
  ``invalid_key`` (a storage key outside its tenant's prefix), ``internal_error`` (bugs),
  ``timeout`` (the batch gave up waiting for the file) and ``unsupported`` (the file is
  fine but our set-up cannot read it, e.g. OCR is needed and tesseract or its language data
  is not installed).

``TransientError``: the same call may succeed later. The task retries it with exponential
backoff and jitter; when the retries run out the file fails with the error's ``category``.
``PermanentError``: retrying cannot help; the file fails once.
"""

from __future__ import annotations

FILE_NOT_FOUND = "file_not_found"
PROCESSING_ERROR = "processing_error"
INFRASTRUCTURE_ERROR = "infrastructure_error"
RESOURCE_LIMIT = "resource_limit"
INVALID_KEY = "invalid_key"
INTERNAL_ERROR = "internal_error"
TIMEOUT = "timeout"
UNSUPPORTED = "unsupported"
# Written by the first slice; kept so that old rows still render in e-mails.
S3_ERROR = "s3_error"
STORAGE_ERROR = "storage_error"

CATEGORIES = (FILE_NOT_FOUND, PROCESSING_ERROR, INFRASTRUCTURE_ERROR, RESOURCE_LIMIT,
              INVALID_KEY, INTERNAL_ERROR, TIMEOUT, UNSUPPORTED)
#: Failures that are a property of the file itself: the only ones a correction may act on.
CORRECTABLE = frozenset({PROCESSING_ERROR, FILE_NOT_FOUND})
#: Failures an operator must look at (our set-up, not the user's file).
OPERATOR_CATEGORIES = frozenset({INFRASTRUCTURE_ERROR, RESOURCE_LIMIT, INVALID_KEY,
                                 INTERNAL_ERROR, UNSUPPORTED})


class IngestError(Exception):
    """Base of every error the pipeline classifies."""

    category: str = INTERNAL_ERROR

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class TransientError(IngestError):
    """May succeed on retry; ``category`` is used if the retries run out."""

    category = INFRASTRUCTURE_ERROR


class ObjectNotYetThere(TransientError):
    """The S3 object is missing but still inside its grace period: check again later."""

    category = FILE_NOT_FOUND

    def __init__(self, message: str, *, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class PermanentError(IngestError):
    """Retrying cannot help: the file fails once."""


class FileNotFound(PermanentError):
    """The file's object or CMS entry does not exist."""

    category = FILE_NOT_FOUND


class ProcessingError(PermanentError):
    """Corrupt, empty, unsupported or over-limit input: a property of the file."""

    category = PROCESSING_ERROR


class ResourceLimit(PermanentError):
    """Our limits stopped the work (time, memory, worker lost): the file may be fine."""

    category = RESOURCE_LIMIT


class InvalidKey(PermanentError):
    """The entry's storage key lies outside its company's and bot's prefix."""

    category = INVALID_KEY


class InternalError(PermanentError):
    """A remote refused a request of ours for a reason that points at a bug."""

    category = INTERNAL_ERROR


class Unsupported(PermanentError):
    """The file is fine but this installation cannot read it (e.g. OCR is needed and
    tesseract is missing): never corrected, reported to the operator."""

    category = UNSUPPORTED

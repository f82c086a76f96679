"""S3 access (boto3; ``S3_ENDPOINT_URL`` points it at MinIO, moto or another S3 server).

botocore errors are translated into :mod:`ingest.errors` by type and error code:

- ``NoSuchKey`` (404) → :class:`FileNotFound`; the pipeline re-checks it for
  ``S3_MISSING_GRACE_SECONDS`` before believing it.
- everything else — throttling, 5xx, connection errors, and configuration faults such as
  ``AccessDenied`` (a missing ``kms:Decrypt``), ``NoSuchBucket`` or bad credentials — is a
  :class:`TransientError` of category ``infrastructure_error``: retried, then reported to
  the operator, and never a reason to delete anything.

Deletion needs proof: :meth:`S3Store.delete_if_unchanged` deletes an object only if it
still has the ETag (or, without one, the size) that the failed attempt saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ingest.errors import FileNotFound, IngestError, ProcessingError, TransientError
from ingest.settings import Settings

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


def classify_s3_error(exc: Exception, key: str) -> IngestError:
    """Map a botocore exception to :class:`FileNotFound` or a :class:`TransientError`."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING:
            return FileNotFound(f"S3 object {key!r} does not exist")
        return TransientError(f"S3 answered {code or status} for {key!r}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"S3 unreachable: {type(exc).__name__}")
    raise exc  # not an S3 error: let it be what it is


@dataclass(frozen=True)
class ObjectInfo:
    """The identity of the object an attempt read."""

    key: str
    etag: str | None
    size: int


class S3Object:
    """An opened object: its identity now, its bytes on :meth:`read`."""

    def __init__(self, info: ObjectInfo, body: Any) -> None:
        self.info = info
        self._body = body

    def read(self, max_bytes: int) -> bytes:
        """The bytes; an object above ``max_bytes`` fails as too large, unread."""
        if self.info.size > max_bytes:
            self._body.close()
            raise ProcessingError(f"the file is too large: {self.info.size:,} bytes, above "
                                  f"the {max_bytes:,}-byte limit (MAX_FILE_BYTES)")
        try:
            return self._body.read()
        except BotoCoreError as exc:
            raise classify_s3_error(exc, self.info.key) from exc


class S3Store:
    """Read, write (``ingest upload``) and delete objects of one bucket."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def open(self, key: str) -> S3Object:
        """GetObject: the object's identity and a body to read."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise classify_s3_error(exc, key) from exc
        info = ObjectInfo(key, obj.get("ETag"), int(obj.get("ContentLength") or 0))
        return S3Object(info, obj["Body"])

    def put(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        """PutObject, as an uploader stores a file before its CMS entry is created."""
        try:
            obj = self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                         ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise classify_s3_error(exc, key) from exc
        return ObjectInfo(key, obj.get("ETag"), len(data))

    def head(self, key: str) -> ObjectInfo | None:
        """The object's identity, or None when it does not exist."""
        try:
            obj = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            err = classify_s3_error(exc, key)
            if isinstance(err, FileNotFound):
                return None
            raise err from exc
        return ObjectInfo(key, obj.get("ETag"), int(obj.get("ContentLength") or 0))

    def delete_if_unchanged(self, key: str, etag: str | None,
                            size: int | None) -> tuple[bool, str]:
        """Delete the object if it is still the one seen: (deleted or gone, what happened).

        Without an ETag or size there is no proof of what was seen, so nothing is deleted.
        S3 has no conditional delete for general-purpose buckets: between the HEAD and the
        DELETE (milliseconds) a new upload to the *same key* could slip in; uploads of a
        new version normally get a new key.
        """
        if etag is None and size is None:
            return False, f"kept S3 object {key!r}: the failed attempt never saw it (no proof)"
        now = self.head(key)
        if now is None:
            return True, f"S3 object {key!r} already gone"
        if (etag is not None and now.etag != etag) or (etag is None and now.size != size):
            return False, f"kept S3 object {key!r}: it changed since the failed attempt"
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            err = classify_s3_error(exc, key)
            if not isinstance(err, FileNotFound):
                raise err from exc
        return True, f"deleted S3 object {key!r}"

"""S3 access (boto3; ``S3_ENDPOINT_URL`` points it at MinIO, moto or another S3 server).

botocore errors are translated into :mod:`ingest.errors` by type and error code, so the
pipeline decides retry or fail without reading messages.
"""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ingest.errors import S3_ERROR, FileNotFound, IngestError, S3Error, TransientError
from ingest.settings import Settings

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500",
})


def classify_s3_error(exc: Exception, key: str) -> IngestError:
    """Map a botocore exception to a transient or permanent :class:`IngestError`."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING:
            return FileNotFound(f"S3 object {key!r} does not exist")
        if code in _TRANSIENT or status >= 500:
            return TransientError(f"S3 answered {code or status} for {key!r}", category=S3_ERROR)
        return S3Error(f"S3 refused {key!r}: {code or status}")
    if isinstance(exc, BotoConnectionError | BotoCoreError):
        return TransientError(f"S3 unreachable: {type(exc).__name__}", category=S3_ERROR)
    return S3Error(f"S3 error for {key!r}: {type(exc).__name__}")


class S3Store:
    """Download and delete objects of one bucket."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.max_bytes = settings.max_file_bytes
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

    def download(self, key: str) -> bytes:
        """The object's bytes; refuses objects larger than ``MAX_FILE_BYTES``."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            size = int(obj.get("ContentLength") or 0)
            if size > self.max_bytes:
                obj["Body"].close()
                raise S3Error(f"S3 object {key!r} is {size} bytes, above MAX_FILE_BYTES")
            return obj["Body"].read()
        except IngestError:
            raise
        except Exception as exc:
            raise classify_s3_error(exc, key) from exc

    def delete(self, key: str) -> None:
        """Delete the object; an object that is already gone counts as deleted."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            err = classify_s3_error(exc, key)
            if not isinstance(err, FileNotFound):
                raise err from exc

"""Strapi 5 REST client (``Authorization: Bearer $CMS_API_TOKEN``).

Only the calls kb-ingest makes: a file entry by ``documentId``, its deletion, the listing
used by reconciliation, and the creation of a file entry as an uploader does it
(``ingest upload``). HTTP outcomes map to :mod:`ingest.errors`: 404 is
:class:`FileNotFound`; connection problems, timeouts, 401/403, 429 and 5xx are transient
(category ``infrastructure_error``); any other answer is an :class:`InternalError`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from ingest.errors import FileNotFound, InternalError, TransientError
from ingest.settings import Settings


class CmsClient:
    """A small client over one ``requests.Session``."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = "application/json"

    @classmethod
    def from_settings(cls, settings: Settings) -> CmsClient:
        """A client for ``CMS_API_URL`` with ``CMS_API_TOKEN``."""
        return cls(settings.cms_api_url, settings.cms_api_token, settings.cms_timeout_seconds)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"CMS unreachable: {type(exc).__name__}") from exc
        # 401/403 are a configuration problem an operator fixes: retried, never "not found".
        if response.status_code in (401, 403, 408, 429) or response.status_code >= 500:
            raise TransientError(f"CMS answered {response.status_code} to {method} {path}")
        return response

    def get_file(self, document_id: str) -> dict[str, Any]:
        """The file entry's ``data``; :class:`FileNotFound` when the CMS has no such entry."""
        path = f"/api/files/{quote(document_id, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            raise FileNotFound(f"CMS has no file entry {document_id!r}")
        if response.status_code != 200:
            raise InternalError(f"CMS answered {response.status_code} to GET {path}")
        data = response.json().get("data")
        if not isinstance(data, dict):
            raise InternalError(f"CMS answered GET {path} without an entry")
        return data

    def create_file(self, data: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/files`` with ``{"data": …}`` (the CMS then sends ``entry.create``);
        returns the created entry. A refusal (400 with Strapi's error message) is an
        :class:`InternalError` naming it."""
        response = self._request("POST", "/api/files", json={"data": data})
        if response.status_code not in (200, 201):
            try:
                detail = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                detail = response.text[:300]
            raise InternalError(f"CMS answered {response.status_code} to POST /api/files: "
                                f"{detail}")
        entry = response.json().get("data")
        if not isinstance(entry, dict) or not entry.get("documentId"):
            raise InternalError("CMS answered POST /api/files without an entry")
        return entry

    def delete_file(self, document_id: str) -> bool:
        """Delete the entry; True if it was deleted now, False if it was already gone."""
        path = f"/api/files/{quote(document_id, safe='')}"
        response = self._request("DELETE", path)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise InternalError(f"CMS answered {response.status_code} to DELETE {path}")
        return True

    def list_files(
        self, updated_after: datetime, page: int, page_size: int
    ) -> tuple[list[Any], dict[str, Any]]:
        """One page of file entries updated strictly after ``updated_after``, oldest first.

        ``GET /api/files?filters[updatedAt][$gt]=…&sort=updatedAt:asc,documentId:asc
        &pagination[page]=…&pagination[pageSize]=…`` (the time as UTC milliseconds with
        ``Z``; a naive time is taken as UTC). ``documentId`` breaks ties between entries of
        the same millisecond, so paging through them is stable. Returns ``(data,
        meta.pagination)``; the entries are returned as the CMS sent them (the caller
        validates each one).
        """
        moment = updated_after.replace(tzinfo=UTC) if updated_after.tzinfo is None else (
            updated_after.astimezone(UTC)
        )
        params = {
            "filters[updatedAt][$gt]": moment.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{moment.microsecond // 1000:03d}Z",
            "sort": "updatedAt:asc,documentId:asc",
            "pagination[page]": page,
            "pagination[pageSize]": page_size,
        }
        response = self._request("GET", "/api/files", params=params)
        if response.status_code != 200:
            raise InternalError(f"CMS answered {response.status_code} to GET /api/files")
        try:
            body = response.json()
        except ValueError as exc:
            raise InternalError("CMS answered GET /api/files with a non-JSON body") from exc
        data = body.get("data") if isinstance(body, dict) else None
        meta = body.get("meta") if isinstance(body, dict) else None
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
        if not isinstance(data, list) or not isinstance(pagination, dict):
            raise InternalError("CMS answered GET /api/files without data or pagination")
        return data, pagination

"""Strapi 5 REST client (``Authorization: Bearer $CMS_API_TOKEN``).

Only the calls kb-ingest makes: a file entry by ``documentId``, its deletion, the listing
used by reconciliation. HTTP outcomes map to :mod:`ingest.errors`: 404 is
:class:`FileNotFound`, connection problems, timeouts, 429 and 5xx are transient.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ingest.errors import PROCESSING_ERROR, FileNotFound, PermanentError, TransientError
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
            raise TransientError(
                f"CMS unreachable: {type(exc).__name__}", category=PROCESSING_ERROR
            ) from exc
        # 401/403 are a configuration problem an operator fixes: retried, never "not found".
        if response.status_code in (401, 403, 408, 429) or response.status_code >= 500:
            raise TransientError(
                f"CMS answered {response.status_code} to {method} {path}",
                category=PROCESSING_ERROR,
            )
        return response

    def get_file(self, document_id: str) -> dict[str, Any]:
        """The file entry's ``data``; :class:`FileNotFound` when the CMS has no such entry."""
        path = f"/api/files/{quote(document_id, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            raise FileNotFound(f"CMS has no file entry {document_id!r}")
        if response.status_code != 200:
            raise PermanentError(f"CMS answered {response.status_code} to GET {path}")
        data = response.json().get("data")
        if not isinstance(data, dict):
            raise PermanentError(f"CMS answered GET {path} without an entry")
        return data

    def delete_file(self, document_id: str) -> bool:
        """Delete the entry; True if it was deleted now, False if it was already gone."""
        path = f"/api/files/{quote(document_id, safe='')}"
        response = self._request("DELETE", path)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise PermanentError(f"CMS answered {response.status_code} to DELETE {path}")
        return True

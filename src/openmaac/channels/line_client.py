"""Client of the LINE Messaging API (or the built-in simulator: the base URL is configuration)."""

from __future__ import annotations

from typing import Any

import httpx

from openmaac import __version__

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class LineAPIError(Exception):
    def __init__(self, status_code: int, body: Any, request_id: str | None = None) -> None:
        super().__init__(f"LINE answered {status_code}: {body}")
        self.status_code = status_code
        self.body = body
        self.request_id = request_id


class LineClient:
    def __init__(self, base_url: str, access_token: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "User-Agent": f"openmaac/{__version__}",
        }
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get_profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's profile, or None when LINE has none for us (not a friend, blocked)."""
        response = self._http.get(f"{self.base_url}/v2/bot/profile/{user_id}", headers=self.headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise LineAPIError(response.status_code, _body(response), response.headers.get("x-line-request-id"))
        return dict(response.json())


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text

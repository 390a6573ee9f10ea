"""Client of the LINE Messaging API (or the built-in simulator: the base URL is configuration).

Sending follows LINE's retry guide (https://developers.line.biz/en/docs/messaging-api/retrying-api-request/):

- push and multicast carry an ``X-Line-Retry-Key`` chosen by the CALLER, who stores it durably
  with the send row before calling, so that every retry of the same logical send (inside this
  client after a 500 or a timeout, or a whole new attempt after a crash) reuses it and LINE
  executes the send at most once;
- a ``409`` with that key means "already accepted" (earlier by us, perhaps by a process that
  crashed before recording it): it is a success, with the ``sentMessages`` LINE repeats;
- ``500`` and timeouts are retried here with the same key, at most ``max_attempts`` times in all;
- ``429`` (rate limit, or the transient "monthly limit" LINE reports while reserving quota) is
  retried with an exponential backoff (LINE sends no ``Retry-After``);
- any other 4xx is final and raised at once as :class:`LineAPIError`.

PNP (``/bot/pnp/push``) supports no retry key, so a PNP call that timed out or answered 500 is
NOT retried here (a retry could deliver twice); it raises and the caller decides.  It is retried
on 429 and when the connection could not even be opened (nothing was sent).

When a ``limiter`` is given (see :func:`openmaac.channels.line_rate.limiter`), every HTTP attempt
(retries included: LINE counts them) first waits for a slot of the channel's per-endpoint rate.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from openmaac import __version__
from openmaac.channels.per_thread import per_thread_client
from openmaac.telemetry.metrics import timed_upstream

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MULTICAST_MAX_RECIPIENTS = 500
MAX_MESSAGES = 5

# endpoint names used for rate limiting (openmaac.channels.line_rate.RATES)
PUSH = "push"
MULTICAST = "multicast"
PNP_PUSH = "pnp_push"

Limiter = Callable[[str, int], Any]


class LineAPIError(Exception):
    """LINE answered a non-2xx status (after the retries this client makes)."""

    def __init__(self, status_code: int, body: Any, request_id: str | None = None,
                 accepted_request_id: str | None = None) -> None:
        super().__init__(f"LINE answered {status_code}: {body}")
        self.status_code = status_code
        self.body = body
        self.request_id = request_id
        self.accepted_request_id = accepted_request_id

    @property
    def message(self) -> str:
        """LINE's ``message`` ("Failed to send messages", "You have reached your monthly limit.", ...)."""
        if isinstance(self.body, dict):
            return str(self.body.get("message", ""))
        return str(self.body or "")

    @property
    def is_quota_exceeded(self) -> bool:
        return self.status_code == 429 and "monthly limit" in self.message

    @property
    def is_rate_limited(self) -> bool:
        return self.status_code == 429 and not self.is_quota_exceeded


class LineTimeout(Exception):
    """No answer from LINE after the retries (timed out, or the connection failed).

    The outcome is unknown: retry later with the SAME retry key (LINE then answers 409 if the
    send was in fact accepted).  ``connect_failed`` is True when the last attempt could not even
    connect (so that attempt certainly sent nothing).
    """

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed


class LineClient:
    """One channel's client.  Thread-safe (httpx.Client is); reuse it for many sends.

    ``max_attempts`` bounds the HTTP attempts of one call (first try + retries);
    ``backoff`` is the first wait in seconds before a retry (doubled each time, with jitter,
    capped at ``max_backoff``); ``limiter(endpoint, cost)`` blocks until the rate allows.
    """

    def __init__(self, base_url: str, access_token: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.Client | None = None, max_attempts: int = 4, backoff: float = 0.5,
                 max_backoff: float = 8.0, limiter: Limiter | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "User-Agent": f"openmaac/{__version__}",
        }
        # one pooled httpx.Client per process and timeout, shared by every LineClient: building
        # a client costs ~0.1 s (TLS context), and keep-alive connections are reused across sends
        self._http = http or _shared_http(timeout)
        self._owns_http = False
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.limiter = limiter
        self._sleep = sleep

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # reads
    # ------------------------------------------------------------------------------------------

    def get_profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's profile, or None when LINE has none for us (not a friend, blocked)."""
        response = timed_upstream("line", "/v2/bot/profile/{userId}", lambda: self._http.get(
            f"{self.base_url}/v2/bot/profile/{user_id}", headers=self.headers))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise LineAPIError(response.status_code, _body(response), response.headers.get("x-line-request-id"))
        return dict(response.json())

    def get_bot_info(self) -> dict[str, Any]:
        """``GET /v2/bot/info``: the bot's ``basicId``, display name and so on."""
        response = timed_upstream("line", "/v2/bot/info", lambda: self._http.get(
            f"{self.base_url}/v2/bot/info", headers=self.headers))
        if response.status_code != 200:
            raise LineAPIError(response.status_code, _body(response), response.headers.get("x-line-request-id"))
        return dict(response.json())

    # ------------------------------------------------------------------------------------------
    # sends
    # ------------------------------------------------------------------------------------------

    def push(self, to: str, messages: list[dict[str, Any]], *, retry_key: str,
             notification_disabled: bool = False,
             custom_aggregation_units: list[str] | None = None) -> dict[str, Any]:
        """``POST /v2/bot/message/push``; LINE's body ``{"sentMessages": [{"id", "quoteToken"?}]}``.

        A 409 (this retry key was already accepted) counts as success and answers the
        ``sentMessages`` LINE repeats in the 409 body (``{"sentMessages": []}`` if none).
        Note: a push to a user who blocked the account also answers 200 (nothing delivered).
        """
        _check_messages(messages)
        body: dict[str, Any] = {"to": to, "messages": messages}
        if notification_disabled:
            body["notificationDisabled"] = True
        if custom_aggregation_units:
            body["customAggregationUnits"] = custom_aggregation_units
        response = self._send(PUSH, "/v2/bot/message/push", body, retry_key=_uuid(retry_key))
        payload = _body(response)
        sent = payload.get("sentMessages", []) if isinstance(payload, dict) else []
        return {"sentMessages": list(sent or [])}

    def multicast(self, to: list[str], messages: list[dict[str, Any]], *, retry_key: str,
                  notification_disabled: bool = False,
                  custom_aggregation_units: list[str] | None = None) -> None:
        """``POST /v2/bot/message/multicast`` to at most 500 user ids (LINE answers ``{}``)."""
        if not 1 <= len(to) <= MULTICAST_MAX_RECIPIENTS:
            raise ValueError(f"multicast takes 1 to {MULTICAST_MAX_RECIPIENTS} user ids, not {len(to)}")
        _check_messages(messages)
        body: dict[str, Any] = {"to": list(to), "messages": messages}
        if notification_disabled:
            body["notificationDisabled"] = True
        if custom_aggregation_units:
            body["customAggregationUnits"] = custom_aggregation_units
        self._send(MULTICAST, "/v2/bot/message/multicast", body, retry_key=_uuid(retry_key))

    def pnp_push(self, to: str, messages: list[dict[str, Any]], *, delivery_tag: str | None = None,
                 notification_disabled: bool = False) -> None:
        """``POST /bot/pnp/push`` (LINE notification message by phone number).

        ``to`` is the E.164 number (``+886912345678``) or the lowercase SHA-256 hex of it.
        ``delivery_tag`` (16..100 characters) comes back as ``delivery.data`` in the ``delivery``
        webhook when the message is delivered.  A 422 (the number cannot receive it) raises
        :class:`LineAPIError` with ``status_code == 422``.  200 does not mean delivered: only the
        ``delivery`` webhook does.
        """
        _check_messages(messages)
        if delivery_tag is not None and not 16 <= len(delivery_tag) <= 100:
            raise ValueError("delivery_tag must be 16 to 100 characters long")
        body: dict[str, Any] = {"to": to, "messages": messages}
        if notification_disabled:
            body["notificationDisabled"] = True
        headers = {"X-Line-Delivery-Tag": delivery_tag} if delivery_tag else {}
        self._send(PNP_PUSH, "/bot/pnp/push", body, extra_headers=headers, idempotent=False)

    # ------------------------------------------------------------------------------------------

    def _send(self, endpoint: str, path: str, body: dict[str, Any], *, retry_key: str | None = None,
              extra_headers: dict[str, str] | None = None, idempotent: bool = True) -> httpx.Response:
        """POST with LINE's retry policy; the 2xx (or 409-as-accepted) response, else raises.

        ``idempotent``: the request carries a retry key, so a 500 or a timeout may be retried.
        """
        headers = {**self.headers, "Content-Type": "application/json", **(extra_headers or {})}
        if retry_key is not None:
            headers["X-Line-Retry-Key"] = retry_key
        url = self.base_url + path
        content = orjson.dumps(body)  # once for every attempt (500 ids: a fifth of json.dumps' time)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            if self.limiter is not None:
                self.limiter(endpoint, 1)
            try:
                response = timed_upstream("line", path, lambda: self._http.post(url, content=content,
                                                                                 headers=headers))
            except httpx.TimeoutException as exc:
                connect_failed = isinstance(exc, httpx.ConnectTimeout)
                if last or not (idempotent or connect_failed):
                    raise LineTimeout(f"LINE {path} timed out after {attempt} attempt(s): {exc!r}",
                                      connect_failed=connect_failed) from exc
                self._wait(attempt)
                continue
            except httpx.TransportError as exc:
                connect_failed = isinstance(exc, httpx.ConnectError)
                if last or not (idempotent or connect_failed):
                    raise LineTimeout(f"LINE {path} unreachable after {attempt} attempt(s): {exc!r}",
                                      connect_failed=connect_failed) from exc
                self._wait(attempt)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return response
            if status == 409 and retry_key is not None:
                # the retry key was accepted before (by this call's earlier attempt, or by a
                # process that crashed after sending): the send is done
                return response
            retryable = status == 429 or (status >= 500 and idempotent)
            if not retryable or last:
                raise LineAPIError(status, _body(response), response.headers.get("x-line-request-id"),
                                   response.headers.get("x-line-accepted-request-id"))
            self._wait(attempt)

    def _wait(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        self._sleep(delay * (0.5 + random.random() / 2))


_shared: dict[tuple[int, str], httpx.Client] = {}
_shared_lock = threading.Lock()


def _shared_http(timeout: httpx.Timeout | float) -> httpx.Client:
    key = (os.getpid(), repr(timeout))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            # a pool per thread: pushes, PNP batches and fan-out sends call LINE from many threads
            client = _shared[key] = per_thread_client(
                timeout, httpx.Limits(max_connections=200, max_keepalive_connections=50))
        return client


def new_retry_key() -> str:
    """A fresh ``X-Line-Retry-Key`` (a UUID); store it with the send BEFORE calling LINE."""
    return str(uuid.uuid4())


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"X-Line-Retry-Key must be a UUID, not {value!r}") from None


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not 1 <= len(messages) <= MAX_MESSAGES:
        raise ValueError(f"LINE takes 1 to {MAX_MESSAGES} messages per request, not {len(messages)}")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text

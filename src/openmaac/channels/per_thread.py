"""An httpx transport that gives each thread a connection pool of its own.

httpcore's connection pool takes one lock several times per request (queueing the request,
assigning it a connection, releasing the connection when the response closes). Shared by the
16 threads of an SMS or PNP batch, or by the request threads of ``serve``, that lock convoys:
its holder loses the GIL mid-section, every other sender queues on the lock, and each hand-off
waits for the GIL again (py-spy showed most SMS send threads of a campaign queued there, not
waiting for the provider). One pool per thread has no such contention; the client in front
(``httpx.Client``) stays one object shared by every thread, with its settings and headers.

The pools share one TLS context (building one reads the CA bundle: milliseconds), so a thread
that is new (anyio's idle threads end, new ones start) only opens its connection. After a
fork the child builds its own pools: a parent's sockets are never shared.
"""

from __future__ import annotations

import os
import ssl
import threading
import weakref
from collections.abc import Callable

import httpx


class PerThreadTransport(httpx.BaseTransport):
    def __init__(self, build: Callable[[ssl.SSLContext], httpx.BaseTransport]) -> None:
        self._build = build
        self._ssl_context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        # every pool still alive, to close them all with the client (a thread's pool is
        # dropped with the thread; its idle connections close when it is collected)
        self._pools: weakref.WeakSet[httpx.BaseTransport] = weakref.WeakSet()
        self._closed = False

    def _own(self) -> httpx.BaseTransport:
        local = self._local
        transport: httpx.BaseTransport | None = getattr(local, "transport", None)
        if transport is not None and local.pid == os.getpid():
            return transport
        with self._lock:
            if self._closed:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            transport = self._build(self._ssl_context)
            self._pools.add(transport)
        local.transport, local.pid = transport, os.getpid()
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._own().handle_request(request)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools = list(self._pools)
        for transport in pools:
            transport.close()


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, consulted only for a response that sets a cookie.

    httpx hands every response to ``http.cookiejar`` (15 µs of Python building urllib's request
    and response views, per call) even when it sets no cookie, as LINE's and the SMS
    gateways' never do. Skipping those changes nothing: the jar only reads ``Set-Cookie`` and
    ``Set-Cookie2``."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def per_thread_client(timeout: httpx.Timeout | float, limits: httpx.Limits, *,
                      build: Callable[[ssl.SSLContext], httpx.BaseTransport] | None = None,
                      **client_options: object) -> httpx.Client:
    """An ``httpx.Client`` whose every thread sends through a pool of its own (``limits`` per
    thread); ``build``: that pool's transport (default: httpx's own, without proxies from the
    environment)."""
    def default(context: ssl.SSLContext) -> httpx.BaseTransport:
        return httpx.HTTPTransport(verify=context, limits=limits, trust_env=False)

    client = httpx.Client(timeout=timeout, transport=PerThreadTransport(build or default),
                          **client_options)  # type: ignore[arg-type]
    client._cookies = _Cookies(client.cookies)  # httpx's own jar; the ``cookies`` setter would re-wrap it
    return client

"""An httpx client for destinations a tenant chose: every connection it opens resolves the
host, checks every address with ``openmaac.channels.destinations`` and connects to a checked
address, so neither a URL saved before a DNS change nor a rebinding DNS answer reaches a
private, loopback or link-local address. The URL keeps its host name (Host header, TLS SNI
and certificate check), no proxy from the environment is used (it would be checked instead
of the destination) and redirects are not followed (httpx's default).
"""

from __future__ import annotations

import ssl
import threading
import typing

import httpcore
import httpx

from openmaac.channels import destinations
from openmaac.channels.per_thread import per_thread_client


class DestinationRefused(httpx.ConnectError):
    """The host resolves to an address tenants may not reach: nothing was sent."""


class DestinationUnresolvable(httpx.ConnectError):
    """The host has no address now: nothing was sent (a transient failure)."""


class _CheckedBackend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                    ) -> httpcore.NetworkStream:
        try:
            addresses = destinations.checked_addresses(host, port)
        except destinations.UnsafeDestination as exc:
            raise DestinationRefused(f"refused: {exc}") from None
        except destinations.Unresolvable as exc:
            raise DestinationUnresolvable(str(exc)) from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context or httpx.create_ssl_context()  # built once (it reads the CA bundle)
        super().__init__(trust_env=False, limits=limits, verify=context)
        # httpx builds its pool with the default network backend; the same pool with ours
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(),
        )


def guarded_client(timeout: httpx.Timeout | float, limits: httpx.Limits) -> httpx.Client:
    return httpx.Client(timeout=timeout, transport=GuardedTransport(limits), trust_env=False,
                        follow_redirects=False)


_shared: httpx.Client | None = None
_shared_lock = threading.Lock()


def shared_guarded_client(timeout: httpx.Timeout | float, limits: httpx.Limits) -> httpx.Client:
    """One guarded client per process (building one costs milliseconds: its TLS context),
    reused by every tenant-configured SMS and WhatsApp gateway, with a pool per thread
    (``openmaac.channels.per_thread``: the sends of a batch run on many threads at once)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = per_thread_client(timeout, limits, build=lambda context: GuardedTransport(limits, context),
                                        trust_env=False, follow_redirects=False)
        return _shared

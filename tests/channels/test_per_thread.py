"""The per-thread connection pools behind openmaac's shared upstream clients, over real HTTP on
loopback: each thread keeps its own keep-alive connection; one client closes them all."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from openmaac.channels import destinations
from openmaac.channels.guarded_http import shared_guarded_client
from openmaac.channels.per_thread import per_thread_client
from openmaac.config import get_settings


class _PeerPort(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a connection serves many requests

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = str(self.client_address[1]).encode()  # the caller's port: one per connection
        self.send_response(200)
        if self.path.startswith("/cookie/"):
            self.send_header("Set-Cookie", f"session={self.path.rsplit('/', 1)[1]}; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PeerPort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _ports_by_thread(client: httpx.Client, url: str, threads: int, calls: int) -> list[set[str]]:
    seen: list[set[str]] = [set() for _ in range(threads)]
    start = threading.Barrier(threads)

    def run(index: int) -> None:
        start.wait()  # all at once: a shared pool would hand connections between the threads
        for _ in range(calls):
            seen[index].add(client.get(url).text)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seen


def test_each_thread_reuses_a_connection_of_its_own(server_url: str) -> None:
    client = per_thread_client(5.0, httpx.Limits(max_connections=4, max_keepalive_connections=4))
    seen = _ports_by_thread(client, server_url, threads=6, calls=5)
    assert all(len(ports) == 1 for ports in seen), seen  # kept alive within its thread
    assert len(set().union(*seen)) == 6  # and never another thread's (6 > the limit of 4: per thread)
    client.close()
    with pytest.raises(RuntimeError):
        client.get(server_url)


def test_closing_closes_every_threads_connections(server_url: str) -> None:
    client = per_thread_client(5.0, httpx.Limits(max_connections=2))
    called, release = threading.Barrier(4), threading.Event()

    def call() -> None:
        client.get(server_url)
        called.wait()
        release.wait()  # alive until the client is closed: its pool lives as long as the thread

    workers = [threading.Thread(target=call) for _ in range(3)]
    for worker in workers:
        worker.start()
    called.wait()
    pools = list(client._transport._pools)  # type: ignore[attr-defined]
    assert len(pools) == 3
    assert all(len(pool._pool.connections) == 1 for pool in pools)
    client.close()
    assert all(len(pool._pool.connections) == 0 for pool in pools)
    release.set()
    for worker in workers:
        worker.join()


def test_the_guarded_client_still_refuses_loopback_from_every_thread(server_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dataclasses.replace(get_settings(), outbound_allow_hosts=())  # the operator allows nothing
    monkeypatch.setattr(destinations, "get_settings", lambda: settings)
    client = shared_guarded_client(5.0, httpx.Limits(max_connections=2))
    failures: list[BaseException] = []

    def call() -> None:
        try:
            client.get(server_url)
        except httpx.ConnectError as exc:
            failures.append(exc)

    workers = [threading.Thread(target=call) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(failures) == 3 and all("refused" in str(exc) for exc in failures)


def test_a_response_setting_a_cookie_still_reaches_the_jar(server_url: str) -> None:
    # the jar is consulted only for responses with Set-Cookie (most upstreams set none)
    client = per_thread_client(5.0, httpx.Limits(max_connections=2))
    try:
        client.get(server_url)
        assert not client.cookies
        client.get(f"{server_url}cookie/abc")
        assert client.cookies.get("session") == "abc"
        client.get(server_url)  # a response without one leaves the jar as it was
        assert client.cookies.get("session") == "abc"
    finally:
        client.close()

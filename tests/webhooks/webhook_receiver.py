"""A real webhook receiver on loopback for the webhook tests (a threaded HTTP/1.1 server).

It records every request (arrival time, headers, exact body bytes) and answers from a
script: a list of status codes consumed one per request (then ``default_status``), an
optional delay, and, when slow, it only counts a delivery as *successful* if the sender is
still connected when it answers (a killed sender's requests do not count).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    successful: bool = False
    answered_at: float | None = None

    @property
    def key(self) -> str:
        return self.headers.get("cresclab-idempotency-key", "")


@dataclass
class Receiver:
    port: int = 0
    default_status: int = 200
    statuses: list[int] = field(default_factory=list)
    status_by_key: dict[str, list[int]] = field(default_factory=dict)
    delay: float = 0.0
    redirect_to: str | None = None
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def reserve_port(self) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    key = headers.get("cresclab-idempotency-key", "")
                    per_key = receiver.status_by_key.get(key)
                    if per_key:
                        status = per_key.pop(0)
                    elif receiver.statuses:
                        status = receiver.statuses.pop(0)
                    else:
                        status = receiver.default_status
                    record = Received(arrived, self.path, headers, body, status)
                    receiver.requests.append(record)
                try:
                    if receiver.delay:
                        time.sleep(receiver.delay)
                        if _peer_closed(self.connection):
                            self.close_connection = True
                            return
                    payload = b"OK"
                    self.send_response(status)
                    if receiver.redirect_to and 300 <= status < 400:
                        self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                    record.answered_at = time.monotonic()
                    record.successful = 200 <= status < 300
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

        if self.port == 0:
            self.reserve_port()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- queries --
    def topics(self) -> list[str]:
        import json

        out = []
        for r in list(self.requests):
            body = json.loads(r.body)
            out.append(body.get("topic") or body.get("event"))
        return out

    def successful(self) -> list[Received]:
        return [r for r in list(self.requests) if r.successful]

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _peer_closed(conn: socket.socket) -> bool:
    """True when the client has gone (its end of the connection is closed)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def deliveries(tenant: Any, webhook_id: int, status: str | None = None) -> list[dict[str, Any]]:
    """The endpoint's deliveries as the API lists them (newest first), optionally by status."""
    params = {"status": status} if status else {}
    response = tenant.client.get(tenant.api(f"webhook/{webhook_id}/deliveries/"), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])

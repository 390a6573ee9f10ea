"""Outgoing webhooks: signed deliveries per second to a loopback receiver, and API-call-to-first-attempt latency.

Throughput: N contacts carry a tag; one ``DELETE taglinemember/`` without ``line_uid``
removes it from all of them, which emits N ``contact.tag.remove`` events in that one
transaction; the figure is N divided by the time from that API call to the N-th signed
delivery answered by the receiver. Latency: sequential ``POST taglinemember/`` calls, each
timed from just before the call to the receiver's arrival of its event (first attempt).

The receiver is a separate process (a minimal keep-alive HTTP/1.1 server on uvloop that
checks every signature), so its CPU is not counted as openmaac's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from benchmarks.common import ROOT, Result, ServerProcess, free_port, fresh_postgres_database, postgres_url

# -- the receiver process ----------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.count = 0
        self.bad_signatures = 0
        self.secret = b""
        self.arrivals: dict[str, float] = {}
        self.keys: set[str] = set()


class _Protocol(asyncio.Protocol):
    def __init__(self, stats: _Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.handle(lines[0], headers, body)

    def reply(self, payload: bytes, content_type: str = "text/plain") -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)

    def handle(self, request_line: str, headers: dict[str, str], body: bytes) -> None:
        stats = self.stats
        if request_line.startswith("POST /secret"):
            stats.secret = body
            self.reply(b"OK")
            return
        if request_line.startswith("GET /stats"):
            self.reply(json.dumps({"count": stats.count, "bad": stats.bad_signatures, "unique": len(stats.keys),
                                   "arrivals": stats.arrivals}).encode(), "application/json")
            return
        now = time.monotonic()
        expected = hmac.new(stats.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("cresclab-signature", "")):
            stats.bad_signatures += 1
        stats.count += 1
        stats.keys.add(headers.get("cresclab-idempotency-key", ""))
        uid = json.loads(body)["data"].get("line_uid")
        if uid and uid.startswith("Ulat") and uid not in stats.arrivals:
            stats.arrivals[uid] = now
        self.reply(b"OK")


def serve_receiver(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    stats = _Stats()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Protocol(stats), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def receiver_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_webhooks", "--receiver", str(port)],
                               cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/stats", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(10)


# -- the measurements -------------------------------------------------------------------------

def _seed(server: ServerProcess, org: str, count: int, tag_name: str) -> tuple[list[str], int]:
    """Contacts carrying a tag, written straight into the server's database (setup, not measured)."""
    from sqlalchemy import create_engine, text

    url = server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = create_engine(url)
    uids = [f"U{i:032x}" for i in range(count)]
    with engine.begin() as conn:
        org_id = conn.execute(text("SELECT id FROM organizations WHERE name = :n"), {"n": org}).scalar_one()
        now = "2026-01-01 00:00:00"
        conn.execute(text("INSERT INTO tags (organization_id, name, created_at) VALUES (:o, :n, :t)"),
                     {"o": org_id, "n": tag_name, "t": now})
        tag_id = conn.execute(text("SELECT id FROM tags WHERE organization_id = :o AND name = :n"),
                              {"o": org_id, "n": tag_name}).scalar_one()
        for start in range(0, count, 5000):
            conn.execute(text("INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                              "VALUES (:o, :u, 'follow', :t, :t)"),
                         [{"o": org_id, "u": uid, "t": now} for uid in uids[start:start + 5000]])
        conn.execute(text("INSERT INTO contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at) "
                          "SELECT id, :tag, organization_id, :t, :t FROM contacts WHERE organization_id = :o"),
                     {"tag": tag_id, "o": org_id, "t": now})
    engine.dispose()
    return uids, int(tag_id)


def _wait_count(receiver: str, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(receiver + "/stats", timeout=10).json()
        if stats["count"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def _measure(server: ServerProcess, receiver: str, label: str, events: int, probes: int) -> Iterable[Result]:
    token = server.cli("token", "create", "--org", "bench")
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    created = client.post("/openapi/v1/webhook/", json={
        "url": receiver + "/hook", "topics": ["contact.tag.add", "contact.tag.remove"], "style": "cdh"}).json()
    httpx.post(receiver + "/secret", content=created["secret"].encode())
    uids, tag_id = _seed(server, "bench", events, "bulk")

    # Throughput: one API call, N events, N signed deliveries.
    import psutil

    process = psutil.Process(server.process.pid if server.process else 0)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.monotonic()
    response = client.request("DELETE", "/openapi/v1/taglinemember/", json={"tag_id": tag_id})
    assert response.status_code == 204, response.text
    emitted = time.monotonic()
    stats = _wait_count(receiver, events, timeout=600)
    finished = time.monotonic()
    cpu_ms = (sum(process.cpu_times()[:2]) - cpu_before) * 1000 / events
    assert stats["bad"] == 0, "signature mismatch"
    yield Result(f"{label}: signed deliveries / s ({events:,} events, 1 API call)", events / (finished - started),
                 "deliveries/s", f"goal ≥ 1,000/s; emit of {events:,} in the call took "
                                 f"{emitted - started:.2f} s; {stats['unique']:,} unique keys")
    yield Result(f"{label}: openmaac CPU per delivery (emit + send + record)", cpu_ms, "ms",
                 f"≈ {1000 / cpu_ms:,.0f} deliveries/s per core; load average {psutil.getloadavg()[0]:.1f}")

    # Latency: API call -> first delivery attempt, sequential calls.
    latency_uids = [f"Ulat{i:028x}" for i in range(probes)]
    _seed_more(server, "bench", latency_uids)
    tag = client.post("/openapi/v1/tag/", json={"name": "probe"}).json()["id"]
    sent: dict[str, float] = {}
    for uid in latency_uids:
        sent[uid] = time.monotonic()
        assert client.post("/openapi/v1/taglinemember/", json={"tag_id": tag, "line_uid": uid}).status_code == 201
        time.sleep(0.01)
    stats = _wait_count(receiver, events + probes, timeout=60)
    latencies = sorted((stats["arrivals"][uid] - sent[uid]) * 1000 for uid in latency_uids if uid in stats["arrivals"])
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    yield Result(f"{label}: API call → first delivery attempt, p50", p50, "ms", f"{len(latencies)} calls")
    yield Result(f"{label}: API call → first delivery attempt, p99", p99, "ms", "goal p99 ≤ 500 ms")
    client.close()


def _seed_more(server: ServerProcess, org: str, uids: list[str]) -> None:
    from sqlalchemy import create_engine, text

    url = server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = create_engine(url)
    with engine.begin() as conn:
        org_id = conn.execute(text("SELECT id FROM organizations WHERE name = :n"), {"n": org}).scalar_one()
        conn.execute(text("INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                          "VALUES (:o, :u, 'follow', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                     [{"o": org_id, "u": uid} for uid in uids])
    engine.dispose()


def run(args: Any) -> Iterable[Result]:
    events = 2_000 if args.quick else 20_000
    probes = 50 if args.quick else 300
    with receiver_process() as receiver, ServerProcess() as server:
        yield from _measure(server, receiver, "SQLite", events, probes)
    admin = postgres_url()
    if admin:
        with fresh_postgres_database(admin) as url, receiver_process() as receiver, \
                ServerProcess(database_url=url) as server:
            yield from _measure(server, receiver, "PostgreSQL", events, probes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        serve_receiver(int(sys.argv[2]))

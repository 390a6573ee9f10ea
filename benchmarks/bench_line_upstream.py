"""LINE upstream: shared rate limiter overhead and push throughput against the LINE simulator.

The simulator runs as its own process (``serve`` of simulators/line); the client side runs
worker threads here, each with its own ``Database`` object (as separate workers would), all
sharing one rate limiter row through SQLite (and PostgreSQL when available).
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import ChildApp, Result, fresh_postgres_database, postgres_url


def _databases() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        yield "sqlite", f"sqlite:///{Path(tmp) / 'rate.db'}"
    admin = postgres_url()
    if admin:
        with fresh_postgres_database(admin) as url:
            yield "postgresql", url


def _prepare(url: str) -> Any:
    from openmaac.channels.models import LineRateBucket
    from openmaac.db.engine import Database

    db = Database(url)
    LineRateBucket.__table__.create(db.write_engine, checkfirst=True)  # type: ignore[attr-defined]
    return db


def _limiter_overhead(url: str, calls: int) -> float:
    """acquire() calls per second with a limit too high to ever wait: pure bookkeeping."""
    from openmaac.channels import line_rate

    db = _prepare(url)
    channel = f"bench-{secrets.token_hex(3)}"
    started = time.perf_counter()
    for _ in range(calls):
        line_rate.acquire(db, channel, "push", rate=10_000_000.0, batch=50)
    elapsed = time.perf_counter() - started
    db.dispose()
    return calls / elapsed


def _push_run(sim: str, url: str, *, threads: int, per_thread: int, client_rate: float | None,
              sim_rate: float | None) -> tuple[float, int, int]:
    """(pushes/s, 429 answers, delivered) for ``threads`` workers each with its own Database."""
    from openmaac.channels import line_rate
    from openmaac.channels.line_client import LineAPIError, LineClient, new_retry_key
    from openmaac.db.engine import Database

    http = httpx.Client(timeout=30)
    channel_id = str(secrets.randbelow(10**9) + 10**9)
    token = secrets.token_urlsafe(24)
    http.post(f"{sim}/_admin/channels", json={"channel_id": channel_id, "channel_secret": "s",
                                               "access_token": token}).raise_for_status()
    if sim_rate:
        http.post(f"{sim}/_admin/channels/{channel_id}/limits",
                  json={"push": {"rate": sim_rate, "burst": sim_rate}}).raise_for_status()
    users = []
    for _ in range(20):
        user = http.post(f"{sim}/_admin/users", json={}).json()["user_id"]
        http.post(f"{sim}/_admin/users/{user}/follow", json={"channel_id": channel_id})
        users.append(user)
    _prepare(url).dispose()
    messages = [{"type": "text", "text": "benchmark"}]

    def worker(index: int) -> None:
        db = Database(url)
        rates = {"push": client_rate} if client_rate else None
        client = LineClient(sim, token, limiter=line_rate.limiter(db, channel_id, rates=rates), max_attempts=1)
        try:
            for n in range(per_thread):
                try:
                    client.push(users[(index + n) % len(users)], messages, retry_key=new_retry_key())
                except LineAPIError:
                    pass
        finally:
            db.dispose()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    log = http.get(f"{sim}/_admin/requests", params={"channel_id": channel_id}).json()
    http.close()
    return (len(log) / elapsed, sum(1 for r in log if r["status"] == 429),
            sum(r["delivered"] for r in log if r["status"] == 200))


def run(args: Any) -> Iterable[Result]:
    calls = 5_000 if args.quick else 40_000
    per_thread = 100 if args.quick else 500
    command = [sys.executable, "-c", "from openmaac.simulators.line.app import serve; serve(port={port})"]
    with ChildApp(command, health_path="/_admin/channels") as sim:
        for name, url in _databases():
            yield Result(f"limiter acquire() bookkeeping ({name})", _limiter_overhead(url, calls), "calls/s",
                         "batch of 50 slots per database write")
            rate, rejected, delivered = _push_run(sim.base_url, url, threads=8, per_thread=per_thread,
                                                  client_rate=None, sim_rate=None)
            yield Result(f"push through LineClient + limiter, 8 threads ({name})", rate, "req/s",
                         f"LINE limit 2,000/s; 429s: {rejected}; delivered {delivered:,}; "
                         "bounded by the simulator's CPU on this machine")
            rate, rejected, delivered = _push_run(sim.base_url, url, threads=8, per_thread=per_thread // 2,
                                                  client_rate=200.0, sim_rate=220.0)
            yield Result(f"push held to 200/s by the shared limiter, 8 threads ({name})", rate, "req/s",
                         f"simulator limit 220/s; 429s: {rejected} (goal 0); delivered {delivered:,}")

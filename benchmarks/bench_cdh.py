"""CDH API: engagement events per second beside a bare FastAPI ceiling, and concurrent member imports.

``openmaac serve`` runs in a child process (SQLite, then PostgreSQL when
benchmarks.common.postgres_url() is set):

- **engagement events**: 8 clients on keep-alive connections POST
  ``/cdh/v1/engagement/event`` (page_view, add_to_cart and purchase bodies in turn, each naming a
  click), alternating short rounds with ``benchmarks.bare_cdh``, a FastAPI app validating the
  same bodies with the same pydantic model and answering an event id (no database, no key);
- **imports**: an organisation of N contacts (1,000,000; 20,000 with --quick) seeded with bulk
  inserts (the raw insert floor, rows/s), then 10 import tasks of 10,000 rows each (every row
  a different contact, 4 profile fields) POSTed at once; clocked from the first POST until
  every task is ``success``; the server's peak RSS meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks.common import (
    ChildApp,
    LoadStats,
    PeakMemory,
    Result,
    ServerProcess,
    fresh_postgres_database,
    postgres_url,
    process_cpu_seconds,
    run_load,
    sqlalchemy_url,
)

CONCURRENCY = 8
ORG = "bench-cdh"
IMPORTS = 10
ROWS_PER_IMPORT = 10_000

BODIES = [
    {"behavior": "page_view", "utm_source": "line", "utm_medium": "message", "utm_campaign": "summer",
     "utm_term": "lm:12345", "language": "zh-TW", "geography": "TW",
     "params": {"page_path": "/products/tea", "page_title": "Tea"}},
    {"behavior": "add_to_cart", "utm_source": "line", "utm_term": "lm:12345", "language": "zh-TW",
     "params": {"currency": "TWD", "items": [{"item_id": "sku-1", "item_name": "Tea", "price": 120, "quantity": 2}]}},
    {"behavior": "purchase", "utm_source": "line", "utm_term": "lm:12345",
     "params": {"transaction_id": "T-1", "revenue": 240, "tax": 12, "shipping": 60, "currency": "TWD",
                "items": [{"item_id": "sku-1", "quantity": 2}]}},
]


def sizes(quick: bool) -> tuple[int, int, float]:
    """(contacts, rounds, seconds per round)"""
    return (20_000, 1, 2.0) if quick else (1_000_000, 3, 5.0)


def seed(database_url: str, count: int) -> tuple[list[str], float]:
    """``count`` contacts in chunked bulk inserts; their line_uids and the seconds it took."""
    from sqlalchemy import select, text

    from openmaac.auth.models import Organization
    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    database = get_database(sqlalchemy_url(database_url))
    now = datetime.now(UTC)
    uids = ["U" + secrets.token_hex(16) for _ in range(count)]
    with database.read() as session:
        org_id = session.scalar(select(Organization.id).where(Organization.name == ORG))
    began = time.perf_counter()
    for chunk in range(0, count, 5000):
        rows = [{"organization_id": org_id, "line_uid": uid, "status": "follow", "display_name": f"Contact {i}",
                 "created_at": now, "updated_at": now} for i, uid in enumerate(uids[chunk:chunk + 5000], chunk)]
        with database.write() as session:
            session.execute(Contact.__table__.insert(), rows)
    seconds = time.perf_counter() - began
    if not database.is_sqlite:
        with database.write() as session:
            session.execute(text("ANALYZE contacts"))
    database.dispose()
    return uids, seconds


def events_scenario(client: httpx.AsyncClient) -> Callable[[int], Any]:
    counter = iter(range(10**12))

    async def one(_worker: int) -> tuple[int, int]:
        response = await client.post("/cdh/v1/engagement/event", json=BODIES[next(counter) % len(BODIES)])
        return response.status_code, 0

    return one


async def engagement(label: str, server: ServerProcess, bare: ChildApp, key: str, rounds: int,
                     seconds: float) -> list[Result]:
    assert server.process is not None and bare.process is not None
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    ours = httpx.AsyncClient(base_url=server.base_url, headers={"apikey": key}, timeout=60, limits=limits)
    ceiling = httpx.AsyncClient(base_url=bare.base_url, timeout=60, limits=limits)
    totals = {"openmaac": LoadStats(), "bare": LoadStats()}
    try:
        for client in (ours, ceiling):  # warm up
            await client.post("/cdh/v1/engagement/event", json=BODIES[0])
        for _ in range(rounds):
            for name, client, pid in (("openmaac", ours, server.process.pid), ("bare", ceiling, bare.process.pid)):
                cpu = process_cpu_seconds(pid)
                stats = await run_load(events_scenario(client), concurrency=CONCURRENCY, duration=seconds)
                stats.server_cpu_seconds = process_cpu_seconds(pid) - cpu
                totals[name].add(stats)
    finally:
        await ours.aclose()
        await ceiling.aclose()
    mine, base = totals["openmaac"], totals["bare"]
    others = {s: n for s, n in mine.statuses.items() if s != 200}
    return [
        Result(f"{label}: engagement events accepted", mine.rps, "events/s",
               f"{mine.rps / base.rps:.0%} of bare FastAPI with the same validation ({base.rps:,.0f} req/s); "
               + (f"answers other than 200: {others}" if others else f"all {mine.requests:,} answered 200")),
        Result(f"{label}: server CPU per event", mine.server_cpu_ms_per_request, "ms",
               f"{mine.server_cpu_ms_per_request / base.server_cpu_ms_per_request:.1f}× bare FastAPI "
               f"({base.server_cpu_ms_per_request:.2f} ms)"),
        Result(f"{label}: p50 / p99 latency", mine.p(0.5), "ms",
               f"p99 {mine.p(0.99):.1f} ms; bare p50 {base.p(0.5):.1f} ms, p99 {base.p(0.99):.1f} ms"),
    ]


async def imports(label: str, server: ServerProcess, key: str, uids: list[str], floor: float) -> list[Result]:
    assert server.process is not None
    picked = uids[:IMPORTS * ROWS_PER_IMPORT] if len(uids) >= IMPORTS * ROWS_PER_IMPORT else uids
    per = -(-len(picked) // IMPORTS)
    bodies = [{"import_key": "line_uid", "data": [
        {"line_uid": uid, "full_name": f"Name {i}", "city": "Taipei", "member_level": "gold",
         "display_email": f"m{i}@example.com"} for i, uid in enumerate(picked[n * per:(n + 1) * per], n * per)]}
        for n in range(IMPORTS)]
    rows = sum(len(body["data"]) for body in bodies)
    cpu = process_cpu_seconds(server.process.pid)
    async with httpx.AsyncClient(base_url=server.base_url, headers={"apikey": key}, timeout=300) as client:
        with PeakMemory(server.process.pid) as memory:
            began = time.perf_counter()
            answers = await asyncio.gather(*(client.post("/cdh/v1/member/import", json=body) for body in bodies))
            statuses = [answer.status_code for answer in answers]
            ids = [answer.json()["id"] for answer in answers if answer.status_code == 200]
            results: dict[int, Any] = {}
            while len(results) < len(ids):
                for task_id in ids:
                    if task_id in results:
                        continue
                    task = (await client.get(f"/cdh/v1/task/{task_id}")).json()
                    if task["status"] in ("success", "failed"):
                        results[task_id] = task
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
    server_cpu = process_cpu_seconds(server.process.pid) - cpu
    done = sum(r["result"].get("success_count", 0) for r in results.values())
    failed = [r["status"] for r in results.values() if r["status"] != "success"]
    rate = rows / elapsed
    return [
        Result(f"{label}: {IMPORTS} concurrent imports × {per:,} rows into {len(uids):,} contacts", rate, "rows/s",
               f"{elapsed:.1f} s from the first POST to the last task done; {rate / floor:.0%} of the raw insert "
               f"floor ({floor:,.0f} rows/s); {done:,} rows applied; POST answers {sorted(set(statuses))}"
               + (f"; not success: {failed}" if failed else "") + f"; server CPU {server_cpu:.1f} s"),
        Result(f"{label}: openmaac server peak RSS during the imports", memory.peak_mb, "MB", "goal: under 300 MB"),
    ]


def backends() -> Iterator[tuple[str, ServerProcess]]:
    yield "SQLite", ServerProcess()
    admin = postgres_url()
    if admin:
        with fresh_postgres_database(admin) as url:
            yield "PostgreSQL", ServerProcess(database_url=url)


def run(args: Any) -> Iterable[Result]:
    contacts, rounds, seconds = sizes(bool(getattr(args, "quick", False)))
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with other work; load average {load[0]:.1f} at start; the load generator "
                 f"(asyncio + httpx, {CONCURRENCY} clients) runs in this process on the same cores")
    with ChildApp([sys.executable, "-m", "benchmarks.bare_cdh", "{port}"]) as bare:
        for label, server in backends():
            server.cli("token", "create", "--org", ORG)  # migrates and creates the organisation
            key = server.cli("cdh-key", "create", "--org", ORG)
            uids, seed_seconds = seed(server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}",
                                      contacts)
            floor = contacts / seed_seconds
            yield Result(f"{label}: raw insert floor, {contacts:,} contacts by bulk insert", floor, "rows/s",
                         f"{seed_seconds:.1f} s (the seeding, not timed below)")
            with server:
                yield from asyncio.run(engagement(label, server, bare, key, rounds, seconds))
                yield from asyncio.run(imports(label, server, key, uids, floor))
    load = os.getloadavg()
    yield Result("machine: load average at end", load[0], "", "1-minute load average")

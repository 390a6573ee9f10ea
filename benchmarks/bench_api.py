"""OpenAPI throughput: member pages and tagging against the bare FastAPI ceiling.

One organisation with N contacts (100,000; 5,000 with --quick) seeded straight into the
database with bulk inserts, each contact with 0-2 of 10 tags. ``openmaac serve`` runs in a
child process; beside it, in another child process, ``benchmarks.bare_app`` (a minimal FastAPI
app with the same uvicorn settings: uvloop, httptools, one process) answers the same requests
with no database and no authentication: the ceiling. One light load generator (asyncio +
httpx, in this process, 8 clients on keep-alive connections) drives both, alternating short
rounds between them so background load on the machine hits both alike:

- ``GET /openapi/v1/member/`` following ``next`` through every page (each client walks the
  whole list over and over), and random single pages (tokens collected by a first walk);
- ``POST /openapi/v1/taglinemember/`` ``{"tag_id", "line_uid"}`` with random contacts and a
  permanent tag.

Measured on SQLite, and on PostgreSQL when benchmarks.common.postgres_url() is set
(``ANALYZE`` after the bulk load there, as autovacuum would do); BENCH_BACKENDS=sqlite or
=postgresql runs one. The member pages' figure is server CPU per page ÷ bare FastAPI's.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from benchmarks.common import (
    ChildApp,
    LoadStats,
    PeakMemory,
    Result,
    ServerProcess,
    backends,
    process_cpu_seconds,
    run_load,
    sqlalchemy_url,
)

CONCURRENCY = 8
PAGE_SIZE = 300
PAGE_CPU_GOAL = 15.0  # × bare FastAPI, server CPU per member page
ORG = "bench-api"


@dataclass
class Sizes:
    contacts: int
    rounds: int  # alternating openmaac / ceiling rounds per scenario
    seconds: float  # per round and target


def sizes(quick: bool) -> Sizes:
    return Sizes(contacts=5_000, rounds=1, seconds=2.0) if quick else Sizes(contacts=100_000, rounds=3, seconds=5.0)


def seed(database_url: str, count: int) -> tuple[list[str], float]:
    """Contacts (and 0-2 tags each) for the bench organisation, in chunked bulk inserts.
    Returns their line_uids and the seconds it took."""
    from sqlalchemy import select, text

    from openmaac.auth.models import Organization
    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database
    from openmaac.tags.models import ContactTag, Tag

    began = time.perf_counter()
    database = get_database(sqlalchemy_url(database_url))
    now = datetime.now(UTC)
    uids = ["U" + secrets.token_hex(16) for _ in range(count)]
    with database.write() as session:
        org_id = session.scalar(select(Organization.id).where(Organization.name == ORG))
        tags = [{"organization_id": org_id, "name": f"bench-tag-{i}", "available_days": None, "created_at": now}
                for i in range(10)]
        session.execute(Tag.__table__.insert(), tags)
        tag_ids = list(session.scalars(select(Tag.id).where(Tag.organization_id == org_id).order_by(Tag.id)))
    rows = []
    for i, uid in enumerate(uids):
        at = now - timedelta(seconds=(count - i) * 7)
        rows.append({
            "organization_id": org_id, "line_uid": uid, "line_display_name": f"LINE name {i}",
            "display_name": f"Contact {i}", "email": f"contact{i}@example.com",
            "mobile": f"+8869{i % 100_000_000:08d}", "customer_id": f"C{i:08d}",
            "gender": ("male", "female", "unknown")[i % 3], "status": "follow",
            "created_at": at, "updated_at": at, "followed_at": at,
        })
    for chunk in range(0, count, 5000):
        with database.write() as session:
            session.execute(Contact.__table__.insert(), rows[chunk:chunk + 5000])
    with database.read() as session:
        contact_ids = list(session.scalars(
            select(Contact.id).where(Contact.organization_id == org_id).order_by(Contact.id)))
    links = [
        {"contact_id": cid, "tag_id": tag_ids[(i + k) % len(tag_ids)], "organization_id": org_id,
         "tagged_at": now, "created_at": now, "expired_at": None}
        for i, cid in enumerate(contact_ids) for k in range(i % 3)
    ]
    for chunk in range(0, len(links), 5000):
        with database.write() as session:
            session.execute(ContactTag.__table__.insert(), links[chunk:chunk + 5000])
    with database.write() as session:
        if not database.is_sqlite:
            # PostgreSQL's autovacuum analyses a table soon after a bulk load; do it now rather
            # than time the minute before. (openmaac never analyses SQLite: no statistics there.)
            session.execute(text("ANALYZE contacts"))
            session.execute(text("ANALYZE contact_tags"))
    database.dispose()
    return uids, time.perf_counter() - began


class Target:
    """One server under load: its base URL and an async client with keep-alive connections."""

    def __init__(self, name: str, base_url: str, token: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        self.client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        )
        self.tokens: list[str | None] = [None]  # page tokens seen, for random single pages
        self.page_bytes = 0

    async def page(self, start: str | None) -> tuple[int, int, str | None]:
        response = await self.client.get("/openapi/v1/member/", params={"start": start} if start else None)
        if response.status_code != 200:
            return response.status_code, 0, None
        body = orjson.loads(response.content)
        self.page_bytes = max(self.page_bytes, len(response.content))
        return 200, len(body["results"]), body["next"]

    async def walk_once(self) -> tuple[int, float]:
        """One client alone walks every page, collecting the tokens. (rows, seconds)"""
        began = time.perf_counter()
        rows, start = 0, None
        while True:
            status, count, start = await self.page(start)
            if status != 200:
                raise RuntimeError(f"{self.name}: GET member/ answered {status}")
            rows += count
            if start is None:
                return rows, time.perf_counter() - began
            self.tokens.append(start)


async def alternate(pairs: list[tuple[Target, Callable[[Target], Any]]], rounds: int,
                    seconds: float) -> list[LoadStats]:
    """``rounds`` rounds of each (target, scenario) in turn; stats summed per pair."""
    totals = [LoadStats() for _ in pairs]
    for _ in range(rounds):
        for (target, scenario), total in zip(pairs, totals, strict=True):
            cpu = process_cpu_seconds(target.pid)
            stats = await run_load(scenario(target), concurrency=CONCURRENCY, duration=seconds)
            stats.server_cpu_seconds = process_cpu_seconds(target.pid) - cpu
            total.add(stats)
    return totals


def walking(target: Target) -> Callable[[int], Any]:
    """Each client follows ``next`` to the end, then starts again from the first page."""
    positions: dict[int, str | None] = {}
    # Spread the clients along the list so they do not all read the same pages.
    step = max(1, len(target.tokens) // CONCURRENCY)

    async def one(worker: int) -> tuple[int, int]:
        start = positions.get(worker, target.tokens[(worker * step) % len(target.tokens)])
        status, rows, positions[worker] = await target.page(start)
        return status, rows

    return one


def random_pages(target: Target) -> Callable[[int], Any]:
    rng = random.Random(7)

    async def one(_worker: int) -> tuple[int, int]:
        status, rows, _next = await target.page(rng.choice(target.tokens))
        return status, rows

    return one


def tagging(uids: list[str], tag_id: int) -> Callable[[Target], Callable[[int], Any]]:
    def scenario(target: Target) -> Callable[[int], Any]:
        rng = random.Random(11)

        async def one(_worker: int) -> tuple[int, int]:
            response = await target.client.post(
                "/openapi/v1/taglinemember/", json={"tag_id": tag_id, "line_uid": rng.choice(uids)})
            return response.status_code, 0

        return one

    return scenario


def page_cpu_ratio(label: str, ours: list[LoadStats], bare: list[LoadStats]) -> Result:
    """The member-page goal's figure: openmaac's server CPU per 300-row page ÷ bare FastAPI's
    rendering the same page, over both page scenarios of the same run."""
    ours_total, bare_total = LoadStats(), LoadStats()
    for stats in ours:
        ours_total.add(stats)
    for stats in bare:
        bare_total.add(stats)
    ratio = ours_total.server_cpu_ms_per_request / bare_total.server_cpu_ms_per_request
    return Result(f"{label}: GET member/ server CPU per {PAGE_SIZE}-row page ÷ bare FastAPI's", ratio, "×",
                  f"openmaac {ours_total.server_cpu_ms_per_request:.2f} ms, bare FastAPI "
                  f"{bare_total.server_cpu_ms_per_request:.2f} ms a page ({ours_total.requests:,} and "
                  f"{bare_total.requests:,} pages); goal ≤ {PAGE_CPU_GOAL:.0f}×")


def ratio_lines(name: str, ours: LoadStats, bare: LoadStats, *, rows: bool, expected: int) -> Iterator[Result]:
    unexpected = {s: n for s, n in ours.statuses.items() if s != expected}
    errors = f"; answers other than {expected}: {unexpected}" if unexpected else f"; all {ours.requests:,} answered {expected}"
    yield Result(f"{name}: requests", ours.rps, "req/s",
                 f"{ours.rps / bare.rps:.0%} of bare FastAPI ({bare.rps:,.0f} req/s){errors}")
    if rows:
        yield Result(f"{name}: rows", ours.rows_per_second, "rows/s",
                     f"{ours.rows_per_second / bare.rows_per_second:.0%} of bare FastAPI "
                     f"({bare.rows_per_second:,.0f} rows/s)")
    yield Result(f"{name}: server CPU per request", ours.server_cpu_ms_per_request, "ms",
                 f"{ours.server_cpu_ms_per_request / bare.server_cpu_ms_per_request:.1f}× bare FastAPI "
                 f"({bare.server_cpu_ms_per_request:.2f} ms); the figure least moved by other load")
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        yield Result(f"{name}: {label} latency", ours.p(q), "ms",
                     f"{ours.p(q) / bare.p(q):.1f}× bare FastAPI ({bare.p(q):.1f} ms)")


async def measure(label: str, server: ServerProcess, bare_app: ChildApp, uids: list[str],
                  size: Sizes) -> list[Result]:
    results: list[Result] = []
    token = server.cli("token", "create", "--org", ORG)
    assert server.process is not None and bare_app.process is not None
    ours = Target("openmaac", server.base_url, token, server.process.pid)
    bare = Target("bare", bare_app.base_url, token, bare_app.process.pid)
    try:
        # Warm both (connections, caches), then one client alone walks the whole list.
        for target in (ours, bare):
            await target.page(None)
        ours_rows, ours_walk = await ours.walk_once()
        bare_rows, bare_walk = await bare.walk_once()
        if ours_rows != len(uids):
            raise RuntimeError(f"walked {ours_rows} contacts, seeded {len(uids)}")
        results.append(Result(
            f"{label}: one client walks all {ours_rows:,} contacts", ours_walk, "s",
            f"{ours_rows / ours_walk:,.0f} rows/s; {bare_walk / ours_walk:.0%} of bare FastAPI "
            f"({bare_walk:.2f} s for {bare_rows:,} rows); page ~{ours.page_bytes / 1000:.0f} kB "
            f"(bare ~{bare.page_bytes / 1000:.0f} kB)"))

        with PeakMemory(server.process.pid) as memory:
            walk, bare_walk_stats = await alternate([(ours, walking), (bare, walking)], size.rounds, size.seconds)
        results += ratio_lines(f"{label}: GET member/ following next, {CONCURRENCY} clients", walk,
                               bare_walk_stats, rows=True, expected=200)
        results.append(Result(f"{label}: openmaac server peak RSS while listing", memory.peak_mb, "MB"))

        pages, bare_pages = await alternate([(ours, random_pages), (bare, random_pages)], size.rounds, size.seconds)
        results += ratio_lines(f"{label}: GET member/ random pages, {CONCURRENCY} clients", pages, bare_pages,
                               rows=True, expected=200)
        results.append(page_cpu_ratio(label, [walk, pages], [bare_walk_stats, bare_pages]))

        created = await ours.client.post("/openapi/v1/tag/", json={"name": "bench-post", "available_days": None})
        created.raise_for_status()
        scenario = tagging(uids, created.json()["id"])
        post, bare_post = await alternate([(ours, scenario), (bare, scenario)], size.rounds, size.seconds)
        results += ratio_lines(f"{label}: POST taglinemember/, {CONCURRENCY} clients", post, bare_post,
                               rows=False, expected=201)
    finally:
        await ours.client.aclose()
        await bare.client.aclose()
    return results


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    pages = -(-size.contacts // PAGE_SIZE)
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with other work; load average {load[0]:.1f} at start; load generator "
                 f"(asyncio + httpx, {CONCURRENCY} clients) runs in this process on the same cores")
    yield Result("rate limits on these endpoints", 0, "",
                 "off: MAAC OpenAPI v1.1.48 sets no per-organisation limit on GET member/ or POST taglinemember/ "
                 "(only imports, push, multicast), so none applies; any 429 is listed beside its figure")
    bare_command = [sys.executable, "-m", "benchmarks.bare_app", "{port}"]
    os.environ["BARE_APP_PAGES"] = str(pages)
    with ChildApp(bare_command) as bare:
        for label, url in backends():
            server = ServerProcess(database_url=url)
            server.cli("token", "create", "--org", ORG)  # migrates and creates the organisation
            uids, seconds = seed(server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}",
                                 size.contacts)
            yield Result(f"{label}: seed {size.contacts:,} contacts (bulk insert, not timed below)", seconds, "s")
            with server:
                yield from asyncio.run(measure(label, server, bare, uids, size))
    load = os.getloadavg()
    yield Result("machine: load average at end", load[0], "", "1-minute load average")

"""LINE messaging: push requests/s end to end beside bare FastAPI, and a 1,000,000-recipient enhanced-multicast fan-out under LINE's 200 multicast requests/s (issue 5).

Everything runs in child processes: ``openmaac serve`` (embedded worker, simulators off), the
LINE simulator (``openmaac.simulators.line.app.serve``, its own process so its CPU is not
openmaac's) and ``benchmarks.bare_app``; the load generator (asyncio + aiohttp) runs here.

Push: ``ORGS`` organisations, each with its own LINE channel at the simulator, a one-parameter
text template and ``FRIENDS`` simulated friends (contacts seeded in bulk). ``PUSH_CLIENTS``
clients POST ``direct_message/push/`` back to back, spread over the organisations (the spec
limits each organisation to 170 pushes/s, so one organisation could never reach LINE's
2,000/s); a request counts when it answered 200 with ``"result": "success"``, i.e. openmaac
recorded it, called LINE and LINE delivered it (the simulator's delivered count is checked
against that number). Rounds alternate with the same load against ``benchmarks.bare_app``'s
push route (the body parsed by pydantic, the answer rendered; no database, no LINE): the
ceiling of FastAPI on this machine in the same run.

Fan-out: one organisation with N contacts (1,000,000; 50,000 with --quick) that are all friends
at the simulator, which enforces LINE's 200 multicast requests/s per channel (429 beyond).
N/500 ``direct_message/enhanced_multicast/`` requests of 500 line_uids are posted by 8 clients;
the figure is the time from the first request to the simulator having delivered all N,
against the N/500/200 seconds LINE's limit allows (10 s for the million). The spec's own
per-organisation limit on that endpoint (170 requests/s) would alone stretch 2,000 requests
over 11.8 s, so the benchmark lifts it (``OPENMAAC_API_RATE_LIMITS``) to measure the sending
engine against LINE's limit. Peak RSS of the server process during the fan-out is sampled.

Measured on SQLite, and on PostgreSQL when benchmarks.common.postgres_url() is set.
``BENCH_MESSAGING_ONLY=push`` (or ``fanout``) runs one half only.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

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
)

ORGS = 24
FRIENDS = 50
PUSH_CLIENTS = 32
FANOUT_CLIENTS = 8
PER_REQUEST = 500
LINE_MULTICAST_RATE = 200.0
TEXT = [{"type": "text", "text": "Hello {{name}}, your order has shipped."}]
SALE = [{"type": "text", "text": "{{what}} sale today only!"}]


@dataclass
class Sizes:
    push_seconds: float
    rounds: int
    recipients: int


def sizes(quick: bool) -> Sizes:
    return Sizes(push_seconds=3.0, rounds=1, recipients=50_000) if quick else \
        Sizes(push_seconds=8.0, rounds=3, recipients=1_000_000)


@dataclass
class Org:
    name: str
    id: int
    token: str
    channel_id: str
    friends: list[str]
    template_id: int = 0


def sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def database_url(server: ServerProcess) -> str:
    return sqlalchemy_url(server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}")


@contextmanager
def simulator() -> Iterator[ChildApp]:
    command = [sys.executable, "-c", "from openmaac.simulators.line.app import serve; serve(port={port})"]
    with ChildApp(command, health_path="/_admin/channels") as sim:
        yield sim


def backends() -> Iterator[tuple[str, str | None]]:
    """("SQLite", None), then ("PostgreSQL", a fresh database) when one is configured."""
    yield "SQLite", None
    admin = postgres_url()
    if admin:
        with fresh_postgres_database(admin) as url:
            yield "PostgreSQL", url


def make_orgs(server: ServerProcess, sim: str, names: list[str], friends: int) -> list[Org]:
    """Organisations whose channels point at the simulator, with ``friends`` friends each:
    users made in bulk at the simulator, their contacts inserted in bulk here (setup)."""
    from openmaac.auth.service import create_organization, create_token
    from openmaac.channels.service import channel_of
    from openmaac.contacts.models import Contact
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database

    database = get_database(database_url(server))
    orgs = []
    http = httpx.Client(timeout=300)
    for name in names:
        with database.write() as session:
            org = create_organization(session, name, line_api_base_url=sim)
            token = create_token(session, org.id, label="bench")
            channel = channel_of(session, org.id)
            assert channel is not None
            channel_id, secret, access = channel.channel_id, channel.channel_secret, channel.access_token
            org_id = org.id
        http.post(f"{sim}/_admin/channels", json={"channel_id": channel_id, "channel_secret": secret,
                                                   "access_token": access}).raise_for_status()
        uids: list[str] = []
        while len(uids) < friends:
            made = http.post(f"{sim}/_admin/users/bulk",
                             json={"count": min(100_000, friends - len(uids)), "channel_id": channel_id})
            made.raise_for_status()
            uids += made.json()["user_ids"]
        now = utcnow()
        for start in range(0, len(uids), 10_000):
            with database.write() as session:
                session.execute(Contact.__table__.insert(), [
                    {"organization_id": org_id, "line_uid": uid, "status": "follow", "created_at": now,
                     "updated_at": now, "followed_at": now} for uid in uids[start:start + 10_000]])
        orgs.append(Org(name, org_id, token, channel_id, uids))
    if not database.is_sqlite:
        with database.write() as session:
            from sqlalchemy import text

            session.execute(text("ANALYZE contacts"))
    http.close()
    database.dispose()
    return orgs


def _remove(server: ServerProcess) -> None:
    """The server's data directory (a 1,000,000-recipient SQLite file is ~0.5 GB), once stopped."""
    import shutil

    from openmaac.db.engine import reset_database

    reset_database()  # this process's connections to it
    shutil.rmtree(server.data_dir, ignore_errors=True)


def create_template(server: ServerProcess, org: Org, messages: list[dict[str, Any]]) -> int:
    response = httpx.post(f"{server.base_url}/openapi/v1/template/", json={"name": "bench", "messages": messages},
                          headers={"Authorization": f"Bearer {org.token}"}, timeout=30)
    response.raise_for_status()
    return int(response.json()["id"])


def sim_stats(sim: str, channel_id: str) -> dict[str, int]:
    response = httpx.get(f"{sim}/_admin/channels/{channel_id}/stats", timeout=30)
    response.raise_for_status()
    return dict(response.json())


# -- push ------------------------------------------------------------------------------------------

def pushing(base_url: str, orgs: list[Org], session: Any) -> Any:
    rng = random.Random(5)
    turn = iter(range(10**12))

    async def one(_worker: int) -> tuple[int, int]:
        org = orgs[next(turn) % len(orgs)]
        body = orjson.dumps({"template_id": org.template_id,
                             "data": {"line_uid": rng.choice(org.friends), "name": "Ada"}})
        async with session.post(base_url + "/openapi/v1/direct_message/push/", data=body,
                                headers={"Authorization": f"Bearer {org.token}",
                                         "Content-Type": "application/json"}) as response:
            payload = await response.read()
        ok = response.status == 200 and orjson.loads(payload).get("result") == "success"
        return response.status, int(ok)

    return one


async def push_rounds(server: ServerProcess, bare: ChildApp, orgs: list[Org],
                      size: Sizes) -> tuple[LoadStats, LoadStats, int]:
    """(openmaac's rounds, the ceiling's rounds, openmaac's successes while warming up)."""
    import aiohttp

    ours, ceiling = LoadStats(), LoadStats()
    connector = aiohttp.TCPConnector(limit=PUSH_CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # warm up both (connections, caches, the first LINE connection)
        warm = await run_load(pushing(server.base_url, orgs, session), concurrency=PUSH_CLIENTS, duration=0.5)
        await run_load(pushing(bare.base_url, orgs, session), concurrency=PUSH_CLIENTS, duration=0.5)
        for _ in range(size.rounds):
            for target, pid, total in ((server.base_url, server.process.pid, ours),  # type: ignore[union-attr]
                                       (bare.base_url, bare.process.pid, ceiling)):  # type: ignore[union-attr]
                cpu = process_cpu_seconds(pid)
                stats = await run_load(pushing(target, orgs, session), concurrency=PUSH_CLIENTS,
                                       duration=size.push_seconds)
                stats.server_cpu_seconds = process_cpu_seconds(pid) - cpu
                total.add(stats)
    return ours, ceiling, warm.rows


def measure_push(label: str, url: str | None, bare: ChildApp, size: Sizes) -> Iterable[Result]:
    with simulator() as sim:
        server = ServerProcess(database_url=url, extra_env={"OPENMAAC_SIMULATORS": "0"})
        server.cli("migrate")
        orgs = make_orgs(server, sim.base_url, [f"bench-push-{i}" for i in range(ORGS)], FRIENDS)
        with server:
            for org in orgs:
                org.template_id = create_template(server, org, TEXT)
            before = sum(sim_stats(sim.base_url, org.channel_id).get("delivered", 0) for org in orgs)
            ours, ceiling, warm_ok = asyncio.run(push_rounds(server, bare, orgs, size))
            delivered = sum(sim_stats(sim.base_url, org.channel_id).get("delivered", 0) for org in orgs) - before
            line_429 = sum(sim_stats(sim.base_url, org.channel_id).get("push 429", 0) for org in orgs)
        _remove(server)
        ok_rps = ours.rows / ours.seconds if ours.seconds else 0.0
        others = {s: n for s, n in ours.statuses.items() if s != 200}
        # every "success" is one message in a simulated user's inbox, no more, no less
        check = "= the successes (warm-up included)" if delivered == ours.rows + warm_ok else \
            f"≠ the {ours.rows + warm_ok:,} successes (warm-up included): CHECK"
        yield Result(f"{label}: push, accepted and delivered (end to end), {PUSH_CLIENTS} clients", ok_rps, "req/s",
                     f"goal ≥ 2,000/s; {ok_rps / ceiling.rps:.0%} of bare FastAPI ({ceiling.rps:,.0f} req/s) "
                     f"in the same run; {ours.rows:,} of {ours.requests:,} answered success; other answers "
                     f"{others or 'none'}; LINE 429s {line_429}; the simulator delivered {delivered:,} {check}")
        yield Result(f"{label}: push, server CPU per request", ours.server_cpu_ms_per_request, "ms",
                     f"bare FastAPI {ceiling.server_cpu_ms_per_request:.2f} ms; ≈ "
                     f"{1000 / max(ours.server_cpu_ms_per_request, 1e-9):,.0f} req/s per free core")
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            yield Result(f"{label}: push {name} latency", ours.p(q), "ms", f"bare FastAPI {ceiling.p(q):.1f} ms")


# -- enhanced multicast fan-out ------------------------------------------------------------------

async def post_all(base_url: str, token: str, bodies: list[bytes]) -> tuple[dict[int, int], list[int], float]:
    """POST every body (FANOUT_CLIENTS at a time); (statuses, direct message ids, seconds)."""
    import aiohttp

    statuses: dict[int, int] = {}
    ids: list[int] = []
    queue = iter(bodies)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FANOUT_CLIENTS),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def client() -> None:
            for body in queue:
                async with session.post(base_url + "/openapi/v1/direct_message/enhanced_multicast/", data=body,
                                        headers=headers) as response:
                    payload = await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    ids.append(int(orjson.loads(payload)["id"]))

        await asyncio.gather(*(client() for _ in range(FANOUT_CLIENTS)))
    return statuses, ids, time.perf_counter() - began


def sent_count(server: ServerProcess, org_id: int) -> int:
    from sqlalchemy import func, select

    from openmaac.db.engine import get_database
    from openmaac.messaging.models import DirectMessage

    with get_database(database_url(server)).read() as session:
        return int(session.scalar(select(func.count()).select_from(DirectMessage).where(
            DirectMessage.organization_id == org_id, DirectMessage.status == "sent")) or 0)


def measure_fanout(label: str, url: str | None, size: Sizes) -> Iterable[Result]:
    n = size.recipients
    requests = n // PER_REQUEST
    allowed = requests / LINE_MULTICAST_RATE
    with simulator() as sim:
        server = ServerProcess(database_url=url, extra_env={
            "OPENMAAC_SIMULATORS": "0",
            "OPENMAAC_API_RATE_LIMITS": "enhanced_multicast=100000/1"})
        server.cli("migrate")
        began = time.perf_counter()
        (org,) = make_orgs(server, sim.base_url, ["bench-fanout"], n)
        yield Result(f"{label}: fan-out setup, {n:,} friends and contacts (bulk, not timed below)",
                     time.perf_counter() - began, "s")
        bodies = [orjson.dumps({"template_id": 0, "line_uids": org.friends[i:i + PER_REQUEST],
                                "data": {"what": "Summer"}}) for i in range(0, n, PER_REQUEST)]
        with server:
            assert server.process is not None
            template_id = create_template(server, org, SALE)
            bodies = [body.replace(b'"template_id":0', b'"template_id":%d' % template_id) for body in bodies]
            cpu = process_cpu_seconds(server.process.pid)
            with PeakMemory(server.process.pid) as memory:
                started = time.perf_counter()
                statuses, ids, accept_seconds = asyncio.run(post_all(server.base_url, org.token, bodies))
                delivered_at = None
                last, last_change = -1, time.perf_counter()
                while True:
                    delivered = sim_stats(sim.base_url, org.channel_id).get("delivered", 0)
                    now = time.perf_counter()
                    if delivered >= n:
                        delivered_at = now
                        break
                    if delivered != last:
                        last, last_change = delivered, now
                    elif now - last_change > 60:
                        break  # stalled
                    time.sleep(0.05)
                while sent_count(server, org.id) < len(ids) and time.perf_counter() - started < 600:
                    time.sleep(0.1)
                recorded_at = time.perf_counter()
            cpu = process_cpu_seconds(server.process.pid) - cpu
            stats = sim_stats(sim.base_url, org.channel_id)
        _remove(server)
        if delivered_at is None:
            yield Result(f"{label}: fan-out of {n:,} STALLED", last, "delivered", f"statuses {statuses}")
            return
        total = delivered_at - started
        yield Result(f"{label}: enhanced multicast fan-out, {n:,} recipients ({requests:,} requests of "
                     f"{PER_REQUEST})", total, "s",
                     f"{total / allowed:.2f}× the {allowed:g} s LINE's 200 multicast/s allows (goal ≤ 1.2×); "
                     f"first request → last recipient delivered; all {requests:,} posted in {accept_seconds:.1f} s "
                     f"(answers {statuses}); all recorded sent after {recorded_at - started:.1f} s")
        yield Result(f"{label}: fan-out, LINE calls", float(stats.get("multicast 200", 0)), "calls",
                     f"429 answers {stats.get('multicast 429', 0)} (goal 0); delivered {stats.get('delivered', 0):,}")
        yield Result(f"{label}: fan-out, server peak RSS", memory.peak_mb, "MB", "goal < 300 MB")
        yield Result(f"{label}: fan-out, server CPU per request of 500", cpu * 1000 / requests, "ms",
                     f"{cpu:.1f} s CPU in all; {requests / cpu if cpu else 0:,.0f} requests/s per free core "
                     f"(LINE allows 200/s)")


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    os.environ.setdefault("OPENMAAC_DATA_DIR", tempfile.mkdtemp(prefix="openmaac-bench-messaging-"))
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with the simulator, the load generator and other work; load average {load[0]:.1f} at start")
    only = os.environ.get("BENCH_MESSAGING_ONLY")  # "push" or "fanout": one half only
    with ChildApp([sys.executable, "-m", "benchmarks.bare_app", "{port}"]) as bare:
        for label, url in backends():
            if only in (None, "", "push"):
                yield from measure_push(label, url, bare, size)
            if only in (None, "", "fanout"):
                yield from measure_fanout(label, url, size)
    load = os.getloadavg()
    yield Result("machine: load average at end", load[0], "", "1-minute load average")

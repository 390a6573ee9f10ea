"""LINE messaging: push requests/s end to end beside bare FastAPI, and a 1,000,000-recipient enhanced-multicast fan-out under LINE's 200 multicast requests/s.

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
ceiling of FastAPI on this machine in the same run; and against ``benchmarks.bare_upstream``
(no database, but the same upstream work: the LINE push call to the same simulator process
inside the request, with a channel of its own there): the ceiling of this machine for one LINE
call per request, with the simulator and the load generator on the same cores; and against
the same app with ``BARE_DURABLE`` (the durable floor: a row committed before the call and its
answer committed after, on a database of its own on the same backend): the least a push that
loses nothing costs.

Fan-out: one organisation with N contacts (1,000,000; 50,000 with --quick) that are all friends
at the simulator, which enforces LINE's 200 multicast requests/s per channel (429 beyond).
N/500 ``direct_message/enhanced_multicast/`` requests of 500 line_uids are posted by 8 clients;
the figure is the time from the first request to the simulator having delivered all N,
against the N/500/200 seconds LINE's limit allows (10 s for the million). The spec's own
per-organisation limit on that endpoint (170 requests/s) would alone stretch 2,000 requests
over 11.8 s, so the benchmark lifts it (``OPENMAAC_API_RATE_LIMITS``) to measure the sending
engine against LINE's limit. Peak RSS of the server process during the fan-out is sampled.

Measured on SQLite, and on PostgreSQL when benchmarks.common.postgres_url() is set.
``BENCH_MESSAGING_ONLY=push`` (or ``fanout``) runs one half only; ``BENCH_FANOUT_RECIPIENTS=N``
fans out to N recipients instead (e.g. 200,000 to iterate faster); ``BENCH_FANOUT_WORKERS=N``
sends from N ``openmaac worker`` processes. The fan-out prints the CPU each process spent per
request of 500 (serve, workers, the simulator, the load generator); with ``BENCH_PYSPY`` the
workers and the simulator are profiled too.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from benchmarks.common import (
    ChildApp,
    PeakMemory,
    PushTarget,
    Result,
    ServerProcess,
    backends,
    database_url,
    durable_floor_database,
    durable_floor_ratios,
    own_cpu_seconds,
    postgres_cpu_by_pid,
    postgres_cpu_since,
    process_cpu_seconds,
    run_load,
    scratch_dir,
    split_result,
    start_profiler,
    stop_profiler,
    workers,
)

ORGS = 24
FRIENDS = 50
PUSH_CLIENTS = int(os.environ.get("BENCH_PUSH_CLIENTS", "32"))  # fewer: CPU per request with less thread contention
FANOUT_CLIENTS = 8
# BENCH_FANOUT_WORKERS=N: the fan-out with N `openmaac worker` processes beside `serve`
FANOUT_WORKERS = int(os.environ.get("BENCH_FANOUT_WORKERS", "0"))
# BENCH_FANOUT_RECIPIENTS=N: a smaller (or larger) fan-out than the million, to iterate faster
FANOUT_RECIPIENTS = int(os.environ.get("BENCH_FANOUT_RECIPIENTS", "0"))
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
    size = Sizes(push_seconds=3.0, rounds=1, recipients=50_000) if quick else \
        Sizes(push_seconds=8.0, rounds=3, recipients=1_000_000)
    if FANOUT_RECIPIENTS:
        size.recipients = FANOUT_RECIPIENTS
    return size


@dataclass
class Org:
    name: str
    id: int
    token: str
    channel_id: str
    friends: list[str]
    template_id: int = 0


@contextmanager
def simulator() -> Iterator[ChildApp]:
    command = [sys.executable, "-c", "from openmaac.simulators.line.app import serve; serve(port={port})"]
    with ChildApp(command, health_path="/_admin/channels") as sim:
        yield sim


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


def sim_stats(sim: str, channel_id: str, client: httpx.Client | None = None) -> dict[str, int]:
    """The simulator's counters for the channel (``client``: a kept connection, for polling;
    ``httpx.get`` builds a client, and its TLS context, per call: ~10 ms of CPU)."""
    response = (client or httpx).get(f"{sim}/_admin/channels/{channel_id}/stats", timeout=30)
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


@dataclass
class Target(PushTarget):
    """One app the push load runs against, with the organisations' bodies it gets."""

    orgs: list[Org] = field(default_factory=list)
    warm_ok: int = 0


async def push_rounds(targets: list[Target], size: Sizes, sim_pid: int) -> None:
    """Rounds alternating between the targets (same load generator, same simulator process)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=PUSH_CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # warm up each (connections, caches, the first LINE connection)
        for target in targets:
            warm = await run_load(pushing(target.base_url, target.orgs, session), concurrency=PUSH_CLIENTS,
                                  duration=0.5)
            target.warm_ok = warm.rows
        for _ in range(size.rounds):
            for target in targets:
                await target.measured_round(pushing(target.base_url, target.orgs, session), PUSH_CLIENTS,
                                            size.push_seconds, sim_pid)


@contextmanager
def bare_upstream(sim: str, durable: str = "") -> Iterator[tuple[ChildApp, Org]]:
    """``benchmarks.bare_upstream`` with a channel of its own at the same LINE simulator and
    ``ORGS * FRIENDS`` friends there. One channel instead of openmaac's ``ORGS``: its push limit
    is lifted so that LINE's 2,000/s per channel (which each of openmaac's channels stays under)
    does not cap it. ``durable``: its ``BARE_DURABLE`` database (each push written before the
    call and its answer recorded, committed)."""
    channel_id = "bare-durable" if durable else "bare-upstream"
    secret, token = secrets.token_hex(16), secrets.token_urlsafe(32)
    app = ChildApp([sys.executable, "-m", "benchmarks.bare_upstream", "{port}", sim, token, secret],
                   env={"BARE_DURABLE": durable} if durable else {})
    http = httpx.Client(timeout=300)
    http.post(f"{sim}/_admin/channels", json={
        "channel_id": channel_id, "channel_secret": secret, "access_token": token,
        "webhook_url": f"{app.base_url}/line/webhook/{channel_id}"}).raise_for_status()
    http.post(f"{sim}/_admin/channels/{channel_id}/limits", json={"push": {"rate": 1_000_000}}).raise_for_status()
    made = http.post(f"{sim}/_admin/users/bulk", json={"count": ORGS * FRIENDS, "channel_id": channel_id})
    made.raise_for_status()
    http.close()
    with app:
        yield app, Org(channel_id, 0, "bare", channel_id, made.json()["user_ids"], template_id=1)


def measure_push(label: str, url: str | None, bare: ChildApp, size: Sizes) -> Iterable[Result]:
    with simulator() as sim, bare_upstream(sim.base_url) as (upstream, up_org), \
            durable_floor_database(url) as durable_url, \
            bare_upstream(sim.base_url, durable_url) as (durable, durable_org):
        server = ServerProcess(database_url=url, extra_env={"OPENMAAC_SIMULATORS": "0"})
        server.cli("migrate")
        orgs = make_orgs(server, sim.base_url, [f"bench-push-{i}" for i in range(ORGS)], FRIENDS)
        with server:
            for org in orgs:
                org.template_id = create_template(server, org, TEXT)
            before = sum(sim_stats(sim.base_url, org.channel_id).get("delivered", 0) for org in orgs)
            assert server.process is not None and bare.process is not None and upstream.process is not None
            assert sim.process is not None
            assert durable.process is not None
            postgres = url is not None
            targets = [Target(server.base_url, server.process.pid, orgs=orgs, postgres=postgres),
                       Target(bare.base_url, bare.process.pid, orgs=orgs, postgres=postgres),
                       Target(upstream.base_url, upstream.process.pid, orgs=[up_org], postgres=postgres),
                       Target(durable.base_url, durable.process.pid, orgs=[durable_org], postgres=postgres)]
            asyncio.run(push_rounds(targets, size, sim.process.pid))
            delivered = sum(sim_stats(sim.base_url, org.channel_id).get("delivered", 0) for org in orgs) - before
            line_429 = sum(sim_stats(sim.base_url, org.channel_id).get("push 429", 0) for org in orgs)
            up_line = sim_stats(sim.base_url, up_org.channel_id)
            floor_line = sim_stats(sim.base_url, durable_org.channel_id)
        _remove(server)
        (ours, warm_ok), (ceiling, _), (up, up_warm), (floor, floor_warm) = ((t.stats, t.warm_ok) for t in targets)
        ok_rps = ours.rows / ours.seconds if ours.seconds else 0.0
        up_rps = up.rows / up.seconds if up.seconds else 0.0
        others = {s: n for s, n in ours.statuses.items() if s != 200}
        up_others = {s: n for s, n in up.statuses.items() if s != 200}
        # every "success" is one message in a simulated user's inbox, no more, no less
        check = "= the successes (warm-up included)" if delivered == ours.rows + warm_ok else \
            f"≠ the {ours.rows + warm_ok:,} successes (warm-up included): CHECK"
        up_delivered = up_line.get("delivered", 0)
        up_check = "= its successes (warm-up included)" if up_delivered == up.rows + up_warm else \
            f"≠ its {up.rows + up_warm:,} successes (warm-up included): CHECK"
        yield Result(f"{label}: push, accepted and delivered (end to end), {PUSH_CLIENTS} clients", ok_rps, "req/s",
                     f"goal ≥ 2,000/s; {ok_rps / ceiling.rps:.0%} of bare FastAPI ({ceiling.rps:,.0f} req/s) "
                     f"in the same run; {ours.rows:,} of {ours.requests:,} answered success; other answers "
                     f"{others or 'none'}; LINE 429s {line_429}; the simulator delivered {delivered:,} {check}")
        yield Result(f"{label}: bare FastAPI + the same LINE call, {PUSH_CLIENTS} clients", up_rps, "req/s",
                     f"benchmarks.bare_upstream: no database; the push call (sync httpx in the thread pool, "
                     f"X-Line-Retry-Key) to the same simulator: the ceiling of this machine for this work; openmaac = "
                     f"{ok_rps / max(up_rps, 1e-9):.0%} of it; the goal 2,000/s = {2000 / max(up_rps, 1e-9):.0%} of "
                     f"it; {up.rows:,} of {up.requests:,} success; other answers {up_others or 'none'}; LINE 429s "
                     f"{up_line.get('push 429', 0)}; the simulator delivered {up_delivered:,} {up_check}")
        cpu_ratio = ours.server_cpu_ms_per_request / max(up.server_cpu_ms_per_request, 1e-9)
        yield Result(f"{label}: push ÷ bare FastAPI + the same LINE call, requests/s", ok_rps / max(up_rps, 1e-9),
                     "×", f"goal ≥ {0.6 if label == 'SQLite' else 0.5}× ({ok_rps:,.0f} vs {up_rps:,.0f} req/s, "
                     "measured in alternating rounds of this run)")
        yield Result(f"{label}: push server CPU ÷ bare + LINE call CPU, per request", cpu_ratio, "×",
                     f"goal ≤ 2×; {ours.server_cpu_ms_per_request:.2f} vs {up.server_cpu_ms_per_request:.2f} ms")
        yield Result(f"{label}: push, server CPU per request", ours.server_cpu_ms_per_request, "ms",
                     f"bare FastAPI {ceiling.server_cpu_ms_per_request:.2f} ms, bare + LINE call "
                     f"{up.server_cpu_ms_per_request:.2f} ms; ≈ "
                     f"{1000 / max(ours.server_cpu_ms_per_request, 1e-9):,.0f} req/s per free core")
        yield split_result(f"{label}: push", ours, up)
        cores = os.cpu_count() or 1
        yield Result(f"{label}: push, machine CPU per request (app + LINE simulator + load generator"
                     + (" + PostgreSQL)" if url else ")"),
                     targets[0].cpu_ms_per_request(), "ms",
                     f"bare + LINE call {targets[2].cpu_ms_per_request():.2f} ms (the simulator "
                     f"{targets[0].sim_cpu_seconds * 1000 / max(ours.requests, 1):.2f} / "
                     f"{targets[2].sim_cpu_seconds * 1000 / max(up.requests, 1):.2f} ms of them); on {cores} otherwise "
                     f"idle cores that allows at most ≈ {cores * 1000 / max(targets[0].cpu_ms_per_request(), 1e-9):,.0f} "
                     f"req/s for openmaac and ≈ {cores * 1000 / max(targets[2].cpu_ms_per_request(), 1e-9):,.0f} req/s "
                     f"for bare + LINE call (CPU-bound estimate, unmoved by other load)")
        yield from durable_floor_results(label, ours, up, floor, floor_warm, floor_line,
                                         targets[0].cpu_ms_per_request(), targets[3].cpu_ms_per_request())
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            yield Result(f"{label}: push {name} latency", ours.p(q), "ms",
                         f"bare FastAPI {ceiling.p(q):.1f} ms; bare + LINE call {up.p(q):.1f} ms; "
                         f"+ durable writes {floor.p(q):.1f} ms")


def durable_floor_results(label: str, ours: Any, up: Any, floor: Any, floor_warm: int, floor_line: dict[str, int],
                          ours_machine_ms: float, floor_machine_ms: float) -> Iterable[Result]:
    """The push beside the durable floor: bare FastAPI + the same LINE call + the least a push
    that loses nothing writes (a row committed before the call, its answer committed after)."""
    floor_rps = floor.rows / floor.seconds if floor.seconds else 0.0
    delivered = floor_line.get("delivered", 0)
    check = "= its successes (warm-up included)" if delivered == floor.rows + floor_warm else \
        f"≠ its {floor.rows + floor_warm:,} successes (warm-up included): CHECK"
    yield Result(f"{label}: bare FastAPI + the same LINE call + durable writes (the durable floor)", floor_rps,
                 "req/s", f"benchmarks.bare_upstream with BARE_DURABLE: one row committed before the call and its "
                 f"answer committed after, on a {label} database of its own; {floor.rows:,} of {floor.requests:,} "
                 f"success; the simulator delivered {delivered:,} {check}")
    yield from durable_floor_ratios(label, "push", ours, up, floor, ours_machine_ms, floor_machine_ms)


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
    worker_count = FANOUT_WORKERS
    if worker_count:
        label = f"{label} + {worker_count} worker process{'es' if worker_count > 1 else ''}"
    with simulator() as sim:
        server = ServerProcess(database_url=url, extra_env={
            "OPENMAAC_SIMULATORS": "0", "OPENMAAC_EMBEDDED_WORKER": "0" if worker_count else "1",
            "OPENMAAC_API_RATE_LIMITS": "enhanced_multicast=100000/1"})
        server.cli("migrate")
        began = time.perf_counter()
        (org,) = make_orgs(server, sim.base_url, ["bench-fanout"], n)
        yield Result(f"{label}: fan-out setup, {n:,} friends and contacts (bulk, not timed below)",
                     time.perf_counter() - began, "s")
        bodies = [orjson.dumps({"template_id": 0, "line_uids": org.friends[i:i + PER_REQUEST],
                                "data": {"what": "Summer"}}) for i in range(0, n, PER_REQUEST)]
        with server, workers(server, worker_count) as worker_pids:
            assert server.process is not None
            template_id = create_template(server, org, SALE)
            bodies = [body.replace(b'"template_id":0', b'"template_id":%d' % template_id) for body in bodies]
            assert sim.process is not None
            # the CPU of each process during the fan-out: serve, the workers, the simulator, the load generator
            pids = {"serve": server.process.pid, **{f"worker {i + 1}": pid for i, pid in enumerate(worker_pids)},
                    "LINE simulator": sim.process.pid}
            profilers = [start_profiler(pid, name.split()[0] if name != "LINE simulator" else "simulator")
                         for name, pid in pids.items() if name != "serve"]  # serve's runs since its start
            cpu_before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
            load_before = own_cpu_seconds()
            postgres_before = postgres_cpu_by_pid() if url else {}
            with PeakMemory(server.process.pid) as memory:
                started = time.perf_counter()
                statuses, ids, accept_seconds = asyncio.run(post_all(server.base_url, org.token, bodies))
                delivered_at = None
                last, last_change = -1, time.perf_counter()
                poll = httpx.Client()
                while True:
                    delivered = sim_stats(sim.base_url, org.channel_id, poll).get("delivered", 0)
                    now = time.perf_counter()
                    if delivered >= n:
                        delivered_at = now
                        break
                    if delivered != last:
                        last, last_change = delivered, now
                    elif now - last_change > 60:
                        break  # stalled
                    time.sleep(0.05)
                poll.close()
                while sent_count(server, org.id) < len(ids) and time.perf_counter() - started < 600:
                    time.sleep(0.1)
                recorded_at = time.perf_counter()
            cpus = {name: process_cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            cpus["load generator"] = own_cpu_seconds() - load_before
            if url:
                cpus["PostgreSQL server"] = postgres_cpu_since(postgres_before)
            for profiler in profilers:
                stop_profiler(profiler)
            cpu = sum(seconds for name, seconds in cpus.items() if name.startswith(("serve", "worker")))
            stats = sim_stats(sim.base_url, org.channel_id)
        _remove(server)
        if delivered_at is None:
            yield Result(f"{label}: fan-out of {n:,} STALLED", last, "delivered", f"statuses {statuses}")
            return
        total = delivered_at - started
        yield Result(f"{label}: fan-out time ÷ the time LINE's 200 multicast/s allows", total / allowed, "×",
                     f"goal ≤ 1.5×; {total:.1f} s vs {allowed:g} s; acceptance of the {requests:,} requests "
                     f"{accept_seconds:.1f} s ({accept_seconds / allowed:.2f}× the allowed time)")
        yield Result(f"{label}: enhanced multicast fan-out, {n:,} recipients ({requests:,} requests of "
                     f"{PER_REQUEST})", total, "s",
                     f"{total / allowed:.2f}× the {allowed:g} s LINE's 200 multicast/s allows (goal ≤ 1.5×); "
                     f"first request → last recipient delivered; all {requests:,} posted in {accept_seconds:.1f} s "
                     f"(answers {statuses}); all recorded sent after {recorded_at - started:.1f} s")
        yield Result(f"{label}: fan-out, LINE calls", float(stats.get("multicast 200", 0)), "calls",
                     f"429 answers {stats.get('multicast 429', 0)} (goal 0); delivered {stats.get('delivered', 0):,}")
        yield Result(f"{label}: fan-out, server peak RSS", memory.peak_mb, "MB", "goal < 300 MB")
        yield Result(f"{label}: fan-out, server CPU per request of 500", cpu * 1000 / requests, "ms",
                     f"{cpu:.1f} s CPU in all (serve and workers); {requests / cpu if cpu else 0:,.0f} requests/s "
                     f"per free core (LINE allows 200/s)")
        machine = sum(cpus.values())
        yield Result(f"{label}: fan-out, machine CPU per request of 500 (all processes)", machine * 1000 / requests,
                     "ms", "; ".join(f"{name} {seconds * 1000 / requests:.1f} ms" for name, seconds in cpus.items())
                     + f"; {machine:.1f} s CPU in {total:.1f} s on {os.cpu_count()} cores")


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    os.environ.setdefault("OPENMAAC_DATA_DIR", str(scratch_dir("messaging")))
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

"""SMS+: push requests/s beside bare FastAPI, and a 100,000-number campaign where 30% fall back to SMS (time to all-final, peak memory).

Everything runs in child processes: ``openmaac serve`` (embedded worker, built-in simulators
off), the LINE simulator and the Twilio simulator (each its own process, so their CPU is not
openmaac's) and ``benchmarks.bare_sms_plus``; the load generator (asyncio + aiohttp) runs here.
The spec limits ``pnp/message/push/`` to 170 requests/s and ``pnp/message/multicast/`` to
10/s per organisation; the benchmark lifts both (``OPENMAAC_API_RATE_LIMITS``) to measure what
is behind them.

Push: one organisation, a scenario with PNP (approved) and SMS fallback (fallback_period long
enough that no SMS goes during the run), ``PUSH_PHONES`` numbers known to the LINE simulator
as friends with those phones. ``PUSH_CLIENTS`` clients POST ``pnp/message/push/`` back to
back with random numbers; openmaac saves the message, calls LINE's ``POST /bot/pnp/push``
inline (as MAAC OpenAPI v1.1.48's push answers LINE's outcome) and answers ``{"id", "result"}``; a request
counts when it answered 200 ``success``. LINE then posts the ``delivery`` webhook back, which
openmaac records (pnp_delivered) while the load runs. Rounds alternate with the same load
against ``benchmarks.bare_sms_plus`` (the body parsed, the answer rendered; no database, no
LINE): the ceiling of FastAPI on this machine in the same run; and with the same load against
``benchmarks.bare_upstream`` (no database, but the same upstream work: the PNP call to the same
simulator process inside the request, with a channel of its own there whose signed ``delivery``
webhooks it receives and verifies): the ceiling of this machine for one LINE call and its
webhook per request, with the simulator and the load generator on the same cores; and against
the same app with ``BARE_DURABLE`` (the durable floor: a row committed before the call, its
answer and each delivery event committed, on a database of its own on the same backend).

Campaign: another organisation, N numbers (100,000; 3,000 with --quick) sent as
``pnp/message/multicast/`` requests of 150 by ``CAMPAIGN_CLIENTS`` clients; 70% of the numbers
are LINE users at the simulator (PNP accepted, then delivered by webhook), 30% are not (PNP
422: ``pnp_failed``) and go to SMS through the Twilio simulator after ``fallback_period`` (one
API minute, made long enough for the LINE phase to finish first). The figure is the time from the first
request to every message being final (``finished``, read from the server's database every
``POLL_SECONDS``), with the server's peak RSS sampled meanwhile; the Twilio simulator's record is checked for exactly one SMS per fallback number.
Beside it, the campaign's two phases in numbers/s (LINE: every number over every PNP answered and
delivery recorded; SMS: the SMS the Twilio simulator took, first to last) and the ceiling of each
simulator in the same run: ``CEILING_CLIENTS`` bare clients calling LINE's PNP push, then Twilio's
send, directly; then the same with the upstream work a campaign's number also brings, received
by ``benchmarks.bare_upstream`` (no database): PNP calls whose signed delivery webhooks it
verifies, SMS sends whose signed ``sent`` and ``delivered`` status callbacks it verifies, each
counted to the last webhook or callback. ``BENCH_SMS_PLUS_NUMBERS`` sets the campaign's size (e.g. 20000).

Measured on SQLite, and on PostgreSQL when benchmarks.common.postgres_url() is set.
``BENCH_SMS_PLUS_ONLY=push`` (or ``campaign``) runs one half only.
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
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from benchmarks.common import (
    ChildApp,
    LoadStats,
    PeakMemory,
    PushTarget,
    Result,
    ServerProcess,
    backends,
    database_url,
    durable_floor_database,
    durable_floor_ratios,
    process_cpu_seconds,
    run_load,
    scratch_dir,
    split_result,
    workers,
)

PUSH_CLIENTS = 32
PUSH_PHONES = 2_000
CAMPAIGN_CLIENTS = 8
PER_REQUEST = 150
POLL_SECONDS = 3.0  # the campaign's progress is read from the server's database this often
SMS_SHARE = 0.3
BARE_PNP_CPU_MS: dict[str, float] = {}  # by backend label: bare + PNP call CPU per request (the push half)


def campaign_fallback_seconds(numbers: int, postgres: bool = False) -> float:
    """The campaign's fallback_period (one API minute, made this long): long enough for the
    LINE phase to finish first, as with MAAC's real periods (default 1,440 minutes), so that
    SMS goes to the 30% LINE could not reach rather than to numbers LINE never got to try.
    Sized from the LINE phase of the 10,000-number runs of 2026-12-04 (460-600 numbers/s on
    both databases) with a margin of two and more for load: 200 numbers/s. (It was sized at
    80/s from the 2026-12-01 runs, 110-120/s then: a 100,000-number campaign waited 21 minutes
    for its SMS phase.)"""
    return max(20.0, numbers / 200)


LIFTED = "pnp_push=1000000/1,pnp_multicast=1000000/1"
PNP_CONTENT = [{"type": "text", "text": "Order {{order}} has arrived at {{store}}"}]
SMS_TEXT = "Order {{order}} has arrived at {{store}}"


@dataclass
class Sizes:
    push_seconds: float
    rounds: int
    numbers: int


def sizes(quick: bool) -> Sizes:
    return Sizes(push_seconds=3.0, rounds=1, numbers=3_000) if quick else \
        Sizes(push_seconds=8.0, rounds=3, numbers=100_000)


@dataclass
class Org:
    name: str
    id: int
    token: str
    channel_id: str
    setting_id: int = 0


@contextmanager
def simulators() -> Iterator[tuple[ChildApp, ChildApp]]:
    line = [sys.executable, "-c", "from openmaac.simulators.line.app import serve; serve(port={port})"]
    twilio = [sys.executable, "-c", "import uvicorn; from openmaac.simulators.twilio import create_app; "
              "uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning', loop='uvloop', "
              "http='httptools')"]
    with ChildApp(line, health_path="/_admin/channels") as line_sim, \
            ChildApp(twilio, health_path="/_admin/faults") as twilio_sim:
        yield line_sim, twilio_sim


# BENCH_SMS_PLUS_WORKERS=N: the campaign with N `openmaac worker` processes beside `serve` (its
# embedded worker off): the PNP calls, timers and SMS sends run on other cores than the requests,
# delivery webhooks and status callbacks (one Python process uses one core)
CAMPAIGN_WORKERS = int(os.environ.get("BENCH_SMS_PLUS_WORKERS", "0"))


def server_for(url: str | None, minute_seconds: float, embedded_worker: bool = True) -> ServerProcess:
    server = ServerProcess(database_url=url, extra_env={
        "OPENMAAC_SIMULATORS": "0", "OPENMAAC_API_RATE_LIMITS": LIFTED,
        "OPENMAAC_SMS_PLUS_MINUTE_SECONDS": str(minute_seconds),
        "OPENMAAC_EMBEDDED_WORKER": "1" if embedded_worker else "0"})
    server.cli("migrate")
    return server


def make_org(server: ServerProcess, line_sim: str, name: str) -> Org:
    """An organisation whose LINE channel is the simulator's (delivery webhooks come back to us)."""
    from openmaac.auth.service import create_organization, create_token
    from openmaac.channels.service import channel_of
    from openmaac.db.engine import get_database

    database = get_database(database_url(server))
    with database.write() as session:
        org = create_organization(session, name, line_api_base_url=line_sim)
        token = create_token(session, org.id, label="bench")
        channel = channel_of(session, org.id)
        assert channel is not None
        channel_id, secret, access = channel.channel_id, channel.channel_secret, channel.access_token
        org_id = org.id
    database.dispose()
    httpx.post(f"{line_sim}/_admin/channels", json={
        "channel_id": channel_id, "channel_secret": secret, "access_token": access,
        "webhook_url": f"{server.base_url}/line/webhook/{channel_id}"}, timeout=30).raise_for_status()
    return Org(name, org_id, token, channel_id)


def line_users(line_sim: str, channel_id: str, phones: list[str]) -> None:
    for start in range(0, len(phones), 50_000):
        httpx.post(f"{line_sim}/_admin/pnp/users", json={"phones": phones[start:start + 50_000],
                                                          "channel_id": channel_id}, timeout=300).raise_for_status()


def configure(server: ServerProcess, org: Org, twilio_sim: str, fallback_period: int) -> None:
    """SMS through the Twilio simulator, points, and the scenario (PNP approved + SMS)."""
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {org.token}"}, timeout=60)
    from openmaac.simulators import twilio as twilio_app

    client.put("/openapi/v1/pnp/sms_provider/", json={
        "provider": "twilio", "base_url": twilio_sim,
        "credentials": {"account_sid": twilio_app.DEFAULT_ACCOUNT_SID, "auth_token": twilio_app.DEFAULT_AUTH_TOKEN,
                        "from_number": "+15005550006"}}).raise_for_status()
    client.post("/openapi/v1/pnp/points/", json={"amount": 1_000_000_000}).raise_for_status()
    response = client.post("/openapi/v1/pnp/setting/", json={
        "name": "到貨通知", "pnp_enabled": True, "pnp_messages": PNP_CONTENT, "pnp_approval_status": "approved",
        "fallback_enabled": True, "sms_text": SMS_TEXT, "fallback_period": fallback_period})
    response.raise_for_status()
    org.setting_id = int(response.json()["id"])
    client.close()


def entry(phone: str, index: int) -> dict[str, Any]:
    params = {"order": f"AJ{index:07d}", "store": "全家金林門市"}
    return {"phone_number": phone, "pnp": params, "sms": params, "customized_id": f"bench-{index}"}


# -- push ------------------------------------------------------------------------------------------

def pushing(base_url: str, org: Org, phones: list[str], session: Any) -> Any:
    rng = random.Random(5)
    headers = {"Authorization": f"Bearer {org.token}", "Content-Type": "application/json"}

    async def one(_worker: int) -> tuple[int, int]:
        index = rng.randrange(len(phones))
        body = orjson.dumps({"pnp_setting_id": org.setting_id, "data": entry(phones[index], index)})
        async with session.post(base_url + "/openapi/v1/pnp/message/push/", data=body, headers=headers) as response:
            payload = await response.read()
        ok = response.status == 200 and orjson.loads(payload).get("result") == "success"
        return response.status, int(ok)

    return one


async def push_rounds(targets: list[PushTarget], org: Org, phones: list[str], size: Sizes, sim_pid: int) -> None:
    """Rounds alternating between the targets (same load generator, same simulator process)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=PUSH_CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for target in targets:
            await run_load(pushing(target.base_url, org, phones, session), concurrency=PUSH_CLIENTS, duration=0.5)
        for _ in range(size.rounds):
            for target in targets:
                await target.measured_round(pushing(target.base_url, org, phones, session), PUSH_CLIENTS,
                                            size.push_seconds, sim_pid)


@contextmanager
def bare_upstream(line_sim: str, durable: str = "") -> Iterator[tuple[ChildApp, str, str]]:
    """``benchmarks.bare_upstream`` with a channel of its own at the same LINE simulator (default
    limits, as openmaac's), whose webhooks (the PNP ``delivery`` events) go to it, and which
    verifies the Twilio simulator's status callbacks (its default account's auth token).
    Yields the app, its channel id and that channel's access token. ``durable``: its
    ``BARE_DURABLE`` database (each push and delivery written, committed)."""
    from openmaac.simulators import twilio as twilio_app

    channel_id = "bare-durable" if durable else "bare-upstream"
    secret, token = secrets.token_hex(16), secrets.token_urlsafe(32)
    app = ChildApp([sys.executable, "-m", "benchmarks.bare_upstream", "{port}", line_sim, token, secret,
                    twilio_app.DEFAULT_AUTH_TOKEN], env={"BARE_DURABLE": durable} if durable else {})
    httpx.post(f"{line_sim}/_admin/channels", json={
        "channel_id": channel_id, "channel_secret": secret, "access_token": token,
        "webhook_url": f"{app.base_url}/line/webhook/{channel_id}"}, timeout=30).raise_for_status()
    with app:
        yield app, channel_id, token


def measure_push(label: str, url: str | None, bare: ChildApp, size: Sizes) -> Iterable[Result]:
    with simulators() as (line_sim, twilio_sim), bare_upstream(line_sim.base_url) as (upstream, up_channel, _), \
            durable_floor_database(url) as durable_url, \
            bare_upstream(line_sim.base_url, durable_url) as (durable, durable_channel, _):
        server = server_for(url, 60.0)
        org = make_org(server, line_sim.base_url, "bench-sms-plus-push")
        phones = [f"+8869170{i:05d}" for i in range(PUSH_PHONES)]
        line_users(line_sim.base_url, org.channel_id, phones)  # PNP finds them by phone, for any channel
        with server:
            configure(server, org, twilio_sim.base_url, fallback_period=1440)
            assert line_sim.process is not None and server.process is not None
            assert bare.process is not None and upstream.process is not None and durable.process is not None
            postgres = url is not None
            targets = [PushTarget(server.base_url, server.process.pid, postgres=postgres),
                       PushTarget(bare.base_url, bare.process.pid, postgres=postgres),
                       PushTarget(upstream.base_url, upstream.process.pid, postgres=postgres),
                       PushTarget(durable.base_url, durable.process.pid, postgres=postgres)]
            asyncio.run(push_rounds(targets, org, phones, size, line_sim.process.pid))
            time.sleep(1.0)  # the last delivery webhooks (the simulator waits 0.2 s)
            up_stats = httpx.get(f"{upstream.base_url}/_stats", timeout=30).json()
            up_line = httpx.get(f"{line_sim.base_url}/_admin/channels/{up_channel}/stats", timeout=30).json()
            floor_stats = httpx.get(f"{durable.base_url}/_stats", timeout=30).json()
        (ours, ours_sim), (ceiling, _), (up, up_sim), (floor, _) = ((t.stats, t.sim_cpu_seconds) for t in targets)
        ok_rps = ours.rows / ours.seconds if ours.seconds else 0.0
        up_rps = up.rows / up.seconds if up.seconds else 0.0
        others = {s: n for s, n in ours.statuses.items() if s != 200}
        up_others = {s: n for s, n in up.statuses.items() if s != 200}
        yield Result(f"{label}: SMS+ push answered success (PNP accepted by LINE), {PUSH_CLIENTS} clients",
                     ok_rps, "req/s",
                     f"goal ≥ 1,500/s (spec limit 170/s, lifted); {ok_rps / ceiling.rps:.0%} of bare FastAPI "
                     f"({ceiling.rps:,.0f} req/s) in the same run; {ours.rows:,} of {ours.requests:,} success; "
                     f"other answers {others or 'none'}")
        yield Result(f"{label}: bare FastAPI + the same LINE call and delivery webhook, {PUSH_CLIENTS} clients",
                     up_rps, "req/s",
                     f"benchmarks.bare_upstream: no database; PNP call (sync httpx in the thread pool) to the same "
                     f"simulator, its signed delivery webhook verified: the ceiling of this machine for this work; "
                     f"openmaac = {ok_rps / max(up_rps, 1e-9):.0%} of it; the goal 1,500/s = "
                     f"{1500 / max(up_rps, 1e-9):.0%} of it; {up.rows:,} of {up.requests:,} success; other answers "
                     f"{up_others or 'none'}; delivery webhooks received "
                     f"{up_stats['delivery_events']:,} for {up_stats['line_accepted']:,} PNP accepted (warm-up "
                     f"included), bad signatures {up_stats['bad_signatures']}; LINE 429s {up_line.get('pnp 429', 0)}; "
                     f"its CPU {up.server_cpu_ms_per_request:.2f} ms per request")
        cores = os.cpu_count() or 1
        floor_rps = floor.rows / floor.seconds if floor.seconds else 0.0
        yield Result(f"{label}: bare FastAPI + the same LINE call and webhook + durable writes (the durable floor)",
                     floor_rps, "req/s",
                     f"benchmarks.bare_upstream with BARE_DURABLE: a row committed before the PNP call, its answer "
                     f"committed after, each delivery event committed before the webhook's 200, on a {label} "
                     f"database of its own; {floor.rows:,} of {floor.requests:,} success; delivery events "
                     f"{floor_stats['delivery_events']:,} for {floor_stats['line_accepted']:,} PNP accepted")
        yield from durable_floor_ratios(label, "SMS+ push", ours, up, floor, targets[0].cpu_ms_per_request(),
                                        targets[3].cpu_ms_per_request())
        yield Result(f"{label}: push, machine CPU per request (app + LINE simulator + load generator"
                     + (" + PostgreSQL)" if url else ")"),
                     targets[0].cpu_ms_per_request(), "ms",
                     f"bare + LINE call {targets[2].cpu_ms_per_request():.2f} ms; on {cores} otherwise idle cores "
                     f"that allows at most ≈ {cores * 1000 / max(targets[0].cpu_ms_per_request(), 1e-9):,.0f} req/s "
                     f"for openmaac and ≈ {cores * 1000 / max(targets[2].cpu_ms_per_request(), 1e-9):,.0f} req/s "
                     f"for bare + LINE call (CPU-bound estimate, unmoved by other load)")
        BARE_PNP_CPU_MS[label] = up.server_cpu_ms_per_request
        cpu_ratio = ours.server_cpu_ms_per_request / max(up.server_cpu_ms_per_request, 1e-9)
        yield Result(f"{label}: push, openmaac CPU per request", ours.server_cpu_ms_per_request, "ms",
                     f"{cpu_ratio:.1f}x bare + LINE call (goal ≤ 2x); bare FastAPI {ceiling.server_cpu_ms_per_request:.2f} ms, bare + LINE call "
                     f"{up.server_cpu_ms_per_request:.2f} ms; ≈ "
                     f"{1000 / max(ours.server_cpu_ms_per_request, 1e-9):,.0f} req/s per free core; the LINE "
                     f"simulator used {ours_sim * 1000 / max(ours.requests, 1):.2f} ms per push besides "
                     f"(same 2 cores), incl. its delivery webhooks ({up_sim * 1000 / max(up.requests, 1):.2f} ms in "
                     f"the bare + LINE call rounds)")
        yield split_result(f"{label}: push", ours, up)
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            yield Result(f"{label}: push {name} latency", ours.p(q), "ms",
                         f"bare FastAPI {ceiling.p(q):.1f} ms; bare + LINE call {up.p(q):.1f} ms")


# -- campaign --------------------------------------------------------------------------------------

async def post_all(base_url: str, token: str, bodies: list[bytes]) -> tuple[dict[int, int], float]:
    import aiohttp

    statuses: dict[int, int] = {}
    queue = iter(bodies)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CAMPAIGN_CLIENTS),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def client() -> None:
            for body in queue:
                async with session.post(base_url + "/openapi/v1/pnp/message/multicast/", data=body,
                                        headers=headers) as response:
                    await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(CAMPAIGN_CLIENTS)))
    return statuses, time.perf_counter() - began


def campaign_state(server: ServerProcess, org_id: int) -> tuple[dict[str, int], int, int]:
    """(finished messages by status, unfinished messages, messages still waiting for LINE:
    PNP not answered yet or accepted and not yet delivered)."""
    from sqlalchemy import func, select

    from openmaac.db.engine import get_database
    from openmaac.sms_plus.models import PnpMessage

    with get_database(database_url(server)).read() as session:
        rows = session.execute(select(PnpMessage.finished, PnpMessage.status, func.count())
                               .where(PnpMessage.organization_id == org_id)
                               .group_by(PnpMessage.finished, PnpMessage.status)).all()
    final: dict[str, int] = {}
    open_ = line = 0
    for finished, status, count in rows:
        if finished:
            final[status] = final.get(status, 0) + int(count)
        else:
            open_ += int(count)
            if status in ("pnp_preparing", "pnp_accepted"):
                line += int(count)
    return final, open_, line


CEILING_CLIENTS = 16  # the bare clients hammering each simulator (openmaac: 16 PNP calls, 16 SMS sends in flight)
CEILING_TO_PREFIX = "+1500555"  # the Twilio ceiling's numbers (left out of the exactly-once check)


async def simulator_ceilings(line_sim: str, twilio_sim: str, line_phones: list[str], seconds: float,
                             upstream: str, upstream_token: str) -> Ceilings:
    """Each simulator hammered directly by a bare aiohttp client (``CEILING_CLIENTS`` at once): LINE's
    ``POST /bot/pnp/push`` (a channel of its own, no webhook URL: the simulator still schedules the
    delivery, it has nowhere to post it) to known users, and Twilio's ``Messages.json`` (no
    StatusCallback). The most numbers/s each phase of the campaign could reach on this machine now.

    Then the same two loads with the upstream work a campaign's number also brings, received by
    ``benchmarks.bare_upstream`` (no database): the PNP calls on its channel, whose signed
    ``delivery`` webhooks it verifies, and the SMS sends with a StatusCallback to it, whose
    signed ``sent`` and ``delivered`` callbacks it verifies. Those rates count from the start of
    the load to the last webhook or callback received."""
    import hashlib

    import aiohttp

    from openmaac.simulators import twilio as twilio_app

    token = secrets.token_urlsafe(32)
    httpx.post(f"{line_sim}/_admin/channels", json={"channel_id": "ceiling", "channel_secret": secrets.token_hex(16),
                                                     "access_token": token}, timeout=30).raise_for_status()
    hashes = [hashlib.sha256(phone.encode()).hexdigest() for phone in line_phones[:5_000]]
    counter = iter(range(10**9))
    auth = aiohttp.BasicAuth(twilio_app.DEFAULT_ACCOUNT_SID, twilio_app.DEFAULT_AUTH_TOKEN)
    twilio_url = f"{twilio_sim}/2010-04-01/Accounts/{twilio_app.DEFAULT_ACCOUNT_SID}/Messages.json"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CEILING_CLIENTS * 2),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        def pnp(access_token: str) -> Any:
            headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}

            async def one(_worker: int) -> tuple[int, int]:
                i = next(counter)
                body = orjson.dumps({"to": hashes[i % len(hashes)],
                                     "messages": [{"type": "text", "text": f"Order AJ{i:07d} has arrived"}]})
                async with session.post(f"{line_sim}/bot/pnp/push", data=body, headers={
                        **headers, "X-Line-Delivery-Tag": f"ceiling-pnp-{i}-tag-padding"}) as response:
                    await response.read()
                return response.status, int(response.status == 200)
            return one

        def sms(callback: str | None) -> Any:
            async def one(_worker: int) -> tuple[int, int]:
                i = next(counter)
                form = {"To": f"{CEILING_TO_PREFIX}{i % 10_000:04d}", "From": "+15005550006",
                        "Body": f"Order AJ{i:07d} has arrived"}
                if callback:
                    form["StatusCallback"] = callback
                async with session.post(twilio_url, data=form, auth=auth) as response:
                    await response.read()
                return response.status, int(response.status == 201)
            return one

        async def received(key: str) -> int:
            async with session.get(f"{upstream}/_stats") as response:
                return int((await response.json()).get(key, 0))

        async def with_answers(one: Any, key: str, per_row: int) -> LoadStats:
            """The load, then until the receiver has every answer (or none came for 2 s)."""
            before = await received(key)
            began = time.perf_counter()
            stats = await run_load(one, concurrency=CEILING_CLIENTS, duration=seconds)
            count, changed_at = await received(key), time.perf_counter()
            while count - before < stats.rows * per_row and time.perf_counter() - changed_at < 2.0:
                await asyncio.sleep(0.05)
                if (now := await received(key)) != count:
                    count, changed_at = now, time.perf_counter()
            stats.seconds = changed_at - began
            stats.rows = min(stats.rows, (count - before) // per_row)  # numbers whose answers all came
            return stats

        line = await run_load(pnp(token), concurrency=CEILING_CLIENTS, duration=seconds)
        twilio = await run_load(sms(None), concurrency=CEILING_CLIENTS, duration=seconds)
        line_answered = await with_answers(pnp(upstream_token), "delivery_events", 1)
        twilio_answered = await with_answers(sms(f"{upstream}/twilio/status"), "twilio_callbacks", 2)
    return Ceilings(line, twilio, line_answered, twilio_answered)


@dataclass
class Ceilings:
    """The simulators' own ceilings, and the same with their webhooks or callbacks received."""

    line: LoadStats
    twilio: LoadStats
    line_with_webhooks: LoadStats
    twilio_with_callbacks: LoadStats


def _epoch(value: Any) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def measure_campaign(label: str, url: str | None, size: Sizes) -> Iterable[Result]:
    n = size.numbers
    requests = -(-n // PER_REQUEST)
    worker_count = CAMPAIGN_WORKERS
    if worker_count:
        label = f"{label} + {worker_count} worker process{'es' if worker_count > 1 else ''}"
    with simulators() as (line_sim, twilio_sim), bare_upstream(line_sim.base_url) as (upstream, _, up_token):
        minute_seconds = campaign_fallback_seconds(n, postgres=url is not None)
        server = server_for(url, minute_seconds, embedded_worker=not worker_count)
        org = make_org(server, line_sim.base_url, "bench-sms-plus-campaign")
        phones = [f"+8869{i:08d}" for i in range(n)]
        rng = random.Random(3)
        fallback = set(rng.sample(range(n), int(n * SMS_SHARE)))
        began = time.perf_counter()
        line_users(line_sim.base_url, org.channel_id, [p for i, p in enumerate(phones) if i not in fallback])
        yield Result(f"{label}: campaign setup, {n - len(fallback):,} LINE users with phones at the simulator "
                     "(not timed below)", time.perf_counter() - began, "s")
        bodies = [orjson.dumps({"pnp_setting_id": 0, "data": [entry(phones[i], i) for i in range(s, min(s + PER_REQUEST, n))]})
                  for s in range(0, n, PER_REQUEST)]
        with server, workers(server, worker_count) as worker_pids:
            assert server.process is not None
            configure(server, org, twilio_sim.base_url, fallback_period=1)
            ceilings = asyncio.run(simulator_ceilings(
                line_sim.base_url, twilio_sim.base_url, [p for i, p in enumerate(phones) if i not in fallback],
                size.push_seconds, upstream.base_url, up_token))
            line_ceiling, sms_ceiling = ceilings.line, ceilings.twilio
            bodies = [body.replace(b'"pnp_setting_id":0', b'"pnp_setting_id":%d' % org.setting_id) for body in bodies]
            pids = [server.process.pid, *worker_pids]
            cpu = sum(process_cpu_seconds(pid) for pid in pids)
            # sampling and polling kept light: this process shares the 2 cores with the server
            with PeakMemory(server.process.pid, interval=0.5) as memory:
                started = time.perf_counter()
                started_wall = time.time()
                statuses, accept_seconds = asyncio.run(post_all(server.base_url, org.token, bodies))
                counts: dict[str, int] = {}
                last, last_change = -1, time.perf_counter()
                final_at = line_done_at = None
                while True:
                    counts, open_, line = campaign_state(server, org.id)
                    now = time.perf_counter()
                    total_seen = sum(counts.values()) + open_
                    if line_done_at is None and total_seen >= n and line == 0:
                        line_done_at = now  # every PNP answered by LINE and every delivery recorded
                    if total_seen >= n and open_ == 0:
                        final_at = now
                        break
                    if open_ != last:
                        last, last_change = open_, now
                    elif now - max(last_change, started + minute_seconds) > 180:
                        # (nothing moves while the SMS numbers wait out the fallback period: not a stall)
                        break  # stalled
                    time.sleep(POLL_SECONDS)
            cpu = sum(process_cpu_seconds(pid) for pid in pids) - cpu
            time.sleep(1.0)
            texts = httpx.get(f"{twilio_sim.base_url}/_admin/messages", timeout=300).json()["results"]
        per_number: dict[str, int] = {}
        sent_at: list[float] = []
        for text in texts:
            if str(text["to"]).startswith(CEILING_TO_PREFIX):
                continue  # the ceiling's, not the campaign's
            per_number[text["to"]] = per_number.get(text["to"], 0) + 1
            if (at := _epoch(text.get("created"))) is not None:
                sent_at.append(at)
        expected = {phones[i] for i in fallback}
        once = sum(1 for phone in expected if per_number.get(phone) == 1)
        extra = sum(c for p, c in per_number.items() if p not in expected) + sum(
            c - 1 for p, c in per_number.items() if p in expected and c > 1)
        if final_at is None:
            yield Result(f"{label}: campaign of {n:,} STALLED", float(last), "open", f"answers {statuses}; {counts}")
            return
        total = final_at - started
        sms_phase = f"; SMS phase after the fallback_period: {total - minute_seconds:.1f} s"
        line_note = (f"LINE phase (every PNP answered, every delivery webhook recorded) done after "
                     f"{line_done_at - started:.1f} s = {n / (line_done_at - started):,.0f} numbers/s"
                     if line_done_at else "LINE phase not seen done")
        line_rate = n / (line_done_at - started) if line_done_at else 0.0
        line_ceiling_rate = line_ceiling.rows / max(line_ceiling.seconds, 1e-9)
        sms_ceiling_rate = sms_ceiling.rows / max(sms_ceiling.seconds, 1e-9)
        # the SMS phase: from the first SMS the simulator took to the last one (its own clock)
        sms_rate = (len(sent_at) - 1) / (max(sent_at) - min(sent_at)) if len(sent_at) > 1 and \
            max(sent_at) > min(sent_at) else 0.0
        sms_to_final = (final_at - started) - (min(sent_at) - started_wall) if sent_at else 0.0
        yield Result(f"{label}: campaign of {n:,} numbers ({requests:,} multicasts of {PER_REQUEST}), "
                     f"{len(fallback):,} fall back to SMS: time to all final", total, "s",
                     f"first request → every message final; fallback_period = {minute_seconds:g} s here; "
                     f"all {requests:,} requests answered in {accept_seconds:.1f} s ({statuses}); {line_note}"
                     f"{sms_phase}; "
                     f"final statuses {counts}")
        yield Result(f"{label}: campaign, LINE phase", line_rate, "numbers/s",
                     f"{line_rate / max(line_ceiling_rate, 1e-9):.2f}x of the LINE simulator's ceiling in this run: "
                     f"{line_ceiling_rate:,.0f} PNP calls/s by a bare client ({CEILING_CLIENTS} at once, "
                     f"{line_ceiling.rows:,} of {line_ceiling.requests:,} accepted); goal ≥ 0.5x; the phase ends "
                     f"when every PNP is answered and every delivery webhook recorded (polled every {POLL_SECONDS:g} s)")
        yield Result(f"{label}: campaign, SMS phase", sms_rate, "numbers/s",
                     f"{sms_rate / max(sms_ceiling_rate, 1e-9):.2f}x of the Twilio simulator's ceiling in this run: "
                     f"{sms_ceiling_rate:,.0f} sends/s by a bare client ({CEILING_CLIENTS} at once, "
                     f"{sms_ceiling.rows:,} of {sms_ceiling.requests:,} taken); goal ≥ 0.5x; first to last SMS the "
                     f"simulator took ({len(sent_at):,}); first SMS to every message final "
                     f"{sms_to_final:.1f} s = {len(sent_at) / max(sms_to_final, 1e-9):,.0f} numbers/s")
        line_answered, sms_answered = ceilings.line_with_webhooks, ceilings.twilio_with_callbacks
        line_answered_rate, sms_answered_rate = line_answered.rows_per_second, sms_answered.rows_per_second
        sms_final_rate = len(sent_at) / max(sms_to_final, 1e-9)
        yield Result(f"{label}: campaign ceiling, PNP calls with their delivery webhooks received", line_answered_rate,
                     "numbers/s",
                     f"{line_answered_rate / max(line_ceiling_rate, 1e-9):.2f}x of the LINE simulator's own ceiling: "
                     f"a bare client ({CEILING_CLIENTS} at once) on a channel whose signed delivery webhooks "
                     f"benchmarks.bare_upstream verifies (no database), from the first call to the last webhook; "
                     f"{line_answered.rows:,} numbers; the campaign's LINE phase = "
                     f"{line_rate / max(line_answered_rate, 1e-9):.2f}x of it")
        yield Result(f"{label}: campaign ceiling, SMS sends with their status callbacks received", sms_answered_rate,
                     "numbers/s",
                     f"{sms_answered_rate / max(sms_ceiling_rate, 1e-9):.2f}x of the Twilio simulator's own ceiling: "
                     f"a bare client ({CEILING_CLIENTS} at once) sending with a StatusCallback whose signed sent and "
                     f"delivered callbacks benchmarks.bare_upstream verifies (no database), from the first send to "
                     f"the last callback; {sms_answered.rows:,} numbers; the campaign's SMS phase = "
                     f"{sms_rate / max(sms_answered_rate, 1e-9):.2f}x of it (first to last send), "
                     f"{sms_final_rate / max(sms_answered_rate, 1e-9):.2f}x (first SMS to every message final)")
        yield Result(f"{label}: campaign, SMS sent exactly once", float(once), "numbers",
                     f"of {len(expected):,} fallback numbers; SMS to other numbers or repeated: {extra} (goal 0)")
        yield Result(f"{label}: campaign, server peak RSS", memory.peak_mb, "MB", "openmaac serve process")
        bare_cpu = BARE_PNP_CPU_MS.get(label.split(" + ")[0])
        ratio = (f"; {cpu * 1000 / n / bare_cpu:.1f}x the bare + PNP call CPU per request ({bare_cpu:.2f} ms, the "
                 f"push half of this run; goal ≤ 2x)") if bare_cpu else ""
        yield Result(f"{label}: campaign, server CPU per message", cpu * 1000 / n, "ms",
                     f"{cpu:.1f} s CPU in all (requests, PNP calls, delivery webhooks, timers, SMS, reports"
                     f"{'; serve and the worker processes' if worker_count else ''}){ratio}")


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    os.environ.setdefault("OPENMAAC_DATA_DIR", str(scratch_dir("sms-plus")))
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with the simulators, the load generator and other work; load average {load[0]:.1f} "
                 "at start")
    with ChildApp([sys.executable, "-m", "benchmarks.bare_sms_plus", "{port}"]) as bare:
        only = os.environ.get("BENCH_SMS_PLUS_ONLY")  # "push" or "campaign": one half only
        for label, url in backends():
            if only in (None, "", "push"):
                yield from measure_push(label, url, bare, size)
            if only in (None, "", "campaign"):
                # BENCH_SMS_PLUS_NUMBERS: the campaign's size (e.g. 20000: a mid-size run)
                numbers = (os.environ.get("BENCH_SMS_PLUS_PG_NUMBERS") if url else None) \
                    or os.environ.get("BENCH_SMS_PLUS_NUMBERS")
                # BENCH_SMS_PLUS_PG_NUMBERS: a smaller PostgreSQL campaign when time is short (its label says so)
                yield from measure_campaign(label, url, size if not numbers else Sizes(
                    push_seconds=size.push_seconds, rounds=size.rounds, numbers=int(numbers)))
    load = os.getloadavg()
    yield Result("machine: load average at end", load[0], "", "1-minute load average")

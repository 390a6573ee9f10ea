"""Observability's price: push requests/s with Prometheus metrics and JSON logs on, beside off, in one run.

Two ``openmaac serve`` processes, alike but for their observability settings, each with its own
database, run the push load of ``bench_messaging`` (``ORGS`` organisations with their own
channels at one LINE simulator process, ``PUSH_CLIENTS`` clients, a one-parameter template) in
alternating rounds, so drift of the machine's load hits both alike:

- **off**: ``OPENMAAC_METRICS=0`` (no metrics middleware, no ``/metrics``), text logs, no
  access log (``OPENMAAC_ACCESS_LOG=0``);
- **on**: the defaults an operator runs in production: metrics on and scraped every
  ``SCRAPE_SECONDS`` during the load (as Prometheus would, far more often than its usual
  15 s), ``OPENMAAC_LOG_FORMAT=json`` with the access log, written to a file.

The figure is on/off of the successful pushes per second (goal ≥ 0.95), beside the server CPU
per request of each. ``benchmarks.bare_upstream`` (no database, the same LINE call) runs in the
same rounds as the ceiling of this machine for the work. Measured on SQLite, and on PostgreSQL
when benchmarks.common.postgres_url() is set (each server its own fresh database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from benchmarks.bench_messaging import (
    FRIENDS,
    ORGS,
    TEXT,
    Target,
    bare_upstream,
    create_template,
    make_orgs,
    push_rounds,
    sim_stats,
    simulator,
    sizes,
)
from benchmarks.common import (
    Result,
    ServerProcess,
    backends,
    fresh_postgres_database,
    postgres_url,
    scratch_dir,
)

SCRAPE_SECONDS = 1.0

OFF = {"OPENMAAC_METRICS": "0", "OPENMAAC_LOG_FORMAT": "text", "OPENMAAC_ACCESS_LOG": "0"}
ON = {"OPENMAAC_METRICS": "1", "OPENMAAC_LOG_FORMAT": "json", "OPENMAAC_ACCESS_LOG": "1",
      "OPENMAAC_LOG_LEVEL": "INFO"}
# BENCH_OBSERVABILITY_ON="NAME=VALUE,...": the "on" server with some settings changed, to see what
# each part costs (e.g. OPENMAAC_ACCESS_LOG=0: metrics and their scrapes alone); the label says so
ON_CHANGED = dict(item.split("=", 1) for item in os.environ.get("BENCH_OBSERVABILITY_ON", "").split(",") if "=" in item)
ON.update(ON_CHANGED)


@contextmanager
def second_database(url: str | None) -> Iterator[str | None]:
    """The database of the second server: a fresh PostgreSQL database beside ``url``, or its
    own SQLite file (None) when ``url`` is None."""
    admin = postgres_url()
    if url is None or admin is None:
        yield None
        return
    with fresh_postgres_database(admin) as other:
        yield other


@contextmanager
def scraping(base_url: str) -> Iterator[list[int]]:
    """GET /metrics every SCRAPE_SECONDS in a thread; the list of answer sizes seen."""
    sizes_seen: list[int] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.wait(SCRAPE_SECONDS):
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(base_url + "/metrics")
                    if response.status_code == 200:
                        sizes_seen.append(len(response.content))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sizes_seen
    finally:
        stop.set()
        thread.join()


def measure(label: str, url: str | None, size: Any) -> Iterable[Result]:
    log_path = scratch_dir("obs") / "server.jsonl"
    with simulator() as sim, bare_upstream(sim.base_url) as (upstream, up_org), second_database(url) as url_on:
        off = ServerProcess(database_url=url, extra_env={"OPENMAAC_SIMULATORS": "0", **OFF})
        on = ServerProcess(database_url=url_on, extra_env={"OPENMAAC_SIMULATORS": "0", **ON})
        servers = []
        for name, server in (("off", off), ("on", on)):
            server.cli("migrate")
            orgs = make_orgs(server, sim.base_url, [f"bench-obs-{name}-{i}" for i in range(ORGS)], FRIENDS)
            servers.append((server, orgs))
        previous = os.environ.get("BENCH_SERVER_LOG")
        try:
            off.start()
            os.environ["BENCH_SERVER_LOG"] = str(log_path)  # the "on" server's JSON lines go to a file
            on.start()
        finally:
            if previous is None:
                os.environ.pop("BENCH_SERVER_LOG", None)
            else:
                os.environ["BENCH_SERVER_LOG"] = previous
        try:
            for server, orgs in servers:
                for org in orgs:
                    org.template_id = create_template(server, org, TEXT)
            assert off.process is not None and on.process is not None
            assert upstream.process is not None and sim.process is not None
            targets = [Target(off.base_url, off.process.pid, orgs=servers[0][1]),
                       Target(on.base_url, on.process.pid, orgs=servers[1][1]),
                       Target(upstream.base_url, upstream.process.pid, orgs=[up_org])]
            with scraping(on.base_url) as scrapes:
                asyncio.run(push_rounds(targets, size, sim.process.pid))
            delivered = {name: sum(sim_stats(sim.base_url, org.channel_id).get("delivered", 0) for org in orgs)
                         for name, (_server, orgs) in zip(("off", "on"), servers, strict=True)}
        finally:
            off.stop()
            on.stop()
        log_lines = sum(1 for _ in log_path.open("rb")) if log_path.exists() else 0
        (ours_off, ours_on, up) = (t.stats for t in targets)
        rps_off = ours_off.rows / ours_off.seconds if ours_off.seconds else 0.0
        rps_on = ours_on.rows / ours_on.seconds if ours_on.seconds else 0.0
        up_rps = up.rows / up.seconds if up.seconds else 0.0
        ratio = rps_on / rps_off if rps_off else 0.0
        changed = f" ({', '.join(f'{k}={v}' for k, v in ON_CHANGED.items())})" if ON_CHANGED else ""
        yield Result(f"{label}: push with metrics + JSON logs on{changed} / off", ratio, "×",
                     f"goal ≥ 0.95; on {rps_on:,.0f} req/s, off {rps_off:,.0f} req/s in alternating rounds; bare + "
                     f"the same LINE call {up_rps:,.0f} req/s (on = {rps_on / max(up_rps, 1e-9):.0%}, off = "
                     f"{rps_off / max(up_rps, 1e-9):.0%} of it); /metrics scraped {len(scrapes)} times "
                     f"(last {scrapes[-1] if scrapes else 0:,} bytes); {log_lines:,} JSON log lines written; "
                     f"delivered off {delivered['off']:,} / on {delivered['on']:,}")
        yield Result(f"{label}: push, server CPU per request, on / off", ours_on.server_cpu_ms_per_request /
                     max(ours_off.server_cpu_ms_per_request, 1e-9), "×",
                     f"on {ours_on.server_cpu_ms_per_request:.2f} ms, off {ours_off.server_cpu_ms_per_request:.2f} ms, "
                     f"bare + LINE call {up.server_cpu_ms_per_request:.2f} ms")
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            yield Result(f"{label}: push {name} latency, on", ours_on.p(q), "ms",
                         f"off {ours_off.p(q):.1f} ms; bare + LINE call {up.p(q):.1f} ms")
        for server in (off, on):
            shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    os.environ.setdefault("OPENMAAC_DATA_DIR", str(scratch_dir("observability")))
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with the simulator, the load generator and other work; load average {load[0]:.1f} at start")
    for label, url in backends():
        yield from measure(label, url, size)

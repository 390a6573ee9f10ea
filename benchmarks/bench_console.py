"""Console pages' server time: the SMS+ list page and the templates list beside the API's list endpoints, in one run.

One ``openmaac serve`` with an organisation holding ``TEMPLATES`` message templates and
``SCENARIOS`` SMS+ scenarios (``PUSHES`` SMS+ pushes spread over the first ten, so list
performance has numbers to aggregate), a console admin signed in with a real session cookie.
In alternating rounds one client requests, one at a time:

- ``/console/templates/`` (the first page of the library, rendered with Jinja2) beside
  ``GET /openapi/v1/template/`` (the API's first page, JSON);
- ``/console/sms-plus/`` (scenarios, the last 30 days' list performance, balance) beside
  ``GET /openapi/v1/pnp/setting/`` (the API's first page of scenarios).

Figures: the server's CPU per request (the process's user + system time over the round divided
by its requests) and the latency seen by the client (p50, p99), each page beside its API
endpoint (ratio). Sequential requests make server CPU per request the server time of the page.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.common import Result, ServerProcess, backends, percentile, process_cpu_seconds

ORG = "bench-console"
EMAIL = "bench@example.com"
PASSWORD = "bench-console-password-1"


@dataclass
class Sizes:
    templates: int
    scenarios: int
    pushes: int
    requests: int  # per round and target
    rounds: int


def sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(templates=100, scenarios=10, pushes=20, requests=20, rounds=1)
    return Sizes(templates=1_000, scenarios=100, pushes=300, requests=100, rounds=3)


@dataclass
class Measured:
    """Requests to one URL over all rounds: latencies and the server CPU they cost."""

    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    bytes: int = 0

    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / max(len(self.latencies), 1)


def _cli(server: ServerProcess, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "openmaac.cli", *args], env=server.env(), input=stdin,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def seed(server: ServerProcess, size: Sizes) -> str:
    """The organisation, its token, templates, scenarios, SMS+ pushes and a console admin. Its token."""
    token = _cli(server, "token", "create", "--org", ORG)
    _cli(server, "user", "create", EMAIL, "--org", ORG, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    api = httpx.Client(base_url=server.base_url + "/openapi/v1/", headers={"Authorization": f"Bearer {token}"},
                       timeout=30)
    with api:
        for i in range(size.templates):
            response = api.post("template/", json={
                "name": f"Template {i:04d} order shipped",
                "messages": [{"type": "text", "text": f"Hello {{{{name}}}}, your order {i} is on its way"}]})
            response.raise_for_status()
        scenarios = []
        for i in range(size.scenarios):
            response = api.post("pnp/setting/", json={
                "name": f"Scenario {i:03d}", "pnp_enabled": True, "pnp_approval_status": "approved",
                "pnp_messages": [{"type": "text", "text": "Order {{order_number}} arrives {{arrival_date}}"}],
                "fallback_enabled": True, "sms_text": "Order {{order_number}} arrives {{arrival_date}}",
                "fallback_period": 1})
            response.raise_for_status()
            scenarios.append(response.json()["id"])
        api.post("pnp/points/", json={"amount": size.pushes * 10}).raise_for_status()
        for i in range(size.pushes):
            values = {"order_number": f"A{i:06d}", "arrival_date": "2026/12/24"}
            response = api.post("pnp/message/push/", json={
                "pnp_setting_id": scenarios[i % min(10, len(scenarios))],
                "data": {"phone_number": f"+8869{10_000_000 + i:08d}", "pnp": values, "sms": values}})
            response.raise_for_status()
    return token


def signed_in(server: ServerProcess) -> httpx.Client:
    """A client holding a console session cookie, signed in through the sign-in form."""
    client = httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False)
    form = client.get("/console/sign-in")
    form.raise_for_status()
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if found is None:
        raise RuntimeError("no CSRF token on the sign-in form")
    answer = client.post("/console/sign-in", data={"csrf_token": found[1], "email": EMAIL, "password": PASSWORD,
                                                   "next": "/console/"})
    if answer.status_code not in (302, 303):
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text[:200]}")
    return client


def measure(client: httpx.Client, url: str, count: int, pid: int, into: Measured,
            headers: dict[str, str] | None = None) -> None:
    before = process_cpu_seconds(pid)
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(url, headers=headers)
        into.latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
        into.bytes = len(response.content)
    into.cpu_seconds += process_cpu_seconds(pid) - before


def lines(backend: str, page: str, api: str, ours: Measured, theirs: Measured) -> Iterator[Result]:
    yield Result(f"{backend}: {page} server CPU per request", ours.cpu_ms(), "ms",
                 f"**{ours.cpu_ms() / max(theirs.cpu_ms(), 1e-9):.1f}×** the API's {api} "
                 f"({theirs.cpu_ms():.2f} ms); {len(ours.latencies)} requests each, "
                 f"{ours.bytes:,} vs {theirs.bytes:,} bytes")
    yield Result(f"{backend}: {page} latency p50 / p99", percentile(ours.latencies, 0.5) * 1000, "ms",
                 f"p99 {percentile(ours.latencies, 0.99) * 1000:.1f} ms; the API's {api}: "
                 f"p50 {percentile(theirs.latencies, 0.5) * 1000:.1f} ms, "
                 f"p99 {percentile(theirs.latencies, 0.99) * 1000:.1f} ms")


def run(args: Any) -> Iterable[Result]:
    size = sizes(getattr(args, "quick", False))
    for backend, database_url in backends():
        with ServerProcess(database_url=database_url) as server:
            began = time.perf_counter()
            token = seed(server, size)
            yield Result(f"{backend}: seeding {size.templates:,} templates, {size.scenarios} scenarios, "
                         f"{size.pushes} SMS+ pushes", time.perf_counter() - began, "s", "through the API")
            assert server.process is not None
            pid = server.process.pid
            api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            console = signed_in(server)
            figures = {name: Measured() for name in ("templates", "template_api", "sms", "sms_api")}
            try:
                # one warm-up request each: template compilation and caches are not the steady state
                for client, url in ((console, "/console/templates/"), (api, "/openapi/v1/template/"),
                                    (console, "/console/sms-plus/"), (api, "/openapi/v1/pnp/setting/")):
                    client.get(url).raise_for_status()
                for _ in range(size.rounds):
                    measure(console, "/console/templates/", size.requests, pid, figures["templates"])
                    measure(api, "/openapi/v1/template/", size.requests, pid, figures["template_api"])
                    measure(console, "/console/sms-plus/", size.requests, pid, figures["sms"])
                    measure(api, "/openapi/v1/pnp/setting/", size.requests, pid, figures["sms_api"])
            finally:
                api.close()
                console.close()
            yield from lines(backend, "console templates list", "GET template/", figures["templates"],
                             figures["template_api"])
            yield from lines(backend, "console SMS+ list (performance, balance)", "GET pnp/setting/",
                             figures["sms"], figures["sms_api"])

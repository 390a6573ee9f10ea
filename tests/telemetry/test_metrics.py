"""Prometheus /metrics end to end: requests counted by route template, upstream calls, job runs,
webhook deliveries and the database gauges, read over real HTTP from the harness server; the
access rule (loopback without forwarding headers, or the bearer token); OPENMAAC_METRICS=0;
several processes summed through PROMETHEUS_MULTIPROC_DIR (real ``serve`` and ``worker``
processes); the Grafana dashboard's queries use only metrics that exist."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import CallbackReceiver, ServedApp, create_template, seed_contacts, simulated_friend, wait_for
from openmaac.config import Settings, get_settings
from openmaac.telemetry.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
OPENMAAC = str(Path(sys.executable).with_name("openmaac"))
REMOTE = ("203.0.113.5", 40000)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when there is none)."""
    found = [v for n, ls, v in samples(text) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def scrape(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


# -- what the harness server counts -------------------------------------------------------------

def test_push_counts_route_template_upstream_call_and_job(tenant, anon):
    before = scrape(anon)
    uid = simulated_friend(tenant, "metrics")  # the profile arrives by a job that calls LINE
    template = create_template(tenant, [{"type": "text", "text": "hi"}])
    response = tenant.client.post(tenant.api("direct_message/push/"),
                                  json={"template_id": template["id"], "data": {"line_uid": uid}})
    assert response.status_code == 200 and response.json()["result"] == "success", response.text
    dm_id = response.json()["id"]
    assert tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).status_code == 200
    assert anon.get("/no/such/path").status_code == 404
    after = scrape(anon)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    push = {"method": "POST", "route": "/openapi/v1/direct_message/push/"}
    assert delta("openmaac_http_requests_total", **push, status="200") == 1
    assert delta("openmaac_http_request_duration_seconds_count", **push) == 1
    assert delta("openmaac_http_request_duration_seconds_bucket", **push, le="+Inf") == 1
    # the template, never the id: a raw path would make a series per message
    assert delta("openmaac_http_requests_total", method="GET", status="200",
                 route="/openapi/v1/direct_message/{direct_message_id}/") == 1
    assert delta("openmaac_http_requests_total", method="GET", route="unmatched", status="404") == 1
    routes = {labels["route"] for name, labels, _v in samples(after) if name == "openmaac_http_requests_total"}
    assert not any(str(dm_id) in route.split("/") or uid in route for route in routes), routes
    # the simulators by their mount only
    assert delta("openmaac_http_requests_total", method="POST", route="/_simulators/line", status="200") >= 2
    assert not any(route.startswith("/_simulators/line/") for route in routes)

    line_push = {"provider": "line", "endpoint": "/v2/bot/message/push"}
    assert delta("openmaac_upstream_requests_total", **line_push, status="200") == 1
    assert delta("openmaac_upstream_request_duration_seconds_count", **line_push) == 1
    assert delta("openmaac_upstream_requests_total", provider="line", endpoint="/v2/bot/profile/{userId}",
                 status="200") >= 1
    job = {"kind": "contact.fetch_line_profile"}
    assert delta("openmaac_job_runs_total", **job, outcome="success") >= 1
    assert delta("openmaac_job_duration_seconds_count", **job) >= 1
    # the push's own job-free path left the queue gauges in place, one series per kind and state
    assert value(after, "openmaac_jobs_queued", kind="contact.fetch_line_profile", status="ready") >= 0
    assert ("openmaac_jobs_queued", {"kind": "contact.fetch_line_profile", "status": "running"}) in [
        (n, ls) for n, ls, _v in samples(after)]


def test_upstream_transport_failure_counts_as_error(tenant, anon):
    from openmaac.channels.line_client import LineClient, LineTimeout

    before = scrape(anon)
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LineClient(f"http://127.0.0.1:{port}", "token", max_attempts=2, backoff=0.0)
    with pytest.raises(LineTimeout):
        client.push("U" + "0" * 32, [{"type": "text", "text": "x"}], retry_key="8f2d3b52-7c7e-4c4e-9d3c-1a1f1e0b6a11")
    after = scrape(anon)
    labels = {"provider": "line", "endpoint": "/v2/bot/message/push", "status": "error"}
    assert value(after, "openmaac_upstream_requests_total", **labels) - \
        value(before, "openmaac_upstream_requests_total", **labels) == 2  # every attempt


def test_queue_gauges_by_kind_and_state(tenant, anon, database):
    from openmaac.db.base import utcnow
    from openmaac.jobs import queue
    from openmaac.jobs.models import Job

    kind = f"metrics.probe.{tenant.id}"  # no handler, and not due: no worker takes them
    with database.write() as session:
        queue.enqueue(session, kind, run_at=utcnow() + timedelta(hours=1))
        queue.enqueue(session, kind, run_at=utcnow() + timedelta(hours=2))
        session.add(Job(kind=kind, payload={}, status="failed", run_at=utcnow(), attempts=10,
                        last_error="given up"))
    try:
        text = scrape(anon)
        assert value(text, "openmaac_jobs_queued", kind=kind, status="scheduled") == 2
        assert value(text, "openmaac_jobs_queued", kind=kind, status="failed") == 1
        assert value(text, "openmaac_jobs_oldest_ready_age_seconds", kind=kind) == 0  # nothing due
        assert ("openmaac_jobs_queued", {"kind": "member.import", "status": "ready"}) in [
            (n, ls) for n, ls, _v in samples(text)]  # every registered kind, zeros included
    finally:
        from sqlalchemy import delete

        with database.write() as session:
            session.execute(delete(Job).where(Job.kind == kind))


def test_job_outcomes_as_the_worker_tells_them(tenant, anon, database):
    """success, retry then given_up, failed (PermanentFailure), deferred (RetryLater), each
    counted once by the embedded worker of the harness server."""
    from sqlalchemy import delete

    from openmaac.jobs import queue
    from openmaac.jobs.models import Job
    from openmaac.jobs.registry import PermanentFailure, RetryLater, handler

    prefix = f"metrics.test.{tenant.id}"

    @handler(f"{prefix}.ok")
    def ok(_payload: dict[str, Any], _context: Any) -> None:
        return None

    @handler(f"{prefix}.broken")
    def broken(_payload: dict[str, Any], _context: Any) -> None:
        raise ValueError("broken")

    @handler(f"{prefix}.permanent")
    def permanent(_payload: dict[str, Any], _context: Any) -> None:
        raise PermanentFailure("bad data")

    @handler(f"{prefix}.later")
    def later(_payload: dict[str, Any], _context: Any) -> None:
        raise RetryLater(3600)

    expected = {("ok", "success"): 1, ("broken", "retry"): 1, ("broken", "given_up"): 1,
                ("permanent", "failed"): 1, ("later", "deferred"): 1}
    with database.write() as session:
        for name in ("ok", "broken", "permanent", "later"):
            queue.enqueue(session, f"{prefix}.{name}", max_attempts=2)
    try:
        def counted() -> str | None:
            text = scrape(anon)
            done = all(value(text, "openmaac_job_runs_total", kind=f"{prefix}.{name}", outcome=outcome) == count
                       for (name, outcome), count in expected.items())
            return text if done else None

        text = wait_for(counted, timeout=30)  # the retry waits its 1 s backoff
        assert value(text, "openmaac_job_duration_seconds_count", kind=f"{prefix}.broken") == 2
        assert value(text, "openmaac_jobs_queued", kind=f"{prefix}.later", status="scheduled") == 1
        assert value(text, "openmaac_jobs_queued", kind=f"{prefix}.broken", status="failed") == 1
    finally:
        with database.write() as session:
            session.execute(delete(Job).where(Job.kind.startswith(prefix)))


def test_points_balance_per_organisation(tenant, anon, database):
    from openmaac.sms_plus.points import top_up

    with database.write() as session:
        top_up(session, tenant.id, 1234)
    text = scrape(anon)
    assert value(text, "openmaac_sms_points_balance", organization_id=str(tenant.id),
                 organization=tenant.name) == 1234
    # the names the dashboard is checked against are the names served
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {name.removesuffix("_total") for name in METRIC_NAMES} <= families
    assert not any(name.endswith("_created") for name, _labels, _v in samples(text))


def test_webhook_deliveries_counted_by_outcome(tenant, anon):
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    try:
        before = scrape(anon)
        response = tenant.client.post(tenant.api("webhook/"), json={
            "url": f"{served.url}/hook", "topics": ["contact.tag.add"], "style": "maac"})
        assert response.status_code == 201, response.text
        [uid] = seed_contacts(tenant, 1)
        tag = tenant.client.post(tenant.api("tag/"), json={"name": "metrics"}).json()
        assert tenant.client.post(tenant.api("taglinemember/"),
                                  json={"tag_id": tag["id"], "line_uid": uid}).status_code == 201
        wait_for(lambda: receiver.at("/hook"), timeout=20)
        after = wait_for(lambda: (text := scrape(anon)) and value(
            text, "openmaac_webhook_deliveries_total", outcome="succeeded") > value(
            before, "openmaac_webhook_deliveries_total", outcome="succeeded") and text, timeout=10)
        assert value(after, "openmaac_webhook_deliveries_total", outcome="succeeded") - \
            value(before, "openmaac_webhook_deliveries_total", outcome="succeeded") == 1
    finally:
        served.stop()


# -- access -------------------------------------------------------------------------------------

def test_forwarded_requests_are_refused_without_a_token(anon):
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                   {"X-Real-IP": "203.0.113.9"}):
        response = anon.get("/metrics", headers=header)
        assert response.status_code == 403, header
        assert "loopback" in response.json()["detail"]
    assert anon.get("/metrics").status_code == 200


def test_not_in_the_openapi_document(anon):
    assert "/metrics" not in anon.get("/openapi.json").json()["paths"]


def build(**changes: Any) -> Any:
    from openmaac.app import create_app

    settings: Settings = dataclasses.replace(get_settings(), **changes)
    return create_app(settings, embedded_worker=False, simulators=False)


def call(app: Any, client: tuple[str, int], path: str = "/metrics",
         headers: dict[str, str] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://openmaac.test") as http:
            return await http.get(path, headers=headers or {})

    return asyncio.run(run())


def test_remote_client_refused_without_a_token(server):
    app = build()
    assert call(app, REMOTE).status_code == 403
    assert call(app, ("127.0.0.1", 5000)).status_code == 200


def test_token_required_from_everyone_when_configured(server):
    app = build(metrics_token="s3cret-metrics")
    for client in (REMOTE, ("127.0.0.1", 5000)):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-metrics"},
                        {"Authorization": "Basic s3cret-metrics"}):
            response = call(app, client, headers=headers)
            assert response.status_code == 401, (client, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        response = call(app, client, headers={"Authorization": "Bearer s3cret-metrics"})
        assert response.status_code == 200 and "openmaac_http_requests_total" in response.text


def test_metrics_off_means_no_endpoint_and_no_middleware(server):
    from openmaac.telemetry.metrics import MetricsMiddleware

    app = build(metrics_enabled=False)
    assert call(app, ("127.0.0.1", 5000)).status_code == 404
    assert not any(middleware.cls is MetricsMiddleware for middleware in app.user_middleware)
    assert any(middleware.cls is MetricsMiddleware for middleware in build().user_middleware)


# -- several processes: real serve and worker processes sharing PROMETHEUS_MULTIPROC_DIR ---------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMAAC_", "PROMETHEUS_", "prometheus_"))}
    env.update({"OPENMAAC_DATA_DIR": str(data_dir), "OPENMAAC_SIMULATORS": "0", **extra})
    return env


def _wait_http(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.stderr.read() if process.stderr else "did not start") from None
            time.sleep(0.1)


@pytest.fixture
def processes():
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


TOKEN = "metrics-token-for-the-test"
WRITER = """
from openmaac.telemetry.metrics import observe_job
observe_job("metrics.probe", "success", 0.3)
"""


def test_processes_sharing_a_multiprocess_dir_are_summed(tmp_path, processes):
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database
    from openmaac.jobs import queue

    data_dir, metrics_dir = tmp_path / "data", tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = _env(data_dir, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), OPENMAAC_METRICS_TOKEN=TOKEN)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    serve_log = tmp_path / "serve.log"  # a file, not a pipe nobody reads: serve's log cannot fill it and stall
    with serve_log.open("w") as log_file:
        serve = subprocess.Popen([OPENMAAC, "serve", "--port", str(port), "--no-worker"],
                                 env={**env, "OPENMAAC_PUBLIC_BASE_URL": base},
                                 stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    processes.append(serve)
    _wait_http(base + "/healthz", serve)
    authorized = {"Authorization": f"Bearer {TOKEN}"}

    def scrape() -> str:
        answer = httpx.get(base + "/metrics", headers=authorized, timeout=10)
        assert answer.status_code == 200, (answer.text, serve_log.read_text())
        return answer.text

    # the token: refused without or with a wrong one, even from loopback
    assert httpx.get(base + "/metrics", timeout=10).status_code == 401
    assert httpx.get(base + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401

    # two more processes record the same series, then exit: the scrape sums all three
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WRITER], env={**env, "PYTHONPATH": str(ROOT / "src")},
                       check=True, timeout=60)
    # a process starting at this moment: prometheus_client has created its file, not sized it yet
    (metrics_dir / "counter_4242.db").touch()
    text = scrape()
    assert value(text, "openmaac_job_runs_total", kind="metrics.probe", outcome="success") == 2
    assert value(text, "openmaac_job_duration_seconds_sum", kind="metrics.probe") == pytest.approx(0.6)
    assert value(text, "openmaac_http_requests_total", method="GET", route="/healthz", status="200") >= 1

    # a due job nobody runs (no worker yet): the queue shows it and how long it has waited
    database = get_database(f"sqlite:///{data_dir / 'openmaac.sqlite3'}")
    with database.write() as session:
        queue.enqueue(session, "metrics.unknown", run_at=utcnow() - timedelta(minutes=5))
    text = scrape()
    assert value(text, "openmaac_jobs_queued", kind="metrics.unknown", status="ready") == 1
    assert 300 <= value(text, "openmaac_jobs_oldest_ready_age_seconds", kind="metrics.unknown") < 600

    # a worker process in the same directory runs it (no handler: failed); serve's scrape shows
    # the worker's count, and so does the worker's own --metrics-port
    worker_port = _free_port()
    worker = subprocess.Popen([OPENMAAC, "worker", "--metrics-port", str(worker_port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    processes.append(worker)
    _wait_http(f"http://127.0.0.1:{worker_port}/metrics", worker)

    def failed_run() -> str | None:
        text = scrape()
        done = value(text, "openmaac_job_runs_total", kind="metrics.unknown", outcome="failed") == 1
        return text if done else None

    text = wait_for(failed_run, timeout=30)
    assert value(text, "openmaac_jobs_queued", kind="metrics.unknown", status="ready") == 0
    assert value(text, "openmaac_jobs_queued", kind="metrics.unknown", status="failed") == 1
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    assert httpx.get(worker_url, timeout=10).status_code == 401
    own = httpx.get(worker_url, headers=authorized, timeout=10)
    assert own.status_code == 200
    assert value(own.text, "openmaac_job_runs_total", kind="metrics.unknown", outcome="failed") == 1
    assert value(own.text, "openmaac_job_runs_total", kind="metrics.probe", outcome="success") == 2

    # a stopped worker's counts stay (a counter must not go down)
    worker.terminate()
    assert worker.wait(20) == 0, worker.stderr.read() if worker.stderr else None
    text = scrape()
    assert value(text, "openmaac_job_runs_total", kind="metrics.unknown", outcome="failed") == 1


def test_worker_metrics_port_alone_and_metrics_off(tmp_path, processes):
    """A worker that shares no directory serves its own counts; OPENMAAC_METRICS=0: no /metrics."""
    port = _free_port()
    worker = subprocess.Popen([OPENMAAC, "worker", "--metrics-port", str(port)], env=_env(tmp_path / "data"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    processes.append(worker)
    _wait_http(f"http://127.0.0.1:{port}/metrics", worker)
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200  # loopback, no token configured
    assert "openmaac_jobs_queued" in response.text and "process_cpu_seconds_total" in response.text
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"X-Forwarded-For": "203.0.113.9"},
                     timeout=10).status_code == 403

    # a second worker asking for the same port stops at once, before taking any job
    taken = subprocess.run([OPENMAAC, "worker", "--metrics-port", str(port)], env=_env(tmp_path / "data"),
                           capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1 and f"could not serve /metrics on 127.0.0.1:{port}" in taken.stderr
    assert "Traceback" not in taken.stderr and "running" not in taken.stderr

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([OPENMAAC, "serve", "--port", str(port), "--no-worker"],
                             env=_env(tmp_path / "off", OPENMAAC_METRICS="0", OPENMAAC_PUBLIC_BASE_URL=base),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    processes.append(serve)
    _wait_http(base + "/healthz", serve)
    assert httpx.get(base + "/metrics", timeout=10).status_code == 404


# -- the Grafana dashboard ------------------------------------------------------------------------

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum")
# PromQL words that look like metric names in an expression
PROMQL_WORDS = {"sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "max", "min", "avg",
                "topk", "bottomk", "count", "le", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "clamp_min", "clamp_max", "label_replace", "vector", "time", "offset", "bool"}


def _exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [target["expr"] for target in panel.get("targets", []) if "expr" in target]
        found += _exprs(panel.get("panels", []))
    return found


def _metric_names(expr: str) -> list[str]:
    """The metric names an expression reads: what is left of it without label matchers, ranges,
    strings, grouping clauses, functions and keywords."""
    for pattern in (r"\{[^}]*\}", r"\[[^\]]*\]", r'"[^"]*"',
                    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"):
        expr = re.sub(pattern, " ", expr)
    return [name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
            if name not in PROMQL_WORDS and not name.startswith("$")]


def test_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert dashboard["schemaVersion"] >= 38  # Grafana 10
    exprs = _exprs(dashboard["panels"])
    assert len(exprs) >= 10
    variables = [variable["definition"] for variable in dashboard["templating"]["list"]]
    used = set()
    for expr in exprs + [re.sub(r"^label_values\((\w+),.*$", r"\1", v) for v in variables]:
        names = _metric_names(expr)
        assert names, expr
        for name in names:
            base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)
                         and name[: -len(s)] in METRIC_NAMES), name)
            assert base in METRIC_NAMES, (name, expr)
            used.add(base)
    assert used == METRIC_NAMES  # every metric has a panel
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"

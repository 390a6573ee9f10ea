"""Prometheus metrics: their definitions, the one-line hooks the rest of openmaac calls, the
``/metrics`` endpoint and its access rule (docs/metrics.md lists every metric).

- Counters and histograms are recorded where things happen: the HTTP middleware below, the job
  worker (``timed_job``), the upstream clients (``timed_upstream``), the webhook dispatcher
  (``count_webhook_deliveries``).
- Gauges of the database (job queue depth, the age of the oldest ready job, SMS points
  balances) are computed when scraped, by one grouped query each: they are the database's
  state, the same whichever process answers.
- With ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its counters and histograms to
  files in that directory and a scrape of any of them sums them all (prometheus_client's
  multiprocess mode): the ``serve`` and ``worker`` processes of one host share one directory
  and one of them is scraped.
- ``OPENMAAC_METRICS=0`` turns everything off: no middleware, no ``/metrics``, and every hook
  returns at its first line.

This module imports nothing of the domains at import time (the job worker and the channels call
it); the database collector imports the two tables it reads when it runs.
"""

from __future__ import annotations

import atexit
import glob
import hmac
import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaac.config import metrics_enabled
from openmaac.web.simulator_access import direct_loopback_client

if TYPE_CHECKING:
    from fastapi import FastAPI

    from openmaac.config import Settings

log = logging.getLogger("openmaac.metrics")

ENABLED = metrics_enabled()
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")

if MULTIPROCESS_DIR:
    # prometheus_client writes a file per process and metric type here from the first sample;
    # a missing directory would fail every request that records one
    os.makedirs(MULTIPROCESS_DIR, exist_ok=True)

# -- definitions -------------------------------------------------------------------------------

# no "_created" series beside every counter and histogram: a third more to scrape and store,
# and rate() does not need them
disable_created_metrics()

# Request latencies of an API answering in milliseconds, up to the slow uploads
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Jobs last from a millisecond (a status update) to minutes (a 1,000,000-row import)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Upstream calls: a loopback simulator answers in a millisecond; clients time out at 10-15 s
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)

HTTP_REQUESTS = Counter("openmaac_http_requests", "HTTP requests answered, by method, route template and status.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("openmaac_http_request_duration_seconds",
                          "Time from a request's arrival to the end of its answer, by method and route template.",
                          ["method", "route"], buckets=HTTP_BUCKETS)
JOB_RUNS = Counter("openmaac_job_runs", "Job runs by kind and outcome (success, deferred, retry, failed, "
                   "given_up, abandoned, error).", ["kind", "outcome"])
JOB_DURATION = Histogram("openmaac_job_duration_seconds", "Time a job run took (handler and its bookkeeping), by kind.",
                         ["kind"], buckets=JOB_BUCKETS)
UPSTREAM_REQUESTS = Counter("openmaac_upstream_requests", "HTTP requests to upstream providers (every attempt), by "
                            "provider, endpoint template and status code ('error': no answer).",
                            ["provider", "endpoint", "status"])
UPSTREAM_DURATION = Histogram("openmaac_upstream_request_duration_seconds",
                              "Time an upstream request took, by provider and endpoint template.",
                              ["provider", "endpoint"], buckets=UPSTREAM_BUCKETS)
WEBHOOK_DELIVERIES = Counter("openmaac_webhook_deliveries", "Webhook delivery attempts by outcome (succeeded, "
                             "retry: failed and rescheduled, failed: failed for good).", ["outcome"])

# scrape-time gauges of the database (see DatabaseCollector)
JOBS_QUEUED = "openmaac_jobs_queued"
JOBS_OLDEST_READY_AGE = "openmaac_jobs_oldest_ready_age_seconds"
SMS_POINTS_BALANCE = "openmaac_sms_points_balance"
JOB_STATES = ("ready", "scheduled", "running", "failed")

METRIC_NAMES = frozenset({
    "openmaac_http_requests_total", "openmaac_http_request_duration_seconds",
    "openmaac_job_runs_total", "openmaac_job_duration_seconds",
    "openmaac_upstream_requests_total", "openmaac_upstream_request_duration_seconds",
    "openmaac_webhook_deliveries_total",
    JOBS_QUEUED, JOBS_OLDEST_READY_AGE, SMS_POINTS_BALANCE,
})

# -- hooks -------------------------------------------------------------------------------------


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...


AnswerT = TypeVar("AnswerT", bound=_Answer)


def observe_upstream(provider: str, endpoint: str, status: int | str, seconds: float) -> None:
    """One HTTP request to an upstream: ``endpoint`` a template (``/v2/bot/profile/{userId}``),
    never a path with ids in it; ``status`` the HTTP status, or ``"error"`` when none came."""
    if not ENABLED:
        return
    UPSTREAM_REQUESTS.labels(provider, endpoint, str(status)).inc()
    UPSTREAM_DURATION.labels(provider, endpoint).observe(seconds)


def timed_upstream(provider: str, endpoint: str, request: Callable[[], AnswerT]) -> AnswerT:
    """Make ``request()`` (an httpx call) and record it; a raised transport error counts as
    ``"error"`` and propagates unchanged."""
    if not ENABLED:
        return request()
    started = perf_counter()
    try:
        answer = request()
    except Exception:
        observe_upstream(provider, endpoint, "error", perf_counter() - started)
        raise
    observe_upstream(provider, endpoint, answer.status_code, perf_counter() - started)
    return answer


def observe_job(kind: str, outcome: str, seconds: float) -> None:
    if not ENABLED:
        return
    JOB_RUNS.labels(kind, outcome).inc()
    JOB_DURATION.labels(kind).observe(seconds)


def timed_job(kind: str, run: Callable[..., str], *args: Any) -> None:
    """Run a job through ``run(*args)``, which answers the run's outcome, and record it; an
    exception (the outcome could not be recorded) counts as ``"error"`` and propagates."""
    if not ENABLED:
        run(*args)
        return
    started = perf_counter()
    try:
        outcome = run(*args)
    except Exception:
        observe_job(kind, "error", perf_counter() - started)
        raise
    observe_job(kind, outcome, perf_counter() - started)


# a delivery's status after an attempt -> the outcome counted
_WEBHOOK_OUTCOMES = {"succeeded": "succeeded", "pending": "retry", "waiting": "retry", "failed": "failed"}


def count_webhook_deliveries(statuses: Iterable[str]) -> None:
    """Count delivery attempts by the status each left its delivery in."""
    if not ENABLED:
        return
    for outcome, count in Tally(_WEBHOOK_OUTCOMES.get(status, status) for status in statuses).items():
        WEBHOOK_DELIVERIES.labels(outcome).inc(count)


# -- HTTP --------------------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def route_label(scope: Scope, outer_root_path: str) -> str:
    """The route template that answered (``/openapi/v1/member/{id}/``), never the raw path: a
    mounted app (the simulators) by its mount path only; ``unmatched`` when no route matched."""
    root_path = scope.get("root_path", "")
    if root_path != outer_root_path and root_path.startswith(outer_root_path):
        return str(root_path[len(outer_root_path):])
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by its route template, read from the
    scope after routing (the router writes the matched route into it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        outer_root_path = scope.get("root_path", "")
        status = 500  # raised before an answer began: the server error handler answers 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "other"
            route = route_label(scope, outer_root_path)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(perf_counter() - started)


# -- scrape ------------------------------------------------------------------------------------


class DatabaseCollector(Collector):
    """The gauges of the database, read when scraped: job queue depth by kind and state, the age
    of each kind's oldest ready job, each organisation's SMS points balance."""

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._points()

    def _queue(self) -> Iterator[Metric]:
        from sqlalchemy import and_, bindparam, case, func, literal, select

        from openmaac.db.base import UTCDateTime, utcnow
        from openmaac.db.engine import get_database
        from openmaac.jobs.models import Job
        from openmaac.jobs.registry import registered_kinds

        now = utcnow()
        # "scheduled": ready but due later (a timer, a retry's backoff), not a backlog
        state = case((and_(Job.status == "ready", Job.run_at > bindparam("now", type_=UTCDateTime())),
                      literal("scheduled")), else_=Job.status).label("state")
        jobs = select(Job.kind, state, Job.run_at).subquery()
        query = (select(jobs.c.kind, jobs.c.state, func.count(), func.min(jobs.c.run_at))
                 .group_by(jobs.c.kind, jobs.c.state))
        try:
            with get_database().read() as session:
                rows = session.execute(query, {"now": now}).all()
        except Exception:  # a scrape must answer even when the database does not
            log.warning("metrics: could not read the job queue", exc_info=True)
            return
        depth = {(kind, status): 0 for kind in registered_kinds() for status in JOB_STATES}
        oldest = dict.fromkeys(registered_kinds(), 0.0)
        for kind, status, count, first_run_at in rows:
            depth[(kind, status)] = int(count)
            oldest.setdefault(kind, 0.0)
            if status == "ready" and first_run_at is not None:
                oldest[kind] = max(0.0, (now - first_run_at).total_seconds())
        queued = GaugeMetricFamily(JOBS_QUEUED, "Jobs in the queue by kind and state: ready (due now), scheduled "
                                   "(due later), running, failed (given up, kept with their error).",
                                   labels=["kind", "status"])
        for (kind, status), count in sorted(depth.items()):
            queued.add_metric([kind, status], count)
        age = GaugeMetricFamily(JOBS_OLDEST_READY_AGE, "How long the oldest due job of each kind has waited "
                                "for a worker (0: none waits).", labels=["kind"])
        for kind, seconds in sorted(oldest.items()):
            age.add_metric([kind], seconds)
        yield queued
        yield age

    def _points(self) -> Iterator[Metric]:
        from sqlalchemy import select

        from openmaac.auth.models import Organization
        from openmaac.db.engine import get_database
        from openmaac.sms_plus.models import SmsPointBalance

        query = (select(SmsPointBalance.organization_id, Organization.name, SmsPointBalance.balance)
                 .join(Organization, Organization.id == SmsPointBalance.organization_id))
        try:
            with get_database().read() as session:
                rows = session.execute(query).all()
        except Exception:
            log.warning("metrics: could not read the SMS points balances", exc_info=True)
            return
        balance = GaugeMetricFamily(SMS_POINTS_BALANCE, "SMS points an organisation has left (organisations "
                                    "that never had points have no series).", labels=["organization_id", "organization"])
        for organization_id, name, points in rows:
            balance.add_metric([str(organization_id), name], int(points))
        yield balance


class _ThisProcess(Collector):
    """The default registry's metrics: ours plus the process and Python collectors."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition() -> bytes:
    """The Prometheus text format of every metric: summed over the processes sharing
    ``PROMETHEUS_MULTIPROC_DIR`` when it is set, else this process's own."""
    registry = CollectorRegistry()
    if MULTIPROCESS_DIR:
        _SettledFilesCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return generate_latest(registry)


class _SettledFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's sum over the processes' files, without the files a process is
    creating at this moment: it creates one empty and sizes it next, and a scrape reading it in
    between failed on its missing header (struct.error: a 500 for the whole scrape). Such a file
    holds no sample yet; a file's size never shrinks back below its header."""

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _has_header(path)]
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return]


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= MMAP_HEADER_BYTES
    except FileNotFoundError:  # removed since the listing (a dead process's live gauges)
        return False


MMAP_HEADER_BYTES = 8  # prometheus_client's mmap files start with the bytes used, padded to 8


if MULTIPROCESS_DIR:
    def _mark_dead() -> None:
        multiprocess.mark_process_dead(os.getpid(), MULTIPROCESS_DIR)

    atexit.register(_mark_dead)


# -- /metrics ----------------------------------------------------------------------------------

# The classic text format: what every Prometheus version reads; openmaac's names need nothing newer
EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TOKEN_REFUSAL = "Authentication credentials were not provided or are invalid."
LOCAL_REFUSAL = ("/metrics answers only to loopback clients that come straight in, unless "
                 "OPENMAAC_METRICS_TOKEN is set (then to its bearer token).")


def refusal(scope: Scope, token: str | None) -> Response | None:
    """Why /metrics is refused to this request, or None: with a token configured, a request
    without ``Authorization: Bearer <token>`` gets 401; without one, a client that is not a
    loopback client coming straight in (no forwarding header) gets 403."""
    if token:
        offered = b""
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                offered = value
        if hmac.compare_digest(offered, b"Bearer " + token.encode()):
            return None
        return JSONResponse({"detail": TOKEN_REFUSAL}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if direct_loopback_client(scope):
        return None
    return JSONResponse({"detail": LOCAL_REFUSAL}, status_code=403)


def metrics_endpoint(token: str | None) -> Callable[[Request], Response]:
    def metrics(request: Request) -> Response:  # sync: the database gauges run in the thread pool
        refused = refusal(request.scope, token)
        if refused is not None:
            return refused
        return Response(exposition(), media_type=EXPOSITION_TYPE)

    return metrics


def install(app: FastAPI, settings: Settings) -> None:
    """The middleware (outermost, so it times everything) and ``GET /metrics``, unless
    ``OPENMAAC_METRICS=0``. Call after the application's other middleware is added."""
    if not settings.metrics_enabled:
        return
    app.add_middleware(MetricsMiddleware)
    app.add_api_route("/metrics", metrics_endpoint(settings.metrics_token), methods=["GET"],
                      include_in_schema=False)


class MetricsServer:
    """``/metrics`` on its own port, for an ``openmaac worker`` that shares no multiprocess
    directory with a ``serve`` process: uvicorn in a daemon thread, the same access rule."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.host, self.port = host, port
        app = Starlette(routes=[Route("/metrics", metrics_endpoint(token), methods=["GET"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="openmaac-metrics", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"could not serve /metrics on {self.host}:{self.port} (is the port free?)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def start_server(settings: Settings, host: str, port: int) -> MetricsServer | None:
    """``openmaac worker --metrics-port``: the server, started, or None when the port is 0 or
    metrics are off."""
    if not port or not settings.metrics_enabled:
        return None
    if MULTIPROCESS_DIR:
        log.warning("--metrics-port with PROMETHEUS_MULTIPROC_DIR: this port shows every process sharing %s; "
                    "scrape one endpoint per directory, or each counter is counted twice", MULTIPROCESS_DIR)
    server = MetricsServer(host, port, settings.metrics_token)
    server.start()
    return server

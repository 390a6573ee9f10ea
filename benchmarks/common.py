"""Shared pieces of the benchmarks: results, a throwaway openmaac server, memory sampling."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

# Every directory a run writes (servers' data, SQLite databases of a million contacts: gigabytes)
# is a scratch directory: /tmp/openmaac-bench-<kind>-XXXX, with the pid of the run that owns it.
SCRATCH_PREFIX = "openmaac-bench-"
_OWNER_FILE = "owner.pid"
_scratch: list[Path] = []


@contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """``scratch_dir`` for a block: removed at its end (and, if that never comes, as above)."""
    path = scratch_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if path in _scratch:
            _scratch.remove(path)


def scratch_dir(kind: str) -> Path:
    """A new directory for this run to write in, removed when the run ends: normally, by an
    exception or by SIGTERM (``clean_up_on_exit``). A run killed outright leaves it behind with
    its owner's pid, and the next run removes it (``remove_abandoned_scratch``)."""
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-"))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    _scratch.append(path)
    return path


def _remove_own_scratch() -> None:
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch directories of runs that are gone (killed: no clean-up ran); those of
    runs still alive, and directories without an owner file, stay. The ones removed."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not _alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def clean_up_on_exit() -> None:
    """This run's scratch directories go at its exit, and SIGTERM (``timeout``, ``kill``) exits
    through Python's clean-up: servers stopped, PostgreSQL databases dropped, directories
    removed. Python's default on SIGTERM is to die on the spot, leaving all of them behind."""
    import atexit

    atexit.register(_remove_own_scratch)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@dataclass
class Result:
    """One measured line: a name, its figure and unit, and notes (goal, ratio, baseline)."""

    name: str
    value: float
    unit: str
    note: str = ""

    def render(self) -> str:
        figure = f"{self.value:,.1f}" if self.value < 1000 else f"{self.value:,.0f}"
        if self.unit == "×":  # ratios: two decimals
            figure = f"{self.value:,.2f}"
        return f"| {self.name} | {figure} {self.unit} | {self.note} |"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_url() -> str | None:
    """The PostgreSQL server to benchmark against (``OPENMAAC_BENCH_DATABASE_URL``), if any."""
    return os.environ.get("OPENMAAC_BENCH_DATABASE_URL") or os.environ.get("OPENMAAC_TEST_DATABASE_URL")


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"openmaac_bench_{secrets.token_hex(4)}"
    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServerProcess:
    """``openmaac serve`` in a child process on a free loopback port, with its own data dir."""

    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(default_factory=lambda: scratch_dir("server"))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OPENMAAC_DATABASE_URL", None)
        env.update(
            OPENMAAC_DATA_DIR=str(self.data_dir / "data"),
            OPENMAAC_PUBLIC_BASE_URL=self.base_url,
            OPENMAAC_OUTBOUND_ALLOW_HOSTS="127.0.0.1,localhost",
        )
        if self.database_url:
            env["OPENMAAC_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def cli(self, *args: str) -> str:
        """Run an ``openmaac`` CLI command against this server's database; its stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "openmaac.cli", *args], env=self.env(), check=True,
            capture_output=True, text=True,
        )
        return out.stdout.strip()

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openmaac.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(), stdout=subprocess.DEVNULL, stderr=_server_log(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    self._start_profiler()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("openmaac did not start")

    def _start_profiler(self) -> None:
        """BENCH_PYSPY=<dir>: py-spy samples this server (subprocesses included) into
        ``<dir>/serve-<pid>.txt``, collapsed stacks of the thread holding the GIL (CPU, not waits) (``benchmarks.profile_summary`` reads them)."""
        if self.process is not None:
            self._profiler = start_profiler(self.process.pid, "serve")

    def stop(self) -> None:
        stop_profiler(getattr(self, "_profiler", None))
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # A million-contact run leaves gigabytes behind; nothing reads the directory afterwards.
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_profiler(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """BENCH_PYSPY=<dir>: py-spy samples process ``pid`` (subprocesses included) into
    ``<dir>/<name>-<pid>.txt``, collapsed stacks of the thread holding the GIL (CPU, not
    waits); ``stop_profiler`` makes it write the file. None when BENCH_PYSPY is unset."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
         "--gil", "--nonblocking", "--subprocesses", "-o", str(Path(out) / f"{name}-{pid}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None and profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()


class PeakMemory:
    """Samples a process's resident memory (RSS) in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    rss += child.memory_info().rss
            except Exception:
                return
            self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class ChildApp:
    """Any command serving HTTP on ``{port}`` in a child process (e.g. a reference app)."""

    command: list[str]
    health_path: str = "/healthz"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChildApp:
        args = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, **self.env} if self.env else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + self.health_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"{args} did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class LoadStats:
    """What ``run_load`` measured: requests, rows, per-request latencies, statuses."""

    requests: int = 0
    rows: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0  # CPU the server process used meanwhile (set by the caller)
    # ... of which its main thread (the event loop: HTTP, routing, middleware, async code) and
    # the kernel's share of the whole (system time: sockets, futexes, file writes)
    server_loop_cpu_seconds: float = 0.0
    server_system_cpu_seconds: float = 0.0

    def add(self, other: LoadStats) -> None:
        self.server_cpu_seconds += other.server_cpu_seconds
        self.server_loop_cpu_seconds += other.server_loop_cpu_seconds
        self.server_system_cpu_seconds += other.server_system_cpu_seconds
        self.requests += other.requests
        self.rows += other.rows
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        """Server CPU per request: unlike throughput, barely moved by other load on the machine."""
        return self.server_cpu_seconds * 1000 / self.requests if self.requests else 0.0

    def server_split_ms_per_request(self) -> tuple[float, float, float]:
        """Server CPU per request on the event loop, in the other threads, and in the kernel (of both)."""
        per = 1000 / self.requests if self.requests else 0.0
        return (self.server_loop_cpu_seconds * per, (self.server_cpu_seconds - self.server_loop_cpu_seconds) * per,
                self.server_system_cpu_seconds * per)

    def p(self, q: float) -> float:
        """Latency quantile in milliseconds."""
        return percentile(self.latencies, q) * 1000


async def run_load(one: Any, *, concurrency: int, duration: float) -> LoadStats:
    """``concurrency`` asyncio workers call ``await one(worker_index) -> (status, rows)`` back to
    back for ``duration`` seconds; every call's latency is recorded (the client's view)."""
    import asyncio

    stats = LoadStats()
    deadline = time.perf_counter() + duration

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            status, rows = await one(index)
            stats.latencies.append(time.perf_counter() - began)
            stats.requests += 1
            stats.rows += rows
            stats.statuses[status] = stats.statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    stats.seconds = time.perf_counter() - started
    return stats


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process (all its threads) and its children."""
    import psutil

    process = psutil.Process(pid)
    times = process.cpu_times()
    # children_*: the children that have exited and been waited for (an upload's reader process)
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        total += sum(child.cpu_times()[:2])
    return total


def process_cpu_split(pid: int) -> tuple[float, float]:
    """CPU so far of process ``pid``'s main thread (an ASGI server's event loop), and the
    system (kernel) time of the whole process, from /proc: exact where a sampling profiler
    guesses (py-spy's GIL samples also land on threads waking from a lock or a socket)."""
    import psutil

    process = psutil.Process(pid)
    main = next((sum(thread[1:3]) for thread in process.threads() if thread.id == pid), 0.0)
    return main, process.cpu_times().system


def postgres_cpu_by_pid() -> dict[int, float]:
    """User + system CPU so far of every PostgreSQL server process on this machine (its
    backends, WAL writer, checkpointer…), by pid: the database's own work, which no openmaac
    process's figure includes. A backend that exits between two readings takes its CPU with it
    (openmaac keeps its connections pooled, so few do)."""
    import psutil

    found: dict[int, float] = {}
    for process in psutil.process_iter(["name"]):
        if process.info.get("name") in ("postgres", "postmaster"):
            try:
                found[process.pid] = sum(process.cpu_times()[:2])
            except psutil.Error:
                pass
    return found


def postgres_cpu_since(before: dict[int, float]) -> float:
    """PostgreSQL's CPU since ``before`` (``postgres_cpu_by_pid()``), new backends counted whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in postgres_cpu_by_pid().items())


def split_result(label: str, ours: LoadStats, bare: LoadStats) -> Result:
    """Where the server's CPU per request goes, beside the bare app's in the same run: its event
    loop (HTTP, routing, middleware, dependencies, validation), its other threads (the request's
    synchronous work: database, upstream call), and the kernel's share of both."""
    loop, threads, system = ours.server_split_ms_per_request()
    bare_loop, bare_threads, bare_system = bare.server_split_ms_per_request()
    return Result(f"{label}, server CPU per request on the event loop / in threads", loop, "ms",
                  f"{loop:.2f} / {threads:.2f} ms (bare {bare_loop:.2f} / {bare_threads:.2f} ms); of both, in the "
                  f"kernel {system:.2f} ms (bare {bare_system:.2f} ms); measured per thread from /proc")


def own_cpu_seconds() -> float:
    """This process's CPU (the load generator's), without its children (the servers, the simulators)."""
    return sum(os.times()[:2])


@dataclass
class PushTarget:
    """One app a push load runs against, what it measured and the LINE simulator's CPU meanwhile."""

    base_url: str
    pid: int
    stats: LoadStats = field(default_factory=LoadStats)
    sim_cpu_seconds: float = 0.0
    load_cpu_seconds: float = 0.0  # this process: the load generator
    postgres: bool = False  # PostgreSQL's own CPU counted too (its server processes on this machine)
    database_cpu_seconds: float = 0.0

    def cpu_ms_per_request(self) -> float:
        """App + simulator + load generator (+ PostgreSQL) CPU per request: what one request
        costs the machine."""
        total = self.stats.server_cpu_seconds + self.sim_cpu_seconds + self.load_cpu_seconds + self.database_cpu_seconds
        return total * 1000 / max(self.stats.requests, 1)

    async def measured_round(self, scenario: Any, concurrency: int, duration: float, sim_pid: int) -> None:
        """One round of ``scenario`` against this app, its CPU, the simulator's and the load
        generator's added to what it measured."""
        cpu, sim_cpu, load_cpu = process_cpu_seconds(self.pid), process_cpu_seconds(sim_pid), own_cpu_seconds()
        loop_cpu, system_cpu = process_cpu_split(self.pid)
        database_before = postgres_cpu_by_pid() if self.postgres else {}
        stats = await run_load(scenario, concurrency=concurrency, duration=duration)
        if self.postgres:
            self.database_cpu_seconds += postgres_cpu_since(database_before)
        stats.server_cpu_seconds = process_cpu_seconds(self.pid) - cpu
        loop_after, system_after = process_cpu_split(self.pid)
        stats.server_loop_cpu_seconds, stats.server_system_cpu_seconds = loop_after - loop_cpu, system_after - system_cpu
        self.sim_cpu_seconds += process_cpu_seconds(sim_pid) - sim_cpu
        self.load_cpu_seconds += own_cpu_seconds() - load_cpu
        self.stats.add(stats)


def _server_log() -> Any:
    """Where a benchmark server's stderr goes: BENCH_SERVER_LOG names a file to append to."""
    path = os.environ.get("BENCH_SERVER_LOG")
    return open(path, "ab") if path else subprocess.DEVNULL  # noqa: SIM115 - the child holds it


def sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def database_url(server: ServerProcess) -> str:
    """The SQLAlchemy URL of the database ``server`` uses (its SQLite file or PostgreSQL)."""
    return sqlalchemy_url(server.database_url or f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}")


def backends() -> Iterator[tuple[str, str | None]]:
    """("SQLite", None), then ("PostgreSQL", a fresh database, dropped afterwards) when one is
    configured; BENCH_BACKENDS=sqlite or =postgresql runs one of them."""
    only = os.environ.get("BENCH_BACKENDS", "").lower()
    if only != "postgresql":
        yield "SQLite", None
    if only == "sqlite":
        return
    admin = postgres_url()
    if admin:
        with fresh_postgres_database(admin) as url:
            yield "PostgreSQL", url


def durable_floor_ratios(label: str, request: str, ours: LoadStats, up: LoadStats, floor: LoadStats,
                         ours_machine_ms: float, floor_machine_ms: float) -> Iterator[Result]:
    """The durable floor ÷ the ceiling (bare + the same upstream work), and openmaac's
    ``request`` (e.g. "push") ÷ the durable floor: throughput and CPU per request, one run."""
    up_rps, floor_rps, ok_rps = (stats.rows / stats.seconds if stats.seconds else 0.0 for stats in (up, floor, ours))
    yield Result(f"{label}: the durable floor ÷ bare FastAPI + the same LINE call, requests/s",
                 floor_rps / max(up_rps, 1e-9), "×",
                 f"{floor_rps:,.0f} vs {up_rps:,.0f} req/s: the share of the ceiling reachable on this machine at "
                 f"best when every {request} is durable before its answer; CPU per request {floor.server_cpu_ms_per_request:.2f} vs "
                 f"{up.server_cpu_ms_per_request:.2f} ms "
                 f"({floor.server_cpu_ms_per_request / max(up.server_cpu_ms_per_request, 1e-9):.2f}×)")
    yield Result(f"{label}: {request} ÷ the durable floor, requests/s", ok_rps / max(floor_rps, 1e-9), "×",
                 f"{ok_rps:,.0f} vs {floor_rps:,.0f} req/s; server CPU per request "
                 f"{ours.server_cpu_ms_per_request:.2f} vs {floor.server_cpu_ms_per_request:.2f} ms "
                 f"({ours.server_cpu_ms_per_request / max(floor.server_cpu_ms_per_request, 1e-9):.2f}×); machine CPU "
                 f"per request {ours_machine_ms:.2f} vs {floor_machine_ms:.2f} ms (PostgreSQL's processes included "
                 f"on PostgreSQL)")


@contextmanager
def durable_floor_database(url: str | None) -> Iterator[str]:
    """A database of its own for the durable floor, on the same backend as openmaac's."""
    if url is None:
        with scratch("durable") as tmp:
            yield f"sqlite:///{tmp}/bare.sqlite3"
        return
    admin = postgres_url()
    assert admin is not None
    with fresh_postgres_database(admin) as durable_url:
        yield durable_url


@contextmanager
def workers(server: ServerProcess, count: int) -> Iterator[list[int]]:
    """``count`` ``openmaac worker`` processes beside ``serve`` (its embedded worker off):
    the sending runs on other cores than the acceptance (one Python process uses one)."""
    env = {**server.env(), "OPENMAAC_PUBLIC_BASE_URL": server.base_url}
    processes = [subprocess.Popen([sys.executable, "-m", "openmaac.cli", "worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        if count:
            _wait_for_workers(server, count)  # their start-up (imports, migrations) is not the measured CPU
        yield [p.pid for p in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def _wait_for_workers(server: ServerProcess, count: int) -> None:
    """Until ``count`` workers beat (their heartbeat rows: they are claiming jobs)."""
    from openmaac.db.engine import get_database
    from openmaac.jobs.heartbeat import fresh_workers

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with get_database(database_url(server)).read() as session:
            if fresh_workers(session) >= count:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{count} openmaac worker process(es) did not start")

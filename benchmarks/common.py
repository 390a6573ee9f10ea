"""Shared pieces of the benchmarks: results, a throwaway openmaac server, memory sampling."""

from __future__ import annotations

import os
import secrets
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

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """One measured line: a name, its figure and unit, and notes (goal, ratio, baseline)."""

    name: str
    value: float
    unit: str
    note: str = ""

    def render(self) -> str:
        figure = f"{self.value:,.1f}" if self.value < 1000 else f"{self.value:,.0f}"
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
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="openmaac-bench-")))
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
            OPENMAAC_WEBHOOK_ALLOW_HOSTS="127.0.0.1,localhost",
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
            env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("openmaac did not start")

    def stop(self) -> None:
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

"""``openmaac serve`` and ``openmaac worker`` as real processes on a database of their own (a
SQLite file in a temporary directory, or a temporary PostgreSQL database when
``OPENMAAC_TEST_DATABASE_URL`` is set), with the test job kinds of ``tests/jobs/gated_job.py``
registered in them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from helpers import own_postgres_database, wait_for

TESTS = Path(__file__).resolve().parent
# The real command line (openmaac.cli's app), with the test job kinds imported first.
LAUNCH = ("import sys; sys.path.insert(0, {jobs!r}); import gated_job; "
          "from openmaac.cli import app; app(sys.argv[1:], prog_name='openmaac')").format(jobs=str(TESTS / "jobs"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def own_database(data_dir: Path) -> Iterator[Any]:
    """Yields a ``Space``: the data directory and database URL a process of the test uses."""
    with own_postgres_database("proc") as url:
        if url is None:
            space = Space(data_dir, f"sqlite:///{data_dir / 'openmaac.sqlite3'}", None)
        else:
            space = Space(data_dir, url.replace("postgresql://", "postgresql+psycopg://", 1), url.rsplit("/", 1)[1])
        try:
            yield space
        finally:
            space.close()


class Space:
    def __init__(self, data_dir: Path, url: str, postgres_name: str | None) -> None:
        self.data_dir = data_dir
        self.url = url
        self.postgres_name = postgres_name
        self._database: Any = None

    @property
    def database(self) -> Any:
        """An openmaac ``Database`` on the same data, in this (the test's) process."""
        if self._database is None:
            from openmaac.db.engine import Database

            self._database = Database(self.url)
        return self._database

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()
            self._database = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
        env["OPENMAAC_DATA_DIR"] = str(self.data_dir)
        env["OPENMAAC_SIMULATORS"] = "0"
        if self.postgres_name:
            env["OPENMAAC_DATABASE_URL"] = self.url
        env.update(extra)
        return env


class Process:
    """One ``openmaac`` command running in the background (``env`` may override its
    ``OPENMAAC_PUBLIC_BASE_URL``: a worker's is the server's)."""

    def __init__(self, space: Space, *args: str, **env: str) -> None:
        self.space = space
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [*args, "--port", str(self.port)] if args[0] == "serve" else list(args)
        self.log = space.data_dir / f"{args[0]}-{self.port}.log"
        space.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-c", LAUNCH, *command],
                                            env=space.env(**{"OPENMAAC_PUBLIC_BASE_URL": self.base_url, **env}),
                                            stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_until_serving(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}: {self.output()}")
            try:
                return httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, interval=0.1)

    def readyz(self) -> httpx.Response:
        return httpx.get(self.base_url + "/readyz", timeout=10)

    def terminate(self) -> int:
        """SIGTERM, and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def running(space: Space, *args: str, **env: str) -> Iterator[Process]:
    process = Process(space, *args, **env)
    try:
        yield process
    finally:
        process.kill()

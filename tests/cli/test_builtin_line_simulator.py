"""The built-in LINE simulator as a newcomer meets it: ``openmaac serve`` on any port, organisations
created by ``openmaac token create`` before or while it runs, ``openmaac simulate`` alone.

Each test runs real processes on a database of its own (a SQLite file in its data directory, or
a fresh PostgreSQL database with ``OPENMAAC_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from helpers import own_postgres_database, wait_for

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))
HTTP = httpx.Client(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Install:
    """A data directory and its database, with the CLI run on them."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.processes: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
        env["OPENMAAC_DATA_DIR"] = str(self.data_dir)
        if self.database_url:
            env["OPENMAAC_DATABASE_URL"] = self.database_url
        env.update(extra)
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([OPENMAAC, *args], env=self.env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([OPENMAAC, *args], env=self.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def serve(self, port: int) -> str:
        """``openmaac serve --port`` (no public base URL configured: the default the CLI derives)."""
        self.start("serve", "--port", str(port))
        return f"http://127.0.0.1:{port}"

    def channel(self, org: str) -> dict[str, object]:
        url = self.database_url or f"sqlite:///{self.data_dir / 'openmaac.sqlite3'}"
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text(
                    "SELECT c.channel_id, c.api_base_url FROM line_channels c JOIN organizations o "
                    "ON o.id = c.organization_id WHERE o.name = :name"), {"name": org}).one()
        finally:
            engine.dispose()
        return {"channel_id": row[0], "api_base_url": row[1]}

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    with own_postgres_database("cli") as url:
        made = Install(tmp_path / "data", url)
        try:
            yield made
        finally:
            made.stop()


def _first_answer(url: str, timeout: float = 60.0) -> httpx.Response:
    """The first answer of a server that is starting: retried only while nothing listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return HTTP.get(url)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _follow_and_become_a_contact(base: str, channel_id: str, token: str) -> None:
    """A simulated user follows the channel; the signed webhook makes them the organisation's
    contact, and the profile job fetches their name back from the simulator."""
    sim = f"{base}/_simulators/line"
    user = HTTP.post(f"{sim}/_admin/users", json={"display_name": "林小美"}).json()["user_id"]
    followed = HTTP.post(f"{sim}/_admin/users/{user}/follow", json={"channel_id": channel_id})
    assert followed.status_code == 200, followed.text
    assert followed.json()["webhook"] == {"delivered": True, "status": 200, "error": None}
    headers = {"Authorization": f"Bearer {token}"}

    def named() -> bool:
        results = HTTP.get(f"{base}/openapi/v1/member/", params={"line_uid": user}, headers=headers).json()["results"]
        return bool(results) and results[0].get("line_display_name") == "林小美"

    wait_for(named, timeout=30)


def test_serve_knows_the_default_channel_from_its_first_answer(install: Install) -> None:
    base = install.serve(_free_port())
    first = _first_answer(f"{base}/_simulators/line/_admin/channels")
    assert first.status_code == 200
    default = install.channel("default")
    assert [c["channel_id"] for c in first.json()] == [default["channel_id"]]
    assert default["api_base_url"] is None  # the built-in simulator, by name
    assert first.json()[0]["webhook_url"] == f"{base}/line/webhook/{default['channel_id']}"


def test_an_organisation_created_while_serving_gets_the_simulator(install: Install) -> None:
    base = install.serve(_free_port())
    _first_answer(f"{base}/healthz")
    token = install.run("token", "create", "--org", "x").stdout.strip()
    channel_id = str(install.channel("x")["channel_id"])
    listed = HTTP.get(f"{base}/_simulators/line/_admin/channels").json()
    assert channel_id in [c["channel_id"] for c in listed]
    _follow_and_become_a_contact(base, channel_id, token)


def test_an_organisation_created_before_serve_on_another_port(install: Install) -> None:
    token = install.run("token", "create", "--org", "y").stdout.strip()
    port = _free_port()
    assert port != 8000
    base = install.serve(port)
    _first_answer(f"{base}/healthz")
    _follow_and_become_a_contact(base, str(install.channel("y")["channel_id"]), token)


def test_simulate_prints_its_address_and_admin_docs(install: Install) -> None:
    port = _free_port()
    process = install.start("simulate", "--port", str(port))
    assert process.stderr is not None
    printed = process.stderr.readline() + process.stderr.readline()
    assert f"http://127.0.0.1:{port}" in printed
    assert f"http://127.0.0.1:{port}/_admin/docs" in printed
    assert _first_answer(f"http://127.0.0.1:{port}/_admin/docs").status_code == 200
    # the LINE simulator alone: LINE's bot API and its admin API, nothing of openmaac's
    assert HTTP.get(f"http://127.0.0.1:{port}/v2/bot/info").json() == {"message": AUTH_REQUIRED}
    assert HTTP.get(f"http://127.0.0.1:{port}/healthz").status_code == 404


AUTH_REQUIRED = "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"

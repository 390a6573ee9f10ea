"""The openmaac command line, run as real processes on their own data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import free_port, serve_at_a_terminal

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
    env["OPENMAAC_DATA_DIR"] = str(data_dir)
    if os.environ.get("OPENMAAC_DATABASE_URL", "").startswith("postgresql"):
        # Keep CLI tests on their own SQLite file; the PostgreSQL path is covered by the suite.
        pass
    env.update(extra)
    return env


def _run(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENMAAC, *args], env=_env(data_dir), capture_output=True, text=True,
                          timeout=60, check=check)


def test_token_create_before_first_serve_prints_only_the_token(tmp_path):
    result = _run("token", "create", "--org", "acme", data_dir=tmp_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("om_") and len(lines[0]) > 40
    second = _run("token", "create", "--org", "acme", data_dir=tmp_path).stdout.strip()
    assert second != lines[0]
    listing = _run("org", "list", data_dir=tmp_path).stdout
    assert "acme" in listing
    assert "2" in listing.split("acme", 1)[1].splitlines()[0]  # two active tokens


def test_migrate_is_idempotent(tmp_path):
    _run("migrate", data_dir=tmp_path)
    _run("migrate", data_dir=tmp_path)
    assert (tmp_path / "openmaac.sqlite3").exists()


def test_revoke_unknown_token_fails(tmp_path):
    result = _run("token", "revoke", "om_doesnotexist", data_dir=tmp_path, check=False)
    assert result.returncode == 1


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = _env(tmp_path, OPENMAAC_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    process = subprocess.Popen(
        [OPENMAAC, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/healthz", timeout=1)
            break
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.stderr.read() if process.stderr else "serve failed") from None
            time.sleep(0.1)
    yield process, base, tmp_path
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_serve_bootstraps_default_org_and_token(served):
    process, base, data_dir = served
    token = (data_dir / "default-token.txt").read_text().strip()
    response = httpx.get(base + "/openapi/v1/member/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"results": [], "next": None}
    # The same token is shown again by the next start; a token made by the CLI works too.
    cli_token = _run("token", "create", data_dir=data_dir).stdout.strip()
    assert httpx.get(base + "/openapi/v1/tag/", headers={"Authorization": f"Bearer {cli_token}"}).status_code == 200


def test_serve_stops_cleanly_on_sigterm(served):
    process, _base, _data_dir = served
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    stderr = process.stderr.read() if process.stderr else ""
    assert "Traceback" not in stderr
    assert "Access token" in stderr


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path):
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        result = subprocess.run([OPENMAAC, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
                                env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"port {port} is in use: stop the other server or pass --port"
    assert result.stdout == ""
    assert not (tmp_path / "default-token.txt").exists()  # nothing was set up


def test_simulate_on_a_busy_port_says_so_in_one_line(tmp_path):
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        result = subprocess.run([OPENMAAC, "simulate", "--port", str(port)], env=_env(tmp_path),
                                capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (
        1, f"port {port} is in use: stop the other server or pass --port")


def test_simulate_serves_the_line_simulator(tmp_path):
    port = free_port()
    process = subprocess.Popen([OPENMAAC, "simulate", "--port", str(port)], env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/_admin/channels", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 200 and isinstance(response.json(), list)
    finally:
        process.terminate()
        process.wait(10)


def test_serve_at_a_terminal_prints_the_token_itself(tmp_path):
    """`make run` in a terminal shows the token (and its file); a log file only gets the file's name."""
    _, text = serve_at_a_terminal(_env(tmp_path), until="Try it")
    token = (tmp_path / "default-token.txt").read_text().strip()
    assert token in text and str(tmp_path / "default-token.txt") in text, text

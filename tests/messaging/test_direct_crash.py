"""Crash safety of sending: ``openmaac serve`` (its embedded worker sending a 20,000-recipient
enhanced multicast, 40 requests of 500) is killed with SIGKILL while LINE calls are in flight,
then restarted on the same database: LINE's record shows every recipient exactly once.

The LINE simulator is the test session's (another process from the killed server's point of
view), so its record survives the kill. Every multicast call hangs a moment AFTER LINE has
accepted it (``timeout_after_accept``), so the kill lands between "LINE delivered" and
"openmaac recorded it": the restarted server must finish those calls with their stored
``X-Line-Retry-Key`` (409 = already done) rather than send them again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from conftest import SIMULATOR_URL
from helpers import own_postgres_database, wait_for

RECIPIENTS = 20_000
PER_REQUEST = 500
HANG = 15.0  # seconds the simulator holds its answer to most multicast calls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """``openmaac serve`` (with its embedded worker) in a child process."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.env = dict(os.environ)
        self.env.pop("OPENMAAC_DATABASE_URL", None)
        self.env.update(OPENMAAC_DATA_DIR=str(data_dir), OPENMAAC_PUBLIC_BASE_URL=self.base_url)
        if database_url:
            self.env["OPENMAAC_DATABASE_URL"] = database_url
        self.database_url = (database_url.replace("postgresql://", "postgresql+psycopg://") if database_url
                             else f"sqlite:///{data_dir}/openmaac.sqlite3")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "openmaac.cli", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openmaac.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, interval=0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _setup(child: Child) -> tuple[str, str, list[str]]:
    """The organisation ``crash`` whose LINE channel points at the session's simulator, with
    20,000 friends there and their contacts here. (token, channel_id, line_uids)"""
    from sqlalchemy import create_engine, text

    token = child.cli("token", "create", "--org", "crash")  # migrates, creates the organisation
    engine = create_engine(child.database_url)
    with engine.begin() as conn:
        org_id, channel_id, secret, access_token = conn.execute(text(
            "SELECT o.id, c.channel_id, c.channel_secret, c.access_token FROM organizations o "
            "JOIN line_channels c ON c.organization_id = o.id WHERE o.name = 'crash'")).one()
        conn.execute(text("UPDATE line_channels SET api_base_url = :url WHERE organization_id = :org"),
                     {"url": SIMULATOR_URL, "org": org_id})
    httpx.post(f"{SIMULATOR_URL}/_admin/channels", json={
        "channel_id": channel_id, "channel_secret": secret, "access_token": access_token}).raise_for_status()
    # 20,000 friends in one call (no follow webhooks), and their contacts in bulk
    created = httpx.post(f"{SIMULATOR_URL}/_admin/users/bulk", timeout=60,
                         json={"count": RECIPIENTS, "channel_id": channel_id})
    assert created.status_code == 201, created.text
    uids = created.json()["user_ids"]
    with engine.begin() as conn:
        for start in range(0, RECIPIENTS, 5000):
            conn.execute(text(
                "INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                "VALUES (:org, :uid, 'follow', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                [{"org": org_id, "uid": uid} for uid in uids[start:start + 5000]])
    engine.dispose()
    return token, str(channel_id), uids


def _received(channel_id: str) -> dict[str, Any]:
    response = httpx.get(f"{SIMULATOR_URL}/_admin/channels/{channel_id}/received", timeout=30)
    response.raise_for_status()
    return dict(response.json())


def test_killed_mid_enhanced_multicast_then_restarted_sends_every_recipient_once(server):
    with own_postgres_database("dmcrash") as database_url, tempfile.TemporaryDirectory(prefix="openmaac-dmcrash-") as tmp:
        child = Child(Path(tmp) / "data", database_url)
        token, channel_id, uids = _setup(child)
        child.start()
        try:
            client = httpx.Client(base_url=child.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            template = client.post("/openapi/v1/template/", json={
                "name": "sale", "messages": [{"type": "text", "text": "{{what}} sale today, {{contact.display_name}}"}]})
            assert template.status_code == 201, template.text
            # Every multicast call is accepted (delivered) at once and answered only later: the
            # first eight after half a second (so some are recorded before the kill), the rest
            # after HANG seconds (so the kill finds calls LINE accepted but openmaac never heard
            # of). The embedded worker runs eight sends at once, so the window in which some are
            # recorded, some accepted and unrecorded, and some not yet made lasts about
            # 3 x HANG: wide enough for a slow, loaded machine to poll inside it.
            for count, seconds in ((8, 0.5), (RECIPIENTS // PER_REQUEST - 8, HANG)):
                httpx.post(f"{SIMULATOR_URL}/_admin/faults", json={
                    "kind": "timeout_after_accept", "endpoint": "multicast", "channel_id": channel_id,
                    "count": count, "seconds": seconds}).raise_for_status()
            ids = []
            for start in range(0, RECIPIENTS, PER_REQUEST):
                response = client.post("/openapi/v1/direct_message/enhanced_multicast/", json={
                    "template_id": template.json()["id"], "line_uids": uids[start:start + PER_REQUEST],
                    "data": {"what": "Summer"}})
                assert response.status_code == 200, response.text
                assert response.json()["result"] == "pending"
                ids.append(response.json()["id"])

            def mid_flight() -> bool:
                """Some messages recorded sent, and a LINE call accepted but not yet answered."""
                recorded = sum(client.get(f"/openapi/v1/direct_message/{dm_id}/").json()["status"] == "sent"
                               for dm_id in ids)
                total = _received(channel_id)["total"]
                return 0 < recorded and recorded * PER_REQUEST < total < RECIPIENTS

            wait_for(mid_flight, timeout=60, interval=0.05)
            child.kill()
            before = _received(channel_id)["total"]
            assert 0 < before < RECIPIENTS
            httpx.delete(f"{SIMULATOR_URL}/_admin/faults", params={"channel_id": channel_id}).raise_for_status()

            child.start()  # same database, new process (and port)
            client.close()
            client = httpx.Client(base_url=child.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

            def all_sent() -> bool:
                return all(client.get(f"/openapi/v1/direct_message/{dm_id}/").json()["status"] == "sent"
                           for dm_id in ids)

            wait_for(all_sent, timeout=120, interval=0.5)
            record = _received(channel_id)
            assert record["total"] == RECIPIENTS
            assert set(record["users"]) == set(uids)
            assert set(record["users"].values()) == {1}  # every recipient exactly once
            for dm_id in ids:
                result = client.get(f"/openapi/v1/direct_message/{dm_id}/").json()["result"]
                assert result["total_count"] == PER_REQUEST and result["fail_count"] == 0, result
            # the calls cut off by the kill were finished with their stored retry key: LINE said 409
            # (a call cut off by the kill is logged 200 once its hang ends, which may be later)
            def multicast_log() -> list[dict[str, Any]]:
                return list(httpx.get(f"{SIMULATOR_URL}/_admin/requests", timeout=30,
                                      params={"channel_id": channel_id, "endpoint": "multicast"}).json())

            wait_for(lambda: sum(r["status"] == 200 for r in multicast_log()) >= RECIPIENTS // PER_REQUEST,
                     timeout=HANG + 30, interval=0.5)
            log = multicast_log()
            accepted = [r for r in log if r["status"] == 200]
            assert len(accepted) == RECIPIENTS // PER_REQUEST
            assert any(r["status"] == 409 for r in log)
            assert {r["retry_key"] for r in log if r["status"] == 409} <= {r["retry_key"] for r in accepted}
            client.close()
        finally:
            child.stop()

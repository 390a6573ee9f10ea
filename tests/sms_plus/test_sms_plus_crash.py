"""openmaac (``openmaac serve``) killed with SIGKILL while SMS+ fallback timers are pending and
SMS sends are in flight, then restarted on the same data: every message still reaches a final
status and each number receives its SMS exactly once (the Twilio simulator runs as a process of
its own, so its record survives the kill). Runs on SQLite, or on PostgreSQL with
``OPENMAAC_TEST_DATABASE_URL``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from helpers import own_postgres_database, pnp_message_rows, simulator_process, wait_for
from openmaac.simulators import twilio as twilio_sim

MINUTE_SECONDS = "0.5"  # one API minute of fallback_period / callback timeout lasts 0.5 s here
MESSAGES = 300
FINAL = {"sms_delivered", "sms_callback_timeout"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


class Child:
    """``openmaac serve`` on its own data, restartable on the same port."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.env = dict(os.environ)
        self.env.pop("OPENMAAC_DATABASE_URL", None)
        self.env.update(OPENMAAC_DATA_DIR=str(data_dir), OPENMAAC_PUBLIC_BASE_URL=self.base_url,
                        OPENMAAC_SMS_PLUS_MINUTE_SECONDS=MINUTE_SECONDS)
        if database_url:
            self.env["OPENMAAC_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "openmaac.cli", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "openmaac.cli", "serve", "--port", str(self.port)],
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _up(self.base_url + "/healthz"), timeout=60, interval=0.1)

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


def _in_flight_sends(database_url: str | None, data_dir: str) -> int:
    """Messages whose SMS send was under way when the process died (read from its database)."""
    from sqlalchemy import create_engine, text

    url = database_url.replace("postgresql://", "postgresql+psycopg://") if database_url else \
        f"sqlite:///{data_dir}/openmaac.sqlite3"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM pnp_messages WHERE send_started_at IS NOT NULL"))
                       .scalar_one())
    finally:
        engine.dispose()


def test_killed_with_pending_fallback_timers_every_message_ends_and_each_sms_goes_once() -> None:
    phones = [f"+8869160{index:05d}" for index in range(MESSAGES)]
    with own_postgres_database("smscrash") as database_url, simulator_process("twilio") as twilio:
        child = Child(Path(tempfile.mkdtemp(prefix="openmaac-smscrash-")) / "data", database_url)
        child.start()
        try:
            token = child.cli("token", "create", "--org", "smscrash")
            child.cli("points", "add", str(MESSAGES * 2), "--org", "smscrash")
            client = httpx.Client(base_url=child.base_url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=30)
            response = client.put("/openapi/v1/pnp/sms_provider/", json={
                "provider": "twilio", "base_url": twilio, "callback_timeout_minutes": 40,
                "credentials": {"account_sid": twilio_sim.DEFAULT_ACCOUNT_SID, "auth_token": twilio_sim.DEFAULT_AUTH_TOKEN,
                                "from_number": "+15005550006"}})
            assert response.status_code == 200, response.text
            response = client.post("/openapi/v1/pnp/setting/", json={
                "name": "crash", "pnp_enabled": True, "pnp_approval_status": "approved",
                "pnp_messages": [{"type": "text", "text": "Order {{order}}"}], "fallback_enabled": True,
                "sms_text": "Order {{order}} has arrived", "fallback_period": 6})
            assert response.status_code == 201, response.text
            setting_id = response.json()["id"]
            # each send is taken at once but answered 300 ms later: sends are in flight at the kill
            httpx.post(twilio + "/_admin/faults", json={"latency_ms": 300}).raise_for_status()
            for offset in range(0, MESSAGES, 150):
                data = [{"phone_number": phone, "pnp": {"order": phone[-5:]}, "sms": {"order": phone[-5:]}}
                        for phone in phones[offset:offset + 150]]
                response = client.post("/openapi/v1/pnp/message/multicast/",
                                       json={"pnp_setting_id": setting_id, "data": data})
                assert response.status_code == 200, response.text

            def sent() -> int:
                return int(httpx.get(twilio + "/_admin/messages").json()["count"])

            # the fallback timers (3 s) start firing: kill while most of them are still pending
            wait_for(lambda: sent() >= 20, timeout=60, interval=0.05)
            child.kill()
            before = sent()
            assert before < MESSAGES
            in_flight = _in_flight_sends(database_url, child.env["OPENMAAC_DATA_DIR"])
            assert in_flight >= 1  # sends were cut off mid-call: their outcome must be looked up
            time.sleep(1.0)  # answers still in flight at the simulator land nowhere
            httpx.post(twilio + "/_admin/faults", json={"latency_ms": 0}).raise_for_status()

            child.start()  # same data and port; the dead worker's leases lapse after 60 s
            client.close()
            client = httpx.Client(base_url=child.base_url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=30)

            def all_final() -> list[dict[str, Any]] | None:
                rows = pnp_message_rows(client, "/openapi/v1/pnp/message/", setting_id)
                return rows if len(rows) == MESSAGES and all(r["status"] in FINAL for r in rows) else None

            try:
                rows = wait_for(all_final, timeout=240, interval=1.0)
            except AssertionError:
                rows = pnp_message_rows(client, "/openapi/v1/pnp/message/", setting_id)
                raise AssertionError(f"not final: {Counter(r['status'] for r in rows)}") from None
            assert {r["phone_number"] for r in rows} == set(phones)
            time.sleep(1.0)  # a duplicate would show up now
            messages = httpx.get(twilio + "/_admin/messages").json()["results"]
            per_number = Counter(m["to"] for m in messages)
            assert set(per_number) == set(phones)
            assert max(per_number.values()) == 1, [n for n, c in per_number.items() if c > 1][:10]
            assert len(messages) == MESSAGES
            client.close()
        finally:
            child.stop()

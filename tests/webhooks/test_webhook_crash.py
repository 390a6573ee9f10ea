"""openmaac killed (SIGKILL) mid-delivery and restarted: every event is delivered, and each
idempotency key is answered successfully once, except a delivery whose answer crossed the kill.

Webhooks are at least once: the receiver can answer 200 in the instant the sender is killed,
before the sender has read or recorded it, and the restarted sender then rightly delivers it
again with the same idempotency key. Only such answers, written at most a moment before the
kill, may be repeated; an answer the sender had time to record must never be sent again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from webhook_receiver import Receiver

from helpers import new_line_uid, own_postgres_database, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.env = dict(os.environ)
        self.env.pop("OPENMAAC_DATABASE_URL", None)
        self.env.update(OPENMAAC_DATA_DIR=str(data_dir), OPENMAAC_PUBLIC_BASE_URL=f"http://127.0.0.1:{self.port}",
                        OPENMAAC_WEBHOOK_ALLOW_HOSTS="127.0.0.1")
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


# How long before the kill an answer may still be unread or unrecorded by the sender: the
# answer's bytes in flight plus the sender's commit of the delivery record.
_CROSSING_SECONDS = 0.5


def test_killed_mid_delivery_then_restarted_delivers_every_event_once():
    events = 24
    with own_postgres_database("crash") as database_url, Receiver(delay=1.5) as receiver:
        child = Child(Path(tempfile.mkdtemp(prefix="openmaac-crash-")) / "data", database_url)
        child.start()
        try:
            token = child.cli("token", "create", "--org", "crash")
            client = httpx.Client(base_url=child.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            # Contacts come from LINE follow events in real life; insert them through the
            # child's own database (a separate process writing the same database).
            from sqlalchemy import create_engine, text

            url = database_url.replace("postgresql://", "postgresql+psycopg://") if database_url else \
                f"sqlite:///{child.env['OPENMAAC_DATA_DIR']}/openmaac.sqlite3"
            engine = create_engine(url)
            uids = [new_line_uid() for _ in range(events)]
            with engine.begin() as conn:
                org_id = conn.execute(text("SELECT id FROM organizations WHERE name = 'crash'")).scalar_one()
                for uid in uids:
                    conn.execute(text(
                        "INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                        "VALUES (:org, :uid, 'follow', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ), {"org": org_id, "uid": uid})
            engine.dispose()

            response = client.post("/openapi/v1/webhook/", json={"url": receiver.url, "topics": ["contact.tag.add"]})
            assert response.status_code == 201, response.text
            tag_id = client.post("/openapi/v1/tag/", json={"name": "crash"}).json()["id"]
            for uid in uids:
                response = client.post("/openapi/v1/taglinemember/", json={"tag_id": tag_id, "line_uid": uid})
                assert response.status_code == 201
            client.close()

            # Kill while requests are in flight at the (slow) receiver.
            wait_for(lambda: receiver.in_flight >= 2, timeout=30, interval=0.01)
            killed_at = time.monotonic()
            child.kill()
            assert len(receiver.successful()) < events
            time.sleep(0.5)

            receiver.delay = 0.2
            child.start()  # same data, new port: the dispatcher's lease lapses and it resumes
            wait_for(lambda: len({r.key for r in receiver.successful()}) == events, timeout=120, interval=0.2)
            time.sleep(1.0)  # anything duplicated would show up now
            successful = receiver.successful()
            keys = {r.key for r in successful}
            assert len(keys) == events
            assert {r.key for r in receiver.requests} == keys  # nothing unknown was sent
            for key in keys:
                answers = sorted((r for r in successful if r.key == key), key=lambda r: r.answered_at or 0.0)
                # A repeat is allowed only for an answer that crossed the kill (the sender could
                # not have recorded it); anything answered earlier was durable and never resent.
                for earlier in answers[:-1]:
                    assert earlier.answered_at is not None and earlier.answered_at >= killed_at - _CROSSING_SECONDS, key
        finally:
            child.stop()

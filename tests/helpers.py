"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def new_line_uid() -> str:
    return "U" + secrets.token_hex(16)


def seed_contacts(tenant: Any, count: int, **fields: Any) -> list[str]:
    """Insert contacts directly (fast, for volume); returns their line_uids in insertion order."""
    from openmaac.contacts.models import Contact  # noqa: I001
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database

    now = utcnow()
    uids = [new_line_uid() for _ in range(count)]
    rows = [
        {"organization_id": tenant.id, "line_uid": uid, "status": "follow", "created_at": now,
         "updated_at": now, **fields}
        for uid in uids
    ]
    with get_database().write() as session:
        for chunk in range(0, len(rows), 5000):
            session.execute(Contact.__table__.insert(), rows[chunk : chunk + 5000])
    return uids


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


# Other database sessions wait for a lock (this test database's only: xdist workers have their own)
_LOCK_WAITERS = ("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN "
                 "(SELECT pid FROM pg_stat_activity WHERE datname = current_database())")


def behind_a_lock(database: Any, hold: Callable[[Any], Any], call: Callable[[], Any]) -> Any:
    """A race made deterministic: ``hold(session)`` runs in a write transaction that keeps its
    locks while ``call()`` starts in a thread; once ``call`` waits (PostgreSQL: a lock not granted
    in pg_locks; SQLite: the database's write lock, given 0.3 s to get there), the holder
    commits. Returns what ``call`` returned, or raises what it raised."""
    import threading

    from sqlalchemy import text

    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            outcome.append((False, error))

    waiter = threading.Thread(target=run, daemon=True)
    with database.write() as session:
        hold(session)
        session.flush()
        waiter.start()
        if database.is_sqlite:
            time.sleep(0.3)
        else:
            with database.read_engine.connect() as watcher:
                wait_for(lambda: not waiter.is_alive() or watcher.execute(text(_LOCK_WAITERS)).scalar(),
                         timeout=30, interval=0.02)
    waiter.join(60)
    assert outcome, "the call behind the lock did not end"
    [(returned, value)] = outcome
    if not returned:
        raise value
    return value


def line_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post_line_events(client: httpx.Client, tenant: Any, events: list[dict[str, Any]],
                     secret: str | None = None) -> httpx.Response:
    """Deliver events to /line/webhook/{channel_id} signed as LINE signs them."""
    import json

    body = json.dumps({"destination": "Uxxxxxxxx", "events": events}).encode()
    signature = line_signature(secret or tenant.channel_secret, body)
    return client.post(
        f"/line/webhook/{tenant.channel_id}",
        content=body,
        headers={"X-Line-Signature": signature, "Content-Type": "application/json"},
    )


def follow_event(line_uid: str, *, timestamp_ms: int | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "follow",
        "mode": "active",
        "timestamp": timestamp_ms or int(time.time() * 1000),
        "source": {"type": "user", "userId": line_uid},
        "webhookEventId": event_id or secrets.token_hex(13).upper(),
        "deliveryContext": {"isRedelivery": False},
        "replyToken": secrets.token_hex(16),
        "follow": {"isUnblocked": False},
    }


def unfollow_event(line_uid: str, *, timestamp_ms: int | None = None) -> dict[str, Any]:
    return {
        "type": "unfollow",
        "mode": "active",
        "timestamp": timestamp_ms or int(time.time() * 1000),
        "source": {"type": "user", "userId": line_uid},
        "webhookEventId": secrets.token_hex(13).upper(),
        "deliveryContext": {"isRedelivery": False},
    }


class ServedApp:
    """Any ASGI app (a simulator, a callback receiver) served by uvicorn in a thread on a free
    loopback port: real HTTP, outside the openmaac test server."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.app = app
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", loop="asyncio", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("app did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


from fastapi import FastAPI, Request, Response  # noqa: E402  (annotations of the receiver's route)


class CallbackReceiver:
    """A FastAPI app that records every request it gets (method, full URL, headers, body) and
    answers through ``handler(path, method, url, headers, body) -> (status, media_type, text)``
    when one is set for the path (default: 200, empty)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[..., tuple[int, str, str]]] = {}
        self.app = FastAPI()
        receiver = self

        @self.app.api_route("/{path:path}", methods=["GET", "POST"])
        async def receive(path: str, request: Request) -> Response:
            body = await request.body()
            record = {"path": "/" + path, "method": request.method, "url": str(request.url),
                      "headers": dict(request.headers), "body": body}
            handler = receiver.handlers.get("/" + path)
            status, media_type, text = (handler(record) if handler else (200, "text/plain", ""))
            record["answer"] = (status, text)
            receiver.requests.append(record)
            return Response(text, status_code=status, media_type=media_type)

    def at(self, path: str) -> list[dict[str, Any]]:
        return [record for record in self.requests if record["path"] == path]


# -- LINE messaging (direct messages, tracking, reports) -----------------------------------------

def simulated_friend(tenant: Any, display_name: str | None = None) -> str:
    """A user of the built-in LINE simulator who follows the tenant's Official Account (so openmaac
    has the contact, created by the simulator's signed follow webhook). Returns the line_uid."""
    from conftest import SIMULATOR_URL

    uid = httpx.post(f"{SIMULATOR_URL}/_admin/users", json={"display_name": display_name}, timeout=10).json()["user_id"]
    response = httpx.post(f"{SIMULATOR_URL}/_admin/users/{uid}/follow", json={"channel_id": tenant.channel_id},
                          timeout=10)
    assert response.status_code == 200 and response.json()["webhook"]["status"] == 200, response.text
    if display_name:  # openmaac fetches the display name from LINE's profile API in a job
        def named() -> bool:
            found = tenant.client.get(tenant.api("member/"), params={"line_uid": uid}).json()["results"]
            return bool(found) and found[0]["line_display_name"] == display_name

        wait_for(named, timeout=30)
    return str(uid)


def inbox(line_uid: str, channel_id: str | None = None) -> list[dict[str, Any]]:
    """What the simulated LINE user received (simulator's inbox entries, oldest first)."""
    from conftest import SIMULATOR_URL

    params = {"channel_id": channel_id} if channel_id else {}
    response = httpx.get(f"{SIMULATOR_URL}/_admin/users/{line_uid}/messages", params=params, timeout=10)
    response.raise_for_status()
    return list(response.json())


def create_template(tenant: Any, messages: list[dict[str, Any]], name: str = "template") -> dict[str, Any]:
    response = tenant.client.post(tenant.api("template/"), json={"name": name, "messages": messages})
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_event(tenant: Any, name: str = "event") -> int:
    response = tenant.client.post(tenant.api("event/"), json={"name": name})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def simulated_friends(tenant: Any, count: int, name_prefix: str = "user") -> list[str]:
    """``count`` simulated friends (``{name_prefix}{i}``), made concurrently; line_uids in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: simulated_friend(tenant, f"{name_prefix}{i}"), range(count)))


def org_of(tenant: Any, role: str = "admin") -> Any:
    """The service layer's ``OrgContext`` of a test tenant (``admin`` unless told)."""
    from openmaac.auth.service import OrgContext

    return OrgContext(tenant.id, tenant.name, tenant.timezone, tenant.region, role)


# -- processes of their own (simulators, metrics of another process) ---------------------------

_SIMULATOR_APPS = {"line": ("openmaac.simulators.line.app", "/_admin/channels"),
                   "twilio": ("openmaac.simulators.twilio", "/_admin/faults")}


@contextmanager
def simulator_process(name: str) -> Iterator[str]:
    """The ``line`` or ``twilio`` simulator served by a process of its own, for tests whose
    openmaac runs in other processes (and may be killed): its admin record outlives them and it
    takes none of their CPU. Yields its base URL."""
    import subprocess
    import sys

    module, health = _SIMULATOR_APPS[name]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    code = (f"import uvicorn; from {module} import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the {name} simulator exited with {process.returncode}")
        try:
            return httpx.get(url + health, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` (Prometheus text) whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))
@contextmanager
def worker_held(server: Any) -> Iterator[None]:
    """The server's embedded worker claims nothing while this holds every one of its slots.
    Fails should the worker have a free slot more than its concurrency (a slot given back twice:
    the worker would run more jobs at once than it may)."""
    worker = server.app.state.worker
    held = 0
    try:
        while held < worker.concurrency:
            worker._slots.acquire()
            held += 1
        if worker._slots.acquire(blocking=False):
            held += 1
            raise AssertionError(f"the worker has more free slots than its concurrency ({worker.concurrency})")
        yield
    finally:
        for _ in range(held):
            worker._slots.release()


def free_port() -> int:
    """A loopback port nothing listens on at the moment."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_at_a_terminal(env: dict[str, str], until: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``openmaac serve --no-worker`` with a pseudo-terminal as its output, read what it
    shows until ``until`` appears (or ``timeout``), stop it, and return its port and the text
    without the colours Rich adds at a terminal."""
    import os
    import pty
    import re
    import subprocess
    import sys
    from pathlib import Path

    port = free_port()
    primary, secondary = pty.openpty()
    process = subprocess.Popen([str(Path(sys.executable).with_name("openmaac")), "serve", "--port", str(port),
                                "--no-worker"], env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while until.encode() not in seen and time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        process.terminate()
        process.wait(20)
        os.close(primary)
    return port, re.sub(r"\x1b\[[0-9;]*m", "", seen.decode(errors="replace"))


def pnp_message_rows(client: httpx.Client, path: str, setting_id: int) -> list[dict[str, Any]]:
    """Every SMS+ message of a scenario, through ``GET pnp/message/`` page by page (``path``:
    that endpoint as ``client`` reaches it)."""
    rows: list[dict[str, Any]] = []
    start = None
    while True:
        params: dict[str, Any] = {"pnp_setting_id": setting_id, "updated_at_min": "2000-01-01T00:00:00Z",
                                  "updated_at_max": "2999-01-01T00:00:00Z"}
        if start:
            params["start"] = start
        page = client.get(path, params=params).json()
        rows += page["results"]
        start = page["next"]
        if not start:
            return rows


@contextmanager
def own_postgres_database(prefix: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database of the caller's own (its ``postgresql://`` URL), dropped
    afterwards; None when the suite runs on SQLite (OPENMAAC_TEST_DATABASE_URL unset)."""
    admin = os.environ.get("OPENMAAC_TEST_DATABASE_URL")
    if not admin:
        yield None
        return
    import psycopg

    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"openmaac_{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        drop_postgres_database(name)


def drop_postgres_database(name: str) -> None:
    """Drop a database of the suite's PostgreSQL server, cutting its connections (WITH FORCE)."""
    import psycopg

    admin = (os.environ["OPENMAAC_TEST_DATABASE_URL"]).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sets_noted(sizes: list[int], write_many: Any) -> Any:
    """A ``GroupCommit.run_batched`` set writer that notes the size of each set it writes into
    ``sizes``. Its first call holds the group's leader for 0.3 s, so the requests arriving
    meanwhile queue and form a set of more than one."""
    import threading

    def write(session: Any, items: list[Any]) -> Any:
        if not sizes:
            threading.Event().wait(0.3)
        sizes.append(len(items))
        return write_many(session, items)

    return write


@contextmanager
def scratch_table(database: Any, name: str, columns: str, *setup: str) -> Iterator[Any]:
    """A Database of its own (own engine and connections) on ``database``'s URL, with table
    ``name`` (``columns``: its SQL column list) made empty, then ``setup``'s statements run;
    the table dropped afterwards."""
    from sqlalchemy import text

    from openmaac.db.engine import Database

    own = Database(database.url)
    with own.write() as session:
        session.execute(text(f"CREATE TABLE IF NOT EXISTS {name} ({columns})"))
        session.execute(text(f"DELETE FROM {name}"))
        for statement in setup:
            session.execute(text(statement))
    try:
        yield own
    finally:
        with own.write() as session:
            session.execute(text(f"DROP TABLE {name}"))
        own.dispose()


class DriverConflict(Exception):
    """A driver error of a PostgreSQL conflict, as far as openmaac looks at one: its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def conflict(sqlstate: str = "40P01") -> Exception:
    """SQLAlchemy's error for a transaction PostgreSQL aborted to end a deadlock (``40P01``) or a
    serialisation conflict (``40001``)."""
    from sqlalchemy import exc

    return exc.OperationalError("UPDATE ...", {}, DriverConflict(sqlstate))


def deadlocked_once(real: Callable[..., Any], aborted: list[int]) -> Callable[..., Any]:
    """``real(session, **kwargs)``, whose transaction PostgreSQL aborts to end a deadlock after its
    writes (so they are rolled back), the first time only; ``aborted`` counts it."""
    def transaction(session: Any, **kwargs: Any) -> Any:
        result = real(session, **kwargs)
        if not aborted:
            aborted.append(1)
            raise conflict()
        return result
    return transaction

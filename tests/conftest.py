"""Test harness: a real openmaac server on a loopback port, a fresh tenant per test.

The suite runs on SQLite by default; with ``OPENMAAC_TEST_DATABASE_URL`` pointing at a
PostgreSQL server it creates a fresh database there for the session and runs on it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# this session's own scratch: its directory and PostgreSQL database carry its pid, so a later
# session can tell those of a session killed outright (no clean-up ran) and remove them
_TMP_PREFIX = "openmaac-test-"
_PG_PREFIX = "openmaac_test_"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _owner(name: str, prefix: str, separator: str) -> int | None:
    """The pid in a scratch name ``<prefix><pid><separator>...``, when it is one."""
    head = name[len(prefix):].split(separator, 1)[0]
    return int(head) if name.startswith(prefix) and head.isdigit() else None


def _remove_abandoned_directories() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*"):
        owner = _owner(path.name, _TMP_PREFIX, "-")
        if owner is not None and owner != os.getpid() and not _alive(owner):
            shutil.rmtree(path, ignore_errors=True)


_remove_abandoned_directories()
_TMP = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
os.environ["OPENMAAC_DATA_DIR"] = str(_TMP / "data")
os.environ.setdefault("OPENMAAC_OUTBOUND_ALLOW_HOSTS", "127.0.0.1,localhost")
os.environ["OPENMAAC_SIMULATORS"] = "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PG_ADMIN_URL = os.environ.get("OPENMAAC_TEST_DATABASE_URL")
_PG_DB_NAME: str | None = None
if _PG_ADMIN_URL:
    import psycopg

    _PG_DB_NAME = f"{_PG_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
    _admin = _PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(_admin, autocommit=True) as conn:
        # the databases of sessions on this machine that were killed outright; one another
        # machine's session (or a live one) still uses is refused while connected, and stays
        for (abandoned,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'openmaac\\_test\\_%'"):
            owner = _owner(abandoned, _PG_PREFIX, "_")
            if owner is not None and owner != os.getpid() and not _alive(owner):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{abandoned}"')
                except psycopg.Error:
                    pass
        conn.execute(f'CREATE DATABASE "{_PG_DB_NAME}"')
    os.environ["OPENMAAC_DATABASE_URL"] = _admin.rsplit("/", 1)[0] + "/" + _PG_DB_NAME
else:
    os.environ.pop("OPENMAAC_DATABASE_URL", None)

PORT = _free_port()
BASE_URL = f"http://127.0.0.1:{PORT}"
SIMULATOR_URL = f"{BASE_URL}/_simulators/line"
os.environ["OPENMAAC_PUBLIC_BASE_URL"] = BASE_URL


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TMP, ignore_errors=True)
    if _PG_ADMIN_URL and _PG_DB_NAME:
        import psycopg

        from openmaac.db.engine import reset_database

        reset_database()
        admin = _PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_PG_DB_NAME}" WITH (FORCE)')


class ServerThread:
    """uvicorn serving the real app in this process, on a real socket."""

    def __init__(self, port: int) -> None:
        import uvicorn

        from openmaac.app import create_app
        from openmaac.config import get_settings
        from openmaac.migrations import upgrade

        upgrade()
        self.app = create_app(get_settings())
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(PORT)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright, for one test module at a time: Playwright's sync API
    runs an event loop in this thread while it lives, so a second ``sync_playwright()`` is refused
    and a later module's ``asyncio.run()`` would be too (it must be gone by then)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def base_url(server: ServerThread) -> str:
    return BASE_URL


@pytest.fixture(scope="session")
def database(server: ServerThread) -> Any:
    from openmaac.db.engine import get_database

    return get_database()


@dataclass
class Tenant:
    id: int
    name: str
    token: str
    channel_id: str
    channel_secret: str
    access_token: str
    client: httpx.Client
    timezone: str = "Asia/Taipei"
    region: str = "TW"
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, path: str) -> str:
        return f"/openapi/v1/{path.lstrip('/')}"


def _make_tenant(name: str | None = None) -> Tenant:
    from openmaac.auth.service import create_organization, create_token
    from openmaac.channels.service import channel_of
    from openmaac.db.engine import get_database

    name = name or f"org-{uuid.uuid4().hex[:10]}"
    with get_database().write() as session:
        org = create_organization(session, name)
        token = create_token(session, org.id)
        channel = channel_of(session, org.id)
        assert channel is not None
        tenant = Tenant(
            id=org.id, name=name, token=token, channel_id=channel.channel_id,
            channel_secret=channel.channel_secret, access_token=channel.access_token,
            client=httpx.Client(base_url=BASE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=30),
            timezone=org.timezone, region=org.region,
        )
    # The built-in LINE simulator learns the channel (its secret, token and our webhook URL),
    # as `openmaac serve` registers the default organisation's channel at start.
    httpx.post(
        f"{SIMULATOR_URL}/_admin/channels",
        json={"channel_id": tenant.channel_id, "channel_secret": tenant.channel_secret,
              "access_token": tenant.access_token,
              "webhook_url": f"{BASE_URL}/line/webhook/{tenant.channel_id}"},
        timeout=10,
    ).raise_for_status()
    return tenant


@pytest.fixture
def tenant(server: ServerThread) -> Iterator[Tenant]:
    t = _make_tenant()
    yield t
    t.client.close()


@pytest.fixture
def make_tenant(server: ServerThread) -> Iterator[Callable[[], Tenant]]:
    made: list[Tenant] = []

    def factory() -> Tenant:
        t = _make_tenant()
        made.append(t)
        return t

    yield factory
    for t in made:
        t.client.close()


@pytest.fixture
def anon(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE_URL, timeout=30) as client:
        yield client


@pytest.fixture
def migration_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own for a migration test: a SQLite file, or a new PostgreSQL database
    when OPENMAAC_TEST_DATABASE_URL names a server (its SQLAlchemy URL)."""
    from helpers import own_postgres_database
    from openmaac.db.engine import reset_database

    with own_postgres_database("mig") as url:
        if url is None:
            yield f"sqlite:///{tmp_path / 'openmaac.sqlite3'}"
            return
        try:
            yield url.replace("postgresql://", "postgresql+psycopg://")
        finally:
            reset_database()

"""Fixtures of the console's browser tests: Playwright driving Debian's chromium against the
suite's real server (tests/conftest.py), a console user in the test's fresh tenant, a page
already signed in, screenshots and the axe-core check.

Both conftest files are the module ``conftest`` to Python, and pytest imports this one after
the suite's: tests that ``from conftest import BASE_URL`` (or PORT, SIMULATOR_URL) may get
either, so this one defines the same values, read from what the suite's conftest set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from console_helpers import assert_accessible as _assert_accessible
from console_helpers import screenshot as _screenshot

BASE_URL = os.environ["OPENMAAC_PUBLIC_BASE_URL"]
PORT = int(BASE_URL.rsplit(":", 1)[1])
SIMULATOR_URL = f"{BASE_URL}/_simulators/line"
Tenant = Any  # tests/conftest.py's Tenant (id, name, token, client, ...)


@dataclass
class ConsoleUser:
    email: str
    password: str
    org_name: str
    tenant: Tenant
    role: str = "admin"
    user_id: int = 0


def create_console_user(tenant: Tenant, role: str = "admin", *, email: str | None = None,
                        password: str | None = None, locale: str | None = None) -> ConsoleUser:
    from openmaac.console import users
    from openmaac.db.engine import get_database

    email = email or f"{role}-{secrets.token_hex(5)}@example.com"
    password = password or "pw-" + secrets.token_urlsafe(12)
    with get_database().write() as session:
        user = users.get_user(session, email) or users.create_user(session, email, password)
        users.set_membership(session, user, tenant.id, role)
        if locale is not None:
            user.locale = locale
        user_id = user.id
    return ConsoleUser(email=email.lower(), password=password, org_name=tenant.name, tenant=tenant, role=role,
                       user_id=user_id)


@pytest.fixture(autouse=True)
def _loopback_sign_ins_unthrottled(server: Any) -> None:
    """Every test signs in from 127.0.0.1: one test's failed sign-ins must not make the next
    wait (the address throttle is tested with addresses of its own, X-Forwarded-For)."""
    from sqlalchemy import delete

    from openmaac.console.models import SignInThrottle
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        session.execute(delete(SignInThrottle).where(SignInThrottle.key == "address:127.0.0.1"))


@pytest.fixture(scope="module")
def browser(server: Any, chromium: Any) -> Any:
    return chromium


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_page(locale="en-US")``: a page in a fresh browser context (its own cookies)."""
    contexts: list[Any] = []

    def make(locale: str = "en-US", **options: Any) -> Any:
        context = browser.new_context(base_url=BASE_URL, locale=locale, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def console_user(tenant: Tenant) -> Callable[..., ConsoleUser]:
    """``console_user(role="admin", tenant=None)``: a user with a membership in ``tenant``
    (the test's own tenant by default)."""

    def make(role: str = "admin", tenant_: Tenant | None = None, **options: Any) -> ConsoleUser:
        return create_console_user(options.pop("tenant", None) or tenant_ or tenant, role, **options)

    return make


def sign_in(page: Any, user: ConsoleUser, next_path: str = "/console/") -> Any:
    page.goto(f"/console/sign-in?next={next_path}")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}")
    return page


@pytest.fixture
def signed_in(console_user: Callable[..., ConsoleUser], new_page: Callable[..., Any]) -> Callable[..., Any]:
    """``signed_in(role="admin")``: a page signed in on ``/console/`` as a new user of the test's
    tenant; the user is ``page.console_user``."""

    def make(role: str = "admin", **options: Any) -> Any:
        user = console_user(role, **options)
        page = new_page()
        sign_in(page, user)
        page.console_user = user
        return page

    return make


@pytest.fixture
def screenshot() -> Callable[..., Any]:
    return _screenshot


@pytest.fixture
def assert_accessible() -> Callable[[Any], None]:
    return _assert_accessible


@pytest.fixture
def other_tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    """A second organisation, with its own token, for tenant-wall tests."""
    return make_tenant()

"""Signing in to the console in a real browser."""

from __future__ import annotations

from console_helpers import assert_accessible, screenshot


def test_sign_in_shows_the_dashboard(new_page, console_user):
    user = console_user("admin")
    page = new_page()
    page.goto("/console/")
    # not signed in: the sign-in page, which returns to the asked page afterwards
    assert "/console/sign-in?next=/console/" in page.url
    assert_accessible(page)
    screenshot(page, "sign_in")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")
    assert page.get_by_role("heading", level=1).inner_text() == f"Welcome, {user.email}"
    assert user.org_name in page.locator(".org").inner_text()
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Contacts", "Tags", "Segments", "Templates", "Events", "SMS+", "Webhooks", "API token", "Settings"):
        assert label in nav.inner_text()
    assert_accessible(page)
    screenshot(page, "dashboard")


def _end_waits(email: str) -> None:
    """What the passing of the throttle's wait does (not slept through in a test)."""
    from datetime import timedelta

    from sqlalchemy import update

    from openmaac.console.models import SignInThrottle
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        session.execute(update(SignInThrottle).where(SignInThrottle.key == f"account:{email}")
                        .values(blocked_until=utcnow() - timedelta(seconds=1)))


def _attempt(page, email: str, password: str) -> None:
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_wrong_password_is_refused_then_throttled_with_a_visible_wait(new_page, console_user):
    user = console_user("marketer")
    page = new_page()
    page.goto("/console/sign-in")
    _attempt(page, user.email, "not the password")
    alert = page.get_by_role("alert")
    # the same words whether the address or the password was wrong
    assert alert.inner_text() == "Incorrect email address or password."
    assert page.get_by_label("Email address").input_value() == user.email  # what was typed is kept
    _attempt(page, "nobody@example.com", "not the password")
    assert page.get_by_role("alert").inner_text() == "Incorrect email address or password."
    for _ in range(4):
        _attempt(page, user.email, "still not it")
    # the fifth failure of the account: a wait, shown, instead of a lock-out
    assert page.get_by_role("alert").inner_text() == "Too many failed sign-ins. Wait 30 seconds and try again."
    screenshot(page, "sign_in_throttled")
    # during the wait the right password is refused too
    _attempt(page, user.email, user.password)
    assert "Too many failed sign-ins. Wait" in page.get_by_role("alert").inner_text()
    assert "/console/sign-in" in page.url
    _end_waits(user.email)
    _attempt(page, user.email, user.password)
    page.wait_for_url("**/console/")
    assert page.get_by_role("heading", level=1).inner_text() == f"Welcome, {user.email}"


def test_the_wait_grows_with_each_further_failure(base_url, console_user):
    import httpx
    from console_helpers import csrf_of

    user = console_user("viewer")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = csrf_of(client.get("/console/sign-in").text)

        def attempt(password: str) -> httpx.Response:
            return client.post("/console/sign-in", data={"email": user.email, "password": password,
                                                         "csrf_token": token})

        for _ in range(4):
            assert attempt("wrong").status_code == 400
        assert "Wait 30 seconds" in attempt("wrong").text
        _end_waits(user.email)
        answer = attempt("wrong again")
        assert answer.status_code == 429 and "Wait 60 seconds" in answer.text


def test_sign_ins_from_one_address_are_throttled_across_accounts(base_url, console_user):
    """Guessing one password for many accounts from one address (password spraying) waits too;
    another address is not held up by it."""
    import httpx
    from console_helpers import csrf_of

    accounts = [console_user("viewer") for _ in range(2)]
    sprayer = {"X-Forwarded-For": "198.51.100.7"}  # the test server trusts loopback proxies
    with httpx.Client(base_url=base_url, timeout=30, headers=sprayer) as client:
        token = csrf_of(client.get("/console/sign-in").text)
        for index in range(20):
            answer = client.post("/console/sign-in", data={
                "email": f"guess-{index}@example.com", "password": "Summer2026!", "csrf_token": token})
        assert answer.status_code == 429 and "Wait 30 seconds" in answer.text
        answer = client.post("/console/sign-in", data={"email": accounts[0].email, "password": accounts[0].password,
                                                       "csrf_token": token})
        assert answer.status_code == 429
    with httpx.Client(base_url=base_url, timeout=30, headers={"X-Forwarded-For": "198.51.100.8"}) as client:
        token = csrf_of(client.get("/console/sign-in").text)
        answer = client.post("/console/sign-in", data={"email": accounts[1].email, "password": accounts[1].password,
                                                       "csrf_token": token})
        assert answer.status_code == 303


def test_after_sign_in_only_console_addresses_are_followed(new_page, console_user):
    user = console_user("viewer")
    page = new_page()
    page.goto("/console/sign-in?next=//example.com/phish")
    _attempt(page, user.email, user.password)
    page.wait_for_url("**/console/")
    assert page.url.endswith("/console/")
    screenshot(page, "sign_in_next_refused")

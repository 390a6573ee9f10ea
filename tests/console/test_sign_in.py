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

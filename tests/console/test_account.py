"""The account page: changing the password (which signs out the user's other sessions), and
the layout on a narrow screen."""

from __future__ import annotations

from console_helpers import assert_accessible, http_sign_in, screenshot


def test_changing_the_password_signs_out_the_other_sessions(signed_in, base_url):
    page = signed_in("viewer")
    user = page.console_user
    with http_sign_in(base_url, user.email, user.password) as elsewhere:
        page.goto("/console/account")
        page.get_by_label("Current password").fill("not my password")
        page.locator("#field-new_password").fill("long enough 1")
        page.get_by_label("New password again").fill("long enough 2")
        page.get_by_role("button", name="Change password").click()
        page.wait_for_load_state()
        assert "Your current password is not correct." in page.locator(".field.has-error").first.inner_text()
        assert "The two passwords do not match." in page.content()
        assert_accessible(page)
        screenshot(page, "account_password_errors")
        # refused: the other session still works
        assert elsewhere.get("/console/", follow_redirects=False).status_code == 200
        page.get_by_label("Current password").fill(user.password)
        page.locator("#field-new_password").fill("a brand new password")
        page.get_by_label("New password again").fill("a brand new password")
        page.get_by_role("button", name="Change password").click()
        page.wait_for_load_state()
        assert page.get_by_role("status").inner_text() == (
            "Your password was changed. Your other sessions were signed out.")
        assert elsewhere.get("/console/", follow_redirects=False).status_code == 303
    page.goto("/console/")  # this browser stays signed in
    assert page.url.endswith("/console/")
    with http_sign_in(base_url, user.email, "a brand new password"):
        pass


def test_the_layout_on_a_phone(new_page, console_user):
    from conftest import sign_in

    page = new_page(viewport={"width": 390, "height": 844})
    sign_in(page, console_user("admin"))
    assert page.get_by_role("navigation", name="Main").is_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen
    assert_accessible(page)
    screenshot(page, "dashboard_phone")

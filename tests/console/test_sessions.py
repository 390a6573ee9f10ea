"""Console sessions: cookies, rotation, timeouts, revocation, CSRF and cross-site refusal,
roles, the organisation switcher and its tenant wall, and inert hostile names."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from console_helpers import assert_accessible, csrf_of, http_sign_in, screenshot
from sqlalchemy import select, update

from openmaac.console.models import ConsoleSession, ConsoleUser
from openmaac.console.session import SESSION_COOKIE
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database


def _locale_of(user_id: int) -> str | None:
    with get_database().read() as session:
        return session.scalar(select(ConsoleUser.locale).where(ConsoleUser.id == user_id))


def _signed_out(client: httpx.Client) -> bool:
    answer = client.get("/console/", follow_redirects=False)
    return answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in")


def test_the_session_cookie_is_httponly_samesite_lax_and_secure_behind_https(base_url, console_user):
    user = console_user("viewer")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get("/console/sign-in")
        answer = client.post("/console/sign-in", data={"email": user.email, "password": user.password,
                                                       "csrf_token": csrf_of(page.text)})
        cookie = answer.headers["set-cookie"].lower()
        assert cookie.startswith(SESSION_COOKIE + "=")
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
        assert "secure" not in cookie
    # a TLS-terminating proxy (trusted: loopback) says the browser used https
    with httpx.Client(base_url=base_url, timeout=30, headers={"X-Forwarded-Proto": "https"}) as client:
        page = client.get("/console/sign-in")
        assert "; secure" in page.headers["set-cookie"].lower()
        # (httpx keeps a Secure cookie from a plain-http test server: hand it back)
        pre_session = page.headers["set-cookie"].split(";", 1)[0]
        answer = client.post("/console/sign-in", data={"email": user.email, "password": user.password,
                                                       "csrf_token": csrf_of(page.text)},
                             headers={"Cookie": pre_session})
        assert answer.status_code == 303
        assert "; secure" in answer.headers["set-cookie"].lower()


def test_pages_carry_the_content_security_policy(base_url):
    answer = httpx.get(f"{base_url}/console/sign-in", timeout=30)
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["vary"] == "HX-Request"
    assert "unsafe-inline" not in policy


def test_sign_out_revokes_the_session(new_page, console_user, base_url):
    user = console_user("marketer")
    page = new_page()
    page.goto("/console/sign-in")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")
    old = next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    with httpx.Client(base_url=base_url, cookies={SESSION_COOKIE: old}, timeout=30) as copy:
        assert not _signed_out(copy)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/console/sign-in")
        # the copied cookie is worth nothing: the row is gone, not only the browser's cookie
        assert _signed_out(copy)
    screenshot(page, "signed_out")


def test_signing_in_again_rotates_the_session(base_url, console_user):
    first, second = console_user("viewer"), console_user("admin")
    with http_sign_in(base_url, first.email, first.password) as client:
        planted = client.cookies[SESSION_COOKIE]
        page = client.get("/console/sign-in?next=/console/account", follow_redirects=False)
        assert page.status_code == 303  # already signed in
        answer = client.post("/console/sign-in", data={"email": second.email, "password": second.password,
                                                       "csrf_token": csrf_of(client.get("/console/").text)})
        assert answer.status_code == 303
        assert client.cookies[SESSION_COOKIE] != planted
        with httpx.Client(base_url=base_url, cookies={SESSION_COOKIE: planted}, timeout=30) as old:
            assert _signed_out(old)


@pytest.mark.parametrize("column", ["last_seen_at", "expires_at"])
def test_idle_and_absolute_timeouts_end_the_session(base_url, console_user, column):
    user = console_user("viewer")
    with http_sign_in(base_url, user.email, user.password) as client:
        assert not _signed_out(client)
        past = utcnow() - timedelta(hours=12, minutes=1) if column == "last_seen_at" else utcnow() - timedelta(seconds=1)
        with get_database().write() as session:
            session.execute(update(ConsoleSession).where(ConsoleSession.user_id == user.user_id)
                            .values({column: past}))
        assert _signed_out(client)
        with get_database().read() as session:
            assert session.scalars(select(ConsoleSession).where(ConsoleSession.user_id == user.user_id)).all() == []


def test_an_htmx_request_without_a_session_is_sent_to_the_sign_in_page(base_url):
    answer = httpx.get(f"{base_url}/console/account", headers={"HX-Request": "true"}, timeout=30)
    assert answer.headers["hx-redirect"] == "/console/sign-in?next=/console/account"


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(base_url, console_user):
    user = console_user("admin")
    with http_sign_in(base_url, user.email, user.password) as client:
        answer = client.post("/console/account/language", data={"locale": "zh_TW"})
        assert answer.status_code == 403
        assert "CSRF" in answer.text and answer.headers["content-type"].startswith("text/html")
        answer = client.post("/console/account/language", data={"locale": "zh_TW", "csrf_token": "forged"})
        assert answer.status_code == 403
        assert _locale_of(user.user_id) is None
        # the same request with the token does change it
        token = csrf_of(client.get("/console/account").text)
        assert client.post("/console/account/language", data={"locale": "zh_TW", "csrf_token": token}).status_code == 303
        assert _locale_of(user.user_id) == "zh_TW"
        # and the header htmx sends works as the field does
        answer = client.post("/console/account/language", data={"locale": "en"}, headers={"X-CSRF-Token": token})
        assert answer.status_code == 303 and _locale_of(user.user_id) == "en"


def test_the_sign_in_form_needs_its_csrf_token(base_url, console_user):
    user = console_user("admin")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.get("/console/sign-in")
        answer = client.post("/console/sign-in", data={"email": user.email, "password": user.password})
        assert answer.status_code == 403 and SESSION_COOKIE not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://attacker.example"}])
def test_a_cross_site_post_is_refused_even_with_the_token(base_url, console_user, headers):
    user = console_user("admin")
    with http_sign_in(base_url, user.email, user.password) as client:
        token = csrf_of(client.get("/console/account").text)
        answer = client.post("/console/account/language", data={"locale": "zh_TW", "csrf_token": token},
                             headers=headers)
        assert answer.status_code == 403
        assert _locale_of(user.user_id) is None


def test_require_role_orders_viewer_marketer_admin():
    from openmaac.auth.service import OrgContext, require_role
    from openmaac.web.errors import APIError

    def allowed(role: str, minimum: str) -> bool:
        try:
            require_role(OrgContext(id=1, name="o", timezone="Asia/Taipei", region="TW", role=role), minimum)
        except APIError as exc:
            assert exc.status_code == 403
            assert exc.body == {"detail": "You do not have permission to perform this action."}
            return False
        return True

    assert [allowed("viewer", m) for m in ("viewer", "marketer", "admin")] == [True, False, False]
    assert [allowed("marketer", m) for m in ("viewer", "marketer", "admin")] == [True, True, False]
    assert [allowed("admin", m) for m in ("viewer", "marketer", "admin")] == [True, True, True]
    assert allowed("unknown", "marketer") is False
    # API tokens act as admin: the API is not held back by roles
    assert OrgContext(id=1, name="o", timezone="Asia/Taipei", region="TW").role == "admin"


def test_a_refusal_of_a_service_is_a_console_page(base_url, console_user):
    """An APIError raised under /console/ answers a page in the reader's language, not JSON."""
    user = console_user("viewer")
    with http_sign_in(base_url, user.email, user.password) as client:
        answer = client.get("/console/no-such-page")
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
        assert "Not found" in answer.text and user.email in answer.text  # the layout, signed in


def test_the_organisation_switcher_and_its_wall(signed_in, other_tenant, make_tenant, base_url):
    from openmaac.console import users

    page = signed_in("marketer")
    user = page.console_user
    outsider = make_tenant()
    with get_database().write() as session:
        users.set_membership(session, users.get_user(session, user.email), other_tenant.id, "viewer")
    page.reload()
    switcher = page.get_by_label("Organisation")
    assert switcher.input_value() == str(user.tenant.id)
    assert_accessible(page)
    screenshot(page, "organisation_switcher")
    switcher.select_option(str(other_tenant.id))  # submits on change (static/js/console.js)
    page.wait_for_function(f"document.querySelector('#org-switcher-select').value === '{other_tenant.id}'")
    assert page.locator(".role-badge").inner_text() == "Viewer"
    assert other_tenant.name in page.get_by_role("heading", level=1).locator("xpath=..").inner_text()
    # a hand-made switch to an organisation the user does not belong to: not found, no change
    token = page.evaluate("() => document.querySelector('input[name=csrf_token]').value")
    answer = page.request.post("/console/org", form={"organization_id": str(outsider.id), "csrf_token": token})
    assert answer.status == 404
    page.reload()
    assert page.get_by_label("Organisation").input_value() == str(other_tenant.id)
    assert outsider.name not in page.content()


def test_hostile_names_render_inert(new_page, make_tenant):
    from conftest import create_console_user
    from openmaac.auth.models import Organization

    hostile = "<script>alert(1)</script>"
    tenant = make_tenant()
    with get_database().write() as session:
        session.execute(update(Organization).where(Organization.id == tenant.id).values(name=hostile))
    tenant.name = hostile
    user = create_console_user(tenant, "admin")
    page = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"/console/sign-in?next=/console/{hostile}")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/**")
    for path in ("/console/", "/console/account", "/console/settings/", f"/console/{hostile}"):
        page.goto(path)
        assert hostile in page.locator(".org").inner_text()
        assert page.locator("script:not([src])").count() == 0
    assert dialogs == []
    screenshot(page, "hostile_names")

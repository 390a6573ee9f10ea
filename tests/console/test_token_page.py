"""The API token page in a real browser: get a token, use it, revoke it; only admins may."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from helpers import org_of, wait_for

BASE_URL = __import__("os").environ["OPENMAAC_PUBLIC_BASE_URL"]


def csrf_of(page) -> str:
    """The page's CSRF token (the layout hands it to htmx in ``hx-headers``)."""
    return str(json.loads(page.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"])


def active_tokens(organization_id: int) -> int:
    from openmaac.auth.models import AccessToken
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        return int(session.scalar(select(func.count()).select_from(AccessToken).where(
            AccessToken.organization_id == organization_id, AccessToken.revoked_at.is_(None))) or 0)


def members(token: str) -> httpx.Response:
    return httpx.get(f"{BASE_URL}/openapi/v1/member/", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_get_a_token_use_it_and_revoke_it(signed_in, tenant, screenshot, assert_accessible):
    page = signed_in("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API token").click()
    page.wait_for_url("**/console/tokens/")
    page.get_by_label("Label (optional)", exact=True).fill("Insider")
    page.get_by_role("button", name="Get token").click()

    token = page.locator("#new-token").input_value()
    assert token.startswith("om_") and len(token) > 40
    assert "shown only once" in page.locator(".token-once").inner_text()
    page.locator(".token-once").get_by_role("button", name="Copy").click()
    page.locator(".token-once").get_by_text("Copied").first.wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == token
    row = page.locator(f"tr[data-token-prefix='{token[:10]}']")
    assert "Insider" in row.inner_text() and "Never" in row.inner_text()
    assert_accessible(page)
    screenshot(page, "tokens_new_token")

    response = members(token)
    assert response.status_code == 200, response.text

    # the token's use shows in the list (recorded off the request's path, so give it a moment)
    def used() -> bool:
        page.goto("/console/tokens/")
        return "Never" not in page.locator(f"tr[data-token-prefix='{token[:10]}'] .last-used").inner_text()

    wait_for(used, timeout=15, interval=0.3)
    assert page.locator("#new-token").count() == 0  # shown once: not on a later visit

    row = page.locator(f"tr[data-token-prefix='{token[:10]}']")
    row.get_by_role("button", name="Revoke").click()
    dialog = row.locator("dialog")
    assert dialog.is_visible()
    assert token[:10] in dialog.inner_text()
    screenshot(page, "tokens_revoke_dialog")
    dialog.get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/console/tokens/?revoked=*")
    assert f"Token {token[:10]}… was revoked" in page.locator(".alert").inner_text()
    assert page.locator(f"tr[data-token-prefix='{token[:10]}']").count() == 0
    screenshot(page, "tokens_revoked")

    response = members(token)
    assert response.status_code == 401 and response.json() == {"detail": "Invalid token."}
    assert members(tenant.token).status_code == 200  # the organisation's other token still works


def test_cancelled_revoke_keeps_the_token(signed_in, tenant, screenshot):
    page = signed_in("admin")
    page.goto("/console/tokens/")
    row = page.locator("tbody tr").first
    row.get_by_role("button", name="Revoke").click()
    row.locator("dialog").get_by_role("button", name="Cancel").click()
    assert not row.locator("dialog").is_visible()
    screenshot(page, "tokens_revoke_cancelled")
    assert active_tokens(tenant.id) == 1
    assert members(tenant.token).status_code == 200


@pytest.mark.parametrize("role", ["viewer", "marketer"])
def test_only_admins_manage_tokens(signed_in, tenant, role, screenshot):
    page = signed_in(role)
    response = page.goto("/console/tokens/")
    assert response is not None and response.status == 403
    assert page.get_by_role("button", name="Get token").count() == 0
    assert tenant.token[:10] not in page.content()
    screenshot(page, f"tokens_{role}_refused")

    # a hand-made request with a valid CSRF token is refused by the service and creates nothing
    csrf = csrf_of(page)
    refused = page.request.post("/console/tokens/", form={"csrf_token": csrf, "label": "sneaky"})
    assert refused.status == 403
    assert "om_" not in refused.text()
    assert active_tokens(tenant.id) == 1

    from openmaac.auth.models import AccessToken
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        token_id = session.scalar(select(AccessToken.id).where(AccessToken.organization_id == tenant.id))
    refused = page.request.post(f"/console/tokens/{token_id}/revoke/", form={"csrf_token": csrf})
    assert refused.status == 403
    assert active_tokens(tenant.id) == 1 and members(tenant.token).status_code == 200


def test_admin_of_another_organisation_cannot_revoke(signed_in, tenant, other_tenant, screenshot):
    from openmaac.auth.models import AccessToken
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        token_id = session.scalar(select(AccessToken.id).where(AccessToken.organization_id == tenant.id))
    page = signed_in("admin", tenant=other_tenant)
    page.goto("/console/tokens/")
    assert tenant.token[:10] not in page.content()
    screenshot(page, "tokens_other_organisation")
    response = page.request.post(f"/console/tokens/{token_id}/revoke/", form={"csrf_token": csrf_of(page)})
    assert response.status == 404
    assert active_tokens(tenant.id) == 1 and members(tenant.token).status_code == 200


def test_label_too_long_keeps_the_input(signed_in, tenant, screenshot):
    page = signed_in("admin")
    page.goto("/console/tokens/")
    # the field's maxlength stops a browser at 255; a longer label from elsewhere is refused
    page.locator("#field-label").evaluate("input => input.removeAttribute('maxlength')")
    page.locator("#field-label").fill("x" * 300)
    page.get_by_role("button", name="Get token").click()
    page.locator("#field-label-errors").wait_for()
    assert "Ensure this field has no more than 255 characters." in page.locator("#field-label-errors").inner_text()
    assert page.locator("#field-label").input_value() == "x" * 300
    assert page.locator("#new-token").count() == 0
    screenshot(page, "tokens_label_too_long")
    assert active_tokens(tenant.id) == 1


# -- CDH API keys (header apikey of /cdh/v1) on the same page ---------------------------------

def active_cdh_keys(organization_id: int) -> int:
    from openmaac.cdh.models import CdhApiKey
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        return int(session.scalar(select(func.count()).select_from(CdhApiKey).where(
            CdhApiKey.organization_id == organization_id, CdhApiKey.revoked_at.is_(None))) or 0)


def custom_fields(key: str) -> httpx.Response:
    return httpx.get(f"{BASE_URL}/cdh/v1/custom_field", headers={"apikey": key}, timeout=10)


def test_create_a_cdh_key_use_it_and_revoke_it(signed_in, tenant, screenshot, assert_accessible):
    page = signed_in("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/console/tokens/")
    assert "No active CDH API keys" in page.locator("#cdh-keys").inner_text()
    page.get_by_label("Key label (optional)").fill("CRM sync")
    with page.expect_response(lambda r: r.url.endswith("/console/tokens/cdh-keys/")) as answer:
        page.get_by_role("button", name="Create key").click()
    assert answer.value.status == 200 and answer.value.headers["cache-control"] == "no-store"

    key = page.locator("#new-cdh-key").input_value()
    assert key.startswith("cdh_") and len(key) == 47
    once = page.locator(".cdh-key-once")
    assert "shown only once" in once.inner_text()
    assert page.locator("#new-token").count() == 0  # no OpenAPI token was made
    once.get_by_role("button", name="Copy").click()
    once.get_by_text("Copied").first.wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator(f"tr[data-cdh-key-prefix='{key[:12]}']")
    assert "CRM sync" in row.inner_text() and key not in row.inner_text()
    assert_accessible(page)
    screenshot(page, "tokens_new_cdh_key")

    response = custom_fields(key)
    assert response.status_code == 200, response.text
    assert members(key).status_code == 401  # a CDH key is not an OpenAPI token

    page.goto("/console/tokens/")
    assert page.locator("#new-cdh-key").count() == 0  # shown once: not on a later visit
    row = page.locator(f"tr[data-cdh-key-prefix='{key[:12]}']")
    row.get_by_role("button", name="Revoke").click()
    dialog = row.locator("dialog")
    assert dialog.is_visible() and key[:12] in dialog.inner_text()
    screenshot(page, "tokens_cdh_key_revoke_dialog")
    dialog.get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/console/tokens/?revoked_cdh=*")
    assert f"CDH API key {key[:12]}… was revoked" in page.locator(".alert").inner_text()
    assert page.locator(f"tr[data-cdh-key-prefix='{key[:12]}']").count() == 0
    screenshot(page, "tokens_cdh_key_revoked")

    # running servers cache a successful look-up for up to 2 s
    wait_for(lambda: custom_fields(key).status_code == 401, timeout=10, interval=0.2)
    assert custom_fields(key).json() == {"detail": "Invalid API key"}
    assert members(tenant.token).status_code == 200  # the OpenAPI token is untouched


def test_marketer_cannot_create_or_revoke_cdh_keys(signed_in, tenant, screenshot):
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.cdh.models import CdhApiKey
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        key = create_cdh_key(session, org_of(tenant), "existing")
    page = signed_in("marketer")
    response = page.goto("/console/tokens/")
    assert response is not None and response.status == 403
    assert page.get_by_role("button", name="Create key").count() == 0
    assert key[:12] not in page.content()
    screenshot(page, "tokens_cdh_keys_marketer_refused")

    csrf = csrf_of(page)
    refused = page.request.post("/console/tokens/cdh-keys/", form={"csrf_token": csrf, "label": "sneaky"})
    assert refused.status == 403
    assert "cdh_" not in refused.text()
    assert active_cdh_keys(tenant.id) == 1

    with get_database().read() as session:
        key_id = session.scalar(select(CdhApiKey.id).where(CdhApiKey.organization_id == tenant.id))
    refused = page.request.post(f"/console/tokens/cdh-keys/{key_id}/revoke/", form={"csrf_token": csrf})
    assert refused.status == 403
    assert active_cdh_keys(tenant.id) == 1 and custom_fields(key).status_code == 200


def test_cdh_key_service_refuses_non_admins(tenant):
    from openmaac.cdh.keys import create_cdh_key, list_cdh_keys, revoke_cdh_key_by_id
    from openmaac.db.engine import get_database
    from openmaac.web.errors import APIError

    calls = (lambda s, org: create_cdh_key(s, org), list_cdh_keys, lambda s, org: revoke_cdh_key_by_id(s, org, 1))
    for role in ("viewer", "marketer"):
        for call in calls:
            with pytest.raises(APIError) as refused, get_database().write() as session:
                call(session, org_of(tenant, role))
            assert refused.value.status_code == 403
    assert active_cdh_keys(tenant.id) == 0


def test_admin_of_another_organisation_cannot_revoke_a_cdh_key(signed_in, tenant, other_tenant, screenshot):
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.cdh.models import CdhApiKey
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        key = create_cdh_key(session, org_of(tenant))
    with get_database().read() as session:
        key_id = session.scalar(select(CdhApiKey.id).where(CdhApiKey.organization_id == tenant.id))
    page = signed_in("admin", tenant=other_tenant)
    page.goto("/console/tokens/")
    assert key[:12] not in page.content()
    response = page.request.post(f"/console/tokens/cdh-keys/{key_id}/revoke/", form={"csrf_token": csrf_of(page)})
    assert response.status == 404
    assert active_cdh_keys(tenant.id) == 1 and custom_fields(key).status_code == 200


def test_cdh_key_label_too_long_keeps_the_input(signed_in, tenant):
    page = signed_in("admin")
    page.goto("/console/tokens/")
    page.locator("#field-cdh-label").evaluate("input => input.removeAttribute('maxlength')")
    page.locator("#field-cdh-label").fill("y" * 300)
    page.get_by_role("button", name="Create key").click()
    page.locator("#field-cdh-label-errors").wait_for()
    assert "Ensure this field has no more than 255 characters." in page.locator("#field-cdh-label-errors").inner_text()
    assert page.locator("#field-cdh-label").input_value() == "y" * 300
    assert page.locator("#new-cdh-key").count() == 0
    assert active_cdh_keys(tenant.id) == 0

"""End to end: a user of the built-in LINE simulator follows and blocks the tenant's Official
Account; the simulator's signed webhooks reach openmaac, which keeps the contact's status and
fetches the display name back from the simulator's profile API."""

from __future__ import annotations

from conftest import SIMULATOR_URL
from helpers import wait_for


def _member(tenant, uid):
    results = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"]
    return results[0] if results else None


def _act(client, uid, action, tenant):
    response = client.post(f"{SIMULATOR_URL}/_admin/users/{uid}/{action}", json={"channel_id": tenant.channel_id})
    assert response.status_code == 200, response.text
    assert response.json()["webhook"] == {"delivered": True, "status": 200, "error": None}


def test_simulated_user_follows_blocks_and_comes_back(tenant, anon):
    user = anon.post(f"{SIMULATOR_URL}/_admin/users", json={"display_name": "王小明"}).json()
    uid = user["user_id"]
    assert _member(tenant, uid) is None

    _act(anon, uid, "follow", tenant)
    member = _member(tenant, uid)
    assert member["status"] == "follow" and member["blocked_at"] is None
    # the profile job asks the simulator for the display name
    member = wait_for(lambda: (m := _member(tenant, uid)) and m.get("line_display_name") == "王小明" and m)
    assert member["status"] == "follow"

    _act(anon, uid, "block", tenant)
    member = _member(tenant, uid)
    assert member["status"] == "unfollow" and member["blocked_at"] is not None

    _act(anon, uid, "follow", tenant)
    member = _member(tenant, uid)
    assert member["status"] == "follow" and member["blocked_at"] is None


def test_another_organisation_never_sees_the_follow(tenant, make_tenant, anon):
    other = make_tenant()
    uid = anon.post(f"{SIMULATOR_URL}/_admin/users", json={}).json()["user_id"]
    _act(anon, uid, "follow", tenant)
    assert _member(tenant, uid) is not None
    assert _member(other, uid) is None

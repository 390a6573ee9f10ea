"""Tenants are walls: organisation B's token gets 404 for A's ids."""

from __future__ import annotations

from helpers import seed_contacts


def test_other_organisations_ids_answer_404(make_tenant):
    a, b = make_tenant(), make_tenant()
    (uid,) = seed_contacts(a, 1)
    tag = a.client.post("/openapi/v1/tag/", json={"name": "a-only"}).json()
    template = a.client.post("/openapi/v1/template/", json={
        "name": "a", "messages": [{"type": "text", "text": "hi"}]}).json()
    event = a.client.post("/openapi/v1/event/", json={"name": "a-event"}).json()

    assert b.client.get(f"/openapi/v1/tag/{tag['id']}/").status_code == 404
    assert b.client.get(f"/openapi/v1/template/{template['id']}/").status_code == 404
    assert b.client.get(f"/openapi/v1/event/{event['id']}/").status_code == 404
    assert b.client.patch(f"/openapi/v1/member/{uid}/", json={"gender": "male"}).status_code == 404
    assert b.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).status_code == 404
    assert b.client.request("DELETE", "/openapi/v1/taglinemember/",
                            json={"tag_id": tag["id"]}).status_code == 404
    # Lists never show another organisation's rows.
    assert b.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"] == []
    assert b.client.get("/openapi/v1/tag/").json()["results"] == []
    assert b.client.get("/openapi/v1/template/").json()["results"] == []
    assert b.client.get("/openapi/v1/event/").json()["results"] == []
    # And A still sees its own.
    assert a.client.get(f"/openapi/v1/tag/{tag['id']}/").status_code == 200

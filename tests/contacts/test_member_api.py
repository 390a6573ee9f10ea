"""GET /openapi/v1/member/ and PATCH /openapi/v1/member/{line_uid}/ over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from helpers import follow_event, new_line_uid, post_line_events, seed_contacts


def test_requires_a_token(anon):
    response = anon.get("/openapi/v1/member/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    response = anon.get("/openapi/v1/member/", headers={"Authorization": "Bearer om_nope"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_contact_fields_after_follow(tenant, anon):
    uid = new_line_uid()
    assert post_line_events(anon, tenant, [follow_event(uid)]).status_code == 200
    body = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()
    assert body["next"] is None
    (contact,) = body["results"]
    assert set(contact) == {
        "line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id", "gender",
        "birthday", "tags", "tags_detail", "status", "updated_at", "created_at", "blocked_at",
    }
    assert contact["line_uid"] == uid
    assert contact["status"] == "follow"
    assert contact["tags"] == [] and contact["tags_detail"] == []
    assert contact["created_at"].endswith("+08:00")
    assert contact["blocked_at"] is None


def test_pagination_over_more_than_300(tenant):
    uids = seed_contacts(tenant, 650)
    seen: list[str] = []
    params: dict[str, str] = {}
    pages = 0
    while True:
        body = tenant.client.get("/openapi/v1/member/", params=params).json()
        pages += 1
        assert len(body["results"]) <= 300
        seen.extend(c["line_uid"] for c in body["results"])
        if body["next"] is None:
            break
        # The token comes percent-encoded; send it back as the spec's clients do.
        params = {"start": unquote(body["next"])}
    assert pages == 3
    assert sorted(seen) == sorted(uids)
    assert seen == list(reversed(uids)), "newest first"


def test_next_token_accepted_encoded_and_raw(tenant):
    seed_contacts(tenant, 301)
    first = tenant.client.get("/openapi/v1/member/").json()
    token = first["next"]
    # Sent exactly as received (still percent-encoded) in a hand-built URL...
    raw_url = f"/openapi/v1/member/?start={token}"
    a = tenant.client.get(raw_url)
    # ...decoded and sent with a raw "+" (which a server reads as a space)...
    b = tenant.client.get(f"/openapi/v1/member/?start={unquote(token)}")
    # ...and properly encoded by the HTTP library.
    c = tenant.client.get("/openapi/v1/member/", params={"start": unquote(token)})
    assert a.status_code == b.status_code == c.status_code == 200
    assert len(a.json()["results"]) == len(b.json()["results"]) == len(c.json()["results"]) == 1


def test_tampered_token_is_400(tenant, make_tenant):
    seed_contacts(tenant, 301)
    token = unquote(tenant.client.get("/openapi/v1/member/").json()["next"])
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = tenant.client.get("/openapi/v1/member/", params={"start": bad})
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid cursor"}
    other = make_tenant()
    # Another organisation's token is not a valid cursor here.
    response = other.client.get("/openapi/v1/member/", params={"start": token})
    assert response.status_code == 400
    response = tenant.client.get("/openapi/v1/tag/", params={"start": token})
    assert response.status_code == 400


def test_filters(tenant):
    a, b, c = seed_contacts(tenant, 3)
    tenant.client.patch(f"/openapi/v1/member/{a}/", json={"email": "a@example.com", "mobile": "0912345678",
                                                          "customer_id": "cid-a"})
    tenant.client.patch(f"/openapi/v1/member/{b}/", json={"email": "b@example.com"})

    def uids(**params):
        response = tenant.client.get("/openapi/v1/member/", params=params)
        assert response.status_code == 200, response.text
        return [r["line_uid"] for r in response.json()["results"]]

    assert uids(line_uid=a) == [a]
    assert uids(email="b@example.com") == [b]
    assert uids(customer_id="cid-a") == [a]
    assert uids(mobile="+886912345678") == [a]
    # An unencoded "+" arrives as a space: still found.
    raw = tenant.client.get("/openapi/v1/member/?mobile=+886912345678").json()
    assert [r["line_uid"] for r in raw["results"]] == [a]
    assert uids(status="follow") == [c, b, a]
    assert uids(status="unfollow") == []
    member = tenant.client.get("/openapi/v1/member/", params={"line_uid": c}).json()["results"][0]
    assert member["line_uid"] == c
    today = datetime.now(UTC).astimezone().date()
    assert set(uids(updated_at_min=(today - timedelta(days=1)).isoformat())) == {a, b, c}
    assert uids(updated_at_max=(today - timedelta(days=2)).isoformat()) == []


def test_member_id_filter(tenant, database):
    from sqlalchemy import select

    from openmaac.contacts.models import Contact

    (uid,) = seed_contacts(tenant, 1)
    with database.read() as session:
        member_id = session.scalar(select(Contact.id).where(Contact.line_uid == uid))
    body = tenant.client.get("/openapi/v1/member/", params={"member_id": member_id}).json()
    assert [r["line_uid"] for r in body["results"]] == [uid]


def test_filter_validation_errors(tenant):
    response = tenant.client.get("/openapi/v1/member/", params={"status": "friend"})
    assert response.status_code == 400
    assert response.json() == {"status": ['"friend" is not a valid choice.']}
    response = tenant.client.get("/openapi/v1/member/", params={"updated_at_min": "17-05-2017"})
    assert response.status_code == 400
    assert response.json() == {
        "updated_at_min": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
    }
    response = tenant.client.get("/openapi/v1/member/", params={"member_id": "abc"})
    assert response.json() == {"member_id": ["A valid integer is required."]}
    response = tenant.client.get("/openapi/v1/member/", params={"all_tag": "2"})
    assert response.status_code == 400 and "all_tag" in response.json()


def test_all_tag_limits_tags_to_window(tenant, database):
    from sqlalchemy import update

    from openmaac.tags.models import ContactTag

    (uid,) = seed_contacts(tenant, 1)
    old = tenant.client.post("/openapi/v1/tag/", json={"name": "old"}).json()
    new = tenant.client.post("/openapi/v1/tag/", json={"name": "new"}).json()
    for tag in (old, new):
        assert tenant.client.post("/openapi/v1/taglinemember/",
                                  json={"tag_id": tag["id"], "line_uid": uid}).status_code == 201
    with database.write() as session:
        session.execute(update(ContactTag).where(ContactTag.tag_id == old["id"])
                        .values(tagged_at=datetime.now(UTC) - timedelta(days=30)))
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    windowed = tenant.client.get("/openapi/v1/member/", params={"updated_at_min": since}).json()["results"][0]
    assert windowed["tags"] == ["new"]
    everything = tenant.client.get("/openapi/v1/member/",
                                   params={"updated_at_min": since, "all_tag": 1}).json()["results"][0]
    assert everything["tags"] == ["old", "new"]
    assert [d["name"] for d in everything["tags_detail"]] == ["old", "new"]


def test_patch_updates_profile(tenant):
    (uid,) = seed_contacts(tenant, 1)
    before = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
    response = tenant.client.patch(f"/openapi/v1/member/{uid}/", json={
        "display_name": "Alan Mathison Turing", "customer_id": "fake-cid", "email": "example@example.com",
        "mobile": "0910123456", "gender": "male", "birthday": "2017-05-17",
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["display_name"] == "Alan Mathison Turing"
    assert body["customer_id"] == "fake-cid"
    assert body["mobile"] == "+886910123456"
    assert body["gender"] == "male"
    assert body["birthday"] == "2017-05-17"
    assert body["updated_at"] > before["updated_at"]
    # Only the fields sent change.
    body = tenant.client.patch(f"/openapi/v1/member/{uid}/", json={"gender": "female"}).json()
    assert body["email"] == "example@example.com" and body["gender"] == "female"
    # customer_id null unbinds.
    body = tenant.client.patch(f"/openapi/v1/member/{uid}/", json={"customer_id": None}).json()
    assert body["customer_id"] is None


def test_patch_mobile_already_e164_and_other_regions(tenant):
    (uid,) = seed_contacts(tenant, 1)
    body = tenant.client.patch(f"/openapi/v1/member/{uid}/", json={"mobile": "+81 90-1234-5678"}).json()
    assert body["mobile"] == "+819012345678"


def test_patch_validation_errors_change_nothing(tenant):
    (uid,) = seed_contacts(tenant, 1)
    response = tenant.client.patch(f"/openapi/v1/member/{uid}/", json={
        "gender": "robot", "birthday": "2017/05/17", "mobile": "12345", "email": "not-an-email",
        "display_name": "should not be saved",
    })
    assert response.status_code == 400
    assert response.json() == {
        "gender": ['"robot" is not a valid choice.'],
        "birthday": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
        "mobile": ["Enter a valid phone number."],
        "email": ["Enter a valid email address."],
    }
    contact = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
    assert contact["display_name"] is None and contact["gender"] is None


def test_patch_binding_moves_customer_id(tenant):
    a, b = seed_contacts(tenant, 2)
    tenant.client.patch(f"/openapi/v1/member/{a}/", json={"customer_id": "C-1"})
    tenant.client.patch(f"/openapi/v1/member/{b}/", json={"customer_id": "C-1"})
    found = tenant.client.get("/openapi/v1/member/", params={"customer_id": "C-1"}).json()["results"]
    assert [r["line_uid"] for r in found] == [b]


def test_patch_unknown_contact_is_404(tenant):
    response = tenant.client.patch(f"/openapi/v1/member/{new_line_uid()}/", json={"gender": "male"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_patch_bad_json(tenant):
    (uid,) = seed_contacts(tenant, 1)
    response = tenant.client.patch(f"/openapi/v1/member/{uid}/", content=b"{not json",
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")

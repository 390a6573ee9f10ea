# ruff: noqa: F811  (the fixtures imported from cdh_support are parameters of the tests)
"""``PATCH /cdh/v1/member``, custom fields and the apikey header, through real HTTP."""

from __future__ import annotations

import httpx
import pytest
from cdh_support import add_cdh_webhook, cdh, clock, hooks, received  # noqa: F401  (fixtures)

from conftest import BASE_URL
from helpers import behind_a_lock, seed_contacts, wait_for

PROFILE = {
    "customer_id": "C-1", "connect_id": "K-1", "full_name": "Alice Wang", "display_name": "Alice",
    "display_email": "alice@example.com", "display_mobile": "+886912345678", "gender": "other",
    "birthday": "1990-05-06", "region": "TW", "city": "Taipei", "address": "1 Road", "company": "ACME",
    "member_level": "gold", "account_manager": "Bob",
}


def patch(cdh, member_id, data, channel_type="line", channel_id="@oa"):
    return cdh.patch("/cdh/v1/member", json={"channel_type": channel_type, "external_channel_id": channel_id,
                                             "external_member_id": member_id, "data": data})


def member(tenant, line_uid):
    [found] = tenant.client.get(tenant.api("member/"), params={"line_uid": line_uid}).json()["results"]
    return found


# -- authentication -----------------------------------------------------------------------

def test_apikey_missing_wrong_revoked_and_bearer_tokens_do_not_work(tenant, cdh):
    with httpx.Client(base_url=BASE_URL, timeout=30) as anon:
        missing = anon.get("/cdh/v1/custom_field")
        assert (missing.status_code, missing.json()) == (401, {"detail": "Not authenticated"})
        wrong = anon.get("/cdh/v1/custom_field", headers={"apikey": "cdh_nope"})
        assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid API key"})
        # an OpenAPI token is not a CDH key
        token = anon.get("/cdh/v1/custom_field", headers={"apikey": tenant.token})
        assert token.status_code == 401
        assert anon.get("/cdh/v1/custom_field", headers={"apikey": cdh.key}).status_code == 200
    from openmaac.cdh.keys import revoke_cdh_key
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        assert revoke_cdh_key(session, cdh.key[:12]) == 1
    assert cdh.get("/cdh/v1/custom_field").status_code == 401


def test_keys_belong_to_one_organisation(tenant, make_tenant, cdh):
    other = make_tenant()
    [uid] = seed_contacts(other, 1)
    assert patch(cdh, uid, {"full_name": "X"}).status_code == 404


def test_key_service_lists_without_the_key(tenant, cdh):
    from openmaac.auth.service import OrgContext
    from openmaac.cdh.keys import list_cdh_keys, revoke_cdh_key_by_id
    from openmaac.db.engine import get_database

    org = OrgContext(tenant.id, tenant.name, tenant.timezone, tenant.region)
    with get_database().read() as session:
        [key] = list_cdh_keys(session, org)
    assert key["prefix"] == cdh.key[:12] and key["revoked_at"] is None and cdh.key not in str(key)
    with get_database().write() as session:
        assert revoke_cdh_key_by_id(session, org, key["id"])
    assert cdh.get("/cdh/v1/custom_field").status_code == 401


# -- update member --------------------------------------------------------------------------

def test_patch_sets_every_profile_field_and_maac_agrees(tenant, cdh):
    [uid] = seed_contacts(tenant, 1)
    response = patch(cdh, uid, PROFILE)
    assert response.status_code == 200, response.text
    assert sorted(response.json()["updated_fields"]) == sorted(PROFILE)
    seen = member(tenant, uid)
    assert (seen["customer_id"], seen["display_name"], seen["email"], seen["mobile"], seen["gender"],
            seen["birthday"]) == ("C-1", "Alice", "alice@example.com", "+886912345678", "other", "1990-05-06")
    # the same again changes nothing; a partial update changes only what it names
    assert patch(cdh, uid, PROFILE).json() == {"updated_fields": []}
    assert patch(cdh, uid, {"city": "Tainan"}).json() == {"updated_fields": ["city"]}
    from sqlalchemy import select

    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        contact = session.scalars(select(Contact).where(Contact.line_uid == uid)).one()
    assert (contact.city, contact.full_name, contact.member_level) == ("Tainan", "Alice Wang", "gold")


def test_explicit_null_clears_and_absent_fields_stay(tenant, cdh):
    [uid] = seed_contacts(tenant, 1)
    patch(cdh, uid, {"display_email": "a@example.com", "company": "ACME"})
    response = patch(cdh, uid, {"display_email": None})
    assert response.json() == {"updated_fields": ["display_email"]}
    seen = member(tenant, uid)
    assert seen["email"] is None
    from sqlalchemy import select

    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        assert session.scalar(select(Contact.company).where(Contact.line_uid == uid)) == "ACME"


def test_cdh_and_maac_patches_fire_one_webhook_per_changed_field(tenant, cdh, hooks):
    receiver, url = hooks
    topics = [f"contact.profile.{f}.update" for f in ("full_name", "display_email", "display_mobile",
                                                       "customer_id", "display_name", "city")]
    add_cdh_webhook(tenant, url + "/cdh", topics)
    [uid] = seed_contacts(tenant, 1)
    assert patch(cdh, uid, {"full_name": "A", "display_email": "a@example.com", "city": None}).status_code == 200
    # MAAC's member/ view of the same contact
    maac = tenant.client.patch(tenant.api(f"member/{uid}/"), json={"email": "b@example.com", "mobile": "0912345678",
                                                                  "display_name": "Al"})
    assert maac.status_code == 200, maac.text
    wait_for(lambda: len(receiver.at("/cdh")) >= 5, 20)
    bodies = received(receiver, "/cdh")
    events = sorted(((b["event"], b["data"]["old_value"], b["data"]["new_value"]) for b in bodies), key=repr)
    assert events == sorted([
        ("contact.profile.full_name.update", None, "A"),
        ("contact.profile.display_email.update", None, "a@example.com"),
        ("contact.profile.display_email.update", "a@example.com", "b@example.com"),
        ("contact.profile.display_mobile.update", None, "+886912345678"),
        ("contact.profile.display_name.update", None, "Al"),
    ], key=repr)
    assert all(b["data"]["line_uid"] == uid and b["source"] == "maac" for b in bodies)
    assert receiver.at("/cdh")[0]["headers"]["user-agent"].startswith("openmaac")
    # both views agree
    assert member(tenant, uid)["email"] == "b@example.com"
    assert patch(cdh, uid, {"display_email": "b@example.com", "display_mobile": "+886912345678"}).json() == {
        "updated_fields": []}


@pytest.mark.parametrize("channel_type", ["fb", "ig", "whatsapp", "email", "wccs", "others"])
def test_other_channels_create_or_join_a_contact(tenant, cdh, channel_type):
    first = patch(cdh, "m-1", {"customer_id": f"C-{channel_type}"}, channel_type=channel_type, channel_id="page")
    assert first.status_code == 200 and first.json() == {"updated_fields": ["customer_id"]}
    again = patch(cdh, "m-1", {"full_name": "Zed"}, channel_type=channel_type, channel_id="page")
    assert again.json() == {"updated_fields": ["full_name"]}
    # a LINE friend given the same customer_id, and a second channel member naming it, join that contact
    [uid] = seed_contacts(tenant, 1)
    patch(cdh, uid, {"customer_id": "C-shared"})
    joined = patch(cdh, "m-2", {"customer_id": "C-shared", "city": "Kaohsiung"}, channel_type=channel_type)
    assert joined.json() == {"updated_fields": ["city"]}
    from sqlalchemy import select

    from openmaac.cdh.models import ChannelIdentity
    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.line_uid == uid))
        identities = session.scalars(select(ChannelIdentity.channel_type).where(
            ChannelIdentity.contact_id == contact_id)).all()
    assert sorted(identities) == sorted(["line", channel_type])


def test_unknown_line_member_is_404(tenant, cdh):
    response = patch(cdh, "Uunknown", {"full_name": "X"})
    assert (response.status_code, response.json()) == (404, {"detail": "Member not found"})


@pytest.mark.parametrize(("body", "loc"), [
    ({"channel_type": "telegram", "external_channel_id": "x", "external_member_id": "y", "data": {}},
     ["body", "channel_type"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y"}, ["body", "data"]),
    ({"channel_type": "line", "external_channel_id": "", "external_member_id": "y", "data": {}},
     ["body", "external_channel_id"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y" * 129, "data": {}},
     ["body", "external_member_id"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"gender": "robot"}}, ["body", "data", "gender"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"display_mobile": "0912345678"}}, ["body", "data", "display_mobile"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"display_email": "nope"}}, ["body", "data", "display_email"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"birthday": "1990-5-6"}}, ["body", "data", "birthday"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"full_name": "x" * 256}}, ["body", "data", "full_name"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"nickname": "x"}}, ["body", "data", "nickname"]),
    ({"channel_type": "line", "external_channel_id": "x", "external_member_id": "y",
      "data": {"custom_fields": {"points": 1}}}, ["body", "data", "custom_fields", "points", "[key]"]),
])
def test_invalid_patch_is_422_with_loc_msg_type(tenant, cdh, body, loc):
    response = cdh.patch("/cdh/v1/member", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["msg"] and error["type"]


def test_malformed_json_is_422(cdh):
    response = cdh.patch("/cdh/v1/member", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


# -- custom fields ----------------------------------------------------------------------------

def make_field(cdh, key, type_, name=None):
    response = cdh.post("/cdh/v1/custom_field", json={"key": key, "name": name or key, "type": type_})
    assert response.status_code == 201, response.text
    return response.json()


def test_custom_fields_list_filter_archive_and_conflict(cdh):
    text = make_field(cdh, "cl_custom_note", "text")
    number = make_field(cdh, "cl_custom_total", "number")
    assert cdh.post("/cdh/v1/custom_field", json={"key": "cl_custom_note", "name": "x", "type": "text"}
                    ).status_code == 409
    assert cdh.post("/cdh/v1/custom_field", json={"key": "note", "name": "x", "type": "text"}).status_code == 422
    assert cdh.post("/cdh/v1/custom_field", json={"key": "cl_custom_x", "name": "x", "type": "bool"}
                    ).status_code == 422
    archived = cdh.patch(f"/cdh/v1/custom_field/{number['id']}", json={"active": False})
    assert archived.status_code == 200 and archived.json()["active"] is False
    keys = lambda params: [f["key"] for f in cdh.get("/cdh/v1/custom_field", params=params).json()]  # noqa: E731
    assert keys({}) == ["cl_custom_note", "cl_custom_total"]
    assert keys({"active": "true"}) == ["cl_custom_note"]
    assert keys({"active": "false"}) == ["cl_custom_total"]
    assert cdh.get("/cdh/v1/custom_field", params={"active": "maybe"}).status_code == 422
    assert cdh.patch("/cdh/v1/custom_field/999999999", json={"active": True}).status_code == 404
    assert text["type"] == "text" and set(text) == {"id", "key", "name", "type", "active", "created_at",
                                                    "updated_at"}


@pytest.mark.parametrize(("type_", "good", "bad"), [
    ("text", ["x" * 255, ""], ["x" * 256, 5]),
    ("number", [2147483647, -2147483647, 1.5, 123456.789012345], [2147483648, -2147483648.5, "5", True,
                                                                  1234567.12345678912]),
    ("date", ["2025-12-31"], ["2025-13-01", "2025/12/31", "2025-12-31T00:00:00Z"]),
    ("datetime", ["2025-12-31T23:59:59Z", "2025-12-31T23:59:59+08:00"], ["2025-12-31T23:59:59", "2025-12-31"]),
])
def test_custom_field_types_and_limits(tenant, cdh, type_, good, bad):
    make_field(cdh, "cl_custom_value", type_)
    [uid] = seed_contacts(tenant, 1)
    for value in good:
        response = patch(cdh, uid, {"custom_fields": {"cl_custom_value": value}})
        assert response.status_code == 200, (value, response.text)
    for value in bad:
        response = patch(cdh, uid, {"custom_fields": {"cl_custom_value": value}})
        assert response.status_code == 422, (value, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "data", "custom_fields", "cl_custom_value"]


def test_custom_values_set_clear_and_refuse_unknown_or_archived(tenant, cdh):
    field = make_field(cdh, "cl_custom_tier", "text")
    [uid] = seed_contacts(tenant, 1)
    assert patch(cdh, uid, {"custom_fields": {"cl_custom_tier": "vip"}}).json() == {
        "updated_fields": ["cl_custom_tier"]}
    assert patch(cdh, uid, {"custom_fields": {"cl_custom_tier": None}}).json() == {
        "updated_fields": ["cl_custom_tier"]}
    assert patch(cdh, uid, {"custom_fields": {"cl_custom_nope": 1}}).status_code == 422
    lone = cdh.patch("/cdh/v1/member", content=(
        '{"channel_type": "line", "external_channel_id": "x", "external_member_id": "UID", '
        '"data": {"custom_fields": {"cl_custom_tier": "\\ud800"}}}').replace("UID", uid).encode(),
        headers={"Content-Type": "application/json"})
    assert lone.status_code == 422 and lone.json()["detail"][0]["loc"][-1] == "cl_custom_tier"
    cdh.patch(f"/cdh/v1/custom_field/{field['id']}", json={"active": False})
    refused = patch(cdh, uid, {"custom_fields": {"cl_custom_tier": "vip"}, "city": "X"})
    assert refused.status_code == 422 and "archived" in refused.json()["detail"][0]["msg"]
    # a refused request changes nothing
    assert patch(cdh, uid, {"city": "X"}).json() == {"updated_fields": ["city"]}


@pytest.mark.parametrize("path", ["/cdh/v1/member", "/cdh/v1/engagement/event", "/cdh/v1/engagement/point",
                                  "/cdh/v1/member/import"])
def test_lone_surrogates_are_refused_not_a_server_error(tenant, cdh, path):
    [uid] = seed_contacts(tenant, 1)
    bodies = {
        "/cdh/v1/member": ('{"channel_type": "line", "external_channel_id": "x", "external_member_id": "UID", '
                           '"data": {"full_name": "a\\ud800b"}}').replace("UID", uid),
        "/cdh/v1/engagement/event": '{"behavior": "page_view", "utm_term": "lm:1", '
                                    '"params": {"page_path": "/\\udc00"}}',
        "/cdh/v1/engagement/point": '{"timestamp": "2024-01-01T00:00:00Z", "source_platform_name": "\\ud800", '
                                    '"source_store_type": "online_store", "source_store_id": "s", '
                                    '"source_platform_customer_id": "c", "balance": 1, "type": "loyalty_point"}',
        "/cdh/v1/member/import": ('{"import_key": "line_uid", "data": [{"line_uid": "UID", "city": "\\ud800"}]}'
                                  ).replace("UID", uid),
    }
    method = "PATCH" if path == "/cdh/v1/member" else "POST"
    response = cdh.request(method, path, content=bodies[path].encode(), headers={"Content-Type": "application/json"})
    if path.endswith("/import"):  # rows are checked by the task: the row is an error
        task_id = response.json()["id"]
        done = wait_for(lambda: (t := cdh.get(f"/cdh/v1/task/{task_id}").json())["status"] != "pending"
                        and t["status"] != "processing" and t, 30)
        assert (done["status"], done["result"]["error_count"]) == ("success", 1)
    else:
        assert response.status_code == 422, response.text
    # a proper pair is a character like any other
    assert cdh.post("/cdh/v1/engagement/event", json={"behavior": "page_view", "utm_term": "lm:1",
                                                      "params": {"page_path": "/\U0001F600"}}).status_code == 200


def test_unknown_cdh_path_and_method_answer_in_fastapi_words(cdh):
    assert cdh.get("/cdh/v1/nothing").json() == {"detail": "Not Found"}
    response = cdh.delete("/cdh/v1/member")
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})


def test_a_new_member_updated_by_two_requests_at_once_is_one_contact(tenant, cdh, database):
    """A member of another channel, new to openmaac, updated by two requests at once: the one
    that waited for the other's transaction updates the contact the other created (PostgreSQL:
    both found no identity, each made a contact, and the second's was left with no identity,
    holding its update)."""

    from sqlalchemy import func, select

    from helpers import org_of
    from openmaac.cdh import service
    from openmaac.cdh.models import ChannelIdentity
    from openmaac.cdh.schemas import UpdateMember
    from openmaac.contacts.models import Contact

    org = org_of(tenant)

    def body(data):
        return UpdateMember.model_validate({"channel_type": "fb", "external_channel_id": "page-1",
                                            "external_member_id": "fb-42", "data": data})

    def contacts() -> int:
        with database.read() as session:
            return int(session.scalar(select(func.count()).select_from(Contact)
                                      .where(Contact.organization_id == tenant.id)) or 0)

    before = contacts()

    def second() -> None:
        with database.write() as session:
            service.update_member(session, org, body({"display_name": "Bea"}))

    def hold(session):  # the first request: the member's contact made, not committed yet
        service.update_member(session, org, body({"full_name": "Beatrice"}))

    behind_a_lock(database, hold, second)
    assert contacts() == before + 1
    with database.read() as session:
        contact = session.scalar(select(Contact).join(ChannelIdentity, ChannelIdentity.contact_id == Contact.id)
                                 .where(ChannelIdentity.organization_id == tenant.id,
                                        ChannelIdentity.external_member_id == "fb-42"))
        assert contact is not None and contact.display_name == "Bea"

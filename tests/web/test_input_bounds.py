"""Null characters, dates at the ends of the calendar and long query filters answer a clear 400
in Django REST framework's shape on every route (both databases), never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from test_ids import OPERATIONS

from helpers import seed_contacts

NULL = ["Null characters are not allowed."]
DATETIME_RANGE = ["Datetime value out of range."]
DATE_RANGE = ["Date value out of range."]


# --- null characters --------------------------------------------------------------------------

def _string_query_params(operation: dict[str, Any]) -> list[str]:
    names = []
    for param in operation.get("parameters", []):
        schema = param.get("schema", {})
        types = {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}
        if param["in"] == "query" and "string" in types:
            names.append(param["name"])
    return names


STRING_QUERY_CASES = [(path, name) for method, path, op in OPERATIONS if method == "GET" and "{" not in path
                      for name in _string_query_params(op)]


def test_the_route_table_has_string_filters():
    assert ("/openapi/v1/event/", "name") in STRING_QUERY_CASES
    assert len(STRING_QUERY_CASES) >= 10


@pytest.mark.parametrize(("path", "name"), STRING_QUERY_CASES)
def test_null_character_in_a_query_string(tenant, path, name):
    response = tenant.client.get(path, params={name: "a\x00b"})
    assert response.status_code == 400, response.text
    assert response.json() == {name: NULL}


@pytest.mark.parametrize(("path", "name"), STRING_QUERY_CASES)
def test_query_string_longer_than_any_column(tenant, path, name):
    response = tenant.client.get(path, params={name: "x" * 60_000})
    assert response.status_code == 400, response.text
    if name == "start":
        assert response.json() == {"detail": "Invalid cursor"}
    elif name in ("line_uid", "email", "mobile", "customer_id", "name"):
        assert response.json() == {name: ["Ensure this field has no more than 255 characters."]}
    else:  # a choice or a date: its own error
        assert list(response.json()) == [name]


def test_event_name_filter_of_60_kb(tenant):
    response = tenant.client.get(tenant.api("event/"), params={"name": "到" * 100 + "x" * 60_000})
    assert response.status_code == 400
    assert response.json() == {"name": ["Ensure this field has no more than 255 characters."]}
    assert tenant.client.get(tenant.api("event/"), params={"name": "x" * 255}).status_code == 200


JSON_BODY_CASES: list[tuple[str, str, Any, Any]] = [
    ("POST", "tag/", {"name": "a\x00"}, {"name": NULL}),
    ("POST", "event/", {"name": "a\x00"}, {"name": NULL}),
    ("POST", "template/", {"name": "t", "messages": [{"type": "text", "text": "hi\x00"}]},
     {"messages": {"0": {"text": NULL}}}),
    ("POST", "segment/", {"name": "s\x00", "tags": [{"status": "with", "tag_id": 1}]}, {"name": NULL}),
    ("POST", "webhook/", {"url": "http://127.0.0.1:9/x", "topics": ["contact.tag.add"],
                          "headers": {"x-api-key": "k\x00"}}, {"headers": {"x-api-key": NULL}}),
    ("PATCH", "tracking_setting/", {"utm_source": "line\x00"}, {"utm_source": NULL}),
    ("POST", "pnp/setting/", {"name": "s\x00"}, {"name": NULL}),
    ("PUT", "pnp/sms_provider/", {"provider": "twilio", "credentials": {"from_number": "+1\x00"}},
     {"credentials": {"from_number": NULL}}),
    ("POST", "member/import/", {"import_key": "line_uid", "data": [{"line_uid": "U" + "0" * 32,
                                                                     "email": "a\x00@example.com"}]},
     {"data": {"0": {"email": NULL}}}),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), JSON_BODY_CASES)
def test_null_character_in_a_json_body(tenant, method, path, body, expected):
    response = tenant.client.request(method, tenant.api(path), json=body)
    assert response.status_code == 400, response.text
    assert response.json() == expected


def test_null_character_in_a_body_read_by_hand_whatever_its_content_type(tenant):
    response = tenant.client.post(tenant.api("pnp/setting/"), content=b'{"name": "s\\u0000", "sms_text": "x"}',
                                  headers={"Content-Type": "text/plain"})
    assert response.status_code == 400 and response.json() == {"name": NULL}


def test_null_character_in_a_contact_patch_changes_nothing(tenant):
    (uid,) = seed_contacts(tenant, 1)
    response = tenant.client.patch(tenant.api(f"member/{uid}/"), json={"display_name": "x\x00", "email": "a@b.co"})
    assert response.status_code == 400 and response.json() == {"display_name": NULL}
    contact = tenant.client.get(tenant.api("member/"), params={"line_uid": uid}).json()["results"][0]
    assert contact["email"] is None and contact["display_name"] is None


def test_escaped_backslash_before_u0000_is_not_a_null_character(tenant):
    response = tenant.client.post(tenant.api("tag/"), content=b'{"name": "a\\\\u0000"}',
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 201 and response.json()["name"] == "a\\u0000"


def test_null_character_in_sms_plus_message_answers_text(tenant):
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "s", "status": "enable", "fallback_enabled": True, "sms_text": "hi {{code}}"}).json()
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": setting["id"],
        "data": {"phone_number": "+886912345678", "pnp": {}, "sms": {"code": "1\x00"}}})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Null characters are not allowed."


def test_null_character_in_a_path_is_not_found(tenant):
    response = tenant.client.patch(tenant.api("member/U%00/"), json={"display_name": "x"})
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    response = tenant.client.get("/sms_plus/j/ab%00cd")
    assert response.status_code == 404


def test_null_character_in_custom_segment_form_fields(tenant):
    response = tenant.client.post(tenant.api("custom_segment/"), data={"name": "s\x00", "description": "d"},
                                  files={"file": ("list.csv", b"line_uid\nU" + b"0" * 32 + b"\n", "text/csv")})
    assert response.status_code == 400 and response.json() == {"name": NULL}


def test_null_character_in_an_uploaded_list_refuses_it(tenant):
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "s", "status": "enable", "fallback_enabled": True, "sms_text": "hi"}).json()
    csv = b"phone_number,name\n+886912345678,a\x00b\n"
    response = tenant.client.post(tenant.api(f"pnp/setting/{setting['id']}/upload/"),
                                  files={"file": ("list.csv", csv, "text/csv")})
    # the shared file reader names the line (it refuses NULs in every uploaded CSV)
    assert response.status_code == 400 and response.json() == {
        "file": ["The file is not a CSV file: line 2 contains a NUL character."]}


def test_authentication_is_answered_before_the_input(anon):
    response = anon.post("/openapi/v1/tag/", json={"name": "a\x00"})
    assert response.status_code == 401
    response = anon.get("/openapi/v1/event/", params={"name": "a\x00"})
    assert response.status_code == 401


# --- dates and datetimes at the ends of the calendar -----------------------------------------

@pytest.mark.parametrize(("field", "value"), [("updated_at_min", "0001-01-01"), ("updated_at_max", "9999-12-31")])
def test_member_filter_dates_whose_day_is_not_a_utc_range(tenant, field, value):
    response = tenant.client.get(tenant.api("member/"), params={field: value})
    assert response.status_code == 400 and response.json() == {field: DATE_RANGE}


def test_member_filter_dates_just_inside_the_calendar(tenant):
    response = tenant.client.get(tenant.api("member/"), params={"updated_at_min": "0001-01-02",
                                                                 "updated_at_max": "9999-12-30"})
    assert response.status_code == 200


@pytest.mark.parametrize(("field", "value"), [("start_date", "0001-01-01"), ("end_date", "9999-12-31")])
def test_event_report_dates_whose_day_is_not_a_utc_range(tenant, field, value):
    event = tenant.client.post(tenant.api("event/"), json={"name": "e"}).json()
    response = tenant.client.get(tenant.api(f"event/{event['id']}/report/"), params={field: value})
    assert response.status_code == 400 and response.json() == {field: DATE_RANGE}


@pytest.mark.parametrize(("low", "high", "errors"), [
    ("0001-01-01T00:00+08:00", "2024-01-01T00:00Z", {"updated_at_min": DATETIME_RANGE}),
    ("2024-01-01T00:00Z", "9999-12-31T23:59-08:00", {"updated_at_max": DATETIME_RANGE}),
    ("0001-01-01T00:00", "9999-12-31T23:59:59", {"updated_at_min": DATETIME_RANGE}),  # the org's +08:00
])
def test_sms_plus_status_query_datetimes_out_of_range(tenant, low, high, errors):
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={"name": "s", "fallback_enabled": True, "sms_text": "hi"}).json()
    response = tenant.client.get(tenant.api("pnp/message/"), params={
        "pnp_setting_id": setting["id"], "updated_at_min": low, "updated_at_max": high})
    assert response.status_code == 400, response.text
    assert response.json() == errors


def test_sms_plus_status_query_extreme_datetimes_in_range(tenant):
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={"name": "s", "fallback_enabled": True, "sms_text": "hi"}).json()
    response = tenant.client.get(tenant.api("pnp/message/"), params={
        "pnp_setting_id": setting["id"], "updated_at_min": "0001-01-01T00:00Z",
        "updated_at_max": "9999-12-31T23:59Z"})
    assert response.status_code == 200 and response.json()["results"] == []


# --- strings longer than their column, and shapes read by hand --------------------------------

LONG = "x" * 3000


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("POST", "pnp/points/", {"amount": 1, "note": LONG}, {"note": ["Ensure this field has no more than 255 characters."]}),
    ("PUT", "pnp/sms_provider/", {"provider": "twilio", "base_url": "http://" + LONG},
     {"base_url": ["Ensure this field has no more than 512 characters."]}),
    ("PUT", "pnp/sms_provider/", {"provider": "twilio", "credentials": 5},
     {"credentials": ["Expected an object of strings."]}),
    ("POST", "pnp/setting/", {"name": "s", "whatsapp_template_name": LONG},
     {"whatsapp_template_name": ["Ensure this field has no more than 512 characters."]}),
    ("POST", "pnp/setting/", {"name": "s", "whatsapp_language": LONG},
     {"whatsapp_language": ["Ensure this field has no more than 32 characters."]}),
])
def test_sms_plus_values_longer_than_their_column(tenant, method, path, body, expected):
    response = tenant.client.request(method, tenant.api(path), json=body)
    assert response.status_code == 400, response.text
    assert response.json() == expected


def test_multicast_line_uid_longer_than_its_column(tenant):
    template = tenant.client.post(tenant.api("template/"), json={
        "name": "t", "messages": [{"type": "text", "text": "hi"}]}).json()
    response = tenant.client.post(tenant.api("direct_message/multicast/"), json={
        "template_id": template["id"], "data": [{"line_uid": LONG}]})
    assert response.status_code == 400
    assert response.json() == {"data": [{"line_uid": ["Ensure this field has no more than 64 characters."]}]}
    response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "line_uids": [LONG], "data": {}})
    assert response.status_code == 400
    assert response.json() == {"line_uids": {"0": ["Ensure this field has no more than 64 characters."]}}


def test_null_character_deep_in_a_json_body(tenant):
    """A document nested deeper than Python's recursion limit allows a recursive walk (a 500
    before): answered at its field, the path shown to its first 32 levels."""
    depth = 900
    body = '{"name": ' + "[" * depth + '"a\\u0000"' + "]" * depth + "}"
    response = tenant.client.post(tenant.api("tag/"), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    node = response.json()["name"]
    for _ in range(31):  # "name" and 31 indexes: ERROR_PATH_MAX_DEPTH
        node = node["0"]
    assert node == NULL

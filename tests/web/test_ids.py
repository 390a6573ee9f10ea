"""Ids that cannot exist (past 2**63 - 1, negative) answer 404 in a path and a 400 field error in
a query or body, on every route the application has, never a 500."""

from __future__ import annotations

import re
from typing import Any

import pytest

from openmaac.app import create_app
from openmaac.web.limits import MAX_ID

OUT_OF_RANGE = [2**63, 2**64, -1]
# The provider callbacks' organisation id is their own receivers' business (signed URLs).
NOT_API = re.compile(r"^/(sms_plus/callbacks|_simulators)/")


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the application's route table, as its OpenAPI document lists it."""
    document = create_app(embedded_worker=False, simulators=False).openapi()
    return [(method.upper(), path, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if not NOT_API.match(path)], document


OPERATIONS, DOCUMENT = _operations()


def _int_params(operation: dict[str, Any], where: str) -> list[str]:
    names = []
    for param in operation.get("parameters", []):
        schema = param.get("schema", {})
        types = {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}
        if param["in"] == where and "integer" in types:
            names.append(param["name"])
    return names


PATH_ID_CASES = [(method, path, name) for method, path, op in OPERATIONS for name in _int_params(op, "path")]
QUERY_INT_CASES = [(path, name) for method, path, op in OPERATIONS if method == "GET" and "{" not in path
                   for name in _int_params(op, "query")]


def test_the_route_table_has_id_routes():
    assert len(PATH_ID_CASES) >= 28
    assert ("GET", "/openapi/v1/tag/{tag_id}/", "tag_id") in PATH_ID_CASES


def _url(path: str, name: str, value: int) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(value) if m.group(1) == name else "1", path)


@pytest.mark.parametrize(("method", "path", "name"), PATH_ID_CASES)
def test_path_id_that_cannot_exist_is_not_found(tenant, method, path, name):
    headers, answer = {}, {"detail": "Not found."}
    if path.startswith("/cdh/"):  # the CDH API: its own key, FastAPI's words
        from helpers import org_of
        from openmaac.cdh.keys import create_cdh_key
        from openmaac.db.engine import get_database

        with get_database().write() as session:
            headers, answer = {"apikey": create_cdh_key(session, org_of(tenant))}, {"detail": "Not Found"}
    for value in OUT_OF_RANGE:
        response = tenant.client.request(method, _url(path, name, value), json={}, headers=headers)
        assert response.status_code == 404, (value, response.text)
        assert response.json() == answer


@pytest.mark.parametrize(("path", "name"), QUERY_INT_CASES)
def test_query_integer_out_of_range_is_a_field_error(tenant, path, name):
    for value in OUT_OF_RANGE:
        response = tenant.client.get(path, params={name: str(value)})
        assert response.status_code == 400, (value, response.text)
        assert list(response.json()) == [name]


def _unbounded_integers(schema: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return []
        seen.add(name)
        return _unbounded_integers(DOCUMENT["components"]["schemas"][name], name, seen)
    found = []
    if schema.get("type") == "integer" and "maximum" not in schema and "exclusiveMaximum" not in schema:
        found.append(where)
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found += _unbounded_integers(option, where, seen)
    for name, prop in (schema.get("properties") or {}).items():
        found += _unbounded_integers(prop, f"{where}.{name}", seen)
    if isinstance(schema.get("items"), dict):
        found += _unbounded_integers(schema["items"], f"{where}[]", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        found += _unbounded_integers(schema["additionalProperties"], f"{where}{{}}", seen)
    return found


def test_every_integer_of_every_request_body_is_bounded():
    unbounded: list[str] = []
    for method, path, operation in OPERATIONS:
        for content in (operation.get("requestBody") or {}).get("content", {}).values():
            unbounded += _unbounded_integers(content.get("schema", {}), f"{method} {path}", set())
    assert unbounded == []


def _pk(value: int) -> list[str]:
    return [f'Invalid pk "{value}" - object does not exist.']


BODY_CASES: list[tuple[str, str, Any, Any]] = []
for _value in OUT_OF_RANGE:
    BODY_CASES += [
        ("POST", "taglinemember/", {"tag_id": _value, "line_uid": "U" + "0" * 32}, {"tag_id": _pk(_value)}),
        ("DELETE", "taglinemember/", {"tag_id": _value}, {"tag_id": _pk(_value)}),
        ("POST", "segment/", {"name": "s", "tags": [{"status": "with", "tag_id": _value}]},
         {"tags": {"0": {"tag_id": _pk(_value)}}}),
        ("POST", "direct_message/push/", {"template_id": _value, "data": {"line_uid": "U" + "0" * 32}},
         {"template_id": _pk(_value)}),
        ("POST", "direct_message/push/", {"template_id": 1, "event_id": _value, "data": {}},
         {"event_id": _pk(_value)}),
        ("POST", "direct_message/multicast/", {"template_id": _value, "data": [{"line_uid": "U"}]},
         {"template_id": _pk(_value)}),
        ("POST", "direct_message/enhanced_multicast/", {"template_id": 1, "event_id": _value,
                                                        "line_uids": ["U"], "data": {}}, {"event_id": _pk(_value)}),
    ]
BODY_CASES += [("POST", "pnp/setting/", {"name": "s", "line_push_template_id": value},
                {"line_push_template_id": _pk(value)}) for value in (2**63, -1)]
BODY_CASES += [
    ("POST", "tag/", {"name": "t", "available_days": 2**63},
     {"available_days": ["Ensure this value is less than or equal to 1000000."]}),
    ("POST", "pnp/points/", {"amount": 2**63}, {"amount": ["Ensure this value is less than or equal to 1000000000."]}),
    ("PUT", "pnp/sms_provider/", {"provider": "twilio", "retry_window_minutes": 2**63},
     {"retry_window_minutes": ["Ensure this value is less than or equal to 2147483647."]}),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), BODY_CASES)
def test_body_id_out_of_range_is_a_field_error(tenant, method, path, body, expected):
    response = tenant.client.request(method, tenant.api(path), json=body)
    assert response.status_code == 400, response.text
    assert response.json() == expected


def test_webhook_replay_of_out_of_range_delivery_is_a_field_error(tenant):
    webhook = tenant.client.post(tenant.api("webhook/"), json={"url": "http://127.0.0.1:9/x",
                                                               "topics": ["contact.tag.add"]}).json()
    response = tenant.client.post(tenant.api(f"webhook/{webhook['id']}/replay/"), json={"delivery_ids": [2**63]})
    assert response.status_code == 400
    assert response.json() == {"delivery_ids": {"0": _pk(2**63)}}


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, "99999999999999999999"])
def test_sms_plus_ids_out_of_range(tenant, value):
    """SMS+ bodies are read by hand (text/plain errors): an id no row can have is not found."""
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={"pnp_setting_id": value, "data": {}})
    assert (response.status_code, response.text) == (400, "pnp setting not found")
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "s", "status": "enable", "fallback_enabled": True, "sms_text": "hi"}).json()
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": setting["id"], "event_id": value,
        "data": {"phone_number": "+886912345678", "pnp": {}, "sms": {}}})
    assert response.status_code == 400 and response.text in ("event not found",
                                                             "this value does not match the required pattern")
    response = tenant.client.get(tenant.api("pnp/message/"), params={
        "pnp_setting_id": str(value), "updated_at_min": "2024-01-01T00:00:00Z", "updated_at_max": "2024-01-02T00:00:00Z"})
    assert response.status_code == 404 and response.json() == {"detail": "pnp_setting_id not found"}


def test_largest_id_is_an_ordinary_unknown_id(tenant):
    response = tenant.client.get(tenant.api(f"tag/{MAX_ID}/"))
    assert response.status_code == 404
    response = tenant.client.get(tenant.api("member/"), params={"member_id": str(MAX_ID)})
    assert response.status_code == 200 and response.json()["results"] == []

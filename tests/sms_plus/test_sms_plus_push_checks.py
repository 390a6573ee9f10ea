"""The SMS+ push's checks read everything in one statement: their order and texts stay those of
MAAC OpenAPI v1.1.48 (scenario, data, event, the entry, the LINE push template, approval), and
another organisation's event or template is not found."""

from __future__ import annotations

import os
from typing import Any

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Order {{order_number}}"}]
PHONE = "+886912777001"


def scenario(tenant: Any, **fields: Any) -> int:
    body = {"name": "到貨通知", "pnp_enabled": True, "pnp_messages": PNP_CONTENT, "pnp_approval_status": "approved",
            "fallback_enabled": True, "sms_text": "Order {{order_number}}", "fallback_period": 40000, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def template(tenant: Any) -> int:
    response = tenant.client.post(tenant.api("template/"), json={
        "name": "notice", "messages": [{"type": "text", "text": "Hi {{order}}"}]})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def event(tenant: Any) -> int:
    response = tenant.client.post(tenant.api("event/"), json={"name": "orders"})
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


def entry(**fields: Any) -> dict[str, Any]:
    return {"phone_number": PHONE, "pnp": {"order_number": "A1"}, "sms": {"order_number": "A1"}, **fields}


def test_events_and_line_push_templates_are_checked_in_the_spec_order(tenant: Any, make_tenant: Any) -> None:
    other = make_tenant()
    theirs_event, theirs_template = event(other), template(other)
    mine_event, mine_template = event(tenant), template(tenant)
    sid = scenario(tenant, line_push_enabled=True)
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 100}).status_code == 200

    def post(body: dict[str, Any]) -> tuple[int, str]:
        response = tenant.client.post(tenant.api("pnp/message/push/"), json=body)
        return response.status_code, response.text

    line_push = {"line_push_template_id": mine_template, "line_push": {"order": "x"}}
    # the scenario before anything else: even with a malformed event id
    assert post({"pnp_setting_id": 999999999, "event_id": "x", "data": entry()}) == (400, "pnp setting not found")
    # data before the event
    assert post({"pnp_setting_id": sid, "event_id": "x"}) == (400, "data field is required")
    # the event: its pattern, then whether this organisation has it
    for bad in ("x", True, 1.5, "-1"):
        assert post({"pnp_setting_id": sid, "event_id": bad, "data": entry(**line_push)}) == \
            (400, "this value does not match the required pattern")
    for missing in (theirs_event, 999999999, "0", 2 ** 63):
        assert post({"pnp_setting_id": sid, "event_id": missing, "data": entry(**line_push)}) == \
            (400, "event not found")
    # the event before the entry's own checks
    assert post({"pnp_setting_id": sid, "event_id": theirs_event, "data": {"pnp": {}}}) == (400, "event not found")
    # the LINE push template: required, then found among this organisation's
    assert post({"pnp_setting_id": sid, "data": entry()}) == (400, "line_push_template_id field is required")
    for missing in (theirs_template, 999999999, "abc", True):
        assert post({"pnp_setting_id": sid, "data": entry(line_push_template_id=missing, line_push={})}) == \
            (400, "line push template not found")
    # the template's parameters are required of line_push
    assert post({"pnp_setting_id": sid, "data": entry(line_push_template_id=mine_template, line_push={})}) == \
        (400, "order field is required")
    # approval last
    tenant.client.patch(tenant.api(f"pnp/setting/{sid}/"), json={"pnp_approval_status": "pending"})
    assert post({"pnp_setting_id": sid, "event_id": mine_event, "data": entry(**line_push)}) == \
        (400, "pnp content is not approved by LINE")
    tenant.client.patch(tenant.api(f"pnp/setting/{sid}/"), json={"pnp_approval_status": "approved"})
    # all well: accepted (no contact has the number, so the LINE push fails and PNP follows)
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": sid, "event_id": str(mine_event), "data": entry(**line_push)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"id", "result"}

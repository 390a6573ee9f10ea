"""SMS+ scenario text fields and points top-ups answer Django REST framework's messages for
what is too long, not an integer, or beyond what the balance column holds."""

from __future__ import annotations

from typing import Any

import pytest

VALID = {"name": "到貨通知", "fallback_enabled": True, "sms_text": "hello", "fallback_period": 1}


def _create(tenant: Any, **fields: Any) -> Any:
    return tenant.client.post(tenant.api("pnp/setting/"), json={**VALID, **fields})


@pytest.mark.parametrize(("fields", "errors"), [
    ({"name": "x" * 1_000_000}, {"name": ["Ensure this field has no more than 255 characters."]}),
    ({"name": "x" * 256}, {"name": ["Ensure this field has no more than 255 characters."]}),
    ({"name": "   "}, {"name": ["This field may not be blank."]}),
    ({"name": None}, {"name": ["This field may not be null."]}),
    ({"name": ["a"]}, {"name": ["Not a valid string."]}),
    ({"name": "a\x00b"}, {"name": ["Null characters are not allowed."]}),
    ({"whatsapp_template_name": "t" * 513}, {"whatsapp_template_name": [
        "Ensure this field has no more than 512 characters."]}),
    ({"whatsapp_language": "e" * 33}, {"whatsapp_language": ["Ensure this field has no more than 32 characters."]}),
])
def test_scenario_text_fields(tenant: Any, fields: dict[str, Any], errors: dict[str, Any]) -> None:
    response = _create(tenant, **fields)
    assert (response.status_code, response.json()) == (400, errors)
    assert tenant.client.get(tenant.api("pnp/setting/")).json()["results"] == []


def test_scenario_name_at_its_limit_is_kept_trimmed(tenant: Any) -> None:
    created = _create(tenant, name=" " + "x" * 255 + " ")
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "x" * 255
    edited = tenant.client.patch(tenant.api(f"pnp/setting/{created.json()['id']}/"), json={"name": "y" * 256})
    assert (edited.status_code, edited.json()) == (400, {"name": ["Ensure this field has no more than 255 characters."]})


def _top_up(tenant: Any, body: Any) -> Any:
    return tenant.client.post(tenant.api("pnp/points/"), json=body)


@pytest.mark.parametrize(("amount", "message"), [
    (1e30, "A valid integer is required."),
    (2.5, "A valid integer is required."),
    (True, "A valid integer is required."),
    ("ten", "A valid integer is required."),
    ([5], "A valid integer is required."),
    (0, "Ensure this value is greater than or equal to 1."),
    (-3, "Ensure this value is greater than or equal to 1."),
    (1_000_000_001, "Ensure this value is less than or equal to 1000000000."),
    (2**63, "Ensure this value is less than or equal to 1000000000."),
])
def test_points_amount_is_a_drf_integer(tenant: Any, amount: Any, message: str) -> None:
    response = _top_up(tenant, {"amount": amount})
    assert (response.status_code, response.json()) == (400, {"amount": [message]})
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 0


def test_points_integral_values_and_the_balance_ceiling(tenant: Any) -> None:
    assert _top_up(tenant, {"amount": 2.0}).json() == {"balance": 2}
    assert _top_up(tenant, {"amount": "3"}).json() == {"balance": 5}
    assert _top_up(tenant, {"amount": 1_000_000_000}).json() == {"balance": 1_000_000_005}
    assert _top_up(tenant, {"amount": 999_999_995}).json() == {"balance": 2_000_000_000}
    full = _top_up(tenant, {"amount": 1})
    assert (full.status_code, full.json()) == (400, {"amount": ["Ensure this value is less than or equal to 0."]})
    long_note = _top_up(tenant, {"amount": 1, "note": "n" * 256})
    assert (long_note.status_code, long_note.json()) == (400, {
        "note": ["Ensure this field has no more than 255 characters."]})
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 2_000_000_000

"""A ``line_uid`` of push, multicast and enhanced multicast is at most 64 characters (LINE's are
33): longer ones answer Django REST framework's length message, nothing is stored."""

from __future__ import annotations

from typing import Any

from helpers import create_template, new_line_uid

TOO_LONG = "Ensure this field has no more than 64 characters."


def _template(tenant: Any) -> int:
    return int(create_template(tenant, [{"type": "text", "text": "Flash sale"}])["id"])


def _no_messages(database: Any, tenant: Any) -> bool:
    from sqlalchemy import func, select

    from openmaac.messaging.models import DirectMessage

    with database.read() as session:
        return session.scalar(select(func.count()).select_from(DirectMessage)
                              .where(DirectMessage.organization_id == tenant.id)) == 0


def test_enhanced_multicast_line_uids(tenant: Any, database: Any) -> None:
    url, template_id = tenant.api("direct_message/enhanced_multicast/"), _template(tenant)
    for long_uid in ("U" * 65, "U" * 1_000_000):
        response = tenant.client.post(url, json={"template_id": template_id, "data": {},
                                                 "line_uids": [new_line_uid(), long_uid, " "]})
        assert response.status_code == 400
        assert response.json() == {"line_uids": {"1": [TOO_LONG], "2": ["This field may not be blank."]}}
    assert _no_messages(database, tenant)
    # at the limit (an id LINE would refuse: it fails as "Contact not found" later, as any stranger)
    response = tenant.client.post(url, json={"template_id": template_id, "data": {}, "line_uids": ["U" * 64]})
    assert response.status_code == 200, response.text


def test_multicast_and_push_line_uid(tenant: Any, database: Any) -> None:
    template_id = _template(tenant)
    multicast = tenant.client.post(tenant.api("direct_message/multicast/"), json={
        "template_id": template_id, "data": [{"line_uid": new_line_uid()}, {"line_uid": "U" * 10_000}]})
    assert multicast.status_code == 400
    assert multicast.json() == {"data": [{}, {"line_uid": [TOO_LONG]}]}
    push = tenant.client.post(tenant.api("direct_message/push/"), json={
        "template_id": template_id, "data": {"line_uid": "U" * 65}})
    assert push.status_code == 400
    assert push.json() == {"data": {"line_uid": [TOO_LONG]}}
    assert _no_messages(database, tenant)

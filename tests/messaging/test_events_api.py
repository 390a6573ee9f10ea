"""/openapi/v1/event/ over real HTTP."""

from __future__ import annotations


def test_create_list_get(tenant):
    response = tenant.client.post("/openapi/v1/event/", json={"name": "December marketing news"})
    assert response.status_code == 201
    created = response.json()
    assert created == {"id": created["id"], "name": "December marketing news"}
    tenant.client.post("/openapi/v1/event/", json={"name": "Arrival Notice"})
    tenant.client.post("/openapi/v1/event/", json={"name": "到貨通知"})
    listing = tenant.client.get("/openapi/v1/event/").json()
    assert [e["name"] for e in listing["results"]] == ["到貨通知", "Arrival Notice", "December marketing news"]
    assert listing["next"] is None
    detail = tenant.client.get(f"/openapi/v1/event/{created['id']}/").json()
    assert detail["archived"] is False
    assert detail["created_at"].endswith("+08:00")
    assert set(detail) == {"id", "archived", "name", "created_at"}


def test_partial_name_match(tenant):
    for name in ("Arrival Notice", "General Notice", "Marketing Message", "100% off", "到貨通知"):
        tenant.client.post("/openapi/v1/event/", json={"name": name})
    names = lambda q: [e["name"] for e in tenant.client.get("/openapi/v1/event/", params={"name": q}).json()["results"]]  # noqa: E731
    assert names("notice") == ["General Notice", "Arrival Notice"]
    assert names("到貨") == ["到貨通知"]
    assert names("%") == ["100% off"]
    assert names("_") == []


def test_event_limit(tenant, database):
    from openmaac.db.base import utcnow
    from openmaac.messaging.models import MessageEvent

    with database.write() as session:
        session.execute(MessageEvent.__table__.insert(), [
            {"organization_id": tenant.id, "name": f"e{i}", "created_at": utcnow()} for i in range(999)
        ])
    assert tenant.client.post("/openapi/v1/event/", json={"name": "the 1000th"}).status_code == 201
    response = tenant.client.post("/openapi/v1/event/", json={"name": "one too many"})
    assert response.status_code == 400
    assert response.json() == {"detail": "The number of events has reached the limit"}
    page = tenant.client.get("/openapi/v1/event/").json()
    assert len(page["results"]) == 300 and page["next"]


def test_errors(tenant):
    assert tenant.client.post("/openapi/v1/event/", json={}).json() == {"name": ["This field is required."]}
    assert tenant.client.get("/openapi/v1/event/424242/").status_code == 404

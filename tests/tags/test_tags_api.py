"""Tags and tagging over real HTTP, including expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from helpers import behind_a_lock, new_line_uid, seed_contacts, wait_for


def test_create_get_list(tenant):
    response = tenant.client.post("/openapi/v1/tag/", json={"name": "fake-tag-name", "available_days": 100})
    assert response.status_code == 201
    tag = response.json()
    assert tag == {"id": tag["id"], "name": "fake-tag-name", "available_days": 100}
    permanent = tenant.client.post("/openapi/v1/tag/", json={"name": "vip", "available_days": None}).json()
    assert permanent["available_days"] is None
    no_days = tenant.client.post("/openapi/v1/tag/", json={"name": "no-days"}).json()
    assert no_days["available_days"] is None
    assert tenant.client.get(f"/openapi/v1/tag/{tag['id']}/").json() == tag
    listing = tenant.client.get("/openapi/v1/tag/").json()
    assert [t["name"] for t in listing["results"]] == ["no-days", "vip", "fake-tag-name"]
    assert listing["next"] is None
    assert tenant.client.get("/openapi/v1/tag/", params={"name": "vip"}).json()["results"] == [permanent]


def test_create_errors(tenant):
    assert tenant.client.post("/openapi/v1/tag/", json={}).json() == {"name": ["This field is required."]}
    assert tenant.client.post("/openapi/v1/tag/", json={"name": ""}).json() == {
        "name": ["This field may not be blank."]
    }
    response = tenant.client.post("/openapi/v1/tag/", json={"name": "x", "available_days": "soon"})
    assert response.status_code == 400
    assert response.json() == {"available_days": ["A valid integer is required."]}
    tenant.client.post("/openapi/v1/tag/", json={"name": "dup"})
    response = tenant.client.post("/openapi/v1/tag/", json={"name": "dup"})
    assert response.status_code == 400
    assert response.json() == {"name": ["tag with this name already exists."]}


def test_tag_list_pagination(tenant, database):
    from openmaac.db.base import utcnow
    from openmaac.tags.models import Tag

    with database.write() as session:
        session.execute(Tag.__table__.insert(), [
            {"organization_id": tenant.id, "name": f"t{i}", "available_days": None, "created_at": utcnow()}
            for i in range(305)
        ])
    first = tenant.client.get("/openapi/v1/tag/").json()
    assert len(first["results"]) == 300 and first["next"]
    second = tenant.client.get(f"/openapi/v1/tag/?start={first['next']}").json()
    assert len(second["results"]) == 5 and second["next"] is None


def test_get_unknown_tag_404(tenant):
    assert tenant.client.get("/openapi/v1/tag/999999/").status_code == 404


def test_tag_and_untag_member(tenant):
    (uid,) = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "buyer", "available_days": None}).json()
    response = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid})
    assert response.status_code == 201
    body = response.json()
    assert body["tag_id"] == tag["id"] and body["line_uid"] == uid
    assert body["expired_at"] == "9999-12-31T23:59:59+08:00"
    assert body["created_at"].endswith("+08:00")
    member = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
    assert member["tags"] == ["buyer"]
    assert member["tags_detail"][0]["name"] == "buyer"
    response = tenant.client.request("DELETE", "/openapi/v1/taglinemember/",
                                     json={"tag_id": tag["id"], "line_uid": uid})
    assert response.status_code == 204 and response.content == b""
    member = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
    assert member["tags"] == []


def test_expiring_tag_answers_expiry(tenant):
    (uid,) = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "trial", "available_days": 7}).json()
    before = datetime.now(UTC)
    body = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).json()
    expired_at = datetime.fromisoformat(body["expired_at"])
    created_at = datetime.fromisoformat(body["created_at"])
    assert abs((expired_at - created_at) - timedelta(days=7)) < timedelta(seconds=1)
    assert created_at >= before - timedelta(seconds=1)


def test_retagging_keeps_first_tagged_at(tenant):
    (uid,) = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "again", "available_days": 3}).json()
    first = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).json()
    second = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).json()
    assert second["created_at"] >= first["created_at"]
    assert second["expired_at"] >= first["expired_at"]
    member = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid, "all_tag": 1}).json()["results"][0]
    assert member["tags"] == ["again"]
    tagged_at = datetime.fromisoformat(member["tags_detail"][0]["tagged_at"])
    assert abs(tagged_at - datetime.fromisoformat(first["created_at"])) < timedelta(milliseconds=1)


def test_tag_expiry_hides_then_sweeps(tenant, database):
    """A lapsed tag vanishes from reads at once; the durable sweep job then deletes it."""
    from sqlalchemy import func, select, update

    from openmaac.jobs.models import Job
    from openmaac.tags.models import ContactTag

    a, b = seed_contacts(tenant, 2)
    short = tenant.client.post("/openapi/v1/tag/", json={"name": "short", "available_days": 1}).json()
    keep = tenant.client.post("/openapi/v1/tag/", json={"name": "keep", "available_days": None}).json()
    for uid in (a, b):
        tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": short["id"], "line_uid": uid})
    tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": keep["id"], "line_uid": a})
    with database.read() as session:
        sweeps = session.scalars(select(Job).where(Job.kind == "tag.expire_sweep",
                                                   Job.organization_id == tenant.id)).all()
    assert len(sweeps) == 1, "one sweep per organisation and minute, not one job per link"
    assert sweeps[0].run_at > datetime.now(UTC) + timedelta(hours=23)
    # Travel: make the links lapse a moment ago, and the sweep due now.
    past = datetime.now(UTC) - timedelta(seconds=1)
    with database.write() as session:
        session.execute(update(ContactTag).where(ContactTag.tag_id == short["id"]).values(expired_at=past))
    member = tenant.client.get("/openapi/v1/member/", params={"line_uid": a, "all_tag": 1}).json()["results"][0]
    assert member["tags"] == ["keep"]
    with database.write() as session:
        session.execute(update(Job).where(Job.id == sweeps[0].id).values(run_at=past))
    from openmaac.jobs.worker import Worker  # noqa: F401  (the server's embedded worker runs it)

    def swept() -> bool:
        with database.read() as session:
            left = session.scalar(select(func.count()).select_from(ContactTag)
                                  .where(ContactTag.tag_id == short["id"]))
            job = session.get(Job, sweeps[0].id)
        return left == 0 and job is None

    wait_for(swept, timeout=15)
    with database.read() as session:
        kept = session.scalar(select(func.count()).select_from(ContactTag).where(ContactTag.tag_id == keep["id"]))
    assert kept == 1


def test_taglinemember_errors(tenant):
    (uid,) = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "e"}).json()
    response = tenant.client.post("/openapi/v1/taglinemember/", json={"line_uid": uid})
    assert response.status_code == 400 and response.json() == {"tag_id": ["This field is required."]}
    response = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"]})
    assert response.json() == {"line_uid": ["This field is required."]}
    response = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": "x", "line_uid": uid})
    assert response.json() == {"tag_id": ["A valid integer is required."]}
    response = tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": 987654321, "line_uid": uid})
    assert response.status_code == 404
    response = tenant.client.post("/openapi/v1/taglinemember/",
                                  json={"tag_id": tag["id"], "line_uid": new_line_uid()})
    assert response.status_code == 404
    response = tenant.client.request("DELETE", "/openapi/v1/taglinemember/",
                                     json={"tag_id": tag["id"], "line_uid": new_line_uid()})
    assert response.status_code == 404


def test_untag_without_line_uid_removes_from_everyone(tenant):
    uids = seed_contacts(tenant, 3)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "all"}).json()
    for uid in uids:
        tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid})
    response = tenant.client.request("DELETE", "/openapi/v1/taglinemember/", json={"tag_id": tag["id"]})
    assert response.status_code == 204
    members = tenant.client.get("/openapi/v1/member/").json()["results"]
    assert all(m["tags"] == [] for m in members)


def test_tagging_one_contact_from_many_requests_at_once(tenant):
    """Requests racing to put the same tag on the same contacts all succeed (on PostgreSQL the
    losers of a select-then-insert hit the primary key and answered 500)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    uids = seed_contacts(tenant, 5)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "race", "available_days": 3}).json()

    def tag_all(_: int) -> list[int]:
        with httpx.Client(base_url=str(tenant.client.base_url), headers=dict(tenant.client.headers),
                          timeout=30) as client:
            return [client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).status_code
                    for uid in uids]

    with ThreadPoolExecutor(8) as pool:
        statuses = [status for batch in pool.map(tag_all, range(8)) for status in batch]
    assert statuses == [201] * 40
    for uid in uids:
        member = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
        assert member["tags"] == ["race"]


def test_an_untagging_waiting_for_the_link_lock_announces_nothing_already_removed(tenant, database):
    """Two requests removing the same tag from a member at once: ``contact.tag.remove`` is
    announced once, by the one that removed it; the other, which waited for the first's
    transaction, finds nothing left to announce (PostgreSQL: both announced it)."""

    from sqlalchemy import delete, func, select

    from helpers import org_of
    from openmaac.tags import service
    from openmaac.tags.models import ContactTag
    from openmaac.webhooks.models import WebhookDelivery

    webhook = tenant.client.post("/openapi/v1/webhook/", json={"url": "http://127.0.0.1:9/x",
                                                               "topics": ["contact.tag.remove"]})
    assert webhook.status_code == 201, webhook.text
    [uid] = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "vip"}).json()
    assert tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).status_code == 201

    def untag() -> None:
        with database.write() as session:
            service.remove_tag_from_members(session, org_of(tenant), tag["id"], uid)

    def hold(session):  # the first removal, its link locked until commit
        session.execute(delete(ContactTag).where(ContactTag.tag_id == tag["id"]))

    behind_a_lock(database, hold, untag)
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.organization_id == tenant.id, WebhookDelivery.topic == "contact.tag.remove")) == 0

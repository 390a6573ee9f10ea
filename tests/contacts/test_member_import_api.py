"""POST member/import/ and GET member/import/{task_id}/ over real HTTP."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx

from helpers import new_line_uid, seed_contacts, wait_for


def _import(tenant, body):
    return tenant.client.post("/openapi/v1/member/import/", json=body)


def _done(tenant, task_id, timeout=60):
    def check():
        view = tenant.client.get(f"/openapi/v1/member/import/{task_id}/").json()
        return view if view["status"] == "done" else None

    return wait_for(check, timeout=timeout)


def _run(tenant, body):
    response = _import(tenant, body)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "start importing"
    return _done(tenant, response.json()["id"])


def _member(tenant, **query):
    results = tenant.client.get("/openapi/v1/member/", params={**query, "all_tag": 1}).json()["results"]
    return results[0] if results else None


def test_line_uid_import_updates_and_reports_mismatches(tenant):
    known, blocked = seed_contacts(tenant, 2)
    from sqlalchemy import update

    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        session.execute(update(Contact).where(Contact.line_uid == blocked).values(status="unfollow"))
    stranger = new_line_uid()
    view = _run(tenant, {
        "import_key": "line_uid",
        "data": [
            {"line_uid": known, "line_display_name": "Alan", "email": "alan@example.com",
             "mobile": "0987654321", "customer_id": 1235734897, "gender": "male", "birthday": "2017-05-17",
             "tags": ["tag1", "tag2"]},
            {"line_uid": stranger, "email": "nobody@example.com", "tags": ["tag1"]},
            {"line_uid": blocked, "email": "blocked@example.com"},
        ],
        "tags": ["20200101import"],
    })
    assert view["category"] == "import_member"
    result = view["result"]
    assert result["success"] is True
    assert result["tags"] == ["20200101import"]
    assert (result["total_num"], result["created_num"], result["updated_num"], result["mismatch_num"]) == (3, 0, 1, 2)
    assert result["start_time"].endswith("+08:00") and result["end_time"] >= result["start_time"]
    member = _member(tenant, line_uid=known)
    assert member["email"] == "alan@example.com"
    assert member["mobile"] == "+886987654321"
    assert member["customer_id"] == "1235734897"
    assert member["gender"] == "male" and member["birthday"] == "2017-05-17"
    assert member["line_display_name"] == "Alan" and member["display_name"] == "Alan"
    assert sorted(member["tags"]) == ["20200101import", "tag1", "tag2"]
    # The tags were created; the blocked contact was not touched.
    names = {t["name"] for t in tenant.client.get("/openapi/v1/tag/").json()["results"]}
    assert {"20200101import", "tag1", "tag2"} <= names
    assert _member(tenant, line_uid=blocked)["email"] is None

    # The mismatch CSV: signed, served without a token, tampering or expiry refused.
    link = result["mismatch_export_link"]
    download = httpx.get(link)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert sorted(r["line_uid"] for r in rows) == sorted([stranger, blocked])
    assert {r["email"] for r in rows} == {"nobody@example.com", "blocked@example.com"}
    assert httpx.get(link.replace("signature=", "signature=0")).status_code == 403
    from openmaac.contacts import imports

    task_id = int(link.split("/import/")[1].split("/")[0])
    assert httpx.get(imports.mismatch_link(task_id, now=0)).status_code == 403


def test_blank_fields_do_not_overwrite_and_tags_are_only_added(tenant):
    (uid,) = seed_contacts(tenant, 1, email="keep@example.com", customer_id="C1")
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "old"}).json()
    tenant.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid})
    view = _run(tenant, {"import_key": "line_uid",
                         "data": [{"line_uid": uid, "email": "", "customer_id": None, "mobile": "  ",
                                   "gender": "female", "tags": ["new"]}]})
    assert view["result"]["updated_num"] == 1
    member = _member(tenant, line_uid=uid)
    assert member["email"] == "keep@example.com" and member["customer_id"] == "C1"
    assert member["gender"] == "female"
    assert sorted(member["tags"]) == ["new", "old"]


def test_customer_id_key_creates_missing_contacts_and_updates_known_ones(tenant):
    (uid,) = seed_contacts(tenant, 1, customer_id="C-1")
    view = _run(tenant, {"import_key": "customer_id", "data": [
        {"customer_id": "C-1", "email": "one@example.com"},
        {"customer_id": "C-2", "email": "two@example.com", "line_display_name": "Two", "tags": ["crm"]},
    ]})
    result = view["result"]
    assert (result["total_num"], result["created_num"], result["updated_num"], result["mismatch_num"]) == (2, 1, 1, 0)
    assert result["mismatch_export_link"] is None
    assert _member(tenant, line_uid=uid)["email"] == "one@example.com"
    created = _member(tenant, customer_id="C-2")
    assert created["line_uid"] is None and created["status"] == "unfollow"
    assert created["email"] == "two@example.com" and created["display_name"] == "Two"
    assert created["tags"] == ["crm"]
    # The same rows again: nothing new is created.
    again = _run(tenant, {"import_key": "customer_id", "data": [{"customer_id": "C-2", "gender": "male"}]})
    assert (again["result"]["created_num"], again["result"]["updated_num"]) == (0, 1)


def test_email_and_mobile_keys_match_normalised_values(tenant):
    (a,) = seed_contacts(tenant, 1, email="a@example.com")
    (b,) = seed_contacts(tenant, 1, mobile="+886912345678")
    assert _run(tenant, {"import_key": "email", "data": [{"email": "a@example.com", "customer_id": "X"}]}
                )["result"]["updated_num"] == 1
    assert _run(tenant, {"import_key": "mobile", "data": [{"mobile": "0912345678", "customer_id": "Y"}]}
                )["result"]["updated_num"] == 1
    assert _member(tenant, line_uid=a)["customer_id"] == "X"
    assert _member(tenant, line_uid=b)["customer_id"] == "Y"


def test_customer_id_moves_from_its_previous_holder(tenant):
    first, second = seed_contacts(tenant, 2)
    tenant.client.patch(f"/openapi/v1/member/{first}/", json={"customer_id": "CID"})
    _run(tenant, {"import_key": "line_uid", "data": [{"line_uid": second, "customer_id": "CID"}]})
    assert _member(tenant, line_uid=first)["customer_id"] is None
    assert _member(tenant, line_uid=second)["customer_id"] == "CID"


def test_failed_result_counts_every_error_and_changes_nothing(tenant):
    uids = seed_contacts(tenant, 3)
    view = _run(tenant, {"import_key": "line_uid", "data": [
        {"line_uid": uids[0], "gender": "robot", "email": "ok@example.com"},
        {"line_uid": uids[1], "mobile": "12", "birthday": "2020-13-45"},
        {"line_uid": uids[1], "favourite_colour": "blue"},
        {"line_uid": "", "birthday": "17/05/2017"},
        {"email": "x@example.com"},
    ]})
    assert view["status"] == "done"
    assert view["result"] == {
        "success": False, "blank_error": 1, "miss_fields": ["line_uid"], "gender_error": 1, "mobile_error": 1,
        "birthday_error": 2, "useless_fields": ["favourite_colour"], "duplicate_error": 1,
        "email_error": 0, "length_error": 0,
    }
    assert _member(tenant, line_uid=uids[0])["email"] is None
    assert set(view) == {"category", "status", "result", "created_at", "updated_at"}


def test_blank_and_duplicate_errors_as_in_the_spec_sample(tenant):
    view = _run(tenant, {"import_key": "customer_id", "data": [
        {"customer_id": "A"}, {"customer_id": "A"}, {"customer_id": "   "}]})
    result = view["result"]
    assert result["success"] is False
    assert (result["blank_error"], result["duplicate_error"]) == (1, 1)
    assert result["miss_fields"] == [] and result["useless_fields"] == []


def test_request_shape_errors_and_limits(tenant):
    client = tenant.client
    url = "/openapi/v1/member/import/"
    assert client.post(url, json={}).json() == {"import_key": ["This field is required."],
                                                "data": ["This field is required."]}
    assert client.post(url, json={"import_key": "phone", "data": [{}]}).json() == {
        "import_key": ['"phone" is not a valid choice.']}
    assert client.post(url, json={"import_key": "email", "data": []}).json() == {
        "data": ["This list may not be empty."]}
    assert client.post(url, json={"import_key": "email", "data": [{"email": "a@b.co", "tags": "vip"}]}).json() == {
        "data": {"0": {"tags": ['Expected a list of items but got type "str".']}}}
    too_many = client.post(url, json={"import_key": "email",
                                      "data": [{"email": f"u{i}@example.com"} for i in range(10_001)]})
    assert too_many.status_code == 400
    assert too_many.json() == {"data": ["Ensure this field has no more than 10000 elements."]}
    big = b'{"import_key": "email", "data": [{"email": "' + b"x" * (10 * 1024 * 1024) + b'"}]}'
    too_big = client.post(url, content=big, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert too_big.json() == {"detail": "Request body is too large: at most 10 MB."}
    assert client.post(url, content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400


def test_ten_thousand_rows_in_one_request(tenant):
    view = _run(tenant, {"import_key": "customer_id",
                         "data": [{"customer_id": f"K{i}", "mobile": f"09{i:08d}", "gender": "female"}
                                  for i in range(10_000)],
                         "tags": ["bulk"]})
    result = view["result"]
    assert (result["total_num"], result["created_num"]) == (10_000, 10_000)
    member = _member(tenant, customer_id="K9999")
    assert member["mobile"] == "+886900009999" and member["tags"] == ["bulk"]


def test_one_running_import_per_organisation(tenant, make_tenant):
    from datetime import UTC, datetime

    from sqlalchemy import delete

    from openmaac.contacts.import_models import ImportTask
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database
    from openmaac.jobs.models import Job
    from openmaac.jobs.queue import enqueue

    with get_database().write() as session:
        running = ImportTask(organization_id=tenant.id, status="processing", import_key="email", row_count=1,
                             created_at=utcnow(), updated_at=utcnow())
        session.add(running)
        session.flush()
        # its job, waiting for a retry (a task counts as running while its job does)
        enqueue(session, "member.import", {"task_id": running.id}, organization_id=tenant.id,
                run_at=datetime.now(UTC) + timedelta(days=1), unique_key=f"member.import:{running.id}")
    response = _import(tenant, {"import_key": "email", "data": [{"email": "a@example.com"}]})
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert "another import task is still running" in response.json()["detail"]
    # Another organisation is not held up.
    other = make_tenant()
    assert _import(other, {"import_key": "email", "data": [{"email": "a@example.com"}]}).status_code == 200
    with get_database().write() as session:
        session.get(ImportTask, running.id).status = "done"
        session.execute(delete(Job).where(Job.unique_key == f"member.import:{running.id}"))
    assert _import(tenant, {"import_key": "email", "data": [{"email": "a@example.com"}]}).status_code == 200


def test_fifteen_requests_a_minute(tenant):
    url = "/openapi/v1/member/import/"
    for _ in range(15):
        assert tenant.client.post(url, json={"import_key": "nope"}).status_code == 400
    throttled = tenant.client.post(url, json={"import_key": "email", "data": [{"email": "a@example.com"}]})
    assert throttled.status_code == 429
    assert throttled.json()["detail"].startswith("Request was throttled. Expected available in")
    assert int(throttled.headers["Retry-After"]) >= 1


def test_task_states_and_tenant_walls(tenant, make_tenant):
    response = _import(tenant, {"import_key": "email", "data": [{"email": "a@example.com"}]})
    task_id = response.json()["id"]
    first = tenant.client.get(f"/openapi/v1/member/import/{task_id}/").json()
    assert first["status"] in ("pending", "processing", "done")
    assert first["category"] == "import_member" and first["created_at"].endswith("+08:00")
    _done(tenant, task_id)
    other = make_tenant()
    assert other.client.get(f"/openapi/v1/member/import/{task_id}/").status_code == 404
    assert tenant.client.get("/openapi/v1/member/import/999999999/").json() == {"detail": "Not found."}


def test_expiring_tags_restart_and_lapsed_tags_are_added_again(tenant):
    (uid,) = seed_contacts(tenant, 1)
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "week", "available_days": 7}).json()
    from sqlalchemy import select

    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database
    from openmaac.tags.models import ContactTag

    _run(tenant, {"import_key": "line_uid", "data": [{"line_uid": uid}], "tags": ["week"]})
    with get_database().write() as session:
        link = session.scalar(select(ContactTag).where(ContactTag.tag_id == tag["id"]))
        assert link.expired_at > utcnow() + timedelta(days=6)
        link.expired_at = utcnow() - timedelta(seconds=1)  # lapsed
    assert _member(tenant, line_uid=uid)["tags"] == []
    _run(tenant, {"import_key": "line_uid", "data": [{"line_uid": uid}], "tags": ["week"]})
    assert _member(tenant, line_uid=uid)["tags"] == ["week"]

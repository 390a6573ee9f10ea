# ruff: noqa: F811  (the fixtures imported from cdh_support are parameters of the tests)
"""Member import and export tasks (``/cdh/v1/member/import``, ``/member/export``, ``/task/{id}``)."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import httpx
import pytest
from cdh_support import add_cdh_webhook, cdh, clock, hooks, received  # noqa: F401  (fixtures)

from helpers import seed_contacts, wait_for


def task(cdh, task_id):
    response = cdh.get(f"/cdh/v1/task/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def finished(cdh, task_id):
    return wait_for(lambda: (body := task(cdh, task_id))["status"] in ("success", "failed") and body, 60)


def start_import(cdh, import_key, rows):
    response = cdh.post("/cdh/v1/member/import", json={"import_key": import_key, "data": rows})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def gate(monkeypatch):
    """Holds every import and export job until the test opens the gate: tasks stay running."""
    from openmaac.cdh import tasks

    opened = threading.Event()
    for name in ("run_import", "run_export"):
        original = getattr(tasks, name)

        def held(task_id, original=original):
            opened.wait(60)
            original(task_id)

        monkeypatch.setattr(tasks, name, held)
    yield opened
    opened.set()


def contact(uid):
    from sqlalchemy import select

    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        return session.scalars(select(Contact).where(Contact.line_uid == uid)).one()


def test_import_by_line_uid_updates_skips_and_counts(tenant, cdh, hooks):
    receiver, url = hooks
    add_cdh_webhook(tenant, url + "/cdh", ["contact.profile.full_name.update", "contact.profile.city.update"])
    cdh.post("/cdh/v1/custom_field", json={"key": "cl_custom_points", "name": "Points", "type": "number"})
    a, b = seed_contacts(tenant, 2, city="Old")
    created = start_import(cdh, "line_uid", [
        {"line_uid": a, "full_name": "Ann", "city": None, "custom_fields": {"cl_custom_points": 12}},
        {"line_uid": b, "company": "B Co"},
        {"line_uid": "Unobody", "full_name": "Ghost"},          # no such contact: skipped
        {"line_uid": b, "gender": "robot"},                      # invalid: error
        {"full_name": "no key"},                                 # no key: error
    ])
    assert (created["category"], created["status"], created["result"]) == ("import_member", "pending", {})
    assert set(created) == {"id", "category", "status", "result", "updated_at", "created_at"}
    done = finished(cdh, created["id"])
    assert done["status"] == "success"
    assert done["result"] == {"total_count": 5, "success_count": 2, "skipped_count": 1, "error_count": 2}
    ann, bee = contact(a), contact(b)
    assert (ann.full_name, ann.city, ann.custom_fields) == ("Ann", None, {"cl_custom_points": 12})
    assert (bee.company, bee.city, bee.full_name) == ("B Co", "Old", None)
    wait_for(lambda: len(receiver.at("/cdh")) >= 2, 20)
    assert sorted(b["event"] for b in received(receiver, "/cdh")) == [
        "contact.profile.city.update", "contact.profile.full_name.update"]


@pytest.mark.parametrize(("import_key", "stored", "given"), [
    ("display_email", {"email": "x@example.com"}, "x@example.com"),
    ("display_mobile", {"mobile": "+886912345678"}, "+886912345678"),
    ("connect_id", {"connect_id": "K-9"}, "K-9"),
    ("customer_id", {"customer_id": "C-9"}, "C-9"),
])
def test_import_keys(tenant, cdh, import_key, stored, given):
    [uid] = seed_contacts(tenant, 1, **stored)
    created = start_import(cdh, import_key, [{import_key: given, "member_level": "gold"},
                                             {import_key: "+886900000000" if "mobile" in import_key else "zz@x.io"
                                              if "email" in import_key else "none", "member_level": "x"}])
    done = finished(cdh, created["id"])
    assert done["result"] == {"total_count": 2, "success_count": 1, "skipped_count": 1, "error_count": 0}
    assert contact(uid).member_level == "gold"


@pytest.mark.parametrize(("body", "loc"), [
    ({"import_key": "email", "data": [{}]}, ["body", "import_key"]),
    ({"import_key": "line_uid", "data": []}, ["body", "data"]),
    ({"import_key": "line_uid", "data": [{"line_uid": "U1"}] * 10_001}, ["body", "data"]),
    ({"import_key": "line_uid", "data": ["U1"]}, ["body", "data", 0]),
    ({"import_key": "line_uid"}, ["body", "data"]),
])
def test_invalid_import_is_422(cdh, body, loc):
    response = cdh.post("/cdh/v1/member/import", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_ten_thousand_rows_are_accepted(tenant, cdh):
    uids = seed_contacts(tenant, 50)
    # ~6 MB: more than the JSON API's 4 MB, within the import's 10 MB
    rows = [{"line_uid": uids[i % 50], "city": f"c{i % 50}", "address": "x" * 500} for i in range(10_000)]
    done = finished(cdh, start_import(cdh, "line_uid", rows)["id"])
    assert done["result"]["success_count"] == 10_000 and contact(uids[7]).city == "c7"


def test_eleventh_concurrent_import_is_409_and_three_hours_fail_a_task(tenant, cdh, gate, clock):
    [uid] = seed_contacts(tenant, 1)
    ids = [start_import(cdh, "line_uid", [{"line_uid": uid, "city": str(i)}])["id"] for i in range(10)]
    refused = cdh.post("/cdh/v1/member/import", json={"import_key": "line_uid", "data": [{"line_uid": uid}]})
    assert refused.status_code == 409 and "10" in refused.json()["detail"]
    # another organisation is not affected
    # three hours later the tasks still running fail, and imports are possible again
    clock.advance(timedelta(hours=3, seconds=1))
    failed = task(cdh, ids[0])
    assert (failed["status"], failed["result"]) == ("failed", {"reason": "timeout"})
    again = start_import(cdh, "line_uid", [{"line_uid": uid, "city": "late"}])
    gate.set()
    assert finished(cdh, again["id"])["status"] == "success"
    assert all(task(cdh, i)["status"] == "failed" for i in ids)
    assert contact(uid).city == "late"  # the timed-out tasks wrote nothing


def test_two_hours_fifty_nine_is_not_a_timeout(tenant, cdh, gate, clock):
    [uid] = seed_contacts(tenant, 1)
    created = start_import(cdh, "line_uid", [{"line_uid": uid, "city": "ok"}])
    clock.advance(timedelta(hours=2, minutes=59))
    assert task(cdh, created["id"])["status"] in ("pending", "processing")
    gate.set()
    assert finished(cdh, created["id"])["status"] == "success"


def test_unknown_and_foreign_tasks_are_404(tenant, make_tenant, cdh):
    assert cdh.get("/cdh/v1/task/999999999").status_code == 404
    assert cdh.get("/cdh/v1/task/abc").json() == {"detail": "Not Found"}
    [uid] = seed_contacts(tenant, 1)
    created = start_import(cdh, "line_uid", [{"line_uid": uid}])
    from helpers import org_of
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.db.engine import get_database

    other = make_tenant()
    with get_database().write() as session:
        key = create_cdh_key(session, org_of(other))
    assert cdh.get(f"/cdh/v1/task/{created['id']}", headers={"apikey": key}).status_code == 404


def test_export_csv_columns_link_valid_seven_days(tenant, cdh, clock):
    uid, _ = seed_contacts(tenant, 2)
    cdh.patch("/cdh/v1/member", json={"channel_type": "line", "external_channel_id": "@oa",
                                      "external_member_id": uid,
                                      "data": {"full_name": "Ann", "display_mobile": "+886912345678",
                                               "birthday": "1990-01-02", "account_manager": "Bob"}})
    cdh.patch("/cdh/v1/member", json={"channel_type": "fb", "external_channel_id": "page",
                                      "external_member_id": "fb-1", "data": {"customer_id": "C-fb"}})
    created = cdh.post("/cdh/v1/member/export")
    assert created.status_code == 200 and created.json()["category"] == "export_member"
    done = finished(cdh, created.json()["id"])
    assert done["status"] == "success" and done["result"]["row_count"] == 3
    link = done["result"]["download_url"]
    got = httpx.get(link)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8-sig"))))
    assert list(rows[0]) == ["source", "member_id", "line_uid", "channel_type", "external_member_id", "customer_id",
                             "connect_id", "full_name", "display_name", "display_email", "display_mobile",
                             "gender", "birthday", "region", "city", "address", "company", "member_level",
                             "account_manager"]
    ann = next(r for r in rows if r["line_uid"] == uid)
    assert (ann["source"], ann["channel_type"], ann["external_member_id"], ann["full_name"], ann["display_mobile"],
            ann["birthday"], ann["account_manager"]) == ("maac", "line", uid, "Ann", "+886912345678",
                                                         "1990-01-02", "Bob")
    fb = next(r for r in rows if r["channel_type"] == "fb")
    assert (fb["external_member_id"], fb["customer_id"], fb["line_uid"]) == ("fb-1", "C-fb", "")
    # a tampered link is refused; the link works until 7 days have passed, then not
    assert httpx.get(link.replace("signature=", "signature=0")).status_code == 404
    clock.advance(timedelta(days=7) - timedelta(minutes=1))
    assert httpx.get(link).status_code == 200
    clock.advance(timedelta(minutes=2))
    expired = httpx.get(link)
    assert (expired.status_code, expired.json()) == (410, {"detail": "The download link has expired"})


def test_one_export_at_a_time(tenant, cdh, gate):
    first = cdh.post("/cdh/v1/member/export")
    assert first.status_code == 200
    second = cdh.post("/cdh/v1/member/export")
    assert second.status_code == 409 and second.json() == {"detail": "An export task is already running"}
    gate.set()
    assert finished(cdh, first.json()["id"])["status"] == "success"
    assert cdh.post("/cdh/v1/member/export").status_code == 200


def test_download_link_with_foreign_characters_or_no_signature_is_404(cdh):
    response = cdh.get("/cdh/v1/task/1/download", params={"expires": 1, "signature": "a\u00d0\u00ab"})
    assert response.status_code == 404
    assert cdh.get("/cdh/v1/task/1/download").status_code == 422


def test_huge_integers_in_refused_input_are_answered(tenant, cdh):
    body = '{"import_key": "nope", "data": [{"x": 21036392267149737239494262784}]}'
    response = cdh.post("/cdh/v1/member/import", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "import_key"]
    [uid] = seed_contacts(tenant, 1)
    body = '{"import_key": "line_uid", "data": [{"line_uid": "UID", "x": 21036392267149737239494262784}]}'.replace(
        "UID", uid)
    created = cdh.post("/cdh/v1/member/import", content=body.encode(), headers={"Content-Type": "application/json"})
    assert created.status_code == 200
    assert finished(cdh, created.json()["id"])["result"]["error_count"] == 1


def test_import_moves_a_customer_id_from_its_holder(tenant, cdh, hooks):
    receiver, url = hooks
    add_cdh_webhook(tenant, url + "/cdh", ["contact.profile.customer_id.update"])
    holder, taker, other = seed_contacts(tenant, 3)
    cdh.patch("/cdh/v1/member", json={"channel_type": "line", "external_channel_id": "@oa",
                                      "external_member_id": holder, "data": {"customer_id": "C-7"}})
    done = finished(cdh, start_import(cdh, "line_uid", [{"line_uid": taker, "customer_id": "C-7"},
                                                        {"line_uid": other, "customer_id": "C-8"},
                                                        {"line_uid": other, "customer_id": "C-9"}])["id"])
    assert done["result"]["success_count"] == 3
    assert (contact(holder).customer_id, contact(taker).customer_id, contact(other).customer_id) == (
        None, "C-7", "C-9")
    wait_for(lambda: len(receiver.at("/cdh")) >= 4, 20)
    events = sorted(((b["data"]["line_uid"], b["data"]["old_value"], b["data"]["new_value"])
                     for b in received(receiver, "/cdh")), key=repr)
    assert events == sorted([(holder, None, "C-7"), (holder, "C-7", None), (taker, None, "C-7"),
                             (other, None, "C-9")], key=repr)

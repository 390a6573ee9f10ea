"""Imports emit webhooks: ``POST member/import/`` → ``contact.profile.<field>.update`` and
``contact.tag.add``, delivered over real HTTP to a receiver on loopback.

The ``data`` of every event is checked field by field against the contract in
CDH OpenAPI 2.0.1 (its webhook data shapes): profile updates carry line_uid,
customer_id (the value after the change), the field's old and new value; tag events carry
line_uid, customer_id, tag id and name (docs/api.md names them ``tag_id``/``tag_name``).
"""

from __future__ import annotations

import json

import pytest
from webhook_receiver import Receiver, deliveries

from helpers import new_line_uid, seed_contacts, wait_for
from openmaac.webhooks import verify
from openmaac.webhooks.topics import CDH_PROFILE_FIELDS

PROFILE_TOPICS = [f"contact.profile.{field}.update" for field in CDH_PROFILE_FIELDS]
PROFILE_KEYS = ["line_uid", "customer_id", "old_value", "new_value"]
TAG_KEYS = ["line_uid", "customer_id", "tag_id", "tag_name"]


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def add_webhook(tenant, url: str, topics: list[str], style: str = "cdh") -> dict:
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": topics, "style": style})
    assert response.status_code == 201, response.text
    return response.json()


def run_import(tenant, body: dict) -> dict:
    response = tenant.client.post(tenant.api("member/import/"), json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]

    def done():
        view = tenant.client.get(tenant.api(f"member/import/{task_id}/")).json()
        return view if view["status"] == "done" else None

    return wait_for(done, timeout=60)


def tag_ids(tenant) -> dict[str, int]:
    return {t["name"]: t["id"] for t in tenant.client.get(tenant.api("tag/")).json()["results"]}


def received(receiver: Receiver, count: int, secret: str) -> list[tuple[str, dict]]:
    """Wait for ``count`` successful deliveries; check each envelope and signature; return
    (event, data) pairs in arrival order."""
    wait_for(lambda: len(receiver.successful()) >= count, timeout=30)
    out = []
    for request in receiver.successful():
        assert verify(secret, request.body, request.headers["cresclab-signature"])
        body = json.loads(request.body)
        assert json.dumps(body) == request.body.decode("utf-8")  # the spec's byte format
        assert list(body) == ["event", "timestamp", "source", "data"] and body["source"] == "maac"
        out.append((body["event"], body["data"]))
    return out


def _sorted(pairs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return sorted(pairs, key=lambda p: json.dumps(p, sort_keys=True))


def test_line_uid_import_emits_profile_updates_and_tag_adds(tenant, receiver):
    alan, holder = seed_contacts(tenant, 2)
    tenant.client.patch(tenant.api(f"member/{alan}/"), json={"email": "old@example.com", "mobile": "0912345678"})
    tenant.client.patch(tenant.api(f"member/{holder}/"), json={"customer_id": "CID-7"})
    old_tag = tenant.client.post(tenant.api("tag/"), json={"name": "old"}).json()["id"]
    assert tenant.client.post(tenant.api("taglinemember/"),
                              json={"tag_id": old_tag, "line_uid": alan}).status_code == 201
    # Registered after the setup: only the import's events reach it.
    created = add_webhook(tenant, receiver.url, [*PROFILE_TOPICS, "contact.tag.add", "contact.tag.remove"])

    stranger = new_line_uid()
    view = run_import(tenant, {
        "import_key": "line_uid",
        "data": [
            {"line_uid": alan, "line_display_name": "Alan", "email": "new@example.com",
             "mobile": "0912345678",  # the same number once normalised: no event
             "customer_id": "CID-7", "gender": "male", "birthday": "2017-05-17", "tags": ["tag1", "old"]},
            {"line_uid": stranger, "email": "nobody@example.com", "tags": ["tag1"]},  # mismatch: nothing
        ],
        "tags": ["batch"],
    })
    assert view["result"]["success"] is True
    assert (view["result"]["updated_num"], view["result"]["mismatch_num"]) == (1, 1)
    tags = tag_ids(tenant)

    expected = [
        # `holder` loses CID-7 to alan: a profile change of theirs too.
        ("contact.profile.customer_id.update",
         {"line_uid": holder, "customer_id": None, "old_value": "CID-7", "new_value": None}),
        ("contact.profile.display_name.update",
         {"line_uid": alan, "customer_id": "CID-7", "old_value": None, "new_value": "Alan"}),
        ("contact.profile.display_email.update",
         {"line_uid": alan, "customer_id": "CID-7", "old_value": "old@example.com", "new_value": "new@example.com"}),
        ("contact.profile.customer_id.update",
         {"line_uid": alan, "customer_id": "CID-7", "old_value": None, "new_value": "CID-7"}),
        ("contact.profile.gender.update",
         {"line_uid": alan, "customer_id": "CID-7", "old_value": None, "new_value": "male"}),
        ("contact.profile.birthday.update",
         {"line_uid": alan, "customer_id": "CID-7", "old_value": None, "new_value": "2017-05-17"}),
        # Every tagging fires, "old" too although alan already had it (CDH OpenAPI 2.0.1).
        *[("contact.tag.add", {"line_uid": alan, "customer_id": "CID-7", "tag_id": tags[name], "tag_name": name})
          for name in ("batch", "tag1", "old")],
    ]
    # The outbox rows were written with the import: the log is complete once the task is done.
    assert len(deliveries(tenant, created["id"])) == len(expected)
    got = received(receiver, len(expected), created["secret"])
    assert _sorted(got) == _sorted(expected)
    for event, data in got:
        assert list(data) == (TAG_KEYS if event.startswith("contact.tag.") else PROFILE_KEYS)
    # One key per event, and alan's events arrive in the order they were emitted.
    keys = [r.key for r in receiver.successful()]
    assert len(set(keys)) == len(keys) == len(expected)
    alans = [e for e, d in got if d["line_uid"] == alan]
    assert alans == [e for e, d in expected if d["line_uid"] == alan]
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == len(expected), timeout=10)


def test_customer_id_import_created_contacts_emit_tag_adds_only(tenant, receiver):
    (known,) = seed_contacts(tenant, 1, customer_id="C-1", email="c1@example.com")
    cdh = add_webhook(tenant, receiver.url, [*PROFILE_TOPICS, "contact.tag.add"])
    with Receiver() as maac_receiver:
        maac = add_webhook(tenant, maac_receiver.url, ["contact.tag.add"], style="maac")
        view = run_import(tenant, {"import_key": "customer_id", "data": [
            {"customer_id": "C-1", "email": "one@example.com", "mobile": "0987654321", "tags": ["crm"]},
            {"customer_id": "C-2", "email": "two@example.com", "line_display_name": "Two", "tags": ["crm"]},
        ]})
        assert (view["result"]["created_num"], view["result"]["updated_num"]) == (1, 1)
        crm = tag_ids(tenant)["crm"]
        expected = [
            ("contact.profile.display_email.update",
             {"line_uid": known, "customer_id": "C-1", "old_value": "c1@example.com",
              "new_value": "one@example.com"}),
            ("contact.profile.display_mobile.update",  # MAAC's mobile is CDH's display_mobile, in E.164
             {"line_uid": known, "customer_id": "C-1", "old_value": None, "new_value": "+886987654321"}),
            ("contact.tag.add", {"line_uid": known, "customer_id": "C-1", "tag_id": crm, "tag_name": "crm"}),
            # The created contact has no LINE user: line_uid null, no profile-update events.
            ("contact.tag.add", {"line_uid": None, "customer_id": "C-2", "tag_id": crm, "tag_name": "crm"}),
        ]
        assert len(deliveries(tenant, cdh["id"])) == len(expected)
        assert _sorted(received(receiver, len(expected), cdh["secret"])) == _sorted(expected)

        # The same events in MAAC style to the other endpoint: the same data, the same key per event.
        assert len(deliveries(tenant, maac["id"])) == 2
        wait_for(lambda: len(maac_receiver.successful()) == 2, timeout=30)
        cdh_keys = {json.dumps(json.loads(r.body)["data"], sort_keys=True): r.key for r in receiver.successful()}
        for request in maac_receiver.successful():
            assert verify(maac["secret"], request.body, request.headers["cresclab-signature"])
            body = json.loads(request.body)
            assert list(body) == ["timestamp", "topic", "data"] and body["topic"] == "contact.tag.add"
            assert body["timestamp"].endswith("+08:00")
            assert list(body["data"]) == TAG_KEYS
            assert request.key == cdh_keys[json.dumps(body["data"], sort_keys=True)]
        assert _sorted([("contact.tag.add", json.loads(r.body)["data"]) for r in maac_receiver.successful()]) \
            == _sorted([p for p in expected if p[0] == "contact.tag.add"])


def test_customer_id_moving_between_two_imported_contacts(tenant, receiver):
    first, second = seed_contacts(tenant, 2)
    tenant.client.patch(tenant.api(f"member/{first}/"), json={"customer_id": "CID"})
    created = add_webhook(tenant, receiver.url, ["contact.profile.customer_id.update",
                                                 "contact.profile.display_name.update"])
    run_import(tenant, {"import_key": "line_uid", "data": [
        {"line_uid": first, "display_name": "First"},  # in the import, but gives no customer_id
        {"line_uid": second, "customer_id": "CID"},
    ]})
    expected = [
        ("contact.profile.display_name.update",
         {"line_uid": first, "customer_id": None, "old_value": None, "new_value": "First"}),
        ("contact.profile.customer_id.update",
         {"line_uid": first, "customer_id": None, "old_value": "CID", "new_value": None}),
        ("contact.profile.customer_id.update",
         {"line_uid": second, "customer_id": "CID", "old_value": None, "new_value": "CID"}),
    ]
    assert len(deliveries(tenant, created["id"])) == len(expected)
    assert _sorted(received(receiver, len(expected), created["secret"])) == _sorted(expected)


def test_unchanged_values_and_unsubscribed_topics_emit_nothing(tenant, receiver):
    (uid,) = seed_contacts(tenant, 1, customer_id="K", email="k@example.com", mobile="+886911111111",
                           gender="female")
    created = add_webhook(tenant, receiver.url, ["contact.profile.display_email.update"])
    body = {"import_key": "line_uid", "data": [
        {"line_uid": uid, "customer_id": "K", "email": "k@example.com", "mobile": "0911111111",
         "gender": "male", "tags": ["t"]},  # only gender changes, and nobody listens to it or to tags
    ]}
    assert run_import(tenant, body)["result"]["updated_num"] == 1
    assert tenant.client.get(tenant.api("member/"), params={"line_uid": uid}).json()["results"][0]["gender"] == "male"
    assert deliveries(tenant, created["id"]) == []
    # Then an email change does reach it: exactly one event.
    body["data"][0]["email"] = "k2@example.com"
    run_import(tenant, body)
    [log] = deliveries(tenant, created["id"])
    assert log["topic"] == "contact.profile.display_email.update"
    got = received(receiver, 1, created["secret"])
    assert got == [("contact.profile.display_email.update",
                    {"line_uid": uid, "customer_id": "K", "old_value": "k@example.com",
                     "new_value": "k2@example.com"})]


def test_a_failed_import_emits_nothing(tenant, receiver):
    (uid,) = seed_contacts(tenant, 1)
    created = add_webhook(tenant, receiver.url, [*PROFILE_TOPICS, "contact.tag.add"])
    view = run_import(tenant, {"import_key": "line_uid", "data": [
        {"line_uid": uid, "email": "fine@example.com", "tags": ["x"]},
        {"line_uid": uid, "gender": "robot"},
    ]})
    assert view["result"]["success"] is False
    assert deliveries(tenant, created["id"]) == []
    assert receiver.requests == []

"""Tenants are walls: organisation B's token gets 404 for A's ids, and A's rows stay as they were.

``test_every_id_route_hides_other_organisations_rows`` is generated from the route table: every
``/openapi/v1`` route with a path parameter, every method of it, is called as B with A's ids. A
route whose parameter has no factory in ``FACTORIES`` fails the test, so a new route is covered
the day it lands.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from functools import cached_property
from typing import Any

from helpers import create_template, seed_contacts, simulated_friend, wait_for
from openmaac.web.openapi import api_routes

API = "/openapi/v1"


class Organisation:
    """One organisation's objects, created on first use through the API as that organisation."""

    def __init__(self, tenant: Any, base_url: str) -> None:
        self.tenant = tenant
        self.client = tenant.client
        self.base_url = base_url

    def _created(self, response: Any) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    @cached_property
    def line_uid(self) -> str:
        (uid,) = seed_contacts(self.tenant, 1)
        return uid

    @cached_property
    def tag_id(self) -> int:
        tag = self._created(self.client.post(f"{API}/tag/", json={"name": f"tag-{self.tenant.name}"}))
        tagged = self.client.post(f"{API}/taglinemember/", json={"tag_id": tag["id"], "line_uid": self.line_uid})
        assert tagged.status_code == 201, tagged.text
        return int(tag["id"])

    @cached_property
    def template_id(self) -> int:
        return int(create_template(self.tenant, [{"type": "text", "text": "hello {{name}}"}])["id"])

    @cached_property
    def event_id(self) -> int:
        return int(self._created(self.client.post(f"{API}/event/", json={"name": "event"}))["id"])

    @cached_property
    def friend(self) -> str:
        return simulated_friend(self.tenant)

    @cached_property
    def direct_message_id(self) -> int:
        sent = self._created(self.client.post(f"{API}/direct_message/push/", json={
            "template_id": self.template_id, "event_id": self.event_id,
            "data": {"line_uid": self.friend, "name": "A"}}))
        return int(sent["id"])

    @cached_property
    def webhook_id(self) -> int:
        # a URL of this server answering 405 to POST: the test delivery below fails, and is kept
        webhook = self._created(self.client.post(f"{API}/webhook/", json={
            "url": f"{self.base_url}/healthz", "topics": ["contact.tag.add"]}))
        return int(webhook["id"])

    @cached_property
    def delivery_id(self) -> int:
        return int(self._created(self.client.post(f"{API}/webhook/{self.webhook_id}/test/"))["id"])

    @cached_property
    def task_id(self) -> int:
        started = self._created(self.client.post(f"{API}/member/import/", json={
            "import_key": "line_uid", "data": [{"line_uid": self.line_uid, "email": "a@example.com"}]}))
        task_id = int(started["id"])
        wait_for(lambda: self.client.get(f"{API}/member/import/{task_id}/").json()["status"] == "done", timeout=60)
        return task_id

    @cached_property
    def segment_id(self) -> int:
        segment = self._created(self.client.post(
            f"{API}/custom_segment/", data={"name": "crm list"},
            files={"file": ("members.csv", f"{self.line_uid}\n".encode(), "text/csv")}))
        segment_id = int(segment["id"])
        wait_for(lambda: self.client.get(f"{API}/segment/{segment_id}/").json()["status"] == 2, timeout=60)
        return segment_id

    @cached_property
    def pnp_setting_id(self) -> int:
        setting = self._created(self.client.post(f"{API}/pnp/setting/", json={
            "name": "scenario", "fallback_enabled": True, "sms_text": "Order {{order}}", "fallback_period": 1}))
        return int(setting["id"])

    @cached_property
    def upload_id(self) -> int:
        upload = self._created(self.client.post(
            f"{API}/pnp/setting/{self.pnp_setting_id}/upload/",
            files={"file": ("list.csv", b"phone,order\n0912000071,A1\n", "text/csv")}))
        return int(upload["id"])


# Path parameter -> (A's value, A's view of the object, read as A). Every path parameter of
# every /openapi/v1 route must be here.
Reader = Callable[[Organisation], Any]
FACTORIES: dict[str, tuple[Callable[[Organisation], Any], Reader]] = {
    # not an id: a day of the organisation's own events (the wall with events on both sides is
    # tests/cdh/test_behavior_download.py)
    "date": (lambda a: datetime.date.today().isoformat(),
             lambda a: a.client.get(f"{API}/behavior/download/{datetime.date.today().isoformat()}/pageview/").text),
    "line_uid": (lambda a: a.line_uid,
                 lambda a: a.client.get(f"{API}/member/", params={"line_uid": a.line_uid, "all_tag": 1}).json()),
    "tag_id": (lambda a: a.tag_id, lambda a: a.client.get(f"{API}/tag/{a.tag_id}/").json()),
    "template_id": (lambda a: a.template_id, lambda a: a.client.get(f"{API}/template/{a.template_id}/").json()),
    "event_id": (lambda a: a.event_id, lambda a: (a.client.get(f"{API}/event/{a.event_id}/").json(),
                                                  a.client.get(f"{API}/event/{a.event_id}/report/").json())),
    "direct_message_id": (lambda a: a.direct_message_id,
                          lambda a: a.client.get(f"{API}/direct_message/{a.direct_message_id}/").json()),
    "webhook_id": (lambda a: a.webhook_id, lambda a: (
        a.client.get(f"{API}/webhook/{a.webhook_id}/").json(),
        a.client.get(f"{API}/webhook/{a.webhook_id}/secret/").json(),
        a.client.get(f"{API}/webhook/{a.webhook_id}/deliveries/").json())),
    "delivery_id": (lambda a: a.delivery_id,
                    lambda a: a.client.get(f"{API}/webhook/{a.webhook_id}/deliveries/{a.delivery_id}/").json()),
    # (the mismatch link is signed afresh, with a later expiry, at every read)
    "task_id": (lambda a: a.task_id, lambda a: re.sub(r"expires=\w+&signature=\w+", "",
                                                      a.client.get(f"{API}/member/import/{a.task_id}/").text)),
    "segment_id": (lambda a: a.segment_id, lambda a: (
        a.client.get(f"{API}/segment/{a.segment_id}/").json(),
        a.client.get(f"{API}/segment/{a.segment_id}/members/").text)),
    "pnp_setting_id": (lambda a: a.pnp_setting_id,
                       lambda a: a.client.get(f"{API}/pnp/setting/{a.pnp_setting_id}/content/").json()),
    "upload_id": (lambda a: a.upload_id, lambda a: a.client.get(f"{API}/pnp/upload/{a.upload_id}/").json()),
}

# What B sends: a request A could make, so that only the ownership check can refuse it.
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", f"{API}/member/{{line_uid}}/"): {"json": {"display_name": "renamed by B", "email": "b@example.com"}},
    ("PATCH", f"{API}/webhook/{{webhook_id}}/"): {"json": {"is_active": False, "topics": ["contact.tag.remove"]}},
    ("POST", f"{API}/webhook/{{webhook_id}}/replay/"): {"json": {}},
    ("PUT", f"{API}/template/{{template_id}}/"): {
        "json": {"name": "renamed by B", "messages": [{"type": "text", "text": "hi {{x}}"}]}},
    ("PATCH", f"{API}/custom_segment/{{segment_id}}/"): {
        "data": {"name": "renamed by B"}, "files": {"file": ("b.csv", b"U" + b"b" * 32 + b"\n", "text/csv")}},
    ("PATCH", f"{API}/pnp/setting/{{pnp_setting_id}}/"): {"json": {"name": "renamed by B", "status": "disable"}},
    ("POST", f"{API}/pnp/setting/{{pnp_setting_id}}/upload/"): {
        "files": {"file": ("list.csv", b"phone,order\n0912000072,B1\n", "text/csv")}},
    ("POST", f"{API}/pnp/upload/{{upload_id}}/send/"): {"json": {"mapping": {"sms": {"order": "order"}}}},
}

# Routes that are not scoped by the token, with the answer another organisation gets instead.
NOT_TOKEN_SCOPED: dict[tuple[str, str], tuple[int, str]] = {
    **{("GET", f"{API}/behavior/download/{{date}}/{kind}/"):
       (200, "a date, not an id: another organisation gets its own (empty) CSV of that day")
       for kind in ("pageview", "product", "transaction")},
    ("GET", f"{API}/member/import/{{task_id}}/mismatch/"):
        (403, "a signed, expiring link (the signature is the capability): without it, 403"),
}

_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


def _id_routes(app: Any) -> list[tuple[str, str, list[str]]]:
    found = []
    for route in api_routes(app.routes):
        if not route.path_format.startswith(API + "/"):
            continue
        names = _PARAMETER.findall(route.path_format)
        if not names:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, route.path_format, names))
    return found


def test_every_path_parameter_has_a_factory(server):
    routes = _id_routes(server.app)
    assert len(routes) > 25
    missing = {(method, path, name) for method, path, names in routes for name in names if name not in FACTORIES}
    assert not missing, f"add a factory to FACTORIES for: {sorted(missing)}"
    unknown = (set(REQUESTS) | set(NOT_TOKEN_SCOPED)) - {(method, path) for method, path, _ in routes}
    assert not unknown, f"REQUESTS / NOT_TOKEN_SCOPED name no route: {sorted(unknown)}"


def test_every_id_route_hides_other_organisations_rows(server, base_url, make_tenant):
    a = Organisation(make_tenant(), base_url)
    b = Organisation(make_tenant(), base_url)
    routes = _id_routes(server.app)
    names = sorted({name for _, _, route_names in routes for name in route_names if name in FACTORIES})
    ids = {name: FACTORIES[name][0](a) for name in names}
    before = {name: FACTORIES[name][1](a) for name in names}
    # B's own objects exist too, so a wall that only hides empty organisations would be caught
    for name in names:
        FACTORIES[name][0](b)

    wrong: list[str] = []
    for method, path, route_names in routes:
        url = path.format(**{name: ids[name] for name in route_names})
        response = b.client.request(method, url, **REQUESTS.get((method, path), {}))
        expected = NOT_TOKEN_SCOPED.get((method, path), (404, ""))[0]
        if response.status_code != expected:
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        for name in route_names:
            after = FACTORIES[name][1](a)
            if after != before[name]:
                wrong.append(f"{method} {path} changed A's {name}: {before[name]!r} -> {after!r}")
    assert not wrong, "\n".join(wrong)


def test_other_organisations_ids_in_bodies_and_queries(base_url, make_tenant):
    a = Organisation(make_tenant(), base_url)
    b = Organisation(make_tenant(), base_url)
    for name in ("tag_id", "template_id", "event_id", "delivery_id", "pnp_setting_id", "direct_message_id"):
        FACTORIES[name][0](a)
    member_before = FACTORIES["line_uid"][1](a)
    tag_before = FACTORIES["tag_id"][1](a)
    delivery_before = FACTORIES["delivery_id"][1](a)
    direct_message_ids = {a.direct_message_id}
    b_friend = b.friend

    cases: list[tuple[str, str, dict[str, Any], int]] = [
        # tags: A's tag on B's contact, B's tag on A's contact, A's tag removed from everyone
        ("POST", "taglinemember/", {"tag_id": a.tag_id, "line_uid": b.line_uid}, 404),
        ("POST", "taglinemember/", {"tag_id": b.tag_id, "line_uid": a.line_uid}, 404),
        ("DELETE", "taglinemember/", {"tag_id": a.tag_id}, 404),
        ("DELETE", "taglinemember/", {"tag_id": a.tag_id, "line_uid": a.line_uid}, 404),
        # sends with A's template or A's event, and a segment on A's tag: DRF's "Invalid pk" field error
        ("POST", "direct_message/push/", {"template_id": a.template_id, "data": {"line_uid": b_friend}}, 400),
        ("POST", "direct_message/push/", {"template_id": b.template_id, "event_id": a.event_id,
                                          "data": {"line_uid": b_friend, "name": "x"}}, 400),
        ("POST", "direct_message/multicast/", {"template_id": a.template_id,
                                               "data": [{"line_uid": b_friend, "name": "x"}]}, 400),
        ("POST", "direct_message/enhanced_multicast/", {"template_id": a.template_id, "line_uids": [b_friend],
                                                        "data": {"name": "x"}}, 400),
        ("POST", "segment/", {"name": "b", "tags": [{"status": "with", "tag_id": a.tag_id}]}, 400),
    ]
    wrong = []
    for method, path, body, expected in cases:
        response = b.client.request(method, f"{API}/{path}", json=body)
        invalid_pk = expected != 400 or "object does not exist" in response.text
        if response.status_code != expected or not invalid_pk:
            wrong.append(f"{method} {path} {body}: {response.status_code} {response.text[:200]}")
    # replaying A's deliveries through B's own webhook replays nothing
    replay = b.client.post(f"{API}/webhook/{b.webhook_id}/replay/", json={"delivery_ids": [a.delivery_id]})
    if replay.status_code != 200 or replay.json() != {"replayed": 0}:
        wrong.append(f"replay of A's delivery: {replay.status_code} {replay.text[:200]}")
    # SMS+ (as the MAAC SMS+ API answers): A's scenario is unknown to B
    push = b.client.post(f"{API}/pnp/message/push/", json={
        "pnp_setting_id": a.pnp_setting_id, "data": {"phone_number": "+886912000071", "order": "1"}})
    if (push.status_code, push.text) != (400, "pnp setting not found"):
        wrong.append(f"pnp push with A's scenario: {push.status_code} {push.text[:200]}")
    records = b.client.get(f"{API}/pnp/message/", params={
        "pnp_setting_id": a.pnp_setting_id, "updated_at_min": "2020-01-01T00:00:00Z",
        "updated_at_max": "2099-01-01T00:00:00Z"})
    if records.status_code != 404:
        wrong.append(f"pnp records of A's scenario: {records.status_code} {records.text[:200]}")
    # lists never show A's rows
    if b.client.get(f"{API}/member/", params={"line_uid": a.line_uid}).json()["results"]:
        wrong.append("B's member list shows A's contact")
    assert not wrong, "\n".join(wrong)
    assert FACTORIES["line_uid"][1](a) == member_before
    assert FACTORIES["tag_id"][1](a) == tag_before
    assert FACTORIES["delivery_id"][1](a) == delivery_before
    assert {a.direct_message_id} == direct_message_ids


def test_other_organisations_ids_answer_404(make_tenant):
    a, b = make_tenant(), make_tenant()
    (uid,) = seed_contacts(a, 1)
    tag = a.client.post("/openapi/v1/tag/", json={"name": "a-only"}).json()
    template = a.client.post("/openapi/v1/template/", json={
        "name": "a", "messages": [{"type": "text", "text": "hi"}]}).json()
    event = a.client.post("/openapi/v1/event/", json={"name": "a-event"}).json()

    assert b.client.get(f"/openapi/v1/tag/{tag['id']}/").status_code == 404
    assert b.client.get(f"/openapi/v1/template/{template['id']}/").status_code == 404
    assert b.client.get(f"/openapi/v1/event/{event['id']}/").status_code == 404
    assert b.client.patch(f"/openapi/v1/member/{uid}/", json={"gender": "male"}).status_code == 404
    assert b.client.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).status_code == 404
    assert b.client.request("DELETE", "/openapi/v1/taglinemember/",
                            json={"tag_id": tag["id"]}).status_code == 404
    # Lists never show another organisation's rows.
    assert b.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"] == []
    assert b.client.get("/openapi/v1/tag/").json()["results"] == []
    assert b.client.get("/openapi/v1/template/").json()["results"] == []
    assert b.client.get("/openapi/v1/event/").json()["results"] == []
    # And A still sees its own.
    assert a.client.get(f"/openapi/v1/tag/{tag['id']}/").status_code == 200


"""The LINE simulator, second part: push, multicast and PNP as LINE answers them, checked
against LINE's own messaging-api.yml (request and response bodies) and webhook.yml (the PNP
delivery webhook); faults, limits, and users opening and clicking what they received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

import openmaac.channels
from helpers import wait_for
from openmaac.simulators.line.app import create_app

SPEC_DIR = Path(openmaac.channels.__file__).parent / "line_openapi"
HTTP = httpx.Client(timeout=30)
TEXT = [{"type": "text", "text": "hello"}]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Site:
    """A web server on loopback standing for the sender's images, links and webhook receiver.

    GET /img/... -> 200 image; GET /r/... -> 302 to https://example.com/landing; POST -> 200.
    """

    def __init__(self) -> None:
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.posts: list[tuple[dict[str, str], bytes]] = []
        gets, posts = self.gets, self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                gets.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path.startswith("/r/"):
                    self.send_response(302)
                    self.send_header("Location", "https://example.com/landing")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


class Oa:
    def __init__(self, simulator: str, webhook_url: str | None = None) -> None:
        self.sim = simulator
        self.channel_id = str(secrets.randbelow(10**9) + 10**9)
        self.secret = secrets.token_hex(16)
        self.token = secrets.token_urlsafe(32)
        assert HTTP.post(f"{simulator}/_admin/channels", json={
            "channel_id": self.channel_id, "channel_secret": self.secret, "access_token": self.token,
            "webhook_url": webhook_url}).status_code == 200

    def user(self, follow: bool = True, **fields: Any) -> str:
        user_id = str(HTTP.post(f"{self.sim}/_admin/users", json=fields).json()["user_id"])
        if follow:
            HTTP.post(f"{self.sim}/_admin/users/{user_id}/follow", json={"channel_id": self.channel_id})
        return user_id

    def call(self, path: str, body: Any, retry_key: str | None = None, **headers: str) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {self.token}", **headers}
        if retry_key:
            all_headers["X-Line-Retry-Key"] = retry_key
        if isinstance(body, (bytes, str)):
            return HTTP.post(f"{self.sim}{path}", content=body, headers=all_headers)
        return HTTP.post(f"{self.sim}{path}", json=body, headers=all_headers)

    def push(self, to: str, messages: Any = None, retry_key: str | None = None) -> httpx.Response:
        return self.call("/v2/bot/message/push", {"to": to, "messages": messages or TEXT}, retry_key)

    def inbox(self, user_id: str) -> list[dict[str, Any]]:
        return list(HTTP.get(f"{self.sim}/_admin/users/{user_id}/messages",
                             params={"channel_id": self.channel_id}).json())

    def fault(self, kind: str, **fields: Any) -> None:
        assert HTTP.post(f"{self.sim}/_admin/faults",
                         json={"kind": kind, "channel_id": self.channel_id, **fields}).status_code == 201

    def limits(self, **fields: Any) -> dict[str, Any]:
        response = HTTP.post(f"{self.sim}/_admin/channels/{self.channel_id}/limits", json=fields)
        assert response.status_code == 200
        return dict(response.json())


@pytest.fixture
def oa(simulator: str) -> Oa:
    return Oa(simulator)


# ------------------------------------------------------------------------------------------------
# LINE's schemas, with OpenAPI discriminators followed (JSON Schema ignores them)
# ------------------------------------------------------------------------------------------------


class Spec:
    def __init__(self, file: str) -> None:
        self.uri = f"urn:test:{file}"
        self.doc = yaml.safe_load((SPEC_DIR / file).read_text())
        self.schemas = self.doc["components"]["schemas"]
        self.registry: Registry = Registry().with_resource(
            self.uri, Resource.from_contents(self.doc, default_specification=DRAFT4))

    def _subtype(self, name: str, value: Any) -> str | None:
        discriminator = self.schemas[name].get("discriminator")
        if not discriminator or not isinstance(value, dict):
            return None
        target = discriminator["mapping"].get(value.get(discriminator["propertyName"]))
        assert target, f"{value.get(discriminator['propertyName'])!r} is no {name} subtype"
        return str(target.rsplit("/", 1)[-1])

    def _properties(self, name: str) -> dict[str, Any]:
        schema = self.schemas[name]
        props = dict(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            if "$ref" in part:
                props.update(self._properties(part["$ref"].rsplit("/", 1)[-1]))
            props.update(part.get("properties", {}))
        return props

    def validate(self, name: str, instance: Any) -> None:
        jsonschema.Draft4Validator({"$ref": f"{self.uri}#/components/schemas/{name}"},
                                   registry=self.registry).validate(instance)
        target = self._subtype(name, instance)
        if target and target != name:
            self.validate(target, instance)
            return
        for key, prop in self._properties(name).items():
            if key not in instance:
                continue
            ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
            if not ref:
                continue
            ref_name = ref.rsplit("/", 1)[-1]
            values = instance[key] if "items" in prop else [instance[key]]
            for value in values:
                if self._subtype(ref_name, value):
                    self.validate(ref_name, value)


@pytest.fixture(scope="module")
def api() -> Spec:
    return Spec("messaging-api.yml")


@pytest.fixture(scope="module")
def hooks() -> Spec:
    return Spec("webhook.yml")


def check_error(api: Spec, response: httpx.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    api.validate("ErrorResponse", body)
    assert body["message"] == message
    assert response.headers["x-line-request-id"]
    return body


# ------------------------------------------------------------------------------------------------
# push and multicast
# ------------------------------------------------------------------------------------------------

RICH = [
    {"type": "text", "text": "看看 https://example.com/a 👍"},
    {"type": "image", "originalContentUrl": "https://example.com/o.jpg", "previewImageUrl": "https://example.com/p.jpg"},
    {"type": "flex", "altText": "flex", "contents": {
        "type": "bubble", "hero": {"type": "image", "url": "https://example.com/h.png"},
        "body": {"type": "box", "layout": "vertical", "contents": [{"type": "text", "text": "hi"}]},
        "footer": {"type": "box", "layout": "vertical", "contents": [
            {"type": "button", "action": {"type": "uri", "label": "Go", "uri": "https://example.com/go"}}]}}},
    {"type": "template", "altText": "t", "template": {"type": "buttons", "text": "pick", "actions": [
        {"type": "uri", "label": "Web", "uri": "https://example.com/b"},
        {"type": "postback", "label": "P", "data": "x=1"}]}},
    {"type": "imagemap", "baseUrl": "https://example.com/map", "altText": "map",
     "baseSize": {"width": 1040, "height": 1040},
     "actions": [{"type": "uri", "linkUri": "https://example.com/m",
                  "area": {"x": 0, "y": 0, "width": 520, "height": 1040}}]},
]


def test_push_answers_line_shapes_and_records_valid_messages(oa: Oa, api: Spec) -> None:
    user = oa.user()
    key = str(uuid.uuid4())
    body = {"to": user, "messages": RICH}
    api.validate("PushMessageRequest", body)
    response = oa.call("/v2/bot/message/push", body, key)
    assert response.status_code == 200, response.text
    api.validate("PushMessageResponse", response.json())
    sent = response.json()["sentMessages"]
    assert len(sent) == 5 and all(s["id"].isdigit() for s in sent)
    uuid.UUID(response.headers["x-line-request-id"])
    inbox = oa.inbox(user)
    assert [e["message"] for e in inbox] == RICH
    assert [e["message_id"] for e in inbox] == [s["id"] for s in sent]
    for entry in inbox:
        api.validate("Message", entry["message"])
        assert entry["request_id"] == response.headers["x-line-request-id"] and entry["retry_key"] == key


def test_repeated_retry_key_is_409_with_accepted_request_id(oa: Oa, api: Spec) -> None:
    user = oa.user()
    key = str(uuid.uuid4())
    first = oa.push(user, retry_key=key)
    again = oa.push(user, retry_key=key)
    body = check_error(api, again, 409, "The retry key is already accepted")
    assert again.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    assert body["sentMessages"] == first.json()["sentMessages"]
    # the key belongs to the accepted request whatever the body: no second delivery
    assert len(oa.inbox(user)) == 1
    multicast_key = str(uuid.uuid4())
    assert oa.call("/v2/bot/message/multicast", {"to": [user], "messages": TEXT}, multicast_key).json() == {}
    conflict = oa.call("/v2/bot/message/multicast", {"to": [user], "messages": TEXT}, multicast_key)
    # multicast answers no sentMessages, nor does its 409
    assert check_error(api, conflict, 409, "The retry key is already accepted") == {
        "message": "The retry key is already accepted"}
    assert len(oa.inbox(user)) == 2


def test_failed_request_does_not_consume_its_retry_key(oa: Oa, api: Spec) -> None:
    user = oa.user()
    key = str(uuid.uuid4())
    check_error(api, oa.push(user, [{"type": "text"}], retry_key=key), 400, "The request body has 1 error(s)")
    oa.fault("500", endpoint="push")
    check_error(api, oa.push(user, retry_key=key), 500, "Internal server error")
    assert oa.push(user, retry_key=key).status_code == 200


def test_retry_key_must_be_a_uuid(oa: Oa, api: Spec) -> None:
    response = oa.push(oa.user(), retry_key="abc")
    check_error(api, response, 400, "The value of the X-Line-Retry-Key header is invalid. It must be a UUID.")


@pytest.mark.parametrize(("messages", "details"), [
    ([], [{"message": "Size must be between 1 and 5", "property": "messages"}]),
    (TEXT * 6, [{"message": "Size must be between 1 and 5", "property": "messages"}]),
    ([{"type": "bogus"}], [{"message": "Must be one of the following values: [text, textV2, sticker, image, video, "
                                       "audio, location, imagemap, template, flex, coupon]",
                            "property": "messages[0].type"}]),
    ([{"type": "text"}], [{"message": "May not be empty", "property": "messages[0].text"}]),
    ([{"type": "text", "text": ""}], [{"message": "May not be empty", "property": "messages[0].text"}]),
    # 2,501 emoji are 5,002 UTF-16 code units: LINE counts code units
    ([{"type": "text", "text": "👍" * 2501}],
     [{"message": "Length must be between 0 and 5000", "property": "messages[0].text"}]),
    ([{"type": "image", "originalContentUrl": "https://e/x.jpg"}],
     [{"message": "May not be empty", "property": "messages[0].previewImageUrl"}]),
    ([{"type": "flex", "altText": "a", "contents": {"type": "box", "layout": "vertical", "contents": []}}],
     [{"message": "Must be one of the following values: [bubble, carousel]", "property": "messages[0].contents.type"}]),
    ([{"type": "flex", "altText": "a" * 1501, "contents": {"type": "bubble"}}],
     [{"message": "Length must be between 0 and 1500", "property": "messages[0].altText"}]),
])
def test_invalid_messages_are_400_with_lines_details(oa: Oa, api: Spec, messages: Any,
                                                     details: list[dict[str, str]]) -> None:
    user = oa.user()
    response = oa.push(user, messages) if messages else oa.call("/v2/bot/message/push", {"to": user, "messages": []})
    body = check_error(api, response, 400, f"The request body has {len(details)} error(s)")
    assert body["details"] == details
    assert oa.inbox(user) == []


def test_longest_text_passes(oa: Oa) -> None:
    assert oa.push(oa.user(), [{"type": "text", "text": "👍" * 2500}]).status_code == 200


def test_unknown_user_blocked_user_and_bad_requests(oa: Oa, api: Spec) -> None:
    check_error(api, oa.push("U" + secrets.token_hex(16)), 400, "Failed to send messages")
    check_error(api, oa.push("not-a-user-id"), 400, "Failed to send messages")
    blocked = oa.user()
    HTTP.post(f"{oa.sim}/_admin/users/{blocked}/block", json={"channel_id": oa.channel_id})
    stranger = oa.user(follow=False)
    for user in (blocked, stranger):
        response = oa.push(user)
        assert response.status_code == 200
        assert oa.inbox(user) == []
    check_error(api, oa.call("/v2/bot/message/push", "{not json", **{"Content-Type": "application/json"}), 400,
                "The request body could not be parsed as JSON (line: 1, column: 2)")
    response = oa.call("/v2/bot/message/push", "to=x", **{"Content-Type": "application/x-www-form-urlencoded"})
    check_error(api, response, 415, "The content type, application/x-www-form-urlencoded, is not supported")
    response = HTTP.post(f"{oa.sim}/v2/bot/message/push", json={"to": blocked, "messages": TEXT},
                         headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.json()["message"].startswith("Authentication failed")


def test_multicast_limits(oa: Oa, api: Spec) -> None:
    users = [oa.user() for _ in range(2)]
    body = {"to": users, "messages": TEXT}
    api.validate("MulticastRequest", body)
    ok = oa.call("/v2/bot/message/multicast", body)
    assert ok.status_code == 200 and ok.json() == {}
    too_many = oa.call("/v2/bot/message/multicast", {"to": users * 251, "messages": TEXT})
    assert check_error(api, too_many, 400, "The request body has 1 error(s)")["details"] == [
        {"message": "Size must be between 1 and 500", "property": "to"}]
    check_error(api, oa.call("/v2/bot/message/multicast", {"to": [users[0], "U" + "f" * 32], "messages": TEXT}),
                400, "Failed to send messages")
    assert [len(oa.inbox(u)) for u in users] == [1, 1]


def test_multicast_recipients_each_hold_their_own_entries(oa: Oa, site: Site) -> None:
    """A multicast is recorded once for its recipients (a shared record); what each inbox shows
    is still the recipient's own: its own message ids, kept from one read to the next, and its
    own clicks."""
    users = [oa.user() for _ in range(3)]
    blocked = oa.user(follow=False)
    messages = [{"type": "text", "text": f"sale {site.url}/r/sale"}, {"type": "text", "text": "bye"}]
    assert oa.call("/v2/bot/message/multicast", {"to": [*users, blocked], "messages": messages}).status_code == 200
    inboxes = [oa.inbox(u) for u in users]
    assert all([e["message"] for e in inbox] == messages for inbox in inboxes)
    assert all(e["endpoint"] == "multicast" and e["opens"] == [] and e["clicks"] == [] for inbox in inboxes
               for e in inbox)
    ids = [e["message_id"] for inbox in inboxes for e in inbox]
    assert len(set(ids)) == 6 and all(len(i) == 18 and i.isdigit() for i in ids)
    assert [[e["message_id"] for e in oa.inbox(u)] for u in users] == [[e["message_id"] for e in inbox]
                                                                        for inbox in inboxes]
    assert oa.inbox(blocked) == []
    counts = HTTP.get(f"{oa.sim}/_admin/channels/{oa.channel_id}/received").json()
    assert counts == {"total": 6, "users": {u: 2 for u in users}}
    clicked = HTTP.post(f"{oa.sim}/_admin/users/{users[1]}/click", json={}).json()
    assert clicked["message_id"] == inboxes[1][0]["message_id"] and clicked["url"] == f"{site.url}/r/sale"
    assert [[len(e["clicks"]) for e in oa.inbox(u)] for u in users] == [[0, 0], [1, 0], [0, 0]]


def test_rate_limit_and_monthly_quota(oa: Oa, api: Spec) -> None:
    friends = [oa.user() for _ in range(3)]
    assert oa.limits(push={"rate": 0.001, "burst": 2})["push"] == {"rate": 0.001, "burst": 2.0}
    assert oa.push(friends[0]).status_code == 200
    assert oa.push(friends[0]).status_code == 200
    check_error(api, oa.push(friends[0]), 429, "The API rate limit has been exceeded. Try again later.")
    # quota: counted per recipient delivered, blocked users not counted
    HTTP.post(f"{oa.sim}/_admin/users/{friends[2]}/block", json={"channel_id": oa.channel_id})
    oa.limits(monthly_quota=4, quota_used=0)
    assert oa.call("/v2/bot/message/multicast", {"to": friends, "messages": TEXT}).status_code == 200
    assert oa.limits()["quota_used"] == 2
    assert oa.call("/v2/bot/message/multicast", {"to": friends[:2], "messages": TEXT}).status_code == 200
    check_error(api, oa.call("/v2/bot/message/multicast", {"to": friends[:1], "messages": TEXT}),
                429, "You have reached your monthly limit.")


def test_faults(oa: Oa, api: Spec) -> None:
    user = oa.user()
    oa.fault("quota", endpoint="push")
    oa.fault("rate_limit", endpoint="multicast")
    oa.fault("latency", endpoint="push", seconds=0.01)
    faults = HTTP.get(f"{oa.sim}/_admin/faults").json()
    assert [f["kind"] for f in faults if f["channel_id"] == oa.channel_id] == ["quota", "rate_limit", "latency"]
    check_error(api, oa.push(user), 429, "You have reached your monthly limit.")
    check_error(api, oa.call("/v2/bot/message/multicast", {"to": [user], "messages": TEXT}), 429,
                "The API rate limit has been exceeded. Try again later.")
    assert oa.push(user).status_code == 200  # latency, then normal
    assert oa.push(user).status_code == 200
    oa.fault("500_after_accept", endpoint="push")
    check_error(api, oa.push(user), 500, "Internal server error")
    assert len(oa.inbox(user)) == 3  # accepted although it answered 500
    oa.fault("500", count=5)
    assert HTTP.delete(f"{oa.sim}/_admin/faults").status_code == 200
    assert HTTP.get(f"{oa.sim}/_admin/faults").json() == []
    log = HTTP.get(f"{oa.sim}/_admin/requests", params={"channel_id": oa.channel_id}).json()
    assert [r["status"] for r in log] == [429, 429, 200, 200, 500]


# ------------------------------------------------------------------------------------------------
# users open and click
# ------------------------------------------------------------------------------------------------


def test_open_loads_images_like_a_line_client(oa: Oa, site: Site) -> None:
    user = oa.user()
    u = site.url
    messages = [
        {"type": "image", "originalContentUrl": f"{u}/img/o.jpg", "previewImageUrl": f"{u}/img/p.jpg"},
        {"type": "imagemap", "baseUrl": f"{u}/img/map", "altText": "map", "baseSize": {"width": 1040, "height": 520},
         "actions": [{"type": "uri", "linkUri": f"{u}/r/map", "area": {"x": 0, "y": 0, "width": 1, "height": 1}}]},
        {"type": "flex", "altText": "f", "contents": {"type": "carousel", "contents": [
            {"type": "bubble", "hero": {"type": "image", "url": f"{u}/img/hero.png"}},
            {"type": "bubble", "body": {"type": "box", "layout": "baseline", "contents": [
                {"type": "icon", "url": f"{u}/img/icon.png"}, {"type": "text", "text": "x"}]}}]}},
    ]
    sent = oa.push(user, messages).json()["sentMessages"]
    results = [HTTP.post(f"{oa.sim}/_admin/users/{user}/open", json={"message_id": s["id"]}).json() for s in sent]
    assert [[f["url"] for f in r["fetched"]] for r in results] == [
        [f"{u}/img/p.jpg", f"{u}/img/o.jpg"], [f"{u}/img/map/1040"], [f"{u}/img/hero.png", f"{u}/img/icon.png"]]
    assert all(f["status"] == 200 for r in results for f in r["fetched"])
    assert [path for path, _ in site.gets] == ["/img/p.jpg", "/img/o.jpg", "/img/map/1040", "/img/hero.png",
                                               "/img/icon.png"]
    assert all("Line/" in headers["user-agent"] for _, headers in site.gets)
    assert len(oa.inbox(user)[0]["opens"]) == 1
    # without a message id: the latest message
    assert HTTP.post(f"{oa.sim}/_admin/users/{user}/open", json={}).json()["message_id"] == sent[-1]["id"]


def test_click_gets_the_link_and_records_the_redirect(oa: Oa, site: Site) -> None:
    user = oa.user()
    u = site.url
    messages = [{"type": "text", "text": f"sale {u}/r/text now"},
                {"type": "template", "altText": "t", "template": {"type": "confirm", "text": "?", "actions": [
                    {"type": "uri", "label": "yes", "uri": f"{u}/r/yes"},
                    {"type": "message", "label": "no", "text": "no"}]}}]
    text_id, template_id = (s["id"] for s in oa.push(user, messages).json()["sentMessages"])
    links = HTTP.get(f"{oa.sim}/_admin/users/{user}/links", params={"message_id": template_id}).json()
    assert links["links"] == [f"{u}/r/yes"]
    clicked = HTTP.post(f"{oa.sim}/_admin/users/{user}/click", json={"message_id": text_id}).json()
    assert clicked["url"] == f"{u}/r/text" and clicked["status"] == 302
    assert clicked["location"] == "https://example.com/landing"
    clicked = HTTP.post(f"{oa.sim}/_admin/users/{user}/click",
                        json={"message_id": template_id, "url": f"{u}/r/yes"}).json()
    assert clicked["status"] == 302
    assert [path for path, _ in site.gets] == ["/r/text", "/r/yes"]  # the redirect was not followed
    assert HTTP.post(f"{oa.sim}/_admin/users/{user}/click",
                     json={"message_id": template_id, "url": "https://elsewhere/"}).status_code == 400
    assert [len(e["clicks"]) for e in oa.inbox(user)] == [1, 1]


def test_click_without_a_message_id_taps_the_first_link_of_the_latest_message(oa: Oa, site: Site) -> None:
    user = oa.user()
    u = site.url
    oa.push(user, [{"type": "text", "text": f"older {u}/r/old"}])
    messages = [{"type": "text", "text": "hello"},
                {"type": "template", "altText": "t", "template": {"type": "buttons", "text": "?", "actions": [
                    {"type": "uri", "label": "a", "uri": f"{u}/r/first"},
                    {"type": "uri", "label": "b", "uri": f"{u}/r/second"}]}},
                {"type": "image", "originalContentUrl": f"{u}/img/o.jpg", "previewImageUrl": f"{u}/img/p.jpg"}]
    sent = [s["id"] for s in oa.push(user, messages).json()["sentMessages"]]
    listed = HTTP.get(f"{oa.sim}/_admin/users/{user}/links").json()
    assert listed["links"] == [f"{u}/r/first", f"{u}/r/second"] and listed["message_ids"] == sent
    clicked = HTTP.post(f"{oa.sim}/_admin/users/{user}/click", json={}).json()
    assert (clicked["message_id"], clicked["url"]) == (sent[1], f"{u}/r/first")
    clicked = HTTP.post(f"{oa.sim}/_admin/users/{user}/click", json={"index": 1}).json()
    assert (clicked["message_id"], clicked["url"]) == (sent[1], f"{u}/r/second")
    # one message object, as before: by its id
    assert HTTP.post(f"{oa.sim}/_admin/users/{user}/click", json={"message_id": sent[2]}).status_code == 400
    assert [len(e["clicks"]) for e in oa.inbox(user)] == [0, 0, 2, 0]


# ------------------------------------------------------------------------------------------------
# PNP
# ------------------------------------------------------------------------------------------------


def _signed(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["x-line-signature"], expected)
    return dict(json.loads(body))


def test_pnp_push_delivers_and_sends_a_signed_delivery_webhook(simulator: str, site: Site, api: Spec,
                                                               hooks: Spec) -> None:
    oa = Oa(simulator, webhook_url=f"{site.url}/callback")
    oa.limits(pnp_delivery_delay=0.05)
    phone = "+8869" + str(secrets.randbelow(10**8)).zfill(8)
    user = oa.user(follow=False, phone=phone)  # PNP reaches non-friends
    hashed = hashlib.sha256(phone.encode()).hexdigest()
    body = {"to": hashed, "messages": TEXT}
    api.validate("PnpMessagesRequest", body)
    tag = "pnp-tag-" + secrets.token_hex(8)
    response = oa.call("/bot/pnp/push", body, **{"X-Line-Delivery-Tag": tag})
    assert response.status_code == 200 and response.json() == {} and response.headers["x-line-request-id"]
    # without a tag, the E.164 number itself: delivery.data is then the hashed number
    assert oa.call("/bot/pnp/push", {"to": phone, "messages": TEXT}).status_code == 200
    # the simulator sends the delivery events that fall due together in one request, so the
    # two may come as one request or two
    wait_for(lambda: sum(len(json.loads(raw)["events"]) for _, raw in site.posts) == 2, timeout=10)
    data = []
    for headers, raw in site.posts:
        payload = _signed(oa.secret, headers, raw)
        hooks.validate("CallbackRequest", payload)
        for event in payload["events"]:
            hooks.validate("Event", event)
            assert event["type"] == "delivery" and event["source"]["userId"] == user
            data.append(event["delivery"]["data"])
    assert sorted(data) == sorted([tag, hashed])
    assert [(e["endpoint"], e["delivery_tag"]) for e in oa.inbox(user)] == [("pnp", tag), ("pnp", None)]


def test_pnp_failures(simulator: str, site: Site, api: Spec) -> None:
    oa = Oa(simulator, webhook_url=f"{site.url}/callback")
    oa.limits(pnp_delivery_delay=0)
    phone = "+8869" + str(secrets.randbelow(10**8)).zfill(8)
    user = oa.user(phone=phone)
    cannot = ("Failed to send messages. The phone number is not a LINE user or cannot receive LINE "
              "notification messages.")
    check_error(api, oa.call("/bot/pnp/push", {"to": "+886900000001", "messages": TEXT}), 422, cannot)
    oa.fault("pnp_unreachable", endpoint="pnp")
    check_error(api, oa.call("/bot/pnp/push", {"to": phone, "messages": TEXT}), 422, cannot)
    check_error(api, oa.call("/bot/pnp/push", {"to": phone, "messages": TEXT}, str(uuid.uuid4())), 400,
                "The X-Line-Retry-Key header is not supported by this API")
    check_error(api, oa.call("/bot/pnp/push", {"to": phone, "messages": TEXT}, **{"X-Line-Delivery-Tag": "short"}),
                400, "The X-Line-Delivery-Tag header must be between 16 and 100 characters")
    assert oa.inbox(user) == []
    # blocked: 200, nothing delivered, no delivery webhook
    HTTP.post(f"{oa.sim}/_admin/users/{user}/block", json={"channel_id": oa.channel_id})
    posts_before = len(site.posts)
    assert oa.call("/bot/pnp/push", {"to": phone, "messages": TEXT}).status_code == 200
    assert oa.inbox(user) == []
    # a delivered one afterwards proves the webhook path works (and nothing came for the blocked one)
    other_phone = "+8869" + str(secrets.randbelow(10**8)).zfill(8)
    oa.user(follow=False, phone=other_phone)
    assert oa.call("/bot/pnp/push", {"to": other_phone, "messages": TEXT}).status_code == 200
    wait_for(lambda: len(site.posts) == posts_before + 1, timeout=10)
    types = [json.loads(body)["events"][0]["type"] for _, body in site.posts[posts_before:]]
    assert types == ["delivery"]

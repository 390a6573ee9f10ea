"""The LINE simulator, first part: users, follow/block, signed webhooks, the profile API.

The simulator runs as its own uvicorn server here (as `openmaac simulate` runs it), and its
webhooks go to a plain receiver that checks them against LINE's own webhook.yml.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
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

WEBHOOK_YML = Path(openmaac.channels.__file__).parent / "line_openapi" / "webhook.yml"
DOC_URI = "urn:line:webhook.yml"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver on loopback that keeps each raw request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def webhook_doc() -> dict[str, Any]:
    return dict(yaml.safe_load(WEBHOOK_YML.read_text()))


def validate(doc: dict[str, Any], name: str, instance: Any) -> None:
    """Validate against a schema of webhook.yml, following its discriminator mappings.

    JSON Schema ignores OpenAPI's ``discriminator``; so after validating against the named
    schema, every property whose schema is a reference to a discriminated base is validated
    again against the subtype its mapping names.
    """
    schemas = doc["components"]["schemas"]
    registry: Registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT4))
    jsonschema.Draft4Validator({"$ref": f"{DOC_URI}#/components/schemas/{name}"}, registry=registry).validate(instance)

    def subtype(schema_name: str, value: Any) -> str | None:
        discriminator = schemas[schema_name].get("discriminator")
        if not discriminator or not isinstance(value, dict):
            return None
        target = discriminator["mapping"].get(value.get(discriminator["propertyName"]))
        return target.rsplit("/", 1)[-1] if target else None

    def properties(schema_name: str) -> dict[str, Any]:
        schema = schemas[schema_name]
        props = dict(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            if "$ref" in part:
                props.update(properties(part["$ref"].rsplit("/", 1)[-1]))
            props.update(part.get("properties", {}))
        return props

    target = subtype(name, instance)
    if target and target != name:
        validate(doc, target, instance)
        return
    for key, prop in properties(name).items():
        if key in instance and "$ref" in prop:
            ref_name = prop["$ref"].rsplit("/", 1)[-1]
            if subtype(ref_name, instance[key]):
                validate(doc, ref_name, instance[key])


def check_signed(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["x-line-signature"], expected)
    return dict(json.loads(body))


def register(simulator: str, url: str) -> dict[str, str]:
    channel = {"channel_id": str(secrets.randbelow(10**9) + 10**9), "channel_secret": secrets.token_hex(16),
               "access_token": secrets.token_urlsafe(32), "webhook_url": url}
    assert httpx.post(f"{simulator}/_admin/channels", json=channel).status_code == 200
    return channel


def new_user(simulator: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{simulator}/_admin/users", json=fields)
    assert response.status_code == 201
    return dict(response.json())


def test_users_get_line_shaped_ids(simulator: str) -> None:
    user = new_user(simulator, display_name="Amy")
    assert re.fullmatch(r"U[0-9a-f]{32}", user["user_id"])
    assert user["display_name"] == "Amy"
    assert httpx.get(f"{simulator}/_admin/users/{user['user_id']}").json()["friendships"] == {}


def test_follow_block_refollow_send_signed_valid_webhooks(simulator: str, receiver: Receiver,
                                                          webhook_doc: dict[str, Any]) -> None:
    channel = register(simulator, receiver.url)
    user = new_user(simulator, display_name="Ben")
    path = f"{simulator}/_admin/users/{user['user_id']}"
    for action in ("follow", "block", "follow"):
        result = httpx.post(f"{path}/{action}", json={"channel_id": channel["channel_id"]}).json()
        assert result["webhook"] == {"delivered": True, "status": 200, "error": None}
    assert len(receiver.requests) == 3
    bodies = []
    for headers, body in receiver.requests:
        assert headers["content-type"].startswith("application/json")
        parsed = check_signed(channel["channel_secret"], headers, body)
        validate(webhook_doc, "CallbackRequest", parsed)
        for event in parsed["events"]:
            validate(webhook_doc, "Event", event)
        bodies.append(parsed)
    first, blocked, again = (b["events"][0] for b in bodies)
    assert first["type"] == "follow" and first["follow"] == {"isUnblocked": False}
    assert blocked["type"] == "unfollow" and "replyToken" not in blocked
    assert again["type"] == "follow" and again["follow"] == {"isUnblocked": True}
    assert {e["source"]["userId"] for e in (first, blocked, again)} == {user["user_id"]}
    assert len({e["webhookEventId"] for e in (first, blocked, again)}) == 3
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", e["webhookEventId"]) for e in (first, blocked, again))
    assert httpx.get(path).json()["friendships"] == {channel["channel_id"]: "follow"}


def test_message_and_postback_webhooks(simulator: str, receiver: Receiver, webhook_doc: dict[str, Any]) -> None:
    channel = register(simulator, receiver.url)
    user = new_user(simulator)
    path = f"{simulator}/_admin/users/{user['user_id']}"
    httpx.post(f"{path}/message", json={"channel_id": channel["channel_id"], "text": "哈囉 hello"})
    httpx.post(f"{path}/postback", json={"channel_id": channel["channel_id"], "data": "action=buy&id=7"})
    message, postback = (check_signed(channel["channel_secret"], h, b) for h, b in receiver.requests)
    validate(webhook_doc, "CallbackRequest", message)
    validate(webhook_doc, "Event", message["events"][0])
    validate(webhook_doc, "Event", postback["events"][0])
    assert message["events"][0]["message"]["text"] == "哈囉 hello"
    assert postback["events"][0]["postback"] == {"data": "action=buy&id=7"}


def test_profile_api_answers_as_line_does(simulator: str, receiver: Receiver) -> None:
    channel = register(simulator, receiver.url)
    user = new_user(simulator, display_name="Cleo", status_message="hi")
    auth = {"Authorization": f"Bearer {channel['access_token']}"}
    profile_url = f"{simulator}/v2/bot/profile/{user['user_id']}"
    # not a friend yet
    assert httpx.get(profile_url, headers=auth).status_code == 404
    assert httpx.get(profile_url, headers=auth).json() == {"message": "Not found"}
    httpx.post(f"{simulator}/_admin/users/{user['user_id']}/follow", json={"channel_id": channel["channel_id"]})
    response = httpx.get(profile_url, headers=auth)
    assert response.status_code == 200
    assert response.json() == {"userId": user["user_id"], "displayName": "Cleo", "language": "zh-TW",
                               "statusMessage": "hi"}
    # blocked: LINE no longer gives the profile
    httpx.post(f"{simulator}/_admin/users/{user['user_id']}/block", json={"channel_id": channel["channel_id"]})
    assert httpx.get(profile_url, headers=auth).status_code == 404
    # unknown user, bad token, no token
    assert httpx.get(f"{simulator}/v2/bot/profile/U{'0' * 32}", headers=auth).status_code == 404
    bad = httpx.get(profile_url, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["message"].startswith("Authentication failed")
    assert httpx.get(profile_url).status_code == 401


def test_unknown_user_or_channel_and_bad_body(simulator: str, receiver: Receiver) -> None:
    channel = register(simulator, receiver.url)
    user = new_user(simulator)
    assert httpx.post(f"{simulator}/_admin/users/U{'1' * 32}/follow",
                      json={"channel_id": channel["channel_id"]}).status_code == 404
    assert httpx.post(f"{simulator}/_admin/users/{user['user_id']}/follow",
                      json={"channel_id": "nope"}).status_code == 404
    bad = httpx.post(f"{simulator}/_admin/users/{user['user_id']}/follow", json={})
    assert bad.status_code == 400 and bad.json()["message"] == "The request body has 1 error(s)"
    assert receiver.requests == []


def test_unreachable_webhook_is_reported_not_raised(simulator: str) -> None:
    channel = register(simulator, f"http://127.0.0.1:{_free_port()}/callback")
    user = new_user(simulator)
    result = httpx.post(f"{simulator}/_admin/users/{user['user_id']}/follow",
                        json={"channel_id": channel["channel_id"]}).json()
    assert result["webhook"]["delivered"] is False and result["webhook"]["status"] is None
    # LINE keeps the friendship even when the bot server was down
    assert httpx.get(f"{simulator}/_admin/users/{user['user_id']}").json()["friendships"] == {
        channel["channel_id"]: "follow"}

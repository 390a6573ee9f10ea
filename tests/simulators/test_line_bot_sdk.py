"""LINE's official Python SDK (line-bot-sdk from PyPI, linebot.v3) against the simulator.

A client nobody here wrote: pushes, multicasts and PNP pushes must succeed, and LINE-shaped
errors must come back as ``ApiException`` with LINE's status and body. This holds the
simulator to the real API's wire format, not to openmaac's idea of it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from linebot.v3.messaging import (
    ApiClient,
    ApiException,
    Configuration,
    FlexBubble,
    FlexMessage,
    ImageMessage,
    MessagingApi,
    MulticastRequest,
    PnpMessagesRequest,
    PushMessageRequest,
    StickerMessage,
    TextMessage,
    ValidateMessageRequest,
)

from helpers import wait_for
from openmaac.simulators.line.app import create_app

HTTP = httpx.Client(timeout=30)


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


class Oa:
    def __init__(self, simulator: str) -> None:
        self.sim = simulator
        self.channel_id = str(secrets.randbelow(10**9) + 10**9)
        self.token = secrets.token_urlsafe(32)
        HTTP.post(f"{simulator}/_admin/channels", json={
            "channel_id": self.channel_id, "channel_secret": secrets.token_hex(16), "access_token": self.token,
        }).raise_for_status()

    def friend(self, **fields: str) -> str:
        user = str(HTTP.post(f"{self.sim}/_admin/users", json=fields).json()["user_id"])
        HTTP.post(f"{self.sim}/_admin/users/{user}/follow", json={"channel_id": self.channel_id})
        return user

    def inbox(self, user: str) -> list[dict[str, object]]:
        return list(HTTP.get(f"{self.sim}/_admin/users/{user}/messages", params={"channel_id": self.channel_id}).json())


@pytest.fixture
def oa(simulator: str) -> Oa:
    return Oa(simulator)


@pytest.fixture
def api(oa: Oa) -> Iterator[MessagingApi]:
    # no retries by urllib3: every answer reaches the SDK as the simulator gave it
    configuration = Configuration(host=oa.sim, access_token=oa.token)
    configuration.retries = 0
    with ApiClient(configuration) as client:
        yield MessagingApi(client)


def test_push_with_the_official_sdk(oa: Oa, api: MessagingApi) -> None:
    user = oa.friend()
    messages = [
        TextMessage(text="hello from line-bot-sdk"),
        StickerMessage(package_id="446", sticker_id="1988"),
        ImageMessage(original_content_url="https://example.com/o.jpg", preview_image_url="https://example.com/p.jpg"),
        FlexMessage.from_dict({"type": "flex", "altText": "flex", "contents": {
            "type": "bubble", "body": {"type": "box", "layout": "vertical",
                                       "contents": [{"type": "text", "text": "hi"}]}}}),
    ]
    key = str(uuid.uuid4())
    response = api.push_message_with_http_info(PushMessageRequest(to=user, messages=messages), x_line_retry_key=key)
    assert response.status_code == 200
    assert len(response.data.sent_messages) == 4
    assert response.headers["x-line-request-id"]
    inbox = oa.inbox(user)
    assert [m["message"]["type"] for m in inbox] == ["text", "sticker", "image", "flex"]  # type: ignore[index]
    assert [m["message_id"] for m in inbox] == [s.id for s in response.data.sent_messages]
    assert isinstance(FlexBubble.from_dict(inbox[3]["message"]["contents"]), FlexBubble)  # type: ignore[index]

    # the same retry key again: 409 as ApiException with LINE's body and header
    with pytest.raises(ApiException) as caught:
        api.push_message(PushMessageRequest(to=user, messages=messages), x_line_retry_key=key)
    assert caught.value.status == 409
    assert caught.value.headers["x-line-accepted-request-id"] == response.headers["x-line-request-id"]
    body = json.loads(caught.value.body)
    assert body["message"] == "The retry key is already accepted"
    assert [s["id"] for s in body["sentMessages"]] == [s.id for s in response.data.sent_messages]
    assert len(oa.inbox(user)) == 4


def test_multicast_with_the_official_sdk(oa: Oa, api: MessagingApi) -> None:
    users = [oa.friend() for _ in range(3)]
    result = api.multicast(MulticastRequest(to=users, messages=[TextMessage(text="to all")]),
                           x_line_retry_key=str(uuid.uuid4()))
    assert result == {}
    assert [len(oa.inbox(u)) for u in users] == [1, 1, 1]


def test_line_shaped_errors_reach_the_sdk_as_api_exception(oa: Oa, api: MessagingApi) -> None:
    with pytest.raises(ApiException) as caught:
        api.push_message(PushMessageRequest(to="U" + secrets.token_hex(16), messages=[TextMessage(text="x")]))
    assert caught.value.status == 400
    assert json.loads(caught.value.body) == {"message": "Failed to send messages"}

    with pytest.raises(ApiException) as caught:
        api.push_message(PushMessageRequest(to=oa.friend(), messages=[TextMessage(text="x" * 5001)]))
    assert caught.value.status == 400
    assert json.loads(caught.value.body) == {"message": "The request body has 1 error(s)", "details": [
        {"message": "Length must be between 0 and 5000", "property": "messages[0].text"}]}

    HTTP.post(f"{oa.sim}/_admin/faults", json={"kind": "rate_limit", "channel_id": oa.channel_id})
    with pytest.raises(ApiException) as caught:
        api.push_message(PushMessageRequest(to=oa.friend(), messages=[TextMessage(text="x")]))
    assert caught.value.status == 429
    assert json.loads(caught.value.body)["message"] == "The API rate limit has been exceeded. Try again later."

    bad = Configuration(host=oa.sim, access_token="wrong")
    with ApiClient(bad) as client, pytest.raises(ApiException) as caught:
        MessagingApi(client).push_message(PushMessageRequest(to=oa.friend(), messages=[TextMessage(text="x")]))
    assert caught.value.status == 401


def test_pnp_with_the_official_sdk(oa: Oa, api: MessagingApi) -> None:
    phone = "+8869" + str(secrets.randbelow(10**8)).zfill(8)
    user = oa.friend(phone=phone)
    hashed = hashlib.sha256(phone.encode()).hexdigest()
    api.push_messages_by_phone(PnpMessagesRequest(to=hashed, messages=[TextMessage(text="your order shipped")]),
                               x_line_delivery_tag="order-42-abcdefghijk")
    assert [m["delivery_tag"] for m in oa.inbox(user)] == ["order-42-abcdefghijk"]
    with pytest.raises(ApiException) as caught:
        api.push_messages_by_phone(PnpMessagesRequest(to=hashlib.sha256(b"+886900000000").hexdigest(),
                                                      messages=[TextMessage(text="x")]))
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["message"].startswith("Failed to send messages")


# ------------------------------------------------------------------------------------------------
# validating message objects, the quota, paths the simulator does not serve
# ------------------------------------------------------------------------------------------------


def test_validate_message_objects_with_the_official_sdk(oa: Oa, api: MessagingApi) -> None:
    good = ValidateMessageRequest(messages=[TextMessage(text="fine"), StickerMessage(package_id="446",
                                                                                    sticker_id="1988")])
    for call in (api.validate_push, api.validate_reply, api.validate_multicast, api.validate_narrowcast,
                 api.validate_broadcast):
        response = getattr(api, f"{call.__name__}_with_http_info")(good)
        assert response.status_code == 200 and response.headers["x-line-request-id"]
    bad = ValidateMessageRequest(messages=[TextMessage(text="x" * 5001), TextMessage(text="")])
    with pytest.raises(ApiException) as caught:
        api.validate_push(bad)
    assert caught.value.status == 400
    assert json.loads(caught.value.body) == {"message": "The request body has 2 error(s)", "details": [
        {"message": "Length must be between 0 and 5000", "property": "messages[0].text"},
        {"message": "May not be empty", "property": "messages[1].text"}]}
    too_many = HTTP.post(f"{oa.sim}/v2/bot/message/validate/multicast", headers={
        "Authorization": f"Bearer {oa.token}"}, json={"messages": [{"type": "text", "text": "x"}] * 6})
    assert too_many.status_code == 400
    assert too_many.json()["details"] == [{"message": "Size must be between 1 and 5", "property": "messages"}]
    # nothing was sent or counted
    assert api.get_message_quota_consumption().total_usage == 0


def test_quota_and_consumption_with_the_official_sdk(oa: Oa, api: MessagingApi) -> None:
    quota = api.get_message_quota()
    assert quota.type == "none" and quota.value is None
    HTTP.post(f"{oa.sim}/_admin/channels/{oa.channel_id}/limits", json={"monthly_quota": 1000}).raise_for_status()
    quota = api.get_message_quota()
    assert (quota.type, quota.value) == ("limited", 1000)

    friends = [oa.friend() for _ in range(3)]
    blocked = oa.friend()
    HTTP.post(f"{oa.sim}/_admin/users/{blocked}/block", json={"channel_id": oa.channel_id})
    api.push_message(PushMessageRequest(to=friends[0], messages=[TextMessage(text="a"), TextMessage(text="b")]))
    api.multicast(MulticastRequest(to=[*friends, blocked], messages=[TextMessage(text="c")]))
    # one per recipient reached: the push (2 message objects) 1, the multicast 3, the blocked user 0
    assert api.get_message_quota_consumption().total_usage == 4


def test_unserved_paths_answer_like_line(oa: Oa) -> None:
    auth = {"Authorization": f"Bearer {oa.token}"}
    missing = HTTP.get(f"{oa.sim}/v2/bot/no/such/path", headers=auth)
    assert (missing.status_code, missing.json()) == (404, {"message": "Not found"})
    wrong_method = HTTP.get(f"{oa.sim}/v2/bot/message/push", headers=auth)
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"message": "The request method, 'GET', is not supported"}
    assert "POST" in wrong_method.headers["allow"]

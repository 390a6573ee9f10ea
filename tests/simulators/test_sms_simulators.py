"""The Twilio, Mitake and WhatsApp simulators on their own, over real HTTP: wire formats
(Twilio's checked against Twilio's OpenAPI document and Twilio's own Python library), error
shapes, callbacks and the /_admin API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jsonschema
import pytest

from helpers import CallbackReceiver, ServedApp, wait_for
from openmaac.simulators import mitake as mitake_sim
from openmaac.simulators import twilio as twilio_sim
from openmaac.simulators import whatsapp as wa_sim

TWILIO_SPEC = Path("/work/shared/upstream/twilio/twilio_api_v2010.json")
SID, TOKEN = twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
TO = "+886912345678"


@pytest.fixture(scope="module")
def servers() -> Any:
    receiver = CallbackReceiver()
    served = {
        "receiver": ServedApp(receiver.app),
        "twilio": ServedApp(twilio_sim.create_app(callback_delay_ms=10)),
        "mitake": ServedApp(mitake_sim.create_app(callback_delay_ms=10)),
    }
    served["whatsapp"] = ServedApp(wa_sim.create_app(callback_delay_ms=10,
                                                     webhook_url=f"{served['receiver'].url}/wa"))
    yield {**served, "recorder": receiver}
    for item in served.values():
        item.stop()


@pytest.fixture(autouse=True)
def clean(servers: Any) -> None:
    for name in ("twilio", "mitake", "whatsapp"):
        httpx.post(f"{servers[name].url}/_admin/reset").raise_for_status()
    servers["recorder"].requests.clear()


# --- Twilio: the OpenAPI document -----------------------------------------------------------


def _jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a "null" type."""
    if isinstance(node, list):
        return [_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _jsonschema(value) for key, value in node.items()
           if key not in ("nullable", "x-twilio", "description", "examples", "example")}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "$ref" in out:
            out = {"anyOf": [{"$ref": out["$ref"]}, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def message_validator() -> jsonschema.Validator:
    spec = json.loads(TWILIO_SPEC.read_text())
    schema = {"$ref": "#/components/schemas/api.v2010.account.message",
              "components": {"schemas": _jsonschema(spec["components"]["schemas"])}}
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time-rfc-2822", raises=(TypeError, ValueError))
    def rfc2822(value: object) -> bool:
        return not isinstance(value, str) or parsedate_to_datetime(value) is not None

    return jsonschema.Draft7Validator(schema, format_checker=checker)


def twilio_post(servers: Any, data: dict[str, str], auth: tuple[str, str] = (SID, TOKEN)) -> httpx.Response:
    return httpx.post(f"{servers['twilio'].url}{MESSAGES}", data=data, auth=auth)


def test_twilio_201_and_fetch_match_the_openapi_document(servers: Any, message_validator: Any) -> None:
    spec = json.loads(TWILIO_SPEC.read_text())
    properties = set(spec["components"]["schemas"]["api.v2010.account.message"]["properties"])
    response = twilio_post(servers, {"To": TO, "From": "+15005550006", "Body": "Hello! 👍"})
    assert response.status_code == 201
    created = response.json()
    message_validator.validate(created)
    assert set(created) == properties
    assert created["status"] == "queued" and created["direction"] == "outbound-api"
    assert created["num_segments"] == "1" and created["error_code"] is None

    fetch_url = f"{servers['twilio'].url}/2010-04-01/Accounts/{SID}/Messages/{created['sid']}.json"
    fetched = wait_for(lambda: (lambda body: body if body["status"] == "delivered" else None)(
        httpx.get(fetch_url, auth=(SID, TOKEN)).json()))
    message_validator.validate(fetched)
    assert fetched["date_sent"] is not None and fetched["price"].startswith("-")

    service = twilio_post(servers, {"To": TO, "MessagingServiceSid": "MG" + "a" * 32, "Body": "x"}).json()
    message_validator.validate(service)
    assert service["status"] == "accepted" and service["from"] is None


@pytest.mark.parametrize(("data", "auth", "status", "code"), [
    ({"To": "not-a-number", "From": "+15005550006", "Body": "x"}, None, 400, 21211),
    ({"From": "+15005550006", "Body": "x"}, None, 400, 21604),
    ({"To": TO, "Body": "x"}, None, 400, 21603),
    ({"To": TO, "From": "+15005550006"}, None, 400, 21602),
    ({"To": TO, "From": "+15005550006", "Body": "x" * 1601}, None, 400, 21617),
    ({"To": TO, "From": "+15005550006", "Body": "x", "StatusCallback": "ftp://x"}, None, 400, 21609),
    ({"To": TO, "From": "+15005550006", "Body": "x"}, (SID, "wrong"), 401, 20003),
    ({"To": TO, "From": "+15005550006", "Body": "x"}, ("AC" + "9" * 32, TOKEN), 401, 20003),
])
def test_twilio_error_bodies(servers: Any, data: dict[str, str], auth: Any, status: int, code: int) -> None:
    response = twilio_post(servers, data, auth or (SID, TOKEN))
    assert response.status_code == status
    body = response.json()
    assert {"code", "message", "more_info", "status"} <= set(body)
    assert (body["code"], body["status"]) == (code, status)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}" and body["message"]
    if code == 20003:
        assert response.headers["www-authenticate"].startswith("Basic")


def test_twilio_fault_injection_and_admin_record(servers: Any) -> None:
    admin = f"{servers['twilio'].url}/_admin"
    state = httpx.post(f"{admin}/faults", json={
        "blocked_numbers": ["+886911111111"], "invalid_numbers": ["0922222222"], "server_errors": 1,
        "temporary_errors": [{"count": 1, "to": "+886933333333"}]}).json()
    assert state["blocked_numbers"] == ["886911111111"] and state["invalid_numbers"] == ["886922222222"]
    assert httpx.get(f"{admin}/faults").json() == state
    send = {"From": "+15005550006", "Body": "x"}
    assert twilio_post(servers, {**send, "To": TO}).json()["code"] == 20500
    assert twilio_post(servers, {**send, "To": "+886911111111"}).json()["code"] == 21610
    assert twilio_post(servers, {**send, "To": "+886922222222"}).json()["code"] == 21211
    assert twilio_post(servers, {**send, "To": "+886933333333"}).json()["code"] == 20429
    assert twilio_post(servers, {**send, "To": "+886933333333"}).status_code == 201
    assert twilio_post(servers, {**send, "To": TO}).status_code == 201
    listed = httpx.get(f"{admin}/messages", params={"to": "0933333333"}).json()
    assert listed["count"] == 1 and listed["results"][0]["to"] == "+886933333333"
    assert httpx.get(f"{admin}/messages").json()["count"] == 2
    assert httpx.delete(f"{admin}/faults").json()["blocked_numbers"] == []


def test_twilio_callbacks_are_signed_as_twilio_signs(servers: Any) -> None:
    validator_module = pytest.importorskip("twilio.request_validator")
    callback = f"{servers['receiver'].url}/tw?x=1"
    assert twilio_post(servers, {"To": TO, "From": "+15005550006", "Body": "x", "StatusCallback": callback}
                       ).status_code == 201
    wait_for(lambda: len(servers["recorder"].at("/tw")) == 2)
    validator = validator_module.RequestValidator(TOKEN)
    statuses = []
    for record in servers["recorder"].at("/tw"):
        params = dict(parse_qsl(record["body"].decode()))
        assert record["url"] == callback
        assert validator.validate(callback, params, record["headers"]["x-twilio-signature"])
        assert not validator.validate(callback, {**params, "MessageStatus": "x"},
                                      record["headers"]["x-twilio-signature"])
        assert {"AccountSid", "MessageSid", "MessageStatus", "To", "From", "ApiVersion"} <= set(params)
        statuses.append(params["MessageStatus"])
    assert statuses == ["sent", "delivered"]


def test_twilio_python_library_against_the_simulator(servers: Any) -> None:
    rest = pytest.importorskip("twilio.rest")
    base = pytest.importorskip("twilio.base.exceptions")
    client = rest.Client(SID, TOKEN)
    client.api.base_url = servers["twilio"].url
    message = client.messages.create(to=TO, from_="+15005550006", body="中文簡訊")
    assert message.sid.startswith("SM") and message.status == "queued" and message.num_segments == "1"
    assert client.messages(message.sid).fetch().body == "中文簡訊"
    with pytest.raises(base.TwilioRestException) as raised:
        client.messages.create(to="123", from_="+15005550006", body="x")
    assert raised.value.code == 21211 and raised.value.status == 400


# --- Mitake ---------------------------------------------------------------------------------


def mitake_send(servers: Any, method: str = "POST", **params: str) -> httpx.Response:
    fields = {"username": mitake_sim.DEFAULT_USERNAME, "password": mitake_sim.DEFAULT_PASSWORD, **params}
    url = f"{servers['mitake'].url}/api/mtk/SmSend"
    if method == "GET":
        return httpx.get(url, params={"CharsetURL": "UTF-8", **fields})
    return httpx.post(url, params={"CharsetURL": "UTF-8"}, data=fields)


def ini(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line]
    assert lines[0] == "[1]", text
    return dict(line.split("=", 1) for line in lines[1:])


def test_mitake_send_response_and_report(servers: Any) -> None:
    callback = f"{servers['receiver'].url}/dlr?k=v"
    servers["recorder"].handlers["/dlr"] = lambda record: (
        200, "text/plain", f"magicid=sms_gateway_rpack\nmsgid={dict(parse_qsl(urlsplit(record['url']).query))['msgid']}\n")
    response = mitake_send(servers, dstaddr="0912345678", smbody="hi\x06there", response=callback, clientid="c-1")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    fields = ini(response.text)
    assert fields["statuscode"] == "1" and fields["msgid"] and int(fields["AccountPoint"]) > 0
    again = ini(mitake_send(servers, "GET", dstaddr="0912345678", smbody="hi", clientid="c-1").text)
    assert again["Duplicate"] == "Y" and again["msgid"] == fields["msgid"]

    [record] = wait_for(lambda: servers["recorder"].at("/dlr"))
    assert record["method"] == "GET"
    query = dict(parse_qsl(urlsplit(record["url"]).query))
    assert query["k"] == "v" and query["msgid"] == fields["msgid"] and query["dstaddr"] == "0912345678"
    assert (query["StatusFlag"], query["statuscode"], query["statusstr"]) == ("4", "4", "DELIVRD")
    assert len(query["dlvtime"]) == 14 and len(query["donetime"]) == 14
    stored = wait_for(lambda: [m for m in httpx.get(f"{servers['mitake'].url}/_admin/messages").json()["results"]
                               if m["callbacks"]])[0]
    assert stored["text"] == "hi\nthere" and stored["callbacks"][0]["ack_ok"] is True

    query_response = httpx.post(f"{servers['mitake'].url}/api/mtk/SmQuery", data={
        "username": mitake_sim.DEFAULT_USERNAME, "password": mitake_sim.DEFAULT_PASSWORD,
        "msgid": fields["msgid"]})
    msgid, status, when = query_response.text.strip().split("\t")
    assert (msgid, status, len(when)) == (fields["msgid"], "4", 14)


def test_mitake_wrong_ack_is_recorded(servers: Any) -> None:
    servers["recorder"].handlers["/dlr"] = lambda record: (200, "text/plain", "OK")
    mitake_send(servers, dstaddr="0912345678", smbody="x", response=f"{servers['receiver'].url}/dlr")
    stored = wait_for(lambda: [m for m in httpx.get(f"{servers['mitake'].url}/_admin/messages").json()["results"]
                               if m["callbacks"]])[0]
    assert stored["callbacks"][0]["ack_ok"] is False


@pytest.mark.parametrize(("params", "code"), [
    ({"username": ""}, "c"),
    ({"password": ""}, "d"),
    ({"password": "wrong"}, "e"),
    ({"dstaddr": "12345"}, "v"),
    ({"smbody": ""}, "u"),
])
def test_mitake_errors(servers: Any, params: dict[str, str], code: str) -> None:
    fields = ini(mitake_send(servers, **{"dstaddr": "0912345678", "smbody": "x", **params}).text)
    assert fields["statuscode"] == code and fields["Error"] and "msgid" not in fields


def test_mitake_server_error_is_http_500(servers: Any) -> None:
    httpx.post(f"{servers['mitake'].url}/_admin/faults", json={"server_errors": 1})
    assert mitake_send(servers, dstaddr="0912345678", smbody="x").status_code == 500
    assert ini(mitake_send(servers, dstaddr="0912345678", smbody="x").text)["statuscode"] == "1"


# --- WhatsApp -------------------------------------------------------------------------------


def wa_post(servers: Any, body: Any, token: str = wa_sim.DEFAULT_ACCESS_TOKEN,
            phone_id: str = wa_sim.DEFAULT_PHONE_NUMBER_ID) -> httpx.Response:
    return httpx.post(f"{servers['whatsapp'].url}/v23.0/{phone_id}/messages", json=body,
                      headers={"Authorization": f"Bearer {token}"})


TEMPLATE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "template",
            "template": {"name": "hello_world", "language": {"code": "en_US"}},
            "biz_opaque_callback_data": "ref-1"}


def test_whatsapp_send_and_signed_status_webhooks(servers: Any) -> None:
    response = wa_post(servers, TEMPLATE)
    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp" and body["contacts"] == [{"input": TO, "wa_id": "886912345678"}]
    wamid = body["messages"][0]["id"]
    assert wamid.startswith("wamid.") and body["messages"][0]["message_status"] == "accepted"
    records = wait_for(lambda: servers["recorder"].at("/wa") if len(servers["recorder"].at("/wa")) == 3 else None)
    statuses = []
    for record in records:
        expected = "sha256=" + hmac.new(wa_sim.DEFAULT_APP_SECRET.encode(), record["body"], hashlib.sha256).hexdigest()
        assert record["headers"]["x-hub-signature-256"] == expected
        document = json.loads(record["body"])
        assert document["object"] == "whatsapp_business_account"
        value = document["entry"][0]["changes"][0]["value"]
        assert document["entry"][0]["changes"][0]["field"] == "messages"
        assert value["metadata"]["phone_number_id"] == wa_sim.DEFAULT_PHONE_NUMBER_ID
        [status] = value["statuses"]
        assert status["id"] == wamid and status["recipient_id"] == "886912345678"
        assert status["biz_opaque_callback_data"] == "ref-1" and status["timestamp"].isdigit()
        statuses.append(status["status"])
    assert statuses == ["sent", "delivered", "read"]


@pytest.mark.parametrize(("change", "token", "phone_id", "status", "code"), [
    ({}, "bad", wa_sim.DEFAULT_PHONE_NUMBER_ID, 401, 190),
    ({}, wa_sim.DEFAULT_ACCESS_TOKEN, "999", 400, 100),
    ({"messaging_product": None}, wa_sim.DEFAULT_ACCESS_TOKEN, wa_sim.DEFAULT_PHONE_NUMBER_ID, 400, 100),
    ({"to": None}, wa_sim.DEFAULT_ACCESS_TOKEN, wa_sim.DEFAULT_PHONE_NUMBER_ID, 400, 100),
    ({"type": "text"}, wa_sim.DEFAULT_ACCESS_TOKEN, wa_sim.DEFAULT_PHONE_NUMBER_ID, 400, 131009),
    ({"template": {"name": "x"}}, wa_sim.DEFAULT_ACCESS_TOKEN, wa_sim.DEFAULT_PHONE_NUMBER_ID, 400, 131008),
])
def test_whatsapp_graph_errors(servers: Any, change: dict[str, Any], token: str, phone_id: str,
                               status: int, code: int) -> None:
    body = {key: value for key, value in {**TEMPLATE, **change}.items() if value is not None}
    response = wa_post(servers, body, token, phone_id)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] and error["fbtrace_id"]
    base64.b64decode(error["fbtrace_id"])


def test_whatsapp_failed_status_has_errors(servers: Any) -> None:
    httpx.post(f"{servers['whatsapp'].url}/_admin/faults", json={"invalid_numbers": [TO]})
    assert wa_post(servers, TEMPLATE).status_code == 200
    [record] = wait_for(lambda: servers["recorder"].at("/wa"))
    [status] = json.loads(record["body"])["entry"][0]["changes"][0]["value"]["statuses"]
    assert status["status"] == "failed"
    [error] = status["errors"]
    assert error["code"] == 131026 and error["title"] and error["error_data"]["details"]

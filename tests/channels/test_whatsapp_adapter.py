"""The WhatsApp Cloud API template adapter over real HTTP against the simulator, with status
webhooks delivered to a real receiver and their X-Hub-Signature-256 verified there."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from helpers import CallbackReceiver, ServedApp, wait_for
from openmaac.channels.sms import (
    CallbackRejected,
    DeliveryReport,
    DeliveryStatus,
    ErrorCategory,
    InboundRequest,
)
from openmaac.channels.whatsapp import (
    WhatsAppClient,
    body_component,
    header_media_component,
    hub_signature,
    quick_reply_component,
    url_button_component,
    verify_subscription,
)
from openmaac.simulators import whatsapp as wa_sim

TO = "+886912345678"
WEBHOOK = "/wa/webhook"


@pytest.fixture(scope="module")
def env() -> Any:
    receiver = CallbackReceiver()
    served_receiver = ServedApp(receiver.app)
    sim = ServedApp(wa_sim.create_app(callback_delay_ms=10, webhook_url=f"{served_receiver.url}{WEBHOOK}"))
    yield {"sim": sim, "receiver": receiver, "receiver_url": served_receiver.url}
    sim.stop()
    served_receiver.stop()


@pytest.fixture()
def client(env: Any) -> Any:
    httpx.post(f"{env['sim'].url}/_admin/reset").raise_for_status()
    httpx.post(f"{env['sim'].url}/_admin/config", json={"templates": [], "read_receipts": True}).raise_for_status()
    env["receiver"].requests.clear()
    wa = WhatsAppClient(wa_sim.DEFAULT_PHONE_NUMBER_ID, wa_sim.DEFAULT_ACCESS_TOKEN,
                        app_secret=wa_sim.DEFAULT_APP_SECRET, base_url=env["sim"].url)
    reports: list[DeliveryReport] = []

    def handle(record: dict[str, Any]) -> tuple[int, str, str]:
        try:
            reports.extend(wa.parse_status_webhook(
                InboundRequest(record["method"], record["url"], record["headers"], record["body"])))
        except CallbackRejected as exc:
            return exc.status_code, "text/plain", exc.reason
        return 200, "text/plain", ""

    env["receiver"].handlers[WEBHOOK] = handle
    wa.reports = reports  # type: ignore[attr-defined]
    yield wa
    wa.close()


def faults(env: Any, **changes: Any) -> None:
    httpx.post(f"{env['sim'].url}/_admin/faults", json=changes).raise_for_status()


COMPONENTS = [
    header_media_component("image", "https://example.com/banner.jpg"),
    body_component("Amy", "A-1001"),
    url_button_component(0, "A-1001"),
    quick_reply_component(1, "STOP"),
]


def test_template_send_sent_delivered_read(env: Any, client: WhatsAppClient) -> None:
    result = client.send_template(TO, "order_update", "zh_TW", COMPONENTS, reference="msg-7")
    assert result.accepted and result.provider_message_id.startswith("wamid.")
    assert result.raw["contacts"] == [{"input": TO, "wa_id": "886912345678"}]
    reports = wait_for(lambda: client.reports if len(client.reports) >= 3 else None)
    assert [r.raw_status for r in reports] == ["sent", "delivered", "read"]
    assert [r.status for r in reports] == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED]
    assert {r.reference for r in reports} == {"msg-7"}
    assert {r.provider_message_id for r in reports} == {result.provider_message_id}
    [stored] = httpx.get(f"{env['sim'].url}/_admin/messages", params={"to": TO}).json()["results"]
    assert stored["template"] == "order_update" and stored["language"] == "zh_TW"
    assert stored["components"] == COMPONENTS and stored["reference"] == "msg-7"


def test_payload_shape() -> None:
    payload = WhatsAppClient.template_payload(TO, "hello_world", "en_US", [body_component("x")], reference="r")
    assert payload == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"},
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}]},
        "biz_opaque_callback_data": "r",
    }
    with pytest.raises(ValueError):
        WhatsAppClient.template_payload(TO, "t", "en_US", reference="x" * 513)


def test_not_a_whatsapp_user_fails_in_the_webhook(env: Any, client: WhatsAppClient) -> None:
    faults(env, invalid_numbers=[TO])
    assert client.send_template(TO, "t", "en_US").accepted
    [report] = wait_for(lambda: client.reports)
    assert (report.status, report.error_code, report.error_category) == \
        (DeliveryStatus.FAILED, "131026", ErrorCategory.INVALID_NUMBER)


def test_blocked_user_fails_in_the_webhook(env: Any, client: WhatsAppClient) -> None:
    faults(env, blocked_numbers=[TO])
    assert client.send_template(TO, "t", "en_US").accepted
    [report] = wait_for(lambda: client.reports)
    assert report.error_category is ErrorCategory.BLOCKED and report.error_code == "131050"


def test_sensitive_words_rejected(env: Any, client: WhatsAppClient) -> None:
    faults(env, sensitive_words=["casino"])
    result = client.send_template(TO, "t", "en_US", [body_component("Casino night")])
    assert (result.accepted, result.error_category, result.error_code, result.http_status) == \
        (False, ErrorCategory.CONTENT_REJECTED, "132018", 400)


def test_temporary_errors_then_success(env: Any, client: WhatsAppClient) -> None:
    faults(env, temporary_errors=[{"count": 2}])
    results = [client.send_template(TO, "t", "en_US") for _ in range(3)]
    assert [r.retryable for r in results] == [True, True, False] and results[2].accepted
    assert results[0].error_code == "130429" and results[0].http_status == 429


def test_temporary_failure_in_the_webhook(env: Any, client: WhatsAppClient) -> None:
    faults(env, temporary_errors=[{"count": 1, "stage": "callback"}])
    assert client.send_template(TO, "t", "en_US").accepted
    [report] = wait_for(lambda: client.reports)
    assert report.status is DeliveryStatus.TEMPORARY_ERROR and report.error_code == "131000"


def test_no_callback(env: Any, client: WhatsAppClient) -> None:
    faults(env, no_callback=True)
    assert client.send_template(TO, "t", "en_US").accepted
    stored = wait_for(lambda: [m for m in httpx.get(f"{env['sim'].url}/_admin/messages").json()["results"]
                               if len(m["callbacks"]) == 3])[0]
    assert all(callback["skipped"] for callback in stored["callbacks"])
    assert env["receiver"].requests == [] and client.reports == []


def test_latency_server_error_and_token(env: Any, client: WhatsAppClient) -> None:
    faults(env, server_errors=1)
    failed = client.send_template(TO, "t", "en_US")
    assert failed.retryable and failed.http_status == 500 and failed.error_code == "131000"
    faults(env, latency_ms=1500)
    with WhatsAppClient(wa_sim.DEFAULT_PHONE_NUMBER_ID, wa_sim.DEFAULT_ACCESS_TOKEN,
                        base_url=env["sim"].url, timeout=0.3) as slow:
        assert slow.send_template(TO, "t", "en_US").outcome_unknown
    wait_for(lambda: httpx.get(f"{env['sim'].url}/_admin/messages").json()["count"] == 1)
    faults(env, latency_ms=0)
    with WhatsAppClient(wa_sim.DEFAULT_PHONE_NUMBER_ID, "expired", base_url=env["sim"].url) as wrong:
        result = wrong.send_template(TO, "t", "en_US")
    assert (result.error_category, result.error_code, result.http_status) == \
        (ErrorCategory.AUTH_OR_CONFIG, "190", 401)


def test_unknown_template_and_parameter_count(env: Any, client: WhatsAppClient) -> None:
    httpx.post(f"{env['sim'].url}/_admin/config",
               json={"templates": [{"name": "order_update", "language": "zh_TW", "body_parameters": 2}]})
    missing = client.send_template(TO, "nope", "zh_TW")
    assert missing.error_code == "132001" and missing.error_category is ErrorCategory.INVALID_REQUEST
    assert "nope" in missing.error_message
    wrong_count = client.send_template(TO, "order_update", "zh_TW", [body_component("only one")])
    assert wrong_count.error_code == "132000"
    assert client.send_template(TO, "order_update", "zh_TW", [body_component("a", "b")]).accepted


def test_forged_webhooks_rejected(env: Any, client: WhatsAppClient) -> None:
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
        "metadata": {"phone_number_id": wa_sim.DEFAULT_PHONE_NUMBER_ID},
        "statuses": [{"id": "wamid.X", "status": "delivered", "recipient_id": "1"}]}}]}]}).encode()
    url = f"{env['receiver_url']}{WEBHOOK}"
    forged = httpx.post(url, content=body, headers={"X-Hub-Signature-256": hub_signature("wrong", body)})
    unsigned = httpx.post(url, content=body)
    assert forged.status_code == 403 and unsigned.status_code == 403 and client.reports == []
    genuine = httpx.post(url, content=body,
                         headers={"X-Hub-Signature-256": hub_signature(wa_sim.DEFAULT_APP_SECRET, body)})
    assert genuine.status_code == 200 and client.reports[0].status is DeliveryStatus.DELIVERED


def test_subscription_handshake() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
    assert verify_subscription(params, "tok") == "1158201444"
    assert verify_subscription(params, "other") is None


@pytest.mark.parametrize("credentials", [("", "token"), ("106540352242922", "")])
def test_a_client_without_credentials_sends_nothing(credentials: tuple[str, str]) -> None:
    with WhatsAppClient(*credentials, base_url="http://127.0.0.1:9") as wa:
        result = wa.send_template(TO, "deliver_confirmation", "en_US")
    assert not result.accepted and result.error_category is ErrorCategory.AUTH_OR_CONFIG
    assert result.http_status is None and not result.outcome_unknown

"""The SMS adapters (Twilio, Mitake) over real HTTP against their simulators, with callbacks
delivered to a real receiver and verified there; and SMS segment counting."""

from __future__ import annotations

import json
from pathlib import Path
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
    MitakeProvider,
    SmsProvider,
    TwilioProvider,
    sms_segments,
    twilio_signature,
)
from openmaac.simulators import mitake as mitake_sim
from openmaac.simulators import twilio as twilio_sim

TWILIO_SPEC = Path("/work/shared/upstream/twilio/twilio_api_v2010.json")
FROM = "+15005550006"
TW = "+886912345678"
TW_LOCAL = "0912345678"


@pytest.fixture(scope="module")
def sims() -> Any:
    twilio = ServedApp(twilio_sim.create_app(callback_delay_ms=10))
    mitake = ServedApp(mitake_sim.create_app(callback_delay_ms=10))
    receiver = CallbackReceiver()
    served_receiver = ServedApp(receiver.app)
    yield {"twilio": twilio, "mitake": mitake, "receiver": receiver, "receiver_url": served_receiver.url}
    for served in (twilio, mitake, served_receiver):
        served.stop()


@pytest.fixture(autouse=True)
def clean(sims: Any) -> None:
    for name in ("twilio", "mitake"):
        httpx.post(f"{sims[name].url}/_admin/reset").raise_for_status()
    sims["receiver"].requests.clear()
    sims["receiver"].handlers.clear()


def faults(sim: ServedApp, **changes: Any) -> None:
    httpx.post(f"{sim.url}/_admin/faults", json=changes).raise_for_status()


def sim_messages(sim: ServedApp, to: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{sim.url}/_admin/messages", params={"to": to})
    response.raise_for_status()
    return list(response.json()["results"])


def attach(sims: Any, path: str, provider: SmsProvider) -> list[DeliveryReport]:
    """Serve ``path`` on the receiver with the provider's own parse + ack; collect reports."""
    reports: list[DeliveryReport] = []

    def handle(record: dict[str, Any]) -> tuple[int, str, str]:
        request = InboundRequest(record["method"], record["url"], record["headers"], record["body"])
        try:
            report = provider.parse_status_callback(request)
        except CallbackRejected as exc:
            ack = provider.callback_ack(None)
            return exc.status_code, ack.media_type, exc.reason
        reports.append(report)
        ack = provider.callback_ack(report)
        return ack.status_code, ack.media_type, ack.body

    sims["receiver"].handlers[path] = handle
    return reports


# --- Twilio ---------------------------------------------------------------------------------


@pytest.fixture()
def twilio(sims: Any) -> Any:
    provider = TwilioProvider(twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN,
                              from_number=FROM, base_url=sims["twilio"].url)
    yield provider
    provider.close()


def test_twilio_send_delivers_with_signed_callbacks(sims: Any, twilio: TwilioProvider) -> None:
    assert isinstance(twilio, SmsProvider)
    reports = attach(sims, "/twilio/status", twilio)
    callback = f"{sims['receiver_url']}/twilio/status"
    result = twilio.send(TW, "您好，歡迎光臨", reference="send-1", callback_url=callback)
    assert result.accepted and result.provider_message_id.startswith("SM")
    assert result.segments == 1 and result.error_category is None

    wait_for(lambda: any(r.final for r in reports))
    assert [r.raw_status for r in reports] == ["sent", "delivered"]
    assert [r.status for r in reports] == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED]
    assert all(r.provider_message_id == result.provider_message_id for r in reports)
    assert all(r.reference == "send-1" and r.recipient == TW for r in reports)
    assert [record["answer"][0] for record in sims["receiver"].at("/twilio/status")] == [200, 200]

    [stored] = sim_messages(sims["twilio"], TW)
    assert stored["text"] == "您好，歡迎光臨" and stored["from"] == FROM
    assert stored["status_callback"] == callback + "?omref=send-1"
    polled = twilio.query_status(result.provider_message_id)
    assert polled is not None and polled.status is DeliveryStatus.DELIVERED


def test_twilio_request_fields_are_twilios(sims: Any) -> None:
    """What the adapter posts uses only parameter names of Twilio's OpenAPI requestBody."""
    spec = json.loads(TWILIO_SPEC.read_text())
    post = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"]
    allowed = set(post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"])
    provider = TwilioProvider(twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN, from_number=FROM,
                              messaging_service_sid="MG" + "a" * 32, validity_period=600,
                              base_url=f"{sims['receiver_url']}/capture")
    sims["receiver"].handlers[f"/capture/2010-04-01/Accounts/{twilio_sim.DEFAULT_ACCOUNT_SID}/Messages.json"] = \
        lambda record: (201, "application/json", json.dumps({"sid": "SM" + "0" * 32, "status": "accepted"}))
    result = provider.send(TW, "hi", reference="r", callback_url="https://example.com/cb")
    assert result.accepted
    [captured] = sims["receiver"].requests
    form = InboundRequest("POST", captured["url"], captured["headers"], captured["body"]).form()
    assert set(form) <= allowed
    assert form["To"] == TW and form["StatusCallback"] == "https://example.com/cb?omref=r"
    assert captured["headers"]["authorization"].startswith("Basic ")


def test_twilio_invalid_number(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], invalid_numbers=[TW])
    for number in (TW, "0912345678", "+12"):
        result = twilio.send(number, "hi")
        assert not result.accepted and not result.retryable
        assert result.error_category is ErrorCategory.INVALID_NUMBER
        assert result.error_code == "21211" and result.http_status == 400
        assert number in result.error_message


def test_twilio_blocked_number(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], blocked_numbers=[TW])
    result = twilio.send(TW, "hi")
    assert (result.accepted, result.error_category, result.error_code) == (False, ErrorCategory.BLOCKED, "21610")
    assert twilio.send("+886912000111", "hi").accepted  # only the blocked one


def test_twilio_sensitive_words_are_filtered_by_the_carrier(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], sensitive_words=["casino"])
    reports = attach(sims, "/t", twilio)
    result = twilio.send(TW, "Big CASINO bonus", callback_url=f"{sims['receiver_url']}/t")
    assert result.accepted
    final = wait_for(lambda: [r for r in reports if r.final])[0]
    assert (final.raw_status, final.status, final.error_code) == ("undelivered", DeliveryStatus.FAILED, "30007")
    assert final.error_category is ErrorCategory.CONTENT_REJECTED


def test_twilio_temporary_errors_then_success(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], temporary_errors=[{"count": 2, "to": TW}])
    first, second, third = (twilio.send(TW, "retry me") for _ in range(3))
    for failed in (first, second):
        assert failed.retryable and failed.error_code == "20429" and failed.http_status == 429
    assert third.accepted
    assert len(sim_messages(sims["twilio"], TW)) == 1


def test_twilio_temporary_delivery_failure(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], temporary_errors=[{"count": 1, "stage": "callback"}])
    reports = attach(sims, "/t", twilio)
    assert twilio.send(TW, "hi", callback_url=f"{sims['receiver_url']}/t").accepted
    final = wait_for(lambda: [r for r in reports if r.final])[0]
    assert final.status is DeliveryStatus.TEMPORARY_ERROR and final.error_code == "30003"
    assert final.error_category is ErrorCategory.TEMPORARY


def test_twilio_no_callback_leaves_polling(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], no_callback=True)
    reports = attach(sims, "/t", twilio)
    result = twilio.send(TW, "hi", callback_url=f"{sims['receiver_url']}/t")
    assert result.accepted
    stored = wait_for(lambda: [m for m in sim_messages(sims["twilio"], TW) if len(m["callbacks"]) == 2])[0]
    assert all(callback["skipped"] for callback in stored["callbacks"])
    assert reports == [] and sims["receiver"].requests == []
    polled = twilio.query_status(result.provider_message_id)
    assert polled is not None and polled.status is DeliveryStatus.DELIVERED
    assert twilio.query_status("SM" + "f" * 32) is None


def test_twilio_latency_makes_the_outcome_unknown(sims: Any) -> None:
    faults(sims["twilio"], latency_ms=1500)
    with TwilioProvider(twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN, from_number=FROM,
                        base_url=sims["twilio"].url, timeout=0.3) as slow:
        result = slow.send(TW, "hi")
    assert not result.accepted and result.retryable and result.outcome_unknown
    assert result.error_code == "network"
    # the simulator still takes it once its latency is over: the outcome really was unknown
    wait_for(lambda: len(sim_messages(sims["twilio"], TW)) == 1)


def test_twilio_server_errors(sims: Any, twilio: TwilioProvider) -> None:
    faults(sims["twilio"], server_errors=1, server_error_status=503)
    failed = twilio.send(TW, "hi")
    assert failed.retryable and failed.http_status == 503 and failed.error_code == "20500"
    assert not failed.outcome_unknown
    assert twilio.send(TW, "hi").accepted


def test_twilio_bad_credentials(sims: Any) -> None:
    with TwilioProvider(twilio_sim.DEFAULT_ACCOUNT_SID, "wrong-token", from_number=FROM,
                        base_url=sims["twilio"].url) as wrong:
        result = wrong.send(TW, "hi")
    assert result.error_category is ErrorCategory.AUTH_OR_CONFIG and result.error_code == "20003"
    assert result.http_status == 401 and not result.retryable


def test_twilio_unreachable_is_surely_not_sent() -> None:
    with TwilioProvider(twilio_sim.DEFAULT_ACCOUNT_SID, twilio_sim.DEFAULT_AUTH_TOKEN, from_number=FROM,
                        base_url="http://127.0.0.1:9") as provider:
        result = provider.send(TW, "hi")
    assert result.retryable and not result.outcome_unknown


def test_twilio_forged_or_tampered_callbacks_are_rejected(sims: Any, twilio: TwilioProvider) -> None:
    reports = attach(sims, "/t", twilio)
    assert twilio.send(TW, "hi", reference="r1", callback_url=f"{sims['receiver_url']}/t").accepted
    wait_for(lambda: any(r.final for r in reports))
    genuine = sims["receiver"].at("/t")[-1]
    request = InboundRequest("POST", genuine["url"], genuine["headers"], genuine["body"])
    assert twilio.parse_status_callback(request).status is DeliveryStatus.DELIVERED
    tampered_body = genuine["body"].replace(b"MessageStatus=delivered", b"MessageStatus=failed")
    for forged in (
        InboundRequest("POST", genuine["url"], genuine["headers"], tampered_body),
        InboundRequest("POST", genuine["url"].replace("omref=r1", "omref=r2"), genuine["headers"], genuine["body"]),
        InboundRequest("POST", genuine["url"], {}, genuine["body"]),
    ):
        with pytest.raises(CallbackRejected):
            twilio.parse_status_callback(forged)
    # and over HTTP: a forged post is answered 403 and yields no report
    before = len(reports)
    response = httpx.post(f"{sims['receiver_url']}/t", data={"MessageSid": "SM" + "1" * 32,
                                                             "MessageStatus": "delivered"},
                          headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    assert response.status_code == 403 and len(reports) == before


def test_twilio_signature_accepts_default_port_variants() -> None:
    token, params = "secret", {"MessageSid": "SM1", "MessageStatus": "sent"}
    signed = twilio_signature(token, "https://example.com/cb?x=1", params)
    provider = TwilioProvider("AC" + "0" * 32, token, from_number=FROM)
    body = b"MessageSid=SM1&MessageStatus=sent"
    for url in ("https://example.com/cb?x=1", "https://example.com:443/cb?x=1"):
        report = provider.parse_status_callback(InboundRequest("POST", url, {"X-Twilio-Signature": signed}, body))
        assert report.status is DeliveryStatus.SENT
    provider.close()


def test_twilio_without_an_auth_token_accepts_no_callback() -> None:
    """A signature made with an empty key is anyone's to compute."""
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    signed = twilio_signature("", "https://example.com/cb", params)
    with TwilioProvider("AC" + "0" * 32, "", from_number=FROM) as provider, pytest.raises(CallbackRejected):
        provider.parse_status_callback(InboundRequest("POST", "https://example.com/cb", {"X-Twilio-Signature": signed},
                                                      b"MessageSid=SM1&MessageStatus=delivered"))


# --- Mitake ---------------------------------------------------------------------------------


@pytest.fixture()
def mitake(sims: Any) -> Any:
    provider = MitakeProvider(mitake_sim.DEFAULT_USERNAME, mitake_sim.DEFAULT_PASSWORD,
                              base_url=sims["mitake"].url, callback_secret="cb-secret")
    yield provider
    provider.close()


def test_mitake_send_delivers_and_acknowledges(sims: Any, mitake: MitakeProvider) -> None:
    assert isinstance(mitake, SmsProvider)
    reports = attach(sims, "/mitake/dlr", mitake)
    result = mitake.send(TW, "第一行\n第二行", reference="order-42",
                         callback_url=f"{sims['receiver_url']}/mitake/dlr")
    assert result.accepted and result.provider_message_id and not result.duplicate
    [stored] = sim_messages(sims["mitake"], TW_LOCAL)
    assert stored["to"] == TW_LOCAL and stored["text"] == "第一行\n第二行"
    assert stored["smbody"] == "第一行\x06第二行" and stored["reference"] == "order-42"

    report = wait_for(lambda: reports)[0]
    assert report.status is DeliveryStatus.DELIVERED and report.raw_status == "4"
    assert report.provider_message_id == result.provider_message_id and report.reference == "order-42"
    assert report.recipient == TW_LOCAL and report.error_category is None
    callback = wait_for(lambda: [m for m in sim_messages(sims["mitake"], TW) if m["callbacks"]])[0]["callbacks"][0]
    assert callback["response_status"] == 200 and callback["ack_ok"] is True
    assert callback["params"]["StatusFlag"] == "4" and callback["params"]["statusstr"] == "DELIVRD"
    polled = mitake.query_status(result.provider_message_id)
    assert polled is not None and polled.status is DeliveryStatus.DELIVERED


def test_mitake_clientid_deduplicates(sims: Any, mitake: MitakeProvider) -> None:
    first = mitake.send(TW, "once", reference="same-key")
    again = mitake.send(TW, "once", reference="same-key")
    assert first.accepted and again.accepted and again.duplicate and not first.duplicate
    assert again.provider_message_id == first.provider_message_id
    assert len(sim_messages(sims["mitake"], TW)) == 1
    long_reference = "x" * 80  # longer than Mitake's 36: a stable digest is sent instead
    one, two = mitake.send(TW, "long", reference=long_reference), mitake.send(TW, "long", reference=long_reference)
    assert two.duplicate and two.provider_message_id == one.provider_message_id


def test_mitake_invalid_number(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], invalid_numbers=[TW])
    for number in (TW, "12ab"):
        result = mitake.send(number, "hi")
        assert (result.accepted, result.error_category, result.error_code) == \
            (False, ErrorCategory.INVALID_NUMBER, "v")
        assert result.error_message == "無效的手機號碼"


def test_mitake_blocked_number_fails_in_the_report(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], blocked_numbers=[TW_LOCAL])
    reports = attach(sims, "/m", mitake)
    assert mitake.send(TW, "hi", reference="b1", callback_url=f"{sims['receiver_url']}/m").accepted
    report = wait_for(lambda: reports)[0]
    assert (report.status, report.error_code, report.error_category) == \
        (DeliveryStatus.FAILED, "7", ErrorCategory.BLOCKED)


def test_mitake_sensitive_words_rejected(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], sensitive_words=["博弈"])
    result = mitake.send(TW, "線上博弈送彩金")
    assert (result.accepted, result.error_category, result.error_code) == \
        (False, ErrorCategory.CONTENT_REJECTED, "5")
    assert sim_messages(sims["mitake"], TW) == []


def test_mitake_temporary_errors_then_success(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], temporary_errors=3)
    results = [mitake.send(TW, "hi", reference="t1") for _ in range(4)]
    assert [r.retryable for r in results] == [True, True, True, False]
    assert results[0].error_code == "a" and results[3].accepted


def test_mitake_temporary_delivery_failure(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], temporary_errors={"count": 1, "stage": "callback", "to": TW})
    reports = attach(sims, "/m", mitake)
    assert mitake.send(TW, "hi", callback_url=f"{sims['receiver_url']}/m").accepted
    report = wait_for(lambda: reports)[0]
    assert report.status is DeliveryStatus.TEMPORARY_ERROR and report.error_code == "8"


def test_mitake_no_callback(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], no_callback_numbers=[TW])
    result = mitake.send(TW, "hi", callback_url=f"{sims['receiver_url']}/m")
    stored = wait_for(lambda: [m for m in sim_messages(sims["mitake"], TW) if m["callbacks"]])[0]
    assert stored["callbacks"][0]["skipped"] and sims["receiver"].requests == []
    polled = mitake.query_status(result.provider_message_id)
    assert polled is not None and polled.status is DeliveryStatus.DELIVERED


def test_mitake_latency_server_errors_and_credentials(sims: Any, mitake: MitakeProvider) -> None:
    faults(sims["mitake"], server_errors=1)
    failed = mitake.send(TW, "hi")
    assert failed.retryable and failed.http_status == 500
    faults(sims["mitake"], latency_ms=1500)
    with MitakeProvider(mitake_sim.DEFAULT_USERNAME, mitake_sim.DEFAULT_PASSWORD, base_url=sims["mitake"].url,
                        timeout=0.3) as slow:
        assert slow.send(TW, "hi").outcome_unknown
    wait_for(lambda: len(sim_messages(sims["mitake"], TW)) == 1)  # accepted after all
    faults(sims["mitake"], latency_ms=0)
    with MitakeProvider(mitake_sim.DEFAULT_USERNAME, "nope", base_url=sims["mitake"].url) as wrong:
        result = wrong.send(TW, "hi")
    assert (result.error_category, result.error_code, result.error_message) == \
        (ErrorCategory.AUTH_OR_CONFIG, "e", "帳號、密碼錯誤")


def test_mitake_out_of_points(sims: Any, mitake: MitakeProvider) -> None:
    httpx.post(f"{sims['mitake'].url}/_admin/accounts",
               json={"username": mitake_sim.DEFAULT_USERNAME, "points": 1}).raise_for_status()
    try:
        result = mitake.send(TW, "中" * 71)  # two segments, one point left
        assert result.error_category is ErrorCategory.INSUFFICIENT_BALANCE and result.error_code == "s"
        assert mitake.send(TW, "中").accepted
    finally:
        httpx.post(f"{sims['mitake'].url}/_admin/accounts",
                   json={"username": mitake_sim.DEFAULT_USERNAME, "points": 1_000_000})


def test_mitake_forged_callbacks_rejected(sims: Any, mitake: MitakeProvider) -> None:
    reports = attach(sims, "/m", mitake)
    url = f"{sims['receiver_url']}/m"
    forged = httpx.get(url, params={"msgid": "1", "StatusFlag": "4", "omref": "x", "omsig": "0" * 32})
    assert forged.status_code == 403 and reports == []
    signed = mitake.callback_url_for(url, "x")
    genuine = httpx.get(signed + "&msgid=1&StatusFlag=4")
    assert genuine.status_code == 200 and genuine.text == "magicid=sms_gateway_rpack\nmsgid=1\n"
    assert reports[0].reference == "x"


def test_mitake_report_formats() -> None:
    """go-mitake's own example (StatusFlag=4, statuscode=0) and reports without StatusFlag."""
    provider = MitakeProvider("u", "p")
    example = ("https://example.com/cb?msgid=8091234567&dstaddr=09001234567&dlvtime=20060810125612"
               "&donetime=20060810165612&statusstr=DELIVRD&statuscode=0&StatusFlag=4")
    report = provider.parse_status_callback(InboundRequest("GET", example, {}))
    assert report.status is DeliveryStatus.DELIVERED and report.provider_message_id == "8091234567"
    bare = provider.parse_status_callback(InboundRequest("GET", "https://e.com/?msgid=9&statuscode=6", {}))
    assert bare.status is DeliveryStatus.FAILED and bare.error_category is ErrorCategory.INVALID_NUMBER
    by_text = provider.parse_status_callback(InboundRequest("GET", "https://e.com/?msgid=9&statusstr=EXPIRED", {}))
    assert by_text.status is DeliveryStatus.TEMPORARY_ERROR
    with pytest.raises(CallbackRejected):
        provider.parse_status_callback(InboundRequest("GET", "https://e.com/?statuscode=4", {}))
    provider.close()


# --- segments -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("", ("GSM-7", 1)),
    ("a" * 160, ("GSM-7", 1)),
    ("a" * 161, ("GSM-7", 2)),
    ("a" * 306, ("GSM-7", 2)),
    ("a" * 307, ("GSM-7", 3)),
    ("a" * 158 + "€", ("GSM-7", 1)),  # the euro sign takes two septets: exactly 160
    ("a" * 159 + "€", ("GSM-7", 2)),
    ("{}[]~^|\\" * 10, ("GSM-7", 1)),  # 80 extension characters = 160 septets
    ("{}[]~^|\\" * 10 + "a", ("GSM-7", 2)),
    ("a" * 152 + "€" + "a" * 152, ("GSM-7", 3)),  # an escape pair is never split across parts
    ("Ça va: 5£ @ Ñoño ü è §¿", ("GSM-7", 1)),
    ("ç", ("UCS-2", 1)),  # lower-case c-cedilla is not in the GSM-7 table
    ("中" * 70, ("UCS-2", 1)),
    ("中" * 71, ("UCS-2", 2)),
    ("中" * 134, ("UCS-2", 2)),
    ("中" * 135, ("UCS-2", 3)),
    ("a" * 159 + "中", ("UCS-2", 3)),  # one non-GSM character makes the whole text UCS-2
    ("Hello 😀", ("UCS-2", 1)),
    ("😀" * 35, ("UCS-2", 1)),  # 70 UTF-16 units
    ("😀" * 36, ("UCS-2", 2)),
    ("a" * 69 + "😀", ("UCS-2", 2)),  # 71 units
    ("中" * 66 + "😀" + "中" * 66, ("UCS-2", 3)),  # a surrogate pair is never split
])
def test_sms_segments(text: str, expected: tuple[str, int]) -> None:
    assert sms_segments(text) == expected


def test_twilio_simulator_counts_segments_the_same(sims: Any, twilio: TwilioProvider) -> None:
    for text in ("a" * 161, "a" * 152 + "€" + "a" * 152, "😀" * 36, "中" * 135):
        result = twilio.send(TW, text)
        assert result.segments == sms_segments(text)[1]

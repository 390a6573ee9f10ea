"""Standard Webhooks headers beside MAAC's (signature_scheme "maac+standard"), checked the way a
receiver would: a real endpoint on loopback and the reference library (the `standardwebhooks`
package's ``Webhook(secret).verify``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from webhook_clock import make_retries_due
from webhook_receiver import Receiver, deliveries

from helpers import seed_contacts, wait_for
from openmaac.webhooks import verify
from test_openapi_document import _check_answer

STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
WEBHOOK = "/openapi/v1/webhook/"
ONE = "/openapi/v1/webhook/{webhook_id}/"
SECRET = "/openapi/v1/webhook/{webhook_id}/secret/"


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def add_webhook(tenant, url: str, **extra) -> dict:
    body = {"url": url, "topics": ["contact.tag.add"], "style": "cdh", **extra}
    response = tenant.client.post(tenant.api("webhook/"), json=body)
    assert response.status_code == 201, response.text
    return response.json()


def tag_a_contact(tenant, name: str = "VIP") -> None:
    uid = seed_contacts(tenant, 1, customer_id="C-1")[0]
    tag_id = tenant.client.post(tenant.api("tag/"), json={"name": name}).json()["id"]
    response = tenant.client.post(tenant.api("taglinemember/"), json={"tag_id": tag_id, "line_uid": uid})
    assert response.status_code == 201, response.text


def send_test(tenant, webhook_id: int, receiver: Receiver):
    before = len(receiver.requests)
    response = tenant.client.post(tenant.api(f"webhook/{webhook_id}/test/"))
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    assert len(receiver.requests) == before + 1
    return receiver.requests[-1]


def assert_maac_signature(share_secret: str, request) -> None:
    assert verify(share_secret, request.body, request.headers["cresclab-signature"])


def test_standard_scheme_deliveries_verify_with_the_reference_library(tenant, receiver, anon):
    created = add_webhook(tenant, receiver.url, signature_scheme="maac+standard")
    assert created["signature_scheme"] == "maac+standard"
    standard_secret = created["standard_secret"]
    assert standard_secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(standard_secret.removeprefix("whsec_"))) <= 64
    _check_answer(anon.get("/openapi.json").json(), "post", WEBHOOK,
                  tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url, "topics": ["message.first_open"],
                                                                  "signature_scheme": "maac+standard"}))

    tag_a_contact(tenant)
    wait_for(lambda: receiver.successful(), timeout=20)
    (request,) = receiver.requests
    payload = Webhook(standard_secret).verify(request.body, request.headers)
    assert payload == json.loads(request.body) and payload["event"] == "contact.tag.add"
    assert request.headers["webhook-id"] == request.key  # the event's id: CrescLab-Idempotency-Key
    assert request.headers["webhook-timestamp"].isdigit()
    # MAAC's own signature, unchanged, on the same request.
    assert_maac_signature(created["secret"], request)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret).verify(request.body + b" ", request.headers)


def test_a_retried_event_keeps_its_webhook_id_and_is_signed_afresh(tenant, receiver):
    receiver.statuses = [503]  # the first attempt fails; MAAC's 1-second retry succeeds
    created = add_webhook(tenant, receiver.url, signature_scheme="maac+standard")
    tag_a_contact(tenant)
    wait_for(lambda: receiver.successful(), timeout=20)
    first, retry = receiver.requests
    assert (first.status, retry.status) == (503, 200)
    assert first.body == retry.body
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == first.key == retry.key
    for request in (first, retry):
        Webhook(created["standard_secret"]).verify(request.body, request.headers)
        assert_maac_signature(created["secret"], request)
    # the receiver answered before the worker recorded the outcome: wait for the record
    wait_for(lambda: deliveries(tenant, created["id"], "succeeded"), timeout=20)
    (delivery,) = deliveries(tenant, created["id"], "succeeded")
    assert delivery["attempts"] == 2 and delivery["idempotency_key"] == first.headers["webhook-id"]


def test_default_endpoints_get_no_standard_headers(tenant, receiver):
    created = add_webhook(tenant, receiver.url)
    assert created["signature_scheme"] == "maac" and created["standard_secret"] is None
    assert tenant.client.get(tenant.api(f"webhook/{created['id']}/")).json()["signature_scheme"] == "maac"
    tag_a_contact(tenant)
    wait_for(lambda: receiver.successful(), timeout=20)
    (request,) = receiver.requests
    assert not set(STANDARD_HEADERS) & set(request.headers)
    assert_maac_signature(created["secret"], request)


def test_bad_values_answer_400_and_change_nothing(tenant, receiver, anon):
    document = anon.get("/openapi.json").json()
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url, "topics": ["contact.tag.add"],
                                                               "signature_scheme": "standard"})
    assert response.status_code == 400 and response.json() == {"signature_scheme": ['"standard" is not a valid choice.']}
    _check_answer(document, "post", WEBHOOK, response)
    assert tenant.client.get(tenant.api("webhook/")).json()["results"] == []

    created = add_webhook(tenant, receiver.url)
    webhook_id = created["id"]
    before = tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).json()
    for value in ("maac+svix", "", 3, ["maac+standard"]):
        response = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"),
                                       json={"topics": ["message.first_open"], "signature_scheme": value})
        assert response.status_code == 400, (value, response.text)
        assert list(response.json()) == ["signature_scheme"], response.text
        _check_answer(document, "patch", ONE, response)
    after = tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == {k: v for k, v in before.items()
                                                                    if k != "updated_at"}

    secrets_before = tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()
    response = tenant.client.post(tenant.api(f"webhook/{webhook_id}/secret/"), json={"scheme": "whsec"})
    assert response.status_code == 400 and response.json() == {"scheme": ['"whsec" is not a valid choice.']}
    # The standard secret of an endpoint without the standard scheme: refused, nothing rotated.
    response = tenant.client.post(tenant.api(f"webhook/{webhook_id}/secret/"), json={"scheme": "standard"})
    assert response.status_code == 400
    assert response.json() == {"scheme": ['This webhook\'s signature_scheme is not "maac+standard".']}
    _check_answer(document, "post", SECRET, response)
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json() == secrets_before


def test_turning_the_standard_scheme_on_and_off(tenant, receiver, anon):
    document = anon.get("/openapi.json").json()
    created = add_webhook(tenant, receiver.url)
    webhook_id = created["id"]

    response = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"), json={"signature_scheme": "maac+standard"})
    assert response.status_code == 200, response.text
    _check_answer(document, "patch", ONE, response)
    standard_secret = response.json()["standard_secret"]
    assert response.json()["signature_scheme"] == "maac+standard" and standard_secret.startswith("whsec_")
    # Shown when made, and on request at secret/; not in the endpoint's other answers.
    assert "standard_secret" not in tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).json()
    again = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"), json={"signature_scheme": "maac+standard"})
    assert again.status_code == 200 and "standard_secret" not in again.json()
    revealed = tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/"))
    _check_answer(document, "get", SECRET, revealed)
    assert revealed.json() == {"id": webhook_id, "secret": created["secret"], "standard_secret": standard_secret}

    request = send_test(tenant, webhook_id, receiver)
    assert Webhook(standard_secret).verify(request.body, request.headers)["data"]["webhook_id"] == webhook_id
    assert request.headers["webhook-id"] == request.key
    assert_maac_signature(created["secret"], request)

    response = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"), json={"signature_scheme": "maac"})
    assert response.status_code == 200 and response.json()["signature_scheme"] == "maac"
    assert "standard_secret" not in response.json()
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()["standard_secret"] is None
    request = send_test(tenant, webhook_id, receiver)
    assert not set(STANDARD_HEADERS) & set(request.headers)
    assert_maac_signature(created["secret"], request)

    # On again: a new secret (the former one was forgotten).
    response = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"), json={"signature_scheme": "maac+standard"})
    assert response.json()["standard_secret"] not in (None, standard_secret)


def test_rotation_signs_with_both_secrets_for_a_day(tenant, receiver, anon, database):
    from openmaac.db.base import utcnow
    from openmaac.webhooks.models import WebhookEndpoint

    created = add_webhook(tenant, receiver.url, signature_scheme="maac+standard")
    webhook_id, old = created["id"], created["standard_secret"]
    response = tenant.client.post(tenant.api(f"webhook/{webhook_id}/secret/"), json={"scheme": "standard"})
    assert response.status_code == 200, response.text
    _check_answer(anon.get("/openapi.json").json(), "post", SECRET, response)
    rotated = response.json()
    new = rotated["standard_secret"]
    assert new.startswith("whsec_") and new != old and rotated["secret"] == created["secret"]

    request = send_test(tenant, webhook_id, receiver)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)  # receivers not yet switched still verify
    assert_maac_signature(created["secret"], request)

    with database.write() as session:  # the day has passed
        session.get(WebhookEndpoint, webhook_id).standard_previous_until = utcnow() - timedelta(seconds=1)
    request = send_test(tenant, webhook_id, receiver)
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)

    # Rotating the share secret (no body, as before) leaves the standard secret alone.
    rotated_maac = tenant.client.post(tenant.api(f"webhook/{webhook_id}/secret/")).json()
    assert rotated_maac["secret"] != created["secret"] and rotated_maac["standard_secret"] == new
    request = send_test(tenant, webhook_id, receiver)
    Webhook(new).verify(request.body, request.headers)
    assert_maac_signature(rotated_maac["secret"], request)


def test_queued_deliveries_are_signed_by_the_scheme_in_force_when_sent(tenant, receiver, database):
    """Turned on while an event waits for its retry: the retry carries the standard headers."""
    receiver.statuses = [503, 503, 503, 503]  # MAAC's four fast attempts fail: the event waits 5 minutes
    created = add_webhook(tenant, receiver.url)
    tag_a_contact(tenant)
    wait_for(lambda: len(receiver.requests) == 4, timeout=30)
    assert not set(STANDARD_HEADERS) & set(receiver.requests[0].headers)
    response = tenant.client.patch(tenant.api(f"webhook/{created['id']}/"), json={"signature_scheme": "maac+standard"})
    standard_secret = response.json()["standard_secret"]
    wait_for(lambda: deliveries(tenant, created["id"])[0]["attempts"] == 4, timeout=20)
    assert make_retries_due(database, created["id"]) == 1
    wait_for(lambda: receiver.successful(), timeout=20)
    last = receiver.requests[-1]
    assert last.key == receiver.requests[0].key == last.headers["webhook-id"]
    Webhook(standard_secret).verify(last.body, last.headers)
    assert_maac_signature(created["secret"], last)


# -- the CLI ------------------------------------------------------------------------------------------

def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``openmaac webhook ...`` on the test server's database (the environment conftest set)."""
    openmaac = str(Path(sys.executable).with_name("openmaac"))
    result = subprocess.run([openmaac, "webhook", *args], env=dict(os.environ), capture_output=True, text=True,
                            timeout=120)
    if check:
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_cli_signature_scheme_and_standard_secret(tenant, receiver):
    added = json.loads(cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                           "--signature-scheme", "maac+standard").stdout)
    assert set(added) == {"id", "secret", "standard_secret"} and added["standard_secret"].startswith("whsec_")
    webhook_id = str(added["id"])
    assert cli("secret", webhook_id, "--standard").stdout.strip() == added["standard_secret"]
    listed = [json.loads(line) for line in cli("list", "--org", tenant.name, "--json").stdout.splitlines()]
    assert [row["signature_scheme"] for row in listed] == ["maac+standard"]

    rotated = cli("secret", webhook_id, "--standard", "--rotate").stdout.strip()
    assert rotated.startswith("whsec_") and rotated != added["standard_secret"]
    request = send_test(tenant, int(webhook_id), receiver)
    Webhook(rotated).verify(request.body, request.headers)
    Webhook(added["standard_secret"]).verify(request.body, request.headers)

    assert json.loads(cli("scheme", webhook_id, "maac").stdout) == {"id": added["id"], "signature_scheme": "maac"}
    refused = cli("secret", webhook_id, "--standard", check=False)
    assert refused.returncode == 1 and "maac+standard" in refused.stderr
    turned_on = json.loads(cli("scheme", webhook_id, "maac+standard").stdout)
    assert turned_on["standard_secret"].startswith("whsec_")
    bad = cli("scheme", webhook_id, "svix", check=False)
    assert bad.returncode == 1 and bad.stderr == 'signature_scheme: "svix" is not a valid choice.\n'
    assert cli("secret", webhook_id, "--standard").stdout.strip() == turned_on["standard_secret"]

    bad_add = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                  "--signature-scheme", "standard", check=False)
    assert bad_add.returncode == 1 and "signature_scheme" in bad_add.stderr

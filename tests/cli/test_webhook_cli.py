"""``openmaac webhook add|list|secret|deliveries|replay`` as real processes.

The commands run against the database of the test server (the suite's SQLite file, or its
PostgreSQL database with ``OPENMAAC_TEST_DATABASE_URL``), whose embedded worker sends what
they queue, over real HTTP, to a receiver on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhooks"))
from webhook_clock import make_retries_due  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

from helpers import seed_contacts, wait_for  # noqa: E402
from openmaac.webhooks import verify  # noqa: E402
from openmaac.webhooks.schedule import MAX_ATTEMPTS  # noqa: E402

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def cli(*args: str, check: bool = True, allow_hosts: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``openmaac webhook ...`` on the test server's database (the environment conftest set)."""
    env = dict(os.environ)
    if not allow_hosts:
        env.pop("OPENMAAC_WEBHOOK_ALLOW_HOSTS", None)
        env.pop("OPENMAAC_OUTBOUND_ALLOW_HOSTS", None)
    result = subprocess.run([OPENMAAC, "webhook", *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def api_deliveries(tenant, webhook_id: int, status: str | None = None) -> list[dict]:
    params = {"status": status} if status else {}
    response = tenant.client.get(tenant.api(f"webhook/{webhook_id}/deliveries/"), params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def tag_contact(tenant, name: str) -> tuple[str, int]:
    """A contact (customer_id C-9) tagged through the API: one ``contact.tag.add`` event."""
    (uid,) = seed_contacts(tenant, 1, customer_id="C-9")
    tag_id = tenant.client.post(tenant.api("tag/"), json={"name": name}).json()["id"]
    response = tenant.client.post(tenant.api("taglinemember/"), json={"tag_id": tag_id, "line_uid": uid})
    assert response.status_code == 201, response.text
    return uid, tag_id


def test_add_list_secret_and_rotate(tenant, receiver):
    added = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                "--topic", "message.first_open", "--style", "cdh", "--header", "x-api-key=k1")
    created = json.loads(added.stdout)
    assert set(created) == {"id", "secret"} and len(created["secret"]) == 64
    webhook_id, secret = created["id"], created["secret"]

    # What the CLI made is what the API shows.
    detail = tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).json()
    assert (detail["url"], detail["topics"], detail["style"], detail["headers"], detail["is_active"]) == (
        receiver.url, ["contact.tag.add", "message.first_open"], "cdh", {"x-api-key": "k1"}, True)
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()["secret"] == secret

    assert json_lines(cli("list", "--org", tenant.name, "--json").stdout) == [{
        "id": webhook_id, "url": receiver.url, "style": "cdh", "signature_scheme": "maac", "topics": ["contact.tag.add", "message.first_open"],
        "is_active": True, "pending": 0, "succeeded": 0, "failed": 0, "failing_since": None, "disabled_at": None,
        "disabled_reason": None}]
    # The table, piped, keeps each row on one line with the whole URL.
    [row] = [line for line in cli("list", "--org", tenant.name).stdout.splitlines() if receiver.url in line]
    assert f" {webhook_id} " in row and " cdh " in row and "contact.tag.add, message.first_open" in row

    assert cli("secret", str(webhook_id)).stdout == secret + "\n"
    rotated = cli("secret", str(webhook_id), "--rotate").stdout.strip()
    assert len(rotated) == 64 and rotated != secret
    assert cli("secret", str(webhook_id)).stdout.strip() == rotated
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()["secret"] == rotated

    # An event now is signed with the rotated secret and carries the endpoint's header.
    uid, tag_id = tag_contact(tenant, "cli")
    wait_for(lambda: receiver.successful(), timeout=30)
    [request] = receiver.requests
    assert verify(rotated, request.body, request.headers["cresclab-signature"])
    assert not verify(secret, request.body, request.headers["cresclab-signature"])
    assert request.headers["x-api-key"] == "k1"
    assert json.loads(request.body)["data"] == {"line_uid": uid, "customer_id": "C-9", "tag_id": tag_id,
                                                "tag_name": "cli"}
    wait_for(lambda: json_lines(cli("list", "--org", tenant.name, "--json").stdout)[0]["succeeded"] == 1,
             timeout=20)


def test_failed_delivery_listed_then_replayed_to_the_receiver(tenant, receiver, database):
    receiver.default_status = 500
    created = json.loads(cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                             "--style", "cdh").stdout)
    webhook_id = created["id"]
    uid, tag_id = tag_contact(tenant, "replay me")
    # After MAAC's 1 s, 2 s, 4 s the delivery waits 5 minutes: both listings show when.
    waiting = wait_for(lambda: [d for d in api_deliveries(tenant, webhook_id) if d["attempts"] == 4
                                and d["next_attempt_at"]], timeout=40)
    [pending] = json_lines(cli("deliveries", str(webhook_id), "--json").stdout)
    assert (pending["status"], pending["attempts"], pending["max_attempts"]) == ("pending", 4, MAX_ATTEMPTS)
    assert pending["next_attempt_at"] == waiting[0]["next_attempt_at"]
    assert (datetime.fromisoformat(pending["next_attempt_at"]) - datetime.fromisoformat(pending["last_attempt_at"])
            == timedelta(minutes=5))
    [row] = [line for line in cli("deliveries", str(webhook_id)).stdout.splitlines() if pending["idempotency_key"] in line]
    assert f" 4/{MAX_ATTEMPTS} " in row and f" {pending['next_attempt_at']} " in row
    # The rest of the schedule (about 3 days), each wait made due as soon as it starts.
    wait_for(lambda: make_retries_due(database, webhook_id) >= 0 and api_deliveries(tenant, webhook_id, "failed"),
             timeout=60)
    assert len(receiver.requests) == MAX_ATTEMPTS and not receiver.successful()
    first = receiver.requests[0]

    [failed] = json_lines(cli("deliveries", str(webhook_id), "--json").stdout)
    assert (failed["status"], failed["attempts"], failed["last_status_code"]) == ("failed", MAX_ATTEMPTS, 500)
    assert failed["next_attempt_at"] is None
    assert failed["last_error"].startswith("HTTP 500") and failed["topic"] == "contact.tag.add"
    assert failed["idempotency_key"] == first.key and failed["body"].encode() == first.body
    assert json_lines(cli("deliveries", str(webhook_id), "--status", "failed", "--json").stdout) == [failed]
    assert cli("deliveries", str(webhook_id), "--status", "succeeded", "--json").stdout == ""
    [row] = [line for line in cli("deliveries", str(webhook_id), "--status", "failed").stdout.splitlines()
             if first.key in line]
    assert f" {failed['id']} " in row and " failed " in row and " 500 " in row
    counts = json_lines(cli("list", "--org", tenant.name, "--json").stdout)[0]
    assert (counts["pending"], counts["succeeded"], counts["failed"]) == (0, 0, 1)

    # The receiver is fixed; replay from the shell; the running server sends it.
    receiver.default_status = 200
    replayed = cli("replay", str(webhook_id))
    assert json.loads(replayed.stdout) == {"replayed": 1}
    assert "replaying 1 deliveries" in replayed.stderr
    wait_for(lambda: receiver.successful(), timeout=30)
    [success] = receiver.successful()
    assert success.key == first.key and success.body == first.body  # the same event, not a new one
    assert verify(created["secret"], success.body, success.headers["cresclab-signature"])
    assert json.loads(success.body)["data"] == {"line_uid": uid, "customer_id": "C-9", "tag_id": tag_id,
                                                "tag_name": "replay me"}
    wait_for(lambda: api_deliveries(tenant, webhook_id, "succeeded"), timeout=20)
    [done] = json_lines(cli("deliveries", str(webhook_id), "--json").stdout)
    assert (done["id"], done["status"], done["attempts"], done["last_status_code"]) == (failed["id"], "succeeded",
                                                                                        1, 200)

    # Nothing failed any more: a plain replay does nothing; naming a delivery resends it.
    assert json.loads(cli("replay", str(webhook_id)).stdout) == {"replayed": 0}
    assert json.loads(cli("replay", str(webhook_id), "--delivery", str(failed["id"])).stdout) == {"replayed": 1}
    wait_for(lambda: len(receiver.successful()) == 2, timeout=30)
    assert receiver.successful()[1].key == first.key


def test_refusals_change_nothing(tenant, receiver):
    refused = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                  check=False, allow_hosts=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("url: This URL is not allowed:") and len(refused.stderr.splitlines()) == 1
    for address in ("http://10.0.0.8/hook", "http://169.254.169.254/latest/meta-data/"):
        result = cli("add", "--org", tenant.name, "--url", address, "--topic", "contact.tag.add", check=False)
        assert result.returncode == 1 and "This URL is not allowed" in result.stderr, result.stderr

    bad_topic = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "nope.topic", check=False)
    assert bad_topic.returncode == 1
    assert bad_topic.stderr == 'topics[0]: "nope.topic" is not a valid choice.\n'
    bad_style = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                    "--style", "xml", check=False)
    assert bad_style.returncode == 1
    assert bad_style.stderr == 'style: "xml" is not a valid choice.\n'
    reserved = cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add",
                   "--header", "CrescLab-Signature=forged", check=False)
    assert (reserved.returncode, reserved.stderr) == (
        1, "headers.CrescLab-Signature: Not a valid header name (or one openmaac sets itself).\n")
    nobody = cli("add", "--org", "no-such-org-anywhere", "--url", receiver.url, "--topic", "contact.tag.add",
                 check=False)
    assert nobody.returncode == 1 and "no organisation named 'no-such-org-anywhere'" in nobody.stderr

    assert tenant.client.get(tenant.api("webhook/")).json()["results"] == []
    assert cli("list", "--org", tenant.name, "--json").stdout == ""

    for command in (("secret", "999999999"), ("secret", "999999999", "--rotate"), ("deliveries", "999999999"),
                    ("replay", "999999999")):
        result = cli(*command, check=False)
        assert result.returncode == 1 and "no webhook with id 999999999" in result.stderr, command
    created = json.loads(cli("add", "--org", tenant.name, "--url", receiver.url, "--topic", "contact.tag.add").stdout)
    wrong_status = cli("deliveries", str(created["id"]), "--status", "lost", check=False)
    assert wrong_status.returncode == 2 and "--status must be one of pending, succeeded, failed" in wrong_status.stderr

"""SMS+ LINE paths over real HTTP against the LINE simulator: LINE push, PNP delivered through
the ``delivery`` webhook, member_not_found, reach_monthly_limit, silent PNP failure falling
back to SMS, and join links binding a phone number (pnp.profile_updated)."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from helpers import CallbackReceiver, ServedApp, behind_a_lock, sets_noted, wait_for

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Order {{order_number}} arrived"}]


def line_sim(base_url: str) -> str:
    return f"{base_url}/_simulators/line"


def setting(tenant: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "到貨通知", "pnp_enabled": True, "pnp_messages": PNP_CONTENT, "pnp_approval_status": "approved",
            "fallback_enabled": True, "sms_text": "Order {{order_number}} arrived", "fallback_period": 1, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    tenant.client.post(tenant.api("pnp/points/"), json={"amount": 10})
    return response.json()


def user(base_url: str, tenant: Any, phone: str | None, *, follow: bool = False) -> str:
    created = httpx.post(line_sim(base_url) + "/_admin/users", json={"phone": phone}).json()
    if follow:
        httpx.post(line_sim(base_url) + f"/_admin/users/{created['user_id']}/follow",
                   json={"channel_id": tenant.channel_id}).raise_for_status()
    return str(created["user_id"])


def push(tenant: Any, setting_id: int, phone: str, **data: Any) -> dict[str, Any]:
    body = {"pnp_setting_id": setting_id, "data": {"phone_number": phone, "pnp": {"order_number": "A1"},
                                                   "sms": {"order_number": "A1"}, **data}}
    response = tenant.client.post(tenant.api("pnp/message/push/"), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def row(tenant: Any, setting_id: int, message_id: int) -> dict[str, Any]:
    rows = tenant.client.get(tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}"
                             "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00").json()
    return next(r for r in rows["results"] if r["pnp_message_id"] == message_id)


def wait_status(tenant: Any, setting_id: int, message_id: int, status: str) -> dict[str, Any]:
    try:
        return wait_for(lambda: (lambda r: r if r["status"] == status else None)(row(tenant, setting_id, message_id)),
                        timeout=30, interval=0.1)
    except AssertionError:
        raise AssertionError(f"still {row(tenant, setting_id, message_id)}") from None


def member(tenant: Any, uid: str) -> dict[str, Any] | None:
    results = tenant.client.get(tenant.api("member/"), params={"line_uid": uid}).json().get("results") or []
    return results[0] if results else None


def metric(tenant: Any, setting_id: int) -> dict[str, int]:
    return dict(tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/")).json()["metric"])


def test_pnp_delivered_through_the_delivery_webhook(tenant: Any, base_url: str) -> None:
    phone = "+886913000001"
    uid = user(base_url, tenant, phone)
    scenario = setting(tenant, fallback_period=40000)
    result = push(tenant, scenario["id"], phone)
    assert result["result"] == "success"
    record = wait_status(tenant, scenario["id"], result["id"], "pnp_delivered")
    assert record["pnp_status"] == "pnp_delivered" and record["pnp_delivered_at"].endswith("+08:00")
    assert record["sms_status"] is None
    inbox = httpx.get(line_sim(base_url) + f"/_admin/users/{uid}/messages").json()
    texts = json.dumps(inbox, ensure_ascii=False)
    assert "Order A1 arrived" in texts
    wait_for(lambda: metric(tenant, scenario["id"]) == {"all": 1, "fail": 0, "pnp": 1, "sms": 0})
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 10  # hold released


def test_hashed_number_reaches_pnp(tenant: Any, base_url: str) -> None:
    import hashlib

    phone = "+886913000002"
    user(base_url, tenant, phone)
    scenario = setting(tenant, fallback_enabled=False, sms_text="")
    digest = hashlib.sha256(phone.encode()).hexdigest()
    result = push(tenant, scenario["id"], digest)
    assert result["result"] == "success"
    record = wait_status(tenant, scenario["id"], result["id"], "pnp_delivered")
    assert record["phone_number"] == digest


def test_pnp_not_matched_answers_failed_and_falls_back_to_sms(tenant: Any, base_url: str) -> None:
    scenario = setting(tenant)
    result = push(tenant, scenario["id"], "+886913000003")  # no LINE user has this number: 422
    assert result["result"] == "failed to send messages"
    record = wait_status(tenant, scenario["id"], result["id"], "sms_delivered")
    assert record["pnp_status"] == "pnp_failed"


def test_blocked_user_gets_no_pnp_and_the_sms_follows(tenant: Any, base_url: str) -> None:
    phone = "+886913000004"
    uid = user(base_url, tenant, phone, follow=True)
    httpx.post(line_sim(base_url) + f"/_admin/users/{uid}/block", json={"channel_id": tenant.channel_id})
    scenario = setting(tenant, fallback_period=2)
    result = push(tenant, scenario["id"], phone)
    assert result["result"] == "success"  # LINE accepts, nothing is delivered
    record = wait_status(tenant, scenario["id"], result["id"], "sms_delivered")
    assert record["pnp_status"] == "pnp_undeliverable"


def create_template(tenant: Any) -> int:
    response = tenant.client.post(tenant.api("template/"), json={
        "name": "notice", "messages": [{"type": "text", "text": "Hi {{contact.line_display_name}}, {{order}}"}]})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_line_push_to_the_one_matching_contact(tenant: Any, base_url: str) -> None:
    phone = "+886913000005"
    uid = user(base_url, tenant, phone, follow=True)
    wait_for(lambda: member(tenant, uid))
    assert tenant.client.patch(tenant.api(f"member/{uid}/"), json={"mobile": phone}).status_code == 200
    template_id = create_template(tenant)
    scenario = setting(tenant, line_push_enabled=True)
    result = push(tenant, scenario["id"], phone, line_push_template_id=template_id, line_push={"order": "shipped"})
    assert result["result"] == "success"
    record = row(tenant, scenario["id"], result["id"])
    assert record["status"] == "line_push_delivered" and record["line_push_template_id"] == template_id
    assert record["line_push_delivered_at"] and record["pnp_status"] is None
    inbox = json.dumps(httpx.get(line_sim(base_url) + f"/_admin/users/{uid}/messages").json(), ensure_ascii=False)
    assert "shipped" in inbox
    missing = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": scenario["id"], "data": {"phone_number": phone, "pnp": {"order_number": "A"},
                                                   "sms": {"order_number": "A"}, "line_push_template_id": template_id,
                                                   "line_push": {}}})
    assert (missing.status_code, missing.text) == (400, "order field is required")


def test_line_push_member_not_found_then_pnp(tenant: Any, base_url: str) -> None:
    phone = "+886913000006"
    user(base_url, tenant, phone)
    template_id = create_template(tenant)
    scenario = setting(tenant, line_push_enabled=True, fallback_period=40000)
    result = push(tenant, scenario["id"], phone, line_push_template_id=template_id, line_push={"order": "x"})
    assert result["result"] == "success"  # the PNP was accepted
    record = wait_status(tenant, scenario["id"], result["id"], "pnp_delivered")
    assert record["line_push_status"] == "line_push_failed"
    assert record["line_push_error_category"] == "member_not_found"


def test_line_push_reach_monthly_limit(tenant: Any, base_url: str) -> None:
    phone = "+886913000007"
    uid = user(base_url, tenant, phone, follow=True)
    wait_for(lambda: member(tenant, uid))
    tenant.client.patch(tenant.api(f"member/{uid}/"), json={"mobile": phone})
    httpx.post(line_sim(base_url) + "/_admin/faults", json={"kind": "quota", "endpoint": "push",
                                                           "channel_id": tenant.channel_id, "count": 10})
    try:
        template_id = create_template(tenant)
        scenario = setting(tenant, line_push_enabled=True, pnp_enabled=False, pnp_messages=[])
        result = push(tenant, scenario["id"], phone, line_push_template_id=template_id, line_push={"order": "x"})
        assert result["result"] == "failed to send messages"
        record = wait_status(tenant, scenario["id"], result["id"], "sms_delivered")
        assert record["line_push_status"] == "line_push_undeliverable"
        assert record["line_push_error_category"] == "reach_monthly_limit"
    finally:
        httpx.delete(line_sim(base_url) + "/_admin/faults", params={"channel_id": tenant.channel_id})


@pytest.fixture(scope="module")
def receiver() -> Any:
    rec = CallbackReceiver()
    served = ServedApp(rec.app)
    rec.url = served.url  # type: ignore[attr-defined]
    yield rec
    served.stop()


def test_join_link_in_the_sms_binds_the_phone_number(tenant: Any, base_url: str, receiver: Any) -> None:
    path = f"/profile-{tenant.id}"
    tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url + path, "topics": ["pnp.profile_updated"],
                                                     "style": "maac"}).raise_for_status()
    phone = "+886913000008"
    scenario = setting(tenant, pnp_enabled=False, pnp_messages=[], sms_text="Join us: {{join_link}}")
    result = push(tenant, scenario["id"], phone)
    wait_status(tenant, scenario["id"], result["id"], "sms_delivered")
    sms = httpx.get(f"{base_url}/_simulators/twilio/_admin/messages", params={"to": phone}).json()["results"][-1]
    link = sms["text"].split("Join us: ", 1)[1]
    assert link.startswith(f"{base_url}/sms_plus/j/")
    followed = httpx.get(link, follow_redirects=False)
    assert followed.status_code == 302
    target = followed.headers["location"]
    assert target.startswith("https://line.me/R/oaMessage/")
    prefilled = unquote(target.split("?", 1)[1])
    uid = user(base_url, tenant, None, follow=True)
    httpx.post(line_sim(base_url) + f"/_admin/users/{uid}/message",
               json={"channel_id": tenant.channel_id, "text": prefilled}).raise_for_status()
    bound = wait_for(lambda: (lambda m: m if m and m.get("mobile") == phone else None)(member(tenant, uid)))
    assert bound["line_uid"] == uid
    event = json.loads(wait_for(lambda: receiver.at(path))[-1]["body"])
    assert event["topic"] == "pnp.profile_updated"
    assert event["data"] == {"pnp_setting_id": scenario["id"], "pnp_setting_name": "到貨通知", "source": "sms",
                             "phone_number": phone, "line_uid": uid, "customer_id": None}


def test_a_delivered_pnp_binds_its_number_to_the_friend_it_reached(tenant: Any, base_url: str, receiver: Any) -> None:
    path = f"/pnp-profile-{tenant.id}"
    tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url + path, "topics": ["pnp.profile_updated"],
                                                     "style": "maac"}).raise_for_status()
    phone = "+886913000010"
    uid = user(base_url, tenant, phone, follow=True)
    assert wait_for(lambda: member(tenant, uid)).get("mobile") in (None, "")  # a friend, no number yet
    scenario = setting(tenant, fallback_period=40000)
    result = push(tenant, scenario["id"], phone)
    assert result["result"] == "success"
    wait_status(tenant, scenario["id"], result["id"], "pnp_delivered")
    bound = wait_for(lambda: (lambda m: m if m and m.get("mobile") == phone else None)(member(tenant, uid)))
    assert bound["line_uid"] == uid
    event = json.loads(wait_for(lambda: receiver.at(path))[-1]["body"])
    assert event["topic"] == "pnp.profile_updated"
    assert event["data"] == {"pnp_setting_id": scenario["id"], "pnp_setting_name": "到貨通知", "source": "pnp",
                             "phone_number": phone, "line_uid": uid, "customer_id": None}
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 10  # hold released


def test_the_points_of_delivered_pnps_are_released_in_the_ledger(tenant: Any, base_url: str, database: Any) -> None:
    from sqlalchemy import text

    phones = ["+886913000011", "+886913000012"]
    for phone in phones:
        user(base_url, tenant, phone)
    scenario = setting(tenant, fallback_period=40000)
    for phone in phones:
        wait_status(tenant, scenario["id"], push(tenant, scenario["id"], phone)["id"], "pnp_delivered")
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 10
    with database.lookup() as conn:
        entries = conn.execute(text("SELECT kind, amount, balance_after, pnp_message_id FROM sms_point_entries "
                                    "WHERE organization_id = :org ORDER BY id"), {"org": tenant.id}).all()
    assert [(kind, amount) for kind, amount, _after, _message in entries] == [
        ("topup", 10), ("hold", -1), ("release", 1), ("hold", -1), ("release", 1)]
    assert [after for _kind, _amount, after, _message in entries] == [10, 9, 10, 9, 10]
    assert all(message is not None for kind, _amount, _after, message in entries if kind == "release")


def test_a_join_text_waiting_for_the_link_lock_sees_the_binding_made_meanwhile(tenant: Any, base_url: str,
                                                                              database: Any) -> None:
    """Two people sending the same join link's text at once: the link binds the number to the
    first only; the second, which waited for the first's transaction, binds nothing (PostgreSQL:
    a link read unlocked was bound twice, the number given to both and announced twice)."""

    from sqlalchemy import select, update

    from openmaac.contacts.models import Contact
    from openmaac.db.base import utcnow
    from openmaac.sms_plus import join_links
    from openmaac.sms_plus.models import PnpJoinLink

    phone = "+886913000020"
    scenario = setting(tenant, pnp_enabled=False, pnp_messages=[], sms_text="Join us: {{join_link}}")
    result = push(tenant, scenario["id"], phone)
    wait_status(tenant, scenario["id"], result["id"], "sms_delivered")
    with database.read() as session:
        code = session.scalar(select(PnpJoinLink.code).where(PnpJoinLink.pnp_message_id == result["id"]))
    first, second = "U" + "1" * 32, "U" + "2" * 32
    bound: list[bool] = []

    def join() -> None:
        with database.write() as session:
            bound.append(join_links.handle_join_text(session, tenant.id, second, f"#join {code}"))

    def hold(session: Any) -> None:  # the first sender's binding, its link locked until commit
        session.execute(update(PnpJoinLink).where(PnpJoinLink.code == code).values(
            bound_line_uid=first, bound_at=utcnow()))

    behind_a_lock(database, hold, join)
    assert bound == [False]
    with database.read() as session:
        assert session.scalar(select(PnpJoinLink.bound_line_uid).where(PnpJoinLink.code == code)) == first
        assert session.scalar(select(Contact.mobile).where(Contact.organization_id == tenant.id,
                                                           Contact.line_uid == second)) is None


def test_pnp_answers_recorded_together_each_move_their_own_message(tenant: Any, base_url: str, database: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent SMS+ pushes: on PostgreSQL their PNP answers are recorded as a set of a
    group-commit batch (one statement); each message still moves on by its own answer (a
    delivered PNP, a failed one falling back to SMS), with its points and safety net."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from openmaac.jobs.models import Job
    from openmaac.sms_plus import engine
    from openmaac.sms_plus import push as sms_push

    reached = [f"+88691300{n:04d}" for n in range(21, 27)]
    unreached = ["+886913000031", "+886913000032"]  # no LINE user: PNP answers 422, SMS follows
    for phone in reached:
        user(base_url, tenant, phone)
    waiting = setting(tenant, fallback_period=40000)  # the reached: no SMS before their delivery
    quick = setting(tenant)  # the unreached: the SMS right after the PNP's failure
    scenarios = {phone: (quick if phone in unreached else waiting)["id"] for phone in reached + unreached}
    sizes: list[int] = []
    monkeypatch.setattr(sms_push, "_record_many_pg", sets_noted(sizes, sms_push._record_many_pg))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(reached + unreached, pool.map(lambda phone: push(tenant, scenarios[phone], phone),
                                                          reached + unreached), strict=True))
    for phone in reached:
        assert results[phone]["result"] == "success"
        wait_status(tenant, scenarios[phone], results[phone]["id"], "pnp_delivered")
    for phone in unreached:
        assert results[phone]["result"] == "failed to send messages"
        assert wait_status(tenant, scenarios[phone], results[phone]["id"],
                           "sms_delivered")["pnp_status"] == "pnp_failed"
    # two top-ups of 10; the delivered PNPs' holds released, the two SMS charged
    wait_for(lambda: tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 20 - len(unreached))
    with database.read() as session:  # no safety net left behind
        assert session.scalar(select(func.count()).select_from(Job).where(Job.unique_key.in_(
            [f"{engine.DISPATCH}:{results[phone]['id']}" for phone in results]))) == 0
    if database.is_sqlite:
        assert sizes == []  # SQLite records one answer at a time
    else:
        assert sum(sizes) == len(results) and max(sizes) > 1


def test_pushes_accepted_together_hold_points_first_come_first_served(tenant: Any, base_url: str, database: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the pushes of a group-commit batch are accepted by one statement, which
    debits an organisation's balance once for all of its holds, only when it covers them all.
    When it does not, each push is accepted alone, in order: the points go first come, first
    served, the refused pushes write nothing, and the ledger reads as one hold after another."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from openmaac.sms_plus import push as sms_push

    phones = [f"+88691300{n:04d}" for n in range(41, 46)]
    for phone in phones:
        user(base_url, tenant, phone)
    scenario = setting(tenant, fallback_period=40000)  # tops up 10 points
    with database.write() as session:  # 3 points left: five pushes of one segment each
        session.execute(text("UPDATE sms_point_balances SET balance = 3 WHERE organization_id = :org"),
                        {"org": tenant.id})
    sizes: list[int] = []
    monkeypatch.setattr(sms_push, "_accept_pnp_many_pg", sets_noted(sizes, sms_push._accept_pnp_many_pg))

    def send(phone: str) -> httpx.Response:
        body = {"pnp_setting_id": scenario["id"], "data": {"phone_number": phone, "pnp": {"order_number": "A1"},
                                                             "sms": {"order_number": "A1"}}}
        return tenant.client.post(tenant.api("pnp/message/push/"), json=body)

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(send, phones))
    accepted = [answer.json()["id"] for answer in answers if answer.status_code == 200]
    refused = [(answer.status_code, answer.text) for answer in answers if answer.status_code != 200]
    assert len(accepted) == 3 and refused == [(400, "your SMS points are insufficient, please recharge before "
                                                     "sending")] * 2
    with database.lookup() as conn:
        holds = conn.execute(text("SELECT amount, balance_after FROM sms_point_entries WHERE organization_id = :org "
                                  "AND kind = 'hold' ORDER BY id"), {"org": tenant.id}).all()
        written = conn.execute(text("SELECT count(*) FROM pnp_messages WHERE organization_id = :org"),
                               {"org": tenant.id}).scalar_one()
    assert [tuple(hold) for hold in holds] == [(-1, 2), (-1, 1), (-1, 0)] and written == 3
    for message_id in accepted:
        wait_status(tenant, scenario["id"], message_id, "pnp_delivered")
    wait_for(lambda: tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 3)  # the holds released
    if database.is_sqlite:
        assert sizes == []
    else:
        assert sum(sizes) == 5 and max(sizes) > 1


def test_delivery_webhooks_of_a_batch_are_written_together_each_counting_its_own(make_tenant: Any, base_url: str,
                                                                                   database: Any, receiver: Any) -> None:
    """The delivery-only webhook requests of a group commit's batch are written by one set of
    statements (``handle_delivery_requests``): every organisation's PNPs are delivered, each
    request counts its own new events, and an event LINE sent in two requests counts once. What
    PostgreSQL reads with the messages in one statement still acts: the status webhooks (in the
    organisation's time zone), and the number bound to the friend a PNP reached."""
    import time
    import uuid

    from sqlalchemy import text

    from openmaac.line_inbound.events import accept_events
    from openmaac.line_inbound.service import handle_delivery_requests

    def delivery(uid: str, tag: str, event_id: str) -> dict[str, Any]:
        return {"type": "delivery", "mode": "active", "timestamp": int(time.time() * 1000),
                "source": {"type": "user", "userId": uid}, "webhookEventId": event_id,
                "deliveryContext": {"isRedelivery": False}, "delivery": {"data": tag}}

    sent: list[tuple[Any, int, int, str, str]] = []  # tenant, scenario, message, LINE user, delivery tag
    tenants = [make_tenant(), make_tenant()]
    path = f"/pnp-status-{tenants[0].id}"
    tenants[0].client.post(tenants[0].api("webhook/"), json={
        "url": receiver.url + path, "topics": ["pnp.status_updated"], "style": "maac"}).raise_for_status()
    for index, tenant in enumerate(tenants):
        httpx.post(line_sim(base_url) + f"/_admin/channels/{tenant.channel_id}/limits",
                   json={"pnp_delivery_delay": 3600}).raise_for_status()  # the deliveries are ours to send
        scenario = setting(tenant, fallback_period=40000)
        for n in range(2):
            phone = f"+88691305{index}{n:03d}"
            uid = user(base_url, tenant, phone, follow=(index, n) == (0, 0))  # a friend without a number yet
            if (index, n) == (0, 0):
                assert wait_for(lambda: member(tenant, uid)).get("mobile") in (None, "")  # noqa: B023
            message_id = push(tenant, scenario["id"], phone)["id"]
            with database.lookup() as conn:
                tag = conn.execute(text("SELECT delivery_tag FROM pnp_messages WHERE id = :id"),
                                   {"id": message_id}).scalar_one()
            sent.append((tenant, scenario["id"], message_id, uid, tag))
    events = [delivery(uid, tag, uuid.uuid4().hex) for _tenant, _scenario, _message, uid, tag in sent]
    (first, org_a), (second, _), (third, org_b), (fourth, _) = [(event, sent[i][0].id) for i, event in enumerate(events)]
    requests = [(org_a, accept_events([first])), (org_b, accept_events([third, fourth])),
                (org_a, accept_events([second, first]))]  # the first event again, in another request
    with database.write() as session:
        assert handle_delivery_requests(session, requests) == [1, 2, 1]
    for tenant, scenario, message_id, _uid, _tag in sent:
        assert row(tenant, scenario, message_id)["status"] == "pnp_delivered"
        assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 10  # its hold released
    friend = member(tenants[0], sent[0][3])
    assert friend is not None and friend["mobile"] == "+886913050000"

    def delivered_statuses() -> list[Any] | None:
        bodies = [json.loads(r["body"]) for r in receiver.at(path)]
        found = [b for b in bodies if b["data"]["status"] == "pnp_delivered"]
        return found if len(found) == 2 else None

    announced = wait_for(delivered_statuses)
    assert sorted(b["data"]["pnp_message_id"] for b in announced) == sorted(m for _t, _s, m, _u, _g in sent[:2])
    assert all(b["timestamp"].endswith("+08:00") and b["data"]["pnp_delivered_at"].endswith("+08:00")
               for b in announced)


def test_a_pnp_pushs_status_webhooks_follow_it_from_acceptance_to_delivery(tenant: Any, base_url: str,
                                                                           receiver: Any) -> None:
    """On PostgreSQL the push's acceptance reads the organisation's webhook targets in its own
    statement: its first status event still goes out, in the organisation's time zone."""
    path = f"/pnp-status-{tenant.id}"
    tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url + path, "topics": ["pnp.status_updated"],
                                                     "style": "maac"}).raise_for_status()
    phone = "+886913060001"
    user(base_url, tenant, phone)
    scenario = setting(tenant, fallback_period=40000)
    result = push(tenant, scenario["id"], phone)
    wait_status(tenant, scenario["id"], result["id"], "pnp_delivered")

    def statuses() -> list[Any] | None:
        bodies = [json.loads(r["body"]) for r in receiver.at(path)]
        return bodies if len(bodies) == 3 else None

    bodies = wait_for(statuses)
    assert [b["data"]["status"] for b in bodies] == ["pnp_preparing", "pnp_accepted", "pnp_delivered"]
    assert all(b["data"]["pnp_message_id"] == result["id"] and b["timestamp"].endswith("+08:00") for b in bodies)

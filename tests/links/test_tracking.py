"""Tracking end to end: a tracked multicast reaches two simulated users, who open it (their
LINE client loads its images), click its links and tap its actions; the event report and the
webhooks (MAAC ``message.first_open``, CDH ``message.send/open/click``) show it."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import BASE_URL, SIMULATOR_URL
from helpers import (
    CallbackReceiver,
    ServedApp,
    behind_a_lock,
    create_event,
    create_template,
    inbox,
    simulated_friend,
    wait_for,
)

SHOP = "https://shop.example.com/cart?ref=line"
TEMPLATE = [
    {"type": "text", "text": "Hi {{contact.line_display_name}}, see https://news.example.com/{{slug}} now."},
    {"type": "template", "altText": "cart",
     "template": {"type": "buttons", "thumbnailImageUrl": "https://cdn.example.com/{{img}}", "text": "Your cart",
                  "actions": [{"type": "uri", "label": "Open", "uri": SHOP},
                              {"type": "message", "label": "Help", "text": "I need help"},
                              {"type": "postback", "label": "Later", "data": "remind=later",
                               "displayText": "Remind me later"}]}},
]


@pytest.fixture
def hooks():
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    yield receiver, served.url
    served.stop()


def add_webhook(tenant, url, topics, style):
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": topics, "style": style})
    assert response.status_code == 201, response.text


def sim(path, **body):
    response = httpx.post(f"{SIMULATOR_URL}/_admin/{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def report(tenant, event_id, **params):
    response = tenant.client.get(tenant.api(f"event/{event_id}/report/"), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def bodies(receiver, path):
    return [json.loads(r["body"]) for r in receiver.at(path)]


def test_opens_clicks_taps_reach_the_report_and_webhooks(tenant, hooks):
    receiver, hook_url = hooks
    add_webhook(tenant, hook_url + "/maac", ["message.first_open"], "maac")
    add_webhook(tenant, hook_url + "/cdh", ["message.send", "message.open", "message.click"], "cdh")
    setting = tenant.client.patch(tenant.api("tracking_setting/"), json={
        "utm_source": "line", "utm_medium": "message", "utm_campaign": "cart", "append_clid": True})
    assert setting.status_code == 200, setting.text
    assert setting.json() == {"utm_campaign": "cart", "utm_source": "line", "utm_medium": "message",
                              "utm_content": None, "append_clid": True}

    alice, bob = simulated_friend(tenant, "Alice"), simulated_friend(tenant, "Bob")
    template = create_template(tenant, TEMPLATE)
    event_id = create_event(tenant, "cart retarget")
    response = tenant.client.post(tenant.api("direct_message/multicast/"), json={
        "template_id": template["id"], "event_id": event_id,
        "data": [{"line_uid": alice, "slug": "a", "img": "a.png"}, {"line_uid": bob, "slug": "a", "img": "b.jpg"}]})
    assert response.status_code == 200, response.text
    dm_id = response.json()["id"]
    wait_for(lambda: tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()["status"] == "sent", 60)

    # what the users received: openmaac links and images, not the originals
    text, buttons = (entry["message"] for entry in inbox(alice))
    assert text["text"].startswith("Hi Alice, see " + BASE_URL + "/r/") and text["text"].endswith(" now.")
    thumbnail = buttons["template"]["thumbnailImageUrl"]
    assert thumbnail.startswith(BASE_URL + "/o/") and thumbnail.endswith(".png")
    assert buttons["template"]["actions"][0]["uri"].startswith(BASE_URL + "/r/")
    bob_buttons = inbox(bob)[1]["message"]
    assert bob_buttons["template"]["thumbnailImageUrl"].endswith(".jpg")
    assert bob_buttons["template"]["actions"][0]["uri"] != buttons["template"]["actions"][0]["uri"]

    # Alice looks at the message twice; Bob never does
    message_id = inbox(alice)[1]["message_id"]
    for _ in range(2):
        opened = sim(f"users/{alice}/open", message_id=message_id)
        assert [(f["status"], f["location"]) for f in opened["fetched"]] == [(302, "https://cdn.example.com/a.png")]

    # clicks: Alice twice on the shop link, once on the text link; Bob once on the shop link
    click = sim(f"users/{alice}/click", message_id=message_id, index=0)
    assert click["status"] == 302
    target = urlsplit(click["location"])
    query = parse_qs(target.query)
    assert target.netloc == "shop.example.com" and query["ref"] == ["line"]
    assert query["utm_source"] == ["line"] and query["utm_medium"] == ["message"]
    assert query["utm_campaign"] == ["cart"] and "utm_content" not in query
    # clid is the contact's member_id: a landing page can look the contact up with it
    found = tenant.client.get(tenant.api("member/"), params={"member_id": query["clid"][0]}).json()["results"]
    assert [m["line_uid"] for m in found] == [alice]
    sim(f"users/{alice}/click", message_id=message_id, index=0)
    text_click = sim(f"users/{alice}/click", message_id=inbox(alice)[0]["message_id"], index=0)
    assert text_click["location"].startswith("https://news.example.com/a?utm_campaign=cart")
    sim(f"users/{bob}/click", message_id=inbox(bob)[1]["message_id"], index=0)

    # taps on the message action (Alice) and the postback action (Alice and Bob)
    sim(f"users/{alice}/message", channel_id=tenant.channel_id, text="I need help")
    sim(f"users/{alice}/message", channel_id=tenant.channel_id, text="unrelated chatter")
    sim(f"users/{alice}/postback", channel_id=tenant.channel_id, data="remind=later")
    sim(f"users/{bob}/postback", channel_id=tenant.channel_id, data="remind=later")

    body = report(tenant, event_id)
    assert body["id"] == event_id
    total = body["report"]["total"]
    assert total == {"opens": 1, "clicks": 4, "unique_clicks": 2, "adds_to_cart": 0, "transactions": 0,
                     "transaction_revenue": 0.0}
    urls = {row["url"]: row for row in body["report"]["urls"]}
    assert set(urls) == {"https://news.example.com/a", SHOP}
    shop = urls[SHOP]
    assert (shop["clicks"], shop["unique_clicks"]) == (3, 2)
    assert (shop["utm_campaign"], shop["utm_source"], shop["utm_medium"], shop["utm_content"]) == (
        "cart", "line", "message", None)
    assert (urls["https://news.example.com/a"]["clicks"], urls["https://news.example.com/a"]["unique_clicks"]) == (1, 1)
    assert shop["tags"] == [] and shop["adds_to_cart"] == 0 and isinstance(shop["link"], int)
    messages = {row["message"]: row["clicks"] for row in body["report"]["messages"]}
    assert messages == {"I need help": 1, "Remind me later": 2}

    # webhooks: MAAC first_open once (Alice); CDH send x2, open x1, click x4
    wait_for(lambda: len(receiver.at("/cdh")) >= 7 and receiver.at("/maac"), timeout=30)
    [first_open] = bodies(receiver, "/maac")
    assert first_open["topic"] == "message.first_open"
    assert first_open["data"] == {"message_type": "openapi", "message_id": event_id, "line_uid": alice,
                                  "customer_id": None}
    cdh = bodies(receiver, "/cdh")
    events = sorted((b["event"], b["data"]["line_uid"]) for b in cdh)
    assert events == sorted([("message.send", alice), ("message.send", bob), ("message.open", alice),
                             ("message.click", alice), ("message.click", alice), ("message.click", alice),
                             ("message.click", bob)])
    clicks = [b["data"] for b in cdh if b["event"] == "message.click"]
    assert {c["link"] for c in clicks} == {SHOP, "https://news.example.com/a"}
    sample = clicks[0]
    assert sample["campaign_id"] == event_id and sample["campaign_name"] == "cart retarget"
    assert sample["campaign_type"] == "openapi_event" and sample["direct_message_id"] == dm_id

    # a date window without activity
    empty = report(tenant, event_id, start_date="2020-01-01", end_date="2020-01-31")["report"]
    assert empty["total"]["opens"] == 0 and empty["total"]["clicks"] == 0
    assert [row["clicks"] for row in empty["urls"]] == [0, 0]


def test_untracked_push_keeps_links_and_images(tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEMPLATE)
    response = tenant.client.post(tenant.api("direct_message/push/"), json={
        "template_id": template["id"], "data": {"line_uid": uid, "slug": "x", "img": "x.png"}})
    assert response.json()["result"] == "success"
    text, buttons = (entry["message"] for entry in inbox(uid))
    assert "https://news.example.com/x" in text["text"]
    assert buttons["template"]["thumbnailImageUrl"] == "https://cdn.example.com/x.png"
    assert buttons["template"]["actions"][0]["uri"] == SHOP


def test_enhanced_multicast_links_are_per_message(tenant):
    alice, bob = simulated_friend(tenant), simulated_friend(tenant)
    template = create_template(tenant, TEMPLATE)
    event_id = create_event(tenant)
    dm_id = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "event_id": event_id, "line_uids": [alice, bob],
        "data": {"slug": "e", "img": "e.png"}}).json()["id"]
    wait_for(lambda: tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()["status"] == "sent", 60)
    a, b = inbox(alice)[1]["message"], inbox(bob)[1]["message"]
    assert a == b  # one message for all
    assert a["template"]["thumbnailImageUrl"] == "https://cdn.example.com/e.png"  # no open tracking
    assert a["template"]["actions"][0]["uri"].startswith(BASE_URL + "/r/")
    sim(f"users/{alice}/open", message_id=inbox(alice)[1]["message_id"])
    sim(f"users/{alice}/click", message_id=inbox(alice)[1]["message_id"], index=0)
    sim(f"users/{bob}/click", message_id=inbox(bob)[1]["message_id"], index=0)
    total = report(tenant, event_id)["report"]["total"]
    assert (total["opens"], total["clicks"], total["unique_clicks"]) == (0, 2, None)
    shop = next(row for row in report(tenant, event_id)["report"]["urls"] if row["url"] == SHOP)
    assert (shop["clicks"], shop["unique_clicks"]) == (2, None)


def test_unknown_codes_are_404(anon):
    assert anon.get("/r/NoSuchCode1").status_code == 404
    assert anon.get("/o/NoSuchCode1/0.png").status_code == 404
    assert anon.get("/r/bad$code").status_code == 404
    assert anon.get("/o/NoSuchCode1/x.png").status_code == 404


def test_tracking_setting_defaults_and_validation(tenant):
    assert tenant.client.get(tenant.api("tracking_setting/")).json() == {
        "utm_campaign": None, "utm_source": None, "utm_medium": None, "utm_content": None, "append_clid": False}
    response = tenant.client.patch(tenant.api("tracking_setting/"), json={"utm_source": "x" * 256})
    assert response.status_code == 400
    assert response.json() == {"utm_source": ["Ensure this field has no more than 255 characters."]}
    tenant.client.patch(tenant.api("tracking_setting/"), json={"utm_source": "line"})
    assert tenant.client.patch(tenant.api("tracking_setting/"), json={"utm_medium": "msg"}).json()["utm_source"] == "line"
    assert tenant.client.patch(tenant.api("tracking_setting/"), json={"utm_source": ""}).json()["utm_source"] is None


def test_the_first_tracking_settings_saved_by_two_requests_at_once(tenant, database):
    """The organisation's first tracking settings, saved by two requests at once: the one that
    waited for the other's transaction changes the settings the other created (PostgreSQL:
    both found none, and the second's insert of the same row answered 500)."""

    from sqlalchemy import insert

    from openmaac.db.base import utcnow
    from openmaac.links.models import TrackingSetting

    answers = []

    def save() -> None:
        with httpx.Client(base_url=str(tenant.client.base_url), headers=dict(tenant.client.headers),
                          timeout=60) as client:
            answers.append(client.patch(tenant.api("tracking_setting/"), json={"utm_medium": "msg"}))

    def hold(session):  # the other request's first settings, not committed yet
        session.execute(insert(TrackingSetting).values(organization_id=tenant.id, utm_source="line",
                                                       append_clid=True, updated_at=utcnow()))

    behind_a_lock(database, hold, save)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"utm_campaign": None, "utm_source": "line", "utm_medium": "msg", "utm_content": None,
                             "append_clid": True}

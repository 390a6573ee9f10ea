# ruff: noqa: F811  (the fixtures imported from cdh_support are parameters of the tests)
"""Engagement events (``POST /cdh/v1/engagement/event``) and their attribution to tracked
clicks: the conversion story from a tracked push to the event report."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cdh_support import cdh, clock  # noqa: F401  (fixtures)

from conftest import SIMULATOR_URL
from helpers import behind_a_lock, create_event, create_template, inbox, simulated_friend

SHOP = "https://shop.example.com/p/1"
NEWS = "https://news.example.com/a"
TEMPLATE = [{"type": "text", "text": f"Buy {SHOP} or read {NEWS}"}]

PARAMS = {
    "page_view": {"page_path": "/p/1", "page_title": "Product"},
    "view_item": {"currency": "TWD", "items": [{"item_id": "sku-1", "item_name": "Tea", "price": 120, "quantity": 1}]},
    "add_to_cart": {"currency": "TWD", "items": [{"item_id": "sku-1", "price": 120, "quantity": 2}]},
    "remove_from_cart": {"items": [{"item_id": "sku-1", "quantity": 1}]},
    "begin_checkout": {"items": [{"item_id": "sku-1", "quantity": 1}]},
    "purchase": {"transaction_id": "T-1", "revenue": 240.5, "tax": 12, "shipping": 60, "currency": "TWD",
                 "items": [{"item_id": "sku-1", "quantity": 2}]},
    "user_engagement": {"engagement_time_msec": 1500, "page_view_id": "pv-1"},
}


def event(cdh, behavior, params, utm_term="lm:1", **extra):
    return cdh.post("/cdh/v1/engagement/event", json={"behavior": behavior, "utm_term": utm_term, "params": params,
                                                      **extra})


def tracked_click(tenant, index=0):
    """A simulated user gets a tracked push and clicks its link; the utm_term the site receives."""
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEMPLATE)
    event_id = create_event(tenant, "summer")
    pushed = tenant.client.post(tenant.api("direct_message/push/"), json={
        "template_id": template["id"], "event_id": event_id, "data": {"line_uid": uid}})
    assert pushed.status_code == 200 and pushed.json()["result"] == "success", pushed.text
    [message] = inbox(uid)
    clicked = httpx.post(f"{SIMULATOR_URL}/_admin/users/{uid}/click",
                         json={"message_id": message["message_id"], "index": index}, timeout=30).json()
    assert clicked["status"] == 302
    query = parse_qs(urlsplit(clicked["location"]).query)
    return event_id, query["utm_term"][0], uid


def report(tenant, event_id, **params):
    response = tenant.client.get(tenant.api(f"event/{event_id}/report/"), params=params)
    assert response.status_code == 200, response.text
    return response.json()["report"]


@pytest.mark.parametrize("behavior", sorted(PARAMS))
def test_every_behavior_with_its_params_answers_an_event_id(cdh, behavior):
    response = event(cdh, behavior, PARAMS[behavior], utm_source="google", utm_medium="cpc",
                     utm_campaign="summer_sale", utm_content="new_arrivals", language="zh-TW", geography="TW")
    assert response.status_code == 200, response.text
    assert uuid.UUID(response.json()["event_id"]).version == 4


def test_custom_behaviors_take_any_params(cdh):
    assert event(cdh, "sign_up", {"method": "line"}).status_code == 200
    assert event(cdh, "x" * 256, {}).status_code == 200
    assert event(cdh, "x" * 257, {}).status_code == 422
    assert event(cdh, "", {}).status_code == 422


@pytest.mark.parametrize("term", ["lm:1", "lm:123456789", "web-shop:1:2:3:4:5", "a_b:1:2:::5"])
def test_utm_term_pattern_accepts(cdh, term):
    assert event(cdh, "page_view", PARAMS["page_view"], utm_term=term).status_code == 200


@pytest.mark.parametrize("term", ["", "lm:", "lm:x", "lm:1 ", "x:1:2:3:4", "a:1:2:3:4:", "a b:1:2:3:4:5"])
def test_utm_term_pattern_refuses(cdh, term):
    response = event(cdh, "page_view", PARAMS["page_view"], utm_term=term)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "utm_term"]


@pytest.mark.parametrize(("body", "loc"), [
    ({"behavior": "page_view", "utm_term": "lm:1", "params": {}}, ["body", "params", "page_path"]),
    ({"behavior": "add_to_cart", "utm_term": "lm:1", "params": {"items": []}}, ["body", "params", "items"]),
    ({"behavior": "purchase", "utm_term": "lm:1", "params": {"transaction_id": "T"}}, ["body", "params", "revenue"]),
    ({"behavior": "user_engagement", "utm_term": "lm:1", "params": {"engagement_time_msec": -1}},
     ["body", "params", "engagement_time_msec"]),
    ({"behavior": "page_view", "utm_term": "lm:1"}, ["body", "params"]),
    ({"utm_term": "lm:1", "params": {}}, ["body", "behavior"]),
    ({"behavior": "page_view", "params": {"page_path": "/"}}, ["body", "utm_term"]),
    ({"behavior": "page_view", "utm_term": "lm:1", "params": {"page_path": "/"}, "utm_source": ""},
     ["body", "utm_source"]),
    ({"behavior": "page_view", "utm_term": "lm:1", "params": {"page_path": "/"}, "utm_campaign": "x" * 257},
     ["body", "utm_campaign"]),
])
def test_invalid_events_are_422(cdh, body, loc):
    response = cdh.post("/cdh/v1/engagement/event", json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]


def test_utm_fields_may_be_null(cdh):
    response = event(cdh, "page_view", PARAMS["page_view"], utm_source=None, utm_medium=None, utm_campaign=None,
                     utm_content=None, language=None, geography=None)
    assert response.status_code == 200


def test_conversion_story_click_then_purchase_shows_in_the_event_report(tenant, cdh):
    event_id, utm_term, _uid = tracked_click(tenant)
    assert utm_term.startswith("lm:")
    assert event(cdh, "page_view", {"page_path": "/p/1"}, utm_term=utm_term).status_code == 200
    assert event(cdh, "add_to_cart", PARAMS["add_to_cart"], utm_term=utm_term).status_code == 200
    bought = event(cdh, "purchase", {**PARAMS["purchase"], "revenue": 1234.5}, utm_term=utm_term)
    assert bought.status_code == 200
    # the same transaction reported twice is counted once
    assert event(cdh, "purchase", {**PARAMS["purchase"], "revenue": 1234.5}, utm_term=utm_term).status_code == 200
    body = report(tenant, event_id)
    assert body["total"]["clicks"] == 1
    assert (body["total"]["adds_to_cart"], body["total"]["transactions"], body["total"]["transaction_revenue"]) == (
        1, 1, 1234.5)
    urls = {row["url"]: row for row in body["urls"]}
    shop, news = urls[SHOP], urls[NEWS]
    assert (shop["adds_to_cart"], shop["transactions"], shop["transaction_revenue"]) == (1, 1, 1234.5)
    assert (news["adds_to_cart"], news["transactions"], news["transaction_revenue"]) == (0, 0, 0.0)


def test_conversions_after_the_attribution_window_or_foreign_clicks_do_not_count(tenant, make_tenant, cdh, clock):
    event_id, utm_term, _uid = tracked_click(tenant)
    # another organisation's CDH key cannot claim this organisation's click
    from helpers import org_of
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.db.engine import get_database

    other = make_tenant()
    with get_database().write() as session:
        other_key = create_cdh_key(session, org_of(other))
    foreign = cdh.post("/cdh/v1/engagement/event", headers={"apikey": other_key}, json={
        "behavior": "purchase", "utm_term": utm_term, "params": {"transaction_id": "F", "revenue": 9}})
    assert foreign.status_code == 200
    clock.advance(timedelta(days=7, minutes=1))
    assert event(cdh, "purchase", {"transaction_id": "late", "revenue": 99}, utm_term=utm_term).status_code == 200
    total = report(tenant, event_id)["total"]
    assert (total["transactions"], total["transaction_revenue"]) == (0, 0.0)


def test_within_the_window_counts_and_report_dates_filter(tenant, cdh, clock):
    event_id, utm_term, _uid = tracked_click(tenant)
    clock.advance(timedelta(days=6, hours=23))
    assert event(cdh, "add_to_cart", PARAMS["add_to_cart"], utm_term=utm_term).status_code == 200
    assert report(tenant, event_id)["total"]["adds_to_cart"] == 1
    from datetime import datetime
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo(tenant.timezone)).date()
    assert report(tenant, event_id, end_date=str(today))["total"]["adds_to_cart"] == 0


def test_unknown_click_is_stored_but_not_attributed(tenant, cdh):
    event_id, _term, _uid = tracked_click(tenant)
    assert event(cdh, "purchase", {"transaction_id": "X", "revenue": 5}, utm_term="lm:999999999999").status_code == 200
    assert event(cdh, "purchase", {"transaction_id": "Y", "revenue": 5},
                 utm_term="lm:99999999999999999999999").status_code == 200
    assert report(tenant, event_id)["total"]["transactions"] == 0


def test_a_purchase_reported_twice_at_once_is_credited_once(tenant, cdh, database):
    """The same transaction reported by two requests at once (the site's retry): the second
    waits for the first and is stored, not credited (PostgreSQL: neither saw the other's
    uncommitted credit, so the transaction and its revenue counted twice)."""


    from helpers import org_of
    from openmaac.cdh import service
    from openmaac.cdh.schemas import EngagementEventIn

    event_id, utm_term, _uid = tracked_click(tenant)
    body = EngagementEventIn.model_validate({"behavior": "purchase", "utm_term": utm_term,
                                             "params": {**PARAMS["purchase"], "revenue": 100}})
    org = org_of(tenant)

    def submit() -> None:
        with database.write() as session:
            service.submit_event(session, org, body)

    def hold(session):  # the first report, credited, not committed yet
        service.submit_event(session, org, body)

    behind_a_lock(database, hold, submit)
    total = report(tenant, event_id)["total"]
    assert (total["transactions"], total["transaction_revenue"]) == (1, 100.0)

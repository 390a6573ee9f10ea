# ruff: noqa: F811  (the fixtures imported from cdh_support are parameters of the tests)
"""``GET /openapi/v1/behavior/download/{date}/{pageview,product,transaction}/`` (MAAC OpenAPI
"Contact Tracking"): a clicked contact's engagement events of a day, as CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import httpx
from cdh_support import cdh, clock  # noqa: F401  (fixtures)
from test_cdh_engagement import PARAMS, event, tracked_click

from conftest import BASE_URL
from helpers import org_of

COLUMNS = {
    "pageview": ["line_uid", "utm_campaign", "utm_source", "utm_medium", "utm_content", "time", "page_path",
                 "page_title", "page_views", "views_per_session", "entrances", "avg_time_on_page", "exits",
                 "ingestion_timestamp"],
    "product": ["line_uid", "utm_campaign", "utm_source", "utm_medium", "utm_content", "time", "product_name",
                "product_sku", "adds_to_cart", "removes_from_cart", "item_revenue", "item_quantity", "checkouts",
                "list_clicks", "list_views", "ingestion_timestamp"],
    "transaction": ["line_uid", "utm_campaign", "utm_source", "utm_medium", "utm_content", "time", "transactions",
                    "revenue", "ingestion_timestamp"],
}


def today(tenant):
    return datetime.now(org_of(tenant).tz).date().isoformat()


def download(client, day, kind):
    response = client.get(f"/openapi/v1/behavior/download/{day}/{kind}/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f"attachment; filename={day}_{kind}.csv"
    header, *rows = csv.reader(io.StringIO(response.content.decode("utf-8-sig")))
    assert header == COLUMNS[kind]
    return [dict(zip(header, row, strict=True)) for row in rows]


def set_utm(tenant):
    response = tenant.client.patch(tenant.api("tracking_setting/"), json={
        "utm_source": "line", "utm_medium": "message", "utm_campaign": "summer, \"sale\"", "utm_content": "push"})
    assert response.status_code == 200, response.text


def test_a_clicked_contacts_pageview_cart_and_purchase_are_in_the_three_csvs(tenant, cdh):
    set_utm(tenant)
    _event_id, utm_term, uid = tracked_click(tenant)
    assert event(cdh, "page_view", {"page_path": "/p/1?a=b", "page_title": "Tea, green"},
                 utm_term=utm_term).status_code == 200
    assert event(cdh, "add_to_cart", {"items": [{"item_id": "sku-1", "item_name": "Tea", "price": 120,
                                                 "quantity": 2}]}, utm_term=utm_term).status_code == 200
    assert event(cdh, "remove_from_cart", PARAMS["remove_from_cart"], utm_term=utm_term).status_code == 200
    assert event(cdh, "purchase", {"transaction_id": "T-9", "revenue": 240.5, "items": [
        {"item_id": "sku-1", "item_name": "Tea", "price": 120.25, "quantity": 2}]}, utm_term=utm_term).status_code == 200
    assert event(cdh, "user_engagement", PARAMS["user_engagement"], utm_term=utm_term).status_code == 200
    # no contact behind these: another system's utm_term, a click that does not exist
    assert event(cdh, "page_view", {"page_path": "/x"}, utm_term="web-shop:1:2:3:4:5").status_code == 200
    assert event(cdh, "page_view", {"page_path": "/y"}, utm_term="lm:999999999999").status_code == 200
    day = today(tenant)
    utm = {"line_uid": uid, "utm_campaign": "summer, \"sale\"", "utm_source": "line", "utm_medium": "message",
           "utm_content": "push"}

    [page] = download(tenant.client, day, "pageview")
    assert {k: page[k] for k in utm} == utm
    assert (page["page_path"], page["page_title"], page["page_views"]) == ("/p/1?a=b", "Tea, green", "1")
    assert (page["views_per_session"], page["entrances"], page["avg_time_on_page"], page["exits"]) == (
        "0", "0", "0", "0")
    offset = datetime.now(org_of(tenant).tz).isoformat()[-6:]
    assert page["time"] == page["ingestion_timestamp"] and page["time"].startswith(day)
    assert page["time"].endswith(offset)

    products = download(tenant.client, day, "product")
    assert all({k: row[k] for k in utm} == utm for row in products)
    metrics = [(row["product_sku"], row["product_name"], row["adds_to_cart"], row["removes_from_cart"],
                row["item_revenue"], row["item_quantity"], row["checkouts"]) for row in products]
    assert metrics == [("sku-1", "Tea", "1", "0", "0", "0", "0"), ("sku-1", "", "0", "1", "0", "0", "0"),
                       ("sku-1", "Tea", "0", "0", "240.5", "2", "0")]

    [sale] = download(tenant.client, day, "transaction")
    assert {k: sale[k] for k in utm} == utm
    assert (sale["transactions"], sale["revenue"]) == ("1", "240.5")


def test_another_day_is_header_only(tenant, cdh):
    _event_id, utm_term, _uid = tracked_click(tenant)
    assert event(cdh, "purchase", PARAMS["purchase"], utm_term=utm_term).status_code == 200
    yesterday = (datetime.now(org_of(tenant).tz).date() - timedelta(days=1)).isoformat()
    for kind in COLUMNS:
        assert download(tenant.client, yesterday, kind) == []
    assert len(download(tenant.client, today(tenant), "transaction")) == 1


def test_another_organisations_events_never_appear(tenant, make_tenant, cdh):
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.db.engine import get_database

    _event_id, utm_term, _uid = tracked_click(tenant)
    other = make_tenant()
    with get_database().write() as session:
        other_key = create_cdh_key(session, org_of(other))
    # the other organisation's key names this organisation's click: credited to nobody
    for behavior in ("page_view", "add_to_cart", "purchase"):
        response = cdh.post("/cdh/v1/engagement/event", headers={"apikey": other_key}, json={
            "behavior": behavior, "utm_term": utm_term, "params": PARAMS[behavior]})
        assert response.status_code == 200
    day = today(tenant)
    for kind in COLUMNS:
        assert download(tenant.client, day, kind) == []
        assert download(other.client, day, kind) == []


def test_bad_dates_are_400_and_change_nothing(tenant):
    for day in ("2026-13-01", "20260101", "yesterday", "2026-1-01", "2026-01-01T00:00"):
        response = tenant.client.get(f"/openapi/v1/behavior/download/{day}/pageview/")
        assert response.status_code == 400, (day, response.text)
        assert response.json() == {"date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]}
    # the first day of year 1 starts before year 1 in UTC east of Greenwich (Asia/Taipei here)
    response = tenant.client.get("/openapi/v1/behavior/download/0001-01-01/pageview/")
    assert response.status_code == 400 and response.json() == {"date": ["Date value out of range."]}
    response = tenant.client.get("/openapi/v1/behavior/download/2026-01-01/clicks/")
    assert response.status_code == 404


def test_a_token_is_required(tenant):
    with httpx.Client(base_url=BASE_URL, timeout=30) as anonymous:
        for kind in COLUMNS:
            response = anonymous.get(f"/openapi/v1/behavior/download/2026-01-01/{kind}/")
            assert response.status_code == 401
            assert response.json() == {"detail": "Authentication credentials were not provided."}
            response = anonymous.get(f"/openapi/v1/behavior/download/2026-01-01/{kind}/",
                                     headers={"Authorization": "Bearer om_not-a-token"})
            assert response.status_code == 401 and response.json() == {"detail": "Invalid token."}


def test_events_after_the_attribution_window_belong_to_nobody(tenant, cdh, clock):
    _event_id, utm_term, _uid = tracked_click(tenant)
    clock.advance(timedelta(days=7, minutes=1))
    assert event(cdh, "page_view", PARAMS["page_view"], utm_term=utm_term).status_code == 200
    assert event(cdh, "purchase", PARAMS["purchase"], utm_term=utm_term).status_code == 200
    late = (datetime.now(org_of(tenant).tz) + timedelta(days=7, minutes=1)).date().isoformat()
    for kind in COLUMNS:
        assert download(tenant.client, late, kind) == []
    clock.reset()
    assert event(cdh, "page_view", PARAMS["page_view"], utm_term=utm_term).status_code == 200
    assert len(download(tenant.client, today(tenant), "pageview")) == 1

"""``event/{id}/report/``: shape, date windows, validation and tenant walls."""

from __future__ import annotations

import httpx

from conftest import SIMULATOR_URL
from helpers import create_event, create_template, inbox, simulated_friend

IMAGE = [{"type": "image", "originalContentUrl": "https://cdn.example.com/{{img}}",
          "previewImageUrl": "https://cdn.example.com/{{img}}"},
         {"type": "text", "text": "Buy: https://shop.example.com/p/1"}]


def test_empty_report_has_the_complete_shape(tenant):
    event_id = create_event(tenant)
    response = tenant.client.get(tenant.api(f"event/{event_id}/report/"))
    assert response.status_code == 200
    assert response.json() == {"id": event_id, "report": {
        "total": {"opens": 0, "clicks": 0, "unique_clicks": None, "adds_to_cart": 0, "transactions": 0,
                  "transaction_revenue": 0.0},
        "urls": [], "messages": []}}


def test_push_opens_count_once_per_message_and_clicks_by_day(tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, IMAGE)
    event_id = create_event(tenant)
    for _ in range(2):  # two messages to the same user: two opens possible
        response = tenant.client.post(tenant.api("direct_message/push/"), json={
            "template_id": template["id"], "event_id": event_id, "data": {"line_uid": uid, "img": "p.jpeg"}})
        assert response.json()["result"] == "success"
    images = [e for e in inbox(uid) if e["message"]["type"] == "image"]
    texts = [e for e in inbox(uid) if e["message"]["type"] == "text"]
    assert images[0]["message"]["previewImageUrl"] != images[1]["message"]["previewImageUrl"]
    for entry in (images[0], images[0], images[1]):  # the first one opened twice
        opened = httpx.post(f"{SIMULATOR_URL}/_admin/users/{uid}/open", json={"message_id": entry["message_id"]})
        assert [f["status"] for f in opened.json()["fetched"]] == [302, 302]
    for entry in (texts[0], texts[0], texts[1]):
        httpx.post(f"{SIMULATOR_URL}/_admin/users/{uid}/click", json={"message_id": entry["message_id"]})
    report = tenant.client.get(tenant.api(f"event/{event_id}/report/")).json()["report"]
    assert report["total"]["opens"] == 2
    assert (report["total"]["clicks"], report["total"]["unique_clicks"]) == (3, 1)
    [url] = report["urls"]
    assert url["url"] == "https://shop.example.com/p/1" and (url["clicks"], url["unique_clicks"]) == (3, 1)
    # today (in the organisation's zone) holds everything; a window that ends yesterday nothing
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo(tenant.timezone)).date()
    day = tenant.client.get(tenant.api(f"event/{event_id}/report/"),
                            params={"start_date": str(today), "end_date": str(today)}).json()["report"]
    assert day["total"]["clicks"] == 3 and day["total"]["opens"] == 2
    before = tenant.client.get(tenant.api(f"event/{event_id}/report/"),
                               params={"end_date": str(today - timedelta(days=1))}).json()["report"]
    assert before["total"]["clicks"] == 0 and before["total"]["opens"] == 0
    after = tenant.client.get(tenant.api(f"event/{event_id}/report/"),
                              params={"start_date": str(today + timedelta(days=1))}).json()["report"]
    assert after["total"]["clicks"] == 0


def test_report_validation_and_walls(tenant, make_tenant):
    event_id = create_event(tenant)
    url = tenant.api(f"event/{event_id}/report/")
    bad = tenant.client.get(url, params={"start_date": "2024/01/01", "end_date": "2024-13-01"})
    assert bad.status_code == 400
    message = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
    assert bad.json() == {"start_date": [message], "end_date": [message]}
    reversed_window = tenant.client.get(url, params={"start_date": "2024-02-01", "end_date": "2024-01-01"})
    assert reversed_window.status_code == 400
    assert reversed_window.json() == {"end_date": ["end_date must not be earlier than start_date."]}
    other = make_tenant()
    assert other.client.get(other.api(f"event/{event_id}/report/")).status_code == 404
    assert tenant.client.get(tenant.api("event/999999999/report/")).json() == {"detail": "Not found."}

# ruff: noqa: F811  (the fixtures imported from cdh_support are parameters of the tests)
"""Commerce records (``POST /cdh/v1/engagement/{coupon,order,...}``): enums, limits, the
idempotent upsert by the record's own id and the ``*.sync`` webhooks."""

from __future__ import annotations

import uuid

import pytest
from cdh_support import add_cdh_webhook, cdh, hooks, received  # noqa: F401  (fixtures)

from helpers import seed_contacts, wait_for

BASE = {"timestamp": "2024-01-15T08:30:00+08:00", "source_platform_name": "shopify",
        "source_store_type": "online_store", "source_store_id": "s-1", "source_platform_customer_id": "cust-1"}

RECORDS = {
    "coupon": {"id": "cp-1", "name": "10% off", "url": "https://shop.example.com/c/1", "code": "SAVE10",
               "is_redeemable": True, "status": "active", "discount_type": "percentage", "discount_value": 10,
               "valid_from": "2024-01-01T00:00:00Z", "valid_to": "2024-02-01T00:00:00Z",
               "applicable_store_ids": ["s-1"], "applicable_item_ids": ["i-1"], "applicable_item_category_ids": []},
    "order": {"id": "o-1", "status": "created", "total_amount": 300, "currency": "TWD",
              "items": [{"id": "i-1", "name": "Tea", "quantity": 2, "price": 150}], "payment_method": "card",
              "delivery_method": "home", "shipping_location": "TW", "subtotal_amount": 300, "paid_amount": 300},
    "order_fulfillment": {"order_id": "o-1", "fulfillment_status": "fulfilled", "shipping_location": "TW",
                          "shipping_status": "in_transit", "shipping_tracking_url": "https://track.example.com/1",
                          "estimated_delivery_date": "2024-01-20", "shipped_at": "2024-01-16T10:00:00Z"},
    "membership": {"tier_id": "gold", "tier_name": "Gold", "tier_status": "active", "currency": "TWD",
                   "lifetime_spend_amount": 12000, "tier_effective_from": "2024-01-01T00:00:00Z"},
    "point": {"balance": 320, "type": "loyalty_point", "expiry_at": "2024-12-31T23:59:59Z"},
    "reservation": {"id": "r-1", "status": "scheduled", "start_at": "2024-02-01T10:00:00+08:00",
                    "end_at": "2024-02-01T11:00:00+08:00", "description": "Haircut", "service_type": "salon",
                    "service_id": "svc-1", "service_name": "Cut", "staff_name": "Ann"},
}

ENUMS = {
    "coupon": ("status", ["active", "scheduled", "redeemed", "expired", "inactive", "revoked", "unknown"]),
    "order": ("status", ["created", "confirmed", "processing", "completed", "cancelled", "returned", "unknown"]),
    "order_fulfillment": ("shipping_status", ["pending", "label_created", "in_transit", "out_for_delivery",
                                              "delivered", "delivery_failed", "exception", "returned_to_sender",
                                              "unknown"]),
    "membership": ("tier_status", ["active", "grace_period", "expired", "suspended", "cancelled", "pending",
                                   "unknown"]),
    "point": ("type", ["loyalty_point", "store_credit"]),
    "reservation": ("status", ["scheduled", "confirmed", "checked_in", "completed", "cancelled", "no_show",
                               "rescheduled", "unknown"]),
}
MORE_ENUMS = [
    ("coupon", "discount_type", ["percentage", "fixed_amount", "free_shipping"]),
    ("order_fulfillment", "fulfillment_status", ["unfulfilled", "partially_fulfilled", "fulfilled", "cancelled",
                                                 "returned", "unknown"]),
    *[(kind, "source_store_type", ["online_store", "offline_store"]) for kind in RECORDS],
    *[(kind, "channel_type", ["line", "fb", "ig", "whatsapp", "email", "wccs", "others"]) for kind in RECORDS],
]


def submit(cdh, kind, **changes):
    body = {**BASE, **RECORDS[kind], **changes}
    return cdh.post(f"/cdh/v1/engagement/{kind}", json={k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_each_record_answers_an_event_id_and_syncs(tenant, cdh, hooks, kind):
    receiver, url = hooks
    add_cdh_webhook(tenant, url + "/cdh", [f"{kind}.sync"])
    response = submit(cdh, kind)
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    assert uuid.UUID(event_id)
    wait_for(lambda: receiver.at("/cdh"), 20)
    [body] = received(receiver, "/cdh")
    assert (body["event"], body["event_id"], body["source"]) == (f"{kind}.sync", event_id, "maac")
    assert body["data"]["source_platform_customer_id"] == "cust-1"
    headers = receiver.at("/cdh")[0]["headers"]
    assert headers["user-agent"].startswith("openmaac") and headers["cresclab-idempotency-key"]


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_same_record_again_is_idempotent_and_a_change_updates(tenant, cdh, hooks, kind):
    receiver, url = hooks
    add_cdh_webhook(tenant, url + "/cdh", [f"{kind}.sync"])
    first = submit(cdh, kind).json()["event_id"]
    assert submit(cdh, kind).json()["event_id"] == first
    # a point balance is one per customer and type: its balance changes, not its type
    field, value = ("balance", 999.0) if kind == "point" else (ENUMS[kind][0], ENUMS[kind][1][-1])
    changed = submit(cdh, kind, **{field: value}).json()["event_id"]
    assert changed != first
    wait_for(lambda: len(receiver.at("/cdh")) >= 2, 20)
    bodies = received(receiver, "/cdh")
    assert [b["event_id"] for b in bodies] == [first, changed] and bodies[1]["data"][field] == value
    from sqlalchemy import func, select

    from openmaac.cdh.models import CommerceRecord
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        assert session.scalar(select(func.count()).select_from(CommerceRecord).where(
            CommerceRecord.organization_id == tenant.id, CommerceRecord.kind == kind)) == 1


@pytest.mark.parametrize(("kind", "field", "values"), [(k, *ENUMS[k]) for k in ENUMS] + MORE_ENUMS)
def test_every_enum_value_is_accepted_and_others_refused(cdh, kind, field, values):
    for value in values:
        response = submit(cdh, kind, **{field: value})
        assert response.status_code == 200, (value, response.text)
    refused = submit(cdh, kind, **{field: "bogus"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]


LIMITS = [
    # (kind, field, longest accepted, shortest refused)
    *[(kind, "source_platform_name", 64, 65) for kind in RECORDS],
    ("coupon", "source_store_id", 64, 65), ("coupon", "source_platform_customer_id", 128, 129),
    ("coupon", "source_store_name", 255, 256), ("coupon", "external_channel_id", 128, 129),
    ("coupon", "external_member_id", 128, 129), ("coupon", "id", 64, 65), ("coupon", "name", 255, 256),
    ("coupon", "code", 64, 65), ("coupon", "description", 2000, 2001), ("coupon", "source_status", 255, 256),
    ("coupon", "source_discount_type", 255, 256),
    ("order", "id", 64, 65), ("order", "payment_method", 255, 256), ("order", "delivery_method", 255, 256),
    ("order", "shipping_location", 255, 256), ("order", "description", 2000, 2001),
    ("order", "store_description", 1000, 1001), ("order", "shipping_address", 500, 501),
    ("order", "coupon_id", 64, 65), ("order", "promotion_name", 255, 256), ("order", "promotion_id", 64, 65),
    ("order", "payment_transaction_id", 128, 129), ("order", "payment_provider", 64, 65),
    ("order", "pickup_store_id", 64, 65), ("order", "pickup_store_name", 255, 256),
    ("order_fulfillment", "order_id", 64, 65), ("order_fulfillment", "shipping_carrier", 128, 129),
    ("order_fulfillment", "shipping_tracking_id", 128, 129), ("order_fulfillment", "shipping_address", 500, 501),
    ("order_fulfillment", "fulfillment_source_status", 255, 256),
    ("membership", "tier_id", 64, 65), ("membership", "tier_name", 255, 256),
    ("membership", "tier_description", 2000, 2001), ("membership", "tier_source_status", 255, 256),
    ("reservation", "id", 64, 65), ("reservation", "description", 2000, 2001),
    ("reservation", "service_type", 128, 129), ("reservation", "service_id", 64, 65),
    ("reservation", "service_name", 255, 256), ("reservation", "address", 500, 501),
    ("reservation", "staff_id", 64, 65), ("reservation", "staff_name", 255, 256),
]


@pytest.mark.parametrize(("kind", "field", "longest", "too_long"), LIMITS)
def test_length_limits(cdh, kind, field, longest, too_long):
    assert submit(cdh, kind, **{field: "x" * longest}).status_code == 200
    refused = submit(cdh, kind, **{field: "x" * too_long})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_required_fields_and_zone_less_timestamps(cdh, kind):
    for field in ("timestamp", "source_platform_name", "source_store_type", "source_store_id",
                  "source_platform_customer_id"):
        response = submit(cdh, kind, **{field: ...})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field]
    assert submit(cdh, kind, timestamp="2024-01-15T08:30:00").status_code == 422
    assert submit(cdh, kind, source_platform_name="").status_code == 422


def test_order_items_between_1_and_200_and_currency_3_letters(cdh):
    item = {"id": "i", "name": "n", "quantity": 1, "price": 1}
    assert submit(cdh, "order", items=[item] * 200).status_code == 200
    assert submit(cdh, "order", items=[item] * 201).json()["detail"][0]["loc"] == ["body", "items"]
    assert submit(cdh, "order", items=[]).json()["detail"][0]["loc"] == ["body", "items"]
    assert submit(cdh, "order", currency="TW").status_code == 422
    assert submit(cdh, "order", currency="TWDD").status_code == 422
    assert submit(cdh, "membership", currency="US").status_code == 422
    assert submit(cdh, "point", currency="USDD").status_code == 422


def test_coupon_lists_and_urls(cdh):
    assert submit(cdh, "coupon", applicable_store_ids=["s"] * 100).status_code == 200
    assert submit(cdh, "coupon", applicable_store_ids=["s"] * 101).status_code == 422
    assert submit(cdh, "coupon", applicable_item_ids=["i"] * 500).status_code == 200
    assert submit(cdh, "coupon", applicable_item_ids=["i"] * 501).status_code == 422
    assert submit(cdh, "coupon", applicable_item_category_ids=["c"] * 200).status_code == 200
    assert submit(cdh, "coupon", applicable_item_category_ids=["c"] * 201).status_code == 422
    assert submit(cdh, "coupon", applicable_store_ids=["x" * 65]).status_code == 422
    assert submit(cdh, "coupon", url="not a url").status_code == 422
    assert submit(cdh, "coupon", url="https://e.com/" + "x" * 2070).status_code == 422
    assert submit(cdh, "coupon", is_redeemable="maybe").status_code == 422
    assert submit(cdh, "coupon", discount_value="ten").status_code == 422
    assert submit(cdh, "order_fulfillment", shipping_tracking_url="nope").status_code == 422
    assert submit(cdh, "order_fulfillment", estimated_delivery_date="2024/01/20").status_code == 422


def test_record_names_a_known_member(tenant, cdh, hooks):
    receiver, url = hooks
    add_cdh_webhook(tenant, url + "/cdh", ["point.sync"])
    [uid] = seed_contacts(tenant, 1)
    assert submit(cdh, "point", channel_type="line", external_channel_id="@oa", external_member_id=uid
                  ).status_code == 200
    from sqlalchemy import select

    from openmaac.cdh.models import CommerceRecord
    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.line_uid == uid))
        assert session.scalar(select(CommerceRecord.contact_id).where(
            CommerceRecord.organization_id == tenant.id, CommerceRecord.kind == "point")) == contact_id

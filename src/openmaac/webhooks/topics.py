"""The webhook topics an endpoint may subscribe to (files 003 and 004)."""

from __future__ import annotations

MAAC_TOPICS = (
    "receipt.receipt_validated",
    "form.surveycake_submitted",
    "pnp.status_updated",
    "pnp.profile_updated",
    "prize.points_added",
    "message.first_open",
)

CDH_PROFILE_FIELDS = (
    "customer_id", "connect_id", "full_name", "display_email", "display_mobile", "display_name", "gender",
    "birthday", "region", "city", "address", "company", "member_level", "account_manager",
)

CDH_TOPICS = (
    "message.send",
    "message.open",
    "message.click",
    "prize.send",
    "prize.claim",
    "prize.redeem",
    *(f"contact.profile.{field}.update" for field in CDH_PROFILE_FIELDS),
    "contact.tag.add",
    "contact.tag.remove",
    "sms_plus.status.update",
    "coupon.sync",
    "order.sync",
    "order_fulfillment.sync",
    "membership.sync",
    "point.sync",
    "reservation.sync",
)

# openmaac: the bind-link callback of the 2021 English reference (sent with style "raw" and custom headers).
EXTRA_TOPICS = ("bindlink.bound",)

TOPICS = frozenset(MAAC_TOPICS + CDH_TOPICS + EXTRA_TOPICS)

# Sent only by "Send test"; never subscribable.
TEST_TOPIC = "webhook.test"

# MAAC's contact field names map onto CDH's profile topics.
MAAC_TO_CDH_FIELD = {"email": "display_email", "mobile": "display_mobile"}


def profile_topic(field: str) -> str:
    return f"contact.profile.{MAAC_TO_CDH_FIELD.get(field, field)}.update"

"""Request and response bodies of the CDH API, with the enums and limits of CDH OpenAPI 2.0.1."""

from __future__ import annotations

import math
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from openmaac.cdh.models import CHANNEL_TYPES

ChannelType = Literal["line", "fb", "ig", "whatsapp", "email", "wccs", "others"]
assert set(ChannelType.__args__) == set(CHANNEL_TYPES)  # type: ignore[attr-defined]
ImportKey = Literal["line_uid", "display_email", "display_mobile", "connect_id", "customer_id"]
Gender = Literal["male", "female", "unknown", "other"]

Text255 = Annotated[str, StringConstraints(max_length=255)]
Text500 = Annotated[str, StringConstraints(max_length=500)]

# Profile fields of UpdateMemberData (CDH OpenAPI 2.0.1, "Update Member"), and the contacts
# column each is stored in (MAAC's member view calls display_email/display_mobile email/mobile).
PROFILE_COLUMNS = {
    "customer_id": "customer_id", "connect_id": "connect_id", "full_name": "full_name",
    "display_name": "display_name", "display_email": "email", "display_mobile": "mobile", "gender": "gender",
    "birthday": "birthday", "region": "region", "city": "city", "address": "address", "company": "company",
    "member_level": "member_level", "account_manager": "account_manager",
}
E164_PATTERN = r"^\+[1-9]\d{6,14}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
CUSTOM_KEY_PATTERN = r"^cl_custom_[a-z0-9_]{1,64}$"


class UpdateMemberData(BaseModel):
    """Only the fields sent change; an explicit null clears one."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Text255 | None = None
    connect_id: Text255 | None = None
    full_name: Text255 | None = None
    display_name: Text255 | None = None
    display_email: Annotated[str, StringConstraints(max_length=320, pattern=EMAIL_PATTERN)] | None = None
    display_mobile: Annotated[str, StringConstraints(pattern=E164_PATTERN)] | None = Field(
        default=None, description="E.164, e.g. +886912345678")
    gender: Gender | None = None
    birthday: date | None = Field(default=None, description="YYYY-MM-DD")
    region: Text255 | None = None
    city: Text255 | None = None
    address: Text500 | None = None
    company: Text255 | None = None
    member_level: Text255 | None = None
    account_manager: Text255 | None = None
    custom_fields: dict[Annotated[str, StringConstraints(pattern=CUSTOM_KEY_PATTERN)], Any] | None = Field(
        default=None, description="cl_custom_* keys of the organisation's custom fields; null clears a value")

    @field_validator("birthday", mode="before")
    @classmethod
    def _strict_date(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) != 10:
            raise ValueError("Input should be a valid date in the format YYYY-MM-DD")
        return value

    def changes(self) -> dict[str, Any]:
        """The profile fields sent (custom_fields apart), by their CDH names."""
        return {name: getattr(self, name) for name in self.model_fields_set if name != "custom_fields"}


class UpdateMember(BaseModel):
    channel_type: ChannelType
    external_channel_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    external_member_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    data: UpdateMemberData


class UpdatedFields(BaseModel):
    updated_fields: list[str]


def _an_object(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError("Input should be a valid dictionary")
    return value


# A row is checked to be an object and kept as parsed (not copied): ten concurrent 10,000-row
# imports would otherwise hold every row twice. Its fields are checked by the task.
ImportRowObject = Annotated[Any, AfterValidator(_an_object), WithJsonSchema({"type": "object"})]


class ImportMember(BaseModel):
    import_key: ImportKey
    data: Annotated[list[ImportRowObject], Field(min_length=1, max_length=10_000)]


class Task(BaseModel):
    id: int
    category: Literal["import_member", "export_member"]
    status: Literal["pending", "processing", "success", "failed"]
    result: dict[str, Any]
    updated_at: str
    created_at: str


# -- custom fields ------------------------------------------------------------------------

class CustomFieldOut(BaseModel):
    id: int
    key: str
    name: str
    type: Literal["text", "number", "date", "datetime"]
    active: bool
    created_at: str
    updated_at: str


class CustomFieldIn(BaseModel):
    key: Annotated[str, StringConstraints(pattern=CUSTOM_KEY_PATTERN)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    type: Literal["text", "number", "date", "datetime"]


class CustomFieldPatch(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    active: bool | None = None


# -- engagement events ------------------------------------------------------------------

class EngagementBehavior(StrEnum):
    page_view = "page_view"
    view_item = "view_item"
    add_to_cart = "add_to_cart"
    remove_from_cart = "remove_from_cart"
    begin_checkout = "begin_checkout"
    purchase = "purchase"
    user_engagement = "user_engagement"


ITEM_BEHAVIORS = frozenset({"view_item", "add_to_cart", "remove_from_cart", "begin_checkout"})
UTM_TERM_PATTERN = r"^(lm:\d+|[\w-]+:\d+:\d+:\d*:\d*:\d+)$"
Utm = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    return value


class Item(BaseModel):
    model_config = ConfigDict(extra="allow")

    item_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    item_name: Annotated[str, StringConstraints(max_length=256)] | None = None
    price: float | None = None
    quantity: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None

    _check_price = field_validator("price")(classmethod(lambda cls, v: _finite(v)))


class Params(BaseModel):
    """Any behaviour's params: free-form (CDH OpenAPI 2.0.1 allows additional fields)."""

    model_config = ConfigDict(extra="allow")


class PageParam(Params):
    page_path: Annotated[str, StringConstraints(min_length=1, max_length=2083)]
    page_title: Annotated[str, StringConstraints(max_length=1024)] | None = None


class ItemsParam(Params):
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)] | None = None
    items: Annotated[list[Item], Field(min_length=1, max_length=200)]


class TransactionParam(Params):
    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    revenue: float
    tax: float | None = None
    shipping: float | None = None
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)] | None = None
    items: Annotated[list[Item], Field(max_length=200)] | None = None

    _check_amounts = field_validator("revenue", "tax", "shipping")(classmethod(lambda cls, v: _finite(v)))


class UserEngagementParam(Params):
    engagement_time_msec: Annotated[int, Field(ge=0, le=2**53)]
    page_view_id: Annotated[str, StringConstraints(max_length=256)] | None = None


PARAMS_BY_BEHAVIOR: dict[str, type[Params]] = {
    "page_view": PageParam, "purchase": TransactionParam, "user_engagement": UserEngagementParam,
    **{name: ItemsParam for name in ITEM_BEHAVIORS},
}


class EngagementEventIn(BaseModel):
    behavior: EngagementBehavior | Annotated[str, StringConstraints(min_length=1, max_length=256)]
    utm_campaign: Utm | None = None
    utm_source: Utm | None = None
    utm_medium: Utm | None = None
    utm_content: Utm | None = None
    utm_term: Annotated[str, StringConstraints(pattern=UTM_TERM_PATTERN, max_length=256)]
    language: Annotated[str, StringConstraints(max_length=64)] | None = None
    geography: Annotated[str, StringConstraints(max_length=64)] | None = None
    params: PageParam | ItemsParam | TransactionParam | UserEngagementParam | Params

    @field_validator("params", mode="before")
    @classmethod
    def _params_of_behavior(cls, value: Any, info: ValidationInfo) -> Any:
        """Params are checked against the schema of the behaviour (a custom one: any object)."""
        behavior = info.data.get("behavior")
        name = behavior.value if isinstance(behavior, EngagementBehavior) else str(behavior)
        return PARAMS_BY_BEHAVIOR.get(name, Params).model_validate(value)


class EventId(BaseModel):
    event_id: str


# -- commerce records ---------------------------------------------------------------------

def _s(low: int, high: int) -> Any:
    return Annotated[str, StringConstraints(min_length=low, max_length=high)]


def _opt(high: int) -> Any:
    return Annotated[str, StringConstraints(max_length=high)] | None


Number = Annotated[float, Field(allow_inf_nan=False)]
Currency = Annotated[str, StringConstraints(min_length=3, max_length=3)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2083, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")]
Ids = Any


class RecordBase(BaseModel):
    timestamp: AwareDatetime = Field(description="ISO 8601 with time zone")
    source_platform_name: _s(1, 64)  # type: ignore[valid-type]
    source_store_type: Literal["online_store", "offline_store"]
    source_store_id: _s(1, 64)  # type: ignore[valid-type]
    source_platform_customer_id: _s(1, 128)  # type: ignore[valid-type]
    source_store_name: _opt(255) = None  # type: ignore[valid-type]
    channel_type: ChannelType | None = None
    external_channel_id: _opt(128) = None  # type: ignore[valid-type]
    external_member_id: _opt(128) = None  # type: ignore[valid-type]


ShortIds = Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=100)] | None


class CouponIn(RecordBase):
    id: _s(1, 64)  # type: ignore[valid-type]
    name: _s(1, 255)  # type: ignore[valid-type]
    url: Url
    code: _s(1, 64)  # type: ignore[valid-type]
    is_redeemable: bool
    status: Literal["active", "scheduled", "redeemed", "expired", "inactive", "revoked", "unknown"]
    description: _opt(2000) = None  # type: ignore[valid-type]
    source_status: _opt(255) = None  # type: ignore[valid-type]
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    applicable_store_ids: ShortIds = None
    applicable_item_ids: Annotated[list[Annotated[str, StringConstraints(max_length=64)]],
                                   Field(max_length=500)] | None = None
    applicable_item_category_ids: Annotated[list[Annotated[str, StringConstraints(max_length=64)]],
                                            Field(max_length=200)] | None = None
    discount_type: Literal["percentage", "fixed_amount", "free_shipping"]
    source_discount_type: _opt(255) = None  # type: ignore[valid-type]
    discount_value: Number


class OrderItem(BaseModel):
    """An order line. (CDH OpenAPI 2.0.1 lost the item schema in rendering; openmaac asks for
    an id, a name, a quantity and a price, and keeps any other field.)"""

    model_config = ConfigDict(extra="allow")

    id: _s(1, 64)  # type: ignore[valid-type]
    name: _s(1, 255)  # type: ignore[valid-type]
    quantity: Annotated[int, Field(ge=0, le=2_147_483_647)]
    price: Number
    category_id: _opt(64) = None  # type: ignore[valid-type]
    sku: _opt(64) = None  # type: ignore[valid-type]


class OrderIn(RecordBase):
    id: _s(1, 64)  # type: ignore[valid-type]
    status: Literal["created", "confirmed", "processing", "completed", "cancelled", "returned", "unknown"]
    total_amount: Number
    currency: Currency
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=200)]
    payment_method: _s(1, 255)  # type: ignore[valid-type]
    delivery_method: _s(1, 255)  # type: ignore[valid-type]
    shipping_location: _s(1, 255)  # type: ignore[valid-type]
    source_status: _opt(255) = None  # type: ignore[valid-type]
    description: _opt(2000) = None  # type: ignore[valid-type]
    store_description: _opt(1000) = None  # type: ignore[valid-type]
    shipping_address: _opt(500) = None  # type: ignore[valid-type]
    subtotal_amount: Number | None = None
    total_discount: Number | None = None
    shipping_amount: Number | None = None
    tax_amount: Number | None = None
    paid_amount: Number | None = None
    coupon_id: _opt(64) = None  # type: ignore[valid-type]
    promotion_name: _opt(255) = None  # type: ignore[valid-type]
    promotion_id: _opt(64) = None  # type: ignore[valid-type]
    payment_transaction_id: _opt(128) = None  # type: ignore[valid-type]
    payment_provider: _opt(64) = None  # type: ignore[valid-type]
    pickup_store_id: _opt(64) = None  # type: ignore[valid-type]
    pickup_store_name: _opt(255) = None  # type: ignore[valid-type]


class OrderFulfillmentIn(RecordBase):
    order_id: _s(1, 64)  # type: ignore[valid-type]
    fulfillment_status: Literal["unfulfilled", "partially_fulfilled", "fulfilled", "cancelled", "returned",
                                "unknown"]
    shipping_location: _s(1, 255)  # type: ignore[valid-type]
    shipping_status: Literal["pending", "label_created", "in_transit", "out_for_delivery", "delivered",
                             "delivery_failed", "exception", "returned_to_sender", "unknown"]
    fulfillment_source_status: _opt(255) = None  # type: ignore[valid-type]
    shipping_source_status: _opt(255) = None  # type: ignore[valid-type]
    delivery_method: _opt(255) = None  # type: ignore[valid-type]
    shipping_address: _opt(500) = None  # type: ignore[valid-type]
    shipping_carrier: _opt(128) = None  # type: ignore[valid-type]
    shipping_tracking_id: _opt(128) = None  # type: ignore[valid-type]
    shipping_tracking_url: Url | None = None
    estimated_delivery_date: date | None = None
    pickup_store_id: _opt(64) = None  # type: ignore[valid-type]
    pickup_store_name: _opt(255) = None  # type: ignore[valid-type]
    shipped_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None


class MembershipIn(RecordBase):
    tier_id: _s(1, 64)  # type: ignore[valid-type]
    tier_name: _s(1, 255)  # type: ignore[valid-type]
    tier_status: Literal["active", "grace_period", "expired", "suspended", "cancelled", "pending", "unknown"]
    tier_description: _opt(2000) = None  # type: ignore[valid-type]
    tier_source_status: _opt(255) = None  # type: ignore[valid-type]
    tier_effective_from: AwareDatetime | None = None
    tier_expiry_at: AwareDatetime | None = None
    currency: Currency | None = None
    lifetime_spend_amount: Number | None = None
    lifetime_spend_updated_at: AwareDatetime | None = None
    tier_spend_amount: Number | None = None


class PointIn(RecordBase):
    balance: Number
    type: Literal["loyalty_point", "store_credit"]
    currency: Currency | None = None
    expiry_at: AwareDatetime | None = None


class ReservationIn(RecordBase):
    id: _s(1, 64)  # type: ignore[valid-type]
    status: Literal["scheduled", "confirmed", "checked_in", "completed", "cancelled", "no_show", "rescheduled",
                    "unknown"]
    start_at: AwareDatetime
    end_at: AwareDatetime
    description: _s(1, 2000)  # type: ignore[valid-type]
    service_type: _s(1, 128)  # type: ignore[valid-type]
    service_id: _s(1, 64)  # type: ignore[valid-type]
    service_name: _s(1, 255)  # type: ignore[valid-type]
    source_status: _opt(255) = None  # type: ignore[valid-type]
    address: _opt(500) = None  # type: ignore[valid-type]
    staff_id: _opt(64) = None  # type: ignore[valid-type]
    staff_name: _opt(255) = None  # type: ignore[valid-type]


RECORD_MODELS: dict[str, type[RecordBase]] = {
    "coupon": CouponIn, "order": OrderIn, "order_fulfillment": OrderFulfillmentIn, "membership": MembershipIn,
    "point": PointIn, "reservation": ReservationIn,
}


def record_key(kind: str, record: RecordBase) -> str:
    """The record's own id, the key of its idempotent upsert. Records without an id of their
    own (a membership, a point balance) are one per customer of a source platform (and, for
    points, per type); a fulfilment is one per order."""
    platform = record.source_platform_name
    if kind in ("coupon", "order", "reservation"):
        return f"{platform}\x1f{record.id}"  # type: ignore[attr-defined]
    if kind == "order_fulfillment":
        return f"{platform}\x1f{record.order_id}"  # type: ignore[attr-defined]
    if kind == "membership":
        return f"{platform}\x1f{record.source_platform_customer_id}"
    return f"{platform}\x1f{record.source_platform_customer_id}\x1f{record.type}"  # type: ignore[attr-defined]


def dump_record(record: BaseModel) -> dict[str, Any]:
    return record.model_dump(mode="json")


_unused: tuple[Any, ...] = (datetime,)

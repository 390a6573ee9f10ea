"""The shapes of the LINE webhook events openmaac acts on, checked one event at a time.

A delivery from LINE is signed, but a signature says who sent the bytes, not that every event
has the shape LINE's webhook reference (Messaging API, ``webhook.yml``) documents. Each event
is validated on its own: one that does not fit is skipped and logged (with its
``webhookEventId`` and why), and the rest of the delivery is stored, so LINE is answered 200 and
does not redeliver the good ones.

Only the fields openmaac reads are checked, with the shapes LINE documents for them; anything
else an event carries is kept in the stored payload as received. On top of the shapes:

* ``source.userId``: ``U`` + 32 lowercase hex digits (LINE: "Get user IDs"); only such ids
  create or change contacts.
* ``timestamp``: milliseconds between 2000-01-01 and one day after now.
* ``webhookEventId``: LINE sends a ULID (26 characters); up to 255 characters are stored as
  received, longer ones are skipped (nothing is ever truncated: that would make two events
  look like one).
* no NUL character anywhere (keys or values): PostgreSQL cannot store one in text or JSONB, and
  LINE never sends one, so such an event is skipped rather than silently altered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from openmaac.common.validation import has_nul

log = logging.getLogger("openmaac.line_inbound")

LINE_USER_ID_PATTERN = r"^U[0-9a-f]{32}$"
WEBHOOK_EVENT_ID_MAX_LENGTH = 255
EVENT_TYPE_PATTERN = r"^[A-Za-z]{1,32}$"
EARLIEST_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000

LineUserId = Annotated[str, StringConstraints(pattern=LINE_USER_ID_PATTERN)]


class _Shape(BaseModel):
    # strict: a number is not a string, a string is not a number; extra fields are LINE's to add
    model_config = ConfigDict(strict=True, extra="allow")


class Source(_Shape):
    type: str
    userId: LineUserId | None = None  # LINE's field names
    groupId: str | None = None
    roomId: str | None = None


class MessageContent(_Shape):
    id: str
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_message_has_text(self) -> MessageContent:
        if self.type == "text" and self.text is None:
            raise ValueError("a text message needs a text")
        return self


class Postback(_Shape):
    data: str


class Delivery(_Shape):
    data: str


class LineEvent(_Shape):
    type: Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
    timestamp: int
    webhookEventId: Annotated[str, Field(min_length=1, max_length=WEBHOOK_EVENT_ID_MAX_LENGTH)] | None = None
    source: Source | None = None
    message: MessageContent | None = None
    postback: Postback | None = None
    delivery: Delivery | None = None

    @model_validator(mode="after")
    def _sane(self) -> LineEvent:
        latest = int(time.time() * 1000) + FUTURE_TOLERANCE_MS
        if not EARLIEST_TIMESTAMP_MS <= self.timestamp <= latest:
            raise ValueError("timestamp out of range")
        for kind in ("message", "postback", "delivery"):
            if self.type == kind and getattr(self, kind) is None:
                raise ValueError(f"a {kind} event needs its {kind} object")
        return self

    @property
    def user_id(self) -> str | None:
        return self.source.userId if self.source is not None else None


@dataclass(frozen=True)
class AcceptedEvent:
    raw: dict[str, Any]
    event: LineEvent


def _why(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "event"
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)


def _skip(raw: Any, reason: str) -> None:
    event_id = raw.get("webhookEventId") if isinstance(raw, dict) else None
    log.warning("LINE webhook event skipped (webhookEventId=%.80r): %s", event_id, reason)


def accept_events(raw_events: list[Any]) -> list[AcceptedEvent]:
    """The events of a delivery that fit; each one that does not is logged and left out."""
    accepted: list[AcceptedEvent] = []
    for raw in raw_events:
        if not isinstance(raw, dict):
            _skip(raw, f"not an object but {type(raw).__name__}")
            continue
        if has_nul(raw):
            _skip(raw, "contains a NUL character")
            continue
        try:
            event = LineEvent.model_validate(raw)
        except ValidationError as exc:
            _skip(raw, _why(exc))
            continue
        accepted.append(AcceptedEvent(raw, event))
    return accepted

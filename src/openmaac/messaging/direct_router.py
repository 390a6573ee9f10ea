"""``/openapi/v1/direct_message/`` (MAAC OpenAPI, "Send message" and "Sending message status")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org, cached_org
from openmaac.db.engine import get_database
from openmaac.messaging import direct, sending
from openmaac.web.input import InputRoute, fast_lane
from openmaac.web.params import BodyId, PathId
from openmaac.web.ratelimit import limiter
from openmaac.web.responses import OrjsonResponse

router = APIRouter(prefix="/openapi/v1", tags=["Send message"], route_class=InputRoute)

TRACKING_NOTE = (
    " With an `event_id` the message is tracked: its links become openmaac short links "
    "(`/r/{code}`, clicks) and its images per-recipient image URLs (`/o/{code}/...`, opens)."
)


class PushIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    template_id: BodyId
    event_id: BodyId | None = None
    data: dict[str, Any] = Field(description="`line_uid` and the template's parameters (name: value)")


class MulticastIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    template_id: BodyId
    event_id: BodyId | None = None
    data: list[dict[str, Any]] = Field(min_length=1, max_length=direct.MULTICAST_MAX,
                                       description="Up to 150 entries: `line_uid` and that recipient's parameters")


class EnhancedMulticastIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    template_id: BodyId
    event_id: BodyId | None = None
    line_uids: list[str] = Field(
        min_length=1, max_length=direct.ENHANCED_MULTICAST_MAX)
    data: dict[str, Any] = Field(description="The template's parameters, shared by every recipient")


class PushOut(BaseModel):
    id: int
    event_id: int | None
    event: str | None = Field(description="The event's name (as the spec's sample shows)")
    result: Any = Field(description='"success", "timeout", "error", or LINE\'s error object')


class Pending(BaseModel):
    id: int
    result: str


class FailInfo(BaseModel):
    line_uid: str
    mark: int
    response: str


class SentTo(BaseModel):
    line_ids: list[str]


class SendResult(BaseModel):
    sent_time: str | None
    to: SentTo
    total_count: int
    fail_count: int
    fail_info: list[FailInfo]


class DirectMessageOut(BaseModel):
    id: int
    category: str
    status: str
    event_id: int | None
    result: SendResult | None


@router.post("/direct_message/push/", response_model=PushOut, summary="Send push message",
             description="Synchronous: LINE is called before answering." + TRACKING_NOTE)
@fast_lane(cached_org)
def push(org: Org, body: PushIn) -> Any:
    limiter.check(org.id, "push")
    # rendered as is: the service builds exactly PushOut's fields (the model documents them)
    return OrjsonResponse(sending.push(org, body.template_id, body.event_id, body.data))


@router.post("/direct_message/multicast/", response_model=Pending, summary="Send multicast message",
             description="Asynchronous (`pending`); see `GET direct_message/{id}/`." + TRACKING_NOTE)
@fast_lane(cached_org)
def multicast(org: Org, body: MulticastIn) -> Any:
    limiter.check(org.id, "multicast")
    return OrjsonResponse(sending.multicast(org, body.template_id, body.event_id, body.data))


@router.post("/direct_message/enhanced_multicast/", response_model=Pending,
             summary="Send enhance multicast message",
             description=("Asynchronous (`pending`). Contact placeholders render empty; links are tracked per "
                          "message (no per-recipient opens or clicks)."))
@fast_lane(cached_org)
def enhanced_multicast(org: Org, body: EnhancedMulticastIn) -> Any:
    limiter.check(org.id, "enhanced_multicast")
    return OrjsonResponse(sending.enhanced_multicast(org, body.template_id, body.event_id, body.line_uids, body.data))


@router.get("/direct_message/{direct_message_id}/", response_model=DirectMessageOut,
            summary="Query sending message status",
            description="`result` is null until `status` is `sent`.")
def get_direct_message(org: Org, direct_message_id: PathId) -> Any:
    with get_database().read() as session:
        return direct.serialize(session, direct.get_direct_message(session, org.id, direct_message_id), org)

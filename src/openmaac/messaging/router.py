"""``/openapi/v1/event/`` (MAAC OpenAPI, "Message event")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.messaging import events
from openmaac.web.input import InputRoute
from openmaac.web.params import PathId, QueryText

router = APIRouter(prefix="/openapi/v1", tags=["Message event"], route_class=InputRoute)


class EventOut(BaseModel):
    id: int
    archived: bool = Field(description="Deprecated; always false")
    name: str
    created_at: str


class EventPage(BaseModel):
    results: list[EventOut]
    next: str | None


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)


class EventCreated(BaseModel):
    id: int
    name: str


@router.get("/event/", response_model=EventPage, summary="Get message event list")
def list_events(org: Org, name: QueryText = None, start: str | None = None) -> Any:
    with get_database().read() as session:
        return events.list_events(session, org, name, start)


@router.get("/event/{event_id}/", response_model=EventOut, summary="Get message event info")
def get_event(org: Org, event_id: PathId) -> Any:
    with get_database().read() as session:
        return events.serialize(events.get_event(session, org.id, event_id), org)


@router.post(
    "/event/",
    response_model=EventCreated,
    status_code=201,
    summary="Create message event",
    description=f'At most {events.MAX_EVENTS} events; past that 400 `{{"detail": "{events.LIMIT_MESSAGE}"}}`.',
)
def create_event(org: Org, body: EventCreate) -> Any:
    with get_database().write() as session:
        return events.create_event(session, org, body.name)

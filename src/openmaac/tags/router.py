"""``/openapi/v1/tag/`` and ``/openapi/v1/taglinemember/`` (MAAC OpenAPI, "Tag")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.tags import service
from openmaac.web.input import InputRoute
from openmaac.web.params import BodyId, PathId, QueryText

# The expiry of a tag put on today stays a real date (year 9999 is the calendar's last).

router = APIRouter(prefix="/openapi/v1", tags=["Tag"], route_class=InputRoute)


class TagOut(BaseModel):
    id: int
    name: str
    available_days: int | None


class TagPage(BaseModel):
    results: list[TagOut]
    next: str | None


class TagCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    available_days: int | None = Field(default=None, ge=1, le=service.MAX_AVAILABLE_DAYS,
                                       description="null: the tag never expires")


class TagMemberIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tag_id: BodyId
    line_uid: str = Field(min_length=1)


class TagMemberRemove(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tag_id: BodyId
    line_uid: str | None = Field(default=None, description="Omit to remove the tag from every contact")


class TagMemberOut(BaseModel):
    tag_id: int
    line_uid: str
    created_at: str
    expired_at: str


@router.get("/tag/", response_model=TagPage, summary="Get tag list")
def list_tags(org: Org, name: QueryText = None, start: str | None = None) -> Any:
    with get_database().read() as session:
        return service.list_tags(session, org, name, start)


@router.get("/tag/{tag_id}/", response_model=TagOut, summary="Get tag info")
def get_tag(org: Org, tag_id: PathId) -> Any:
    with get_database().read() as session:
        return service.serialize_tag(service.get_tag(session, org.id, tag_id))


@router.post("/tag/", response_model=TagOut, status_code=201, summary="Create tags")
def create_tag(org: Org, body: TagCreate) -> Any:
    with get_database().write() as session:
        return service.create_tag(session, org, body.name, body.available_days)


@router.post("/taglinemember/", response_model=TagMemberOut, status_code=201, summary="Add tags to contact")
def add_tag_to_member(org: Org, body: TagMemberIn) -> Any:
    with get_database().write() as session:
        return service.add_tag_to_member(session, org, body.tag_id, body.line_uid)


@router.delete("/taglinemember/", status_code=204, response_class=Response, summary="Remove tags from contacts")
def remove_tag_from_member(org: Org, body: TagMemberRemove) -> Response:
    with get_database().write() as session:
        service.remove_tag_from_members(session, org, body.tag_id, body.line_uid)
    return Response(status_code=204)

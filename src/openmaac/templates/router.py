"""``/openapi/v1/template/`` (MAAC OpenAPI, "Message template"; POST and detail are extensions)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.templates import service
from openmaac.web.input import InputRoute
from openmaac.web.params import PathId

router = APIRouter(prefix="/openapi/v1", tags=["Message template"], route_class=InputRoute)


class TemplateOut(BaseModel):
    id: int
    name: str
    parameters: list[str]


class TemplateDetail(TemplateOut):
    messages: list[dict[str, Any]]


class TemplatePage(BaseModel):
    results: list[TemplateOut]
    next: str | None


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    messages: Any = Field(
        description=(
            "1-5 LINE message objects. Strings may hold `{{param}}` placeholders (the template's "
            "parameters) and contact placeholders such as `{{contact.display_name}}`."
        ),
        json_schema_extra={"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": 5},
    )


EXTENSION = {"x-openmaac-extension": True}


@router.get("/template/", response_model=TemplatePage, summary="Get message template list")
def list_templates(org: Org, start: str | None = None) -> Any:
    with get_database().read() as session:
        return service.list_templates(session, org, start)


@router.post(
    "/template/",
    response_model=TemplateDetail,
    status_code=201,
    summary="Create message template (openmaac extension)",
    description=(
        "openmaac extension: MAAC creates templates in its console only. Invalid LINE message "
        "objects answer 400 with LINE's error body `{\"message\", \"details\": [{\"message\", \"property\"}]}`."
    ),
    openapi_extra=EXTENSION,
)
def create_template(org: Org, body: TemplateCreate) -> Any:
    with get_database().write() as session:
        return service.create_template(session, org, body.name, body.messages)


@router.get(
    "/template/{template_id}/",
    response_model=TemplateDetail,
    summary="Get message template (openmaac extension)",
    openapi_extra=EXTENSION,
)
def get_template(org: Org, template_id: PathId) -> Any:
    with get_database().read() as session:
        return service.serialize(service.get_template(session, org.id, template_id), with_messages=True)


@router.put(
    "/template/{template_id}/",
    response_model=TemplateDetail,
    summary="Replace message template (openmaac extension)",
    description=(
        "openmaac extension: replaces the template's name and messages (the body and rules of "
        "`POST template/`). The id stays the same, so integrations that hold it keep working; "
        "sends made after the change use the new messages."
    ),
    openapi_extra=EXTENSION,
)
def replace_template(org: Org, template_id: PathId, body: TemplateCreate) -> Any:
    with get_database().write() as session:
        return service.update_template(session, org, template_id, body.name, body.messages)

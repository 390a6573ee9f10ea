"""Tracked-link redirects (``/r/{code}``), open images (``/o/{code}/{n}.{ext}``) and the
``tracking_setting/`` extension (UTM parameters and ``clid`` of tracked links)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.links import service
from openmaac.web.errors import not_found
from openmaac.web.input import InputRoute

router = APIRouter(tags=["Tracked links"], route_class=InputRoute)
settings_router = APIRouter(prefix="/openapi/v1", tags=["Tracked links"], route_class=InputRoute)

NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer"}
_OPEN_PATH = re.compile(r"^(\d{1,4})(?:\.[A-Za-z]{3,4})?(?:/(\d{1,5}))?$")
_CODE = re.compile(r"^[A-Za-z0-9]{6,16}$")


@router.get("/r/{code}", summary="Follow a tracked link (recipients' clients)",
            description="Records the click (with the recipient where the link is personalised), "
                        "appends the configured UTM parameters and answers 302 to the target. "
                        "Unknown codes answer 404.", responses={302: {"description": "Redirect to the target"}},
            openapi_extra={"x-openmaac-extension": True})
@router.head("/r/{code}", include_in_schema=False)
def click(code: str) -> Response:
    if not _CODE.match(code):
        raise not_found()
    target = service.record_click(get_database(), code)
    if target is None:
        raise not_found()
    return RedirectResponse(target, status_code=302, headers=NO_STORE)


@router.get("/o/{code}/{rest:path}", summary="Load a tracked message image (open tracking)",
            description="`/o/{code}/{n}.{ext}` is the n-th image of a tracked message, "
                        "`/o/{code}/{n}/{width}` an imagemap; records the recipient's open and "
                        "answers 302 to the original image.", responses={302: {"description": "Redirect to the image"}},
            openapi_extra={"x-openmaac-extension": True})
@router.head("/o/{code}/{rest:path}", include_in_schema=False)
def open_image(code: str, rest: str) -> Response:
    """The n-th image of a tracked message: ``/o/{code}/{n}.{ext}``, or ``/o/{code}/{n}/{width}``
    for an imagemap (LINE appends the width to its base URL)."""
    match = _OPEN_PATH.match(rest)
    if not _CODE.match(code) or match is None:
        raise not_found()
    target = service.record_open(get_database(), code, int(match.group(1)))
    if target is None:
        raise not_found()
    if match.group(2) is not None:
        target = target.rstrip("/") + "/" + match.group(2)
    return RedirectResponse(target, status_code=302, headers=NO_STORE)


class TrackingSettingOut(BaseModel):
    utm_campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_content: str | None
    append_clid: bool = Field(description="Append `clid` (the contact's member_id) to personalised redirects")


class TrackingSettingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    utm_campaign: str | None = Field(default=None, max_length=255)
    utm_source: str | None = Field(default=None, max_length=255)
    utm_medium: str | None = Field(default=None, max_length=255)
    utm_content: str | None = Field(default=None, max_length=255)
    append_clid: bool | None = None


EXTENSION = {"x-openmaac-extension": True}


@settings_router.get("/tracking_setting/", response_model=TrackingSettingOut,
                     summary="Get tracked-link setting (openmaac extension)", openapi_extra=EXTENSION)
def get_setting(org: Org) -> Any:
    with get_database().read() as session:
        return service.serialize_setting(service.get_setting(session, org.id))


@settings_router.patch(
    "/tracking_setting/", response_model=TrackingSettingOut, summary="Update tracked-link setting (openmaac extension)",
    description=("UTM parameters appended to every tracked link's destination from the next send on (a "
                 "parameter the URL already has is kept); null or blank removes one. Fields left out are "
                 "unchanged."),
    openapi_extra=EXTENSION,
)
def update_setting(org: Org, body: TrackingSettingIn) -> Any:
    with get_database().write() as session:
        return service.update_setting(session, org, body.model_dump(exclude_unset=True))

"""``/openapi/v1/segment/`` and ``/openapi/v1/custom_segment/`` (MAAC OpenAPI, "Segment")."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.segments import service
from openmaac.web.errors import APIError, field_errors
from openmaac.web.input import NULL_MESSAGE, InputRoute
from openmaac.web.params import BodyId, PathId, QueryText

router = APIRouter(prefix="/openapi/v1", tags=["Segment"], route_class=InputRoute)


class FileReport(BaseModel):
    rows: int
    malformed: int
    duplicates: int
    distinct: int
    matched: int | None = None
    unknown: int | None = None


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str | None
    segment_type: int
    member_count: int
    status: int
    last_updated_time: str | None
    file_report: FileReport | None = Field(
        default=None,
        description="openmaac extension, custom segments only: rows read, malformed ids, repeats, distinct ids, "
                    "and (once ready) how many matched a contact and how many are unknown",
    )


class SegmentPage(BaseModel):
    results: list[SegmentOut]
    next: str | None


class TagCondition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: Literal["with", "without"]
    tag_id: BodyId


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    operator: Literal["AND", "OR"] = "AND"
    description: str | None = None
    tags: list[TagCondition] = Field(min_length=1)


def _multipart(required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["name", "file"] if required else [],
        "properties": {
            "name": {"type": "string", "maxLength": 255},
            "description": {"type": "string"},
            "file": {"type": "string", "format": "binary",
                     "description": "CSV of LINE user ids (≤300,000 rows, ≤25 MB)"},
        },
    }}}}}


@router.get("/segment/", response_model=SegmentPage, response_model_exclude_unset=True, summary="Get segment list")
def list_segments(org: Org, name: QueryText = None, start: str | None = None) -> Any:
    with get_database().read() as session:
        return service.list_segments(session, org, name, start)


@router.get("/segment/{segment_id}/", response_model=SegmentOut, response_model_exclude_unset=True,
            summary="Get segment")
def get_segment(org: Org, segment_id: PathId) -> Any:
    with get_database().read() as session:
        return service.serialize(service.get_segment(session, org.id, segment_id), org)


@router.post("/segment/", response_model=SegmentOut, response_model_exclude_unset=True, status_code=201,
             summary="Create segment")
def create_segment(org: Org, body: SegmentCreate) -> Any:
    name = body.name.strip()
    if not name:
        raise field_errors({"name": ["This field may not be blank."]})
    with get_database().write() as session:
        return service.create_tag_segment(session, org, name, body.description, body.operator,
                                          [c.model_dump() for c in body.tags])


@router.delete("/segment/{segment_id}/", status_code=204, response_class=Response, summary="Delete segment")
def delete_segment(org: Org, segment_id: PathId) -> Response:
    with get_database().write() as session:
        service.delete_segment(session, org, segment_id)
    return Response(status_code=204)


@router.get("/segment/{segment_id}/members/", response_class=StreamingResponse,
            summary="Get segment members (CSV)")
def segment_members(org: Org, segment_id: PathId) -> Any:
    with get_database().read() as session:
        service.get_segment(session, org.id, segment_id)  # 404 before the stream starts
    return StreamingResponse(
        service.members_csv(segment_id, org.id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename={service.csv_filename(segment_id, org)}"},
    )


# -- custom segments (multipart) ---------------------------------------------------------

TOO_LARGE = service.TOO_LARGE


async def _read_form(request: Request) -> dict[str, Any]:
    """name, description and file from multipart (or name/description from JSON, for PATCH)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > service.MAX_UPLOAD_BYTES + 1024 * 1024:
        raise TOO_LARGE
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            document = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise APIError(400, {"detail": f"JSON parse error - {exc}"}) from exc
        if not isinstance(document, dict):
            raise field_errors({"non_field_errors": ["Invalid data. Expected a dictionary."]})
        return {k: v for k, v in document.items() if k in ("name", "description")}
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise APIError(415, {"detail": f'Unsupported media type "{content_type}" in request.'})
    form = await request.form(max_files=1, max_fields=20)
    fields: dict[str, Any] = {}
    for key in ("name", "description"):
        value = form.get(key)
        if value is not None and not isinstance(value, UploadFile):
            fields[key] = value
    file = form.get("file")
    if isinstance(file, UploadFile):
        if file.size is not None and file.size > service.MAX_UPLOAD_BYTES:
            raise TOO_LARGE
        fields["file"] = file
    elif file is not None:
        raise field_errors({"file": ["The submitted data was not a file. Check the encoding type on the form."]})
    return fields


def _check_text(fields: dict[str, Any], required: bool) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    changes: dict[str, Any] = {}
    for key in ("name", "description"):
        if isinstance(fields.get(key), str) and "\x00" in fields[key]:
            errors[key] = [NULL_MESSAGE]  # multipart fields: the JSON check of InputRoute does not see them
    if errors:
        raise field_errors(errors)
    if "name" in fields:
        name = str(fields["name"]).strip()
        if not name:
            errors["name"] = ["This field may not be blank."]
        elif len(name) > 255:
            errors["name"] = ["Ensure this field has no more than 255 characters."]
        changes["name"] = name
    elif required:
        errors["name"] = ["This field is required."]
    if "description" in fields:
        changes["description"] = None if fields["description"] is None else str(fields["description"])
    if required and "file" not in fields:
        errors["file"] = ["No file was submitted."]
    if errors:
        raise field_errors(errors)
    return changes


@router.post("/custom_segment/", response_model=SegmentOut, response_model_exclude_unset=True, status_code=201,
             summary="Create custom segment", openapi_extra=_multipart(True))
async def create_custom_segment(org: Org, request: Request) -> Any:
    fields = await _read_form(request)
    changes = _check_text(fields, required=True)

    def work() -> Any:
        upload = service.parse_upload(fields["file"].file)
        with get_database().write() as session:
            return service.create_custom_segment(session, org, changes["name"], changes.get("description"), upload)

    try:
        return await run_in_threadpool(work)
    finally:
        await fields["file"].close()


@router.patch("/custom_segment/{segment_id}/", response_model=SegmentOut, response_model_exclude_unset=True,
              summary="Update custom segment", openapi_extra=_multipart(False))
async def patch_custom_segment(org: Org, segment_id: PathId, request: Request) -> Any:
    fields = await _read_form(request)
    changes = _check_text(fields, required=False)
    if not changes and "file" not in fields:
        raise field_errors({"non_field_errors": ["At least one of name, description or file is required."]})

    def work() -> Any:
        upload = service.parse_upload(fields["file"].file) if "file" in fields else None
        with get_database().write() as session:
            return service.patch_custom_segment(session, org, segment_id, changes, upload)

    try:
        return await run_in_threadpool(work)
    finally:
        if "file" in fields:
            await fields["file"].close()

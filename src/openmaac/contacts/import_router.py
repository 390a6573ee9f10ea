"""``/openapi/v1/member/import/``: bulk contact import tasks (MAAC OpenAPI, "Contact")."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from openmaac.auth.deps import Org
from openmaac.contacts import imports
from openmaac.db.engine import get_database
from openmaac.web.errors import APIError
from openmaac.web.input import InputRoute
from openmaac.web.params import PathId
from openmaac.web.ratelimit import limiter

router = APIRouter(prefix="/openapi/v1", tags=["Contact"], route_class=InputRoute)

# Operators (and the benchmarks) may loosen the 15/min limit: OPENMAAC_MEMBER_IMPORT_RATE=100/60.
_rate = os.environ.get("OPENMAAC_MEMBER_IMPORT_RATE")
if _rate:
    _count, _, _period = _rate.partition("/")
    limiter.overrides["member_import"] = (int(_count), float(_period or 60))

TOO_LARGE = APIError(413, {"detail": "Request body is too large: at most 10 MB."})


class ImportStarted(BaseModel):
    id: int
    result: str


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["import_key", "data"],
            "properties": {
                "import_key": {"type": "string", "enum": list(imports.IMPORT_KEYS)},
                "data": {"type": "array", "maxItems": imports.MAX_ROWS, "items": {
                    "type": "object",
                    "properties": {
                        **{name: {"type": "string"} for name in imports.ROW_FIELDS if name != "tags"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                }},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        }}},
    }
}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TOO_LARGE
        chunks.append(chunk)
    return b"".join(chunks)


def _start(org_id: int, body: bytes) -> dict[str, Any]:
    import_key, rows, tags = imports.parse_request(body)
    with get_database().write() as session:
        task = imports.create_task(session, org_id, import_key, rows, tags)
        return {"id": task.id, "result": "start importing"}


@router.post("/member/import/", response_model=ImportStarted, summary="Import contacts", openapi_extra=IMPORT_BODY)
async def import_members(org: Org, request: Request) -> Any:
    """At most 10,000 rows and 10 MB a request, 15 requests a minute and 1 running import."""
    body = await _read_body(request, imports.MAX_BODY_BYTES)
    limiter.check(org.id, "member_import")
    return await run_in_threadpool(_start, org.id, body)


@router.get("/member/import/{task_id}/", summary="Check import contact task status")
def get_import(org: Org, task_id: PathId) -> Any:
    with get_database().read() as session:
        return imports.task_view(session, org, task_id)


@router.get(
    "/member/import/{task_id}/mismatch/",
    summary="Rows of an import that matched no contact (CSV)",
    description="The signed, expiring link given as `mismatch_export_link`; needs no token.",
    response_class=Response,
    openapi_extra={"x-openmaac-extension": True},
)
def get_mismatch(task_id: PathId, expires: int = 0, signature: str = "") -> Response:
    if not imports.check_mismatch_signature(task_id, expires, signature):
        raise APIError(403, {"detail": "This link is invalid or has expired."})
    with get_database().read() as session:
        data = imports.mismatch_file(session, task_id)
    if data is None:
        raise APIError(404, {"detail": "Not found."})
    return Response(
        data, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import_{task_id}_mismatch.csv"'},
    )

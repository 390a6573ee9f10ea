"""``/cdh/v1``: the CDH API (CDH OpenAPI 2.0.1), authenticated by the ``apikey`` header.

Broadcast and rich-menu reports are not served yet (openmaac has no broadcasts).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse

from openmaac.cdh import schemas, service, tasks
from openmaac.cdh.deps import CdhOrg
from openmaac.db.engine import get_database
from openmaac.web.input import InputRoute

router = APIRouter(prefix="/cdh/v1", route_class=InputRoute)
EXTENSION = {"x-openmaac-extension": True}
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.patch("/member", response_model=schemas.UpdatedFields, tags=["CDH Member"], summary="Update Member",
              operation_id="update_member_cdh_v1_member_patch")
def update_member(org: CdhOrg, body: schemas.UpdateMember) -> Any:
    with get_database().write() as session:
        return service.update_member(session, org, body)


@router.post("/member/import", response_model=schemas.Task, tags=["CDH Member"], summary="Import Member")
def import_member(org: CdhOrg, body: schemas.ImportMember) -> Any:
    with get_database().write() as session:
        return tasks.create_import(session, org, body.import_key, body.data)


@router.post("/member/export", response_model=schemas.Task, tags=["CDH Member"], summary="Export Member")
def export_member(org: CdhOrg) -> Any:
    with get_database().write() as session:
        return tasks.create_export(session, org)


@router.get("/task/{task_id}", response_model=schemas.Task, tags=["CDH Task"], summary="Get Task")
def get_task(org: CdhOrg, task_id: TaskId) -> Any:
    return tasks.get_task(get_database(), org, task_id)


@router.get("/task/{task_id}/download", tags=["CDH Task"], summary="Download an export (the task's download_url)",
            description="The signed link of a finished export, valid for 7 days; no apikey needed.",
            response_class=Response, responses={200: {"content": {"text/csv": {}}}}, openapi_extra=EXTENSION)
def download_export(task_id: TaskId, expires: Annotated[int, Query(ge=0, le=2**62)],
                    signature: Annotated[str, Query(max_length=64)]) -> Response:
    with get_database().read() as session:
        body = tasks.download(session, task_id, expires, signature)
    return StreamingResponse(body, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="members-{task_id}.csv"'})


@router.post("/engagement/event", response_model=schemas.EventId, tags=["CDH Engagement"], summary="Submit Event")
def submit_event(org: CdhOrg, body: schemas.EngagementEventIn) -> Any:
    with get_database().write() as session:
        return {"event_id": service.submit_event(session, org, body)}


def _record_route(kind: str, model: type[schemas.RecordBase]) -> None:
    def submit(org: CdhOrg, body: schemas.RecordBase) -> Any:
        with get_database().write() as session:
            return {"event_id": service.submit_record(session, org, kind, body)}

    submit.__annotations__["body"] = model  # each kind's own schema

    title = kind.replace("_", " ")
    router.post(f"/engagement/{kind}", response_model=schemas.EventId, tags=["CDH Engagement"],
                summary=f"Submit {title}", name=f"submit_{kind}",
                description=f"Upserts the {title} by its own id and sends the `{kind}.sync` webhook.")(submit)


for _kind, _model in schemas.RECORD_MODELS.items():
    _record_route(_kind, _model)


@router.get("/custom_field", response_model=list[schemas.CustomFieldOut], tags=["CDH CustomField"],
            summary="List Custom Fields")
def list_custom_fields(org: CdhOrg, active: bool | None = None) -> Any:
    with get_database().read() as session:
        return service.list_custom_fields(session, org, active)


@router.post("/custom_field", response_model=schemas.CustomFieldOut, status_code=201, tags=["CDH CustomField"],
             summary="Create a custom field (openmaac extension)", openapi_extra=EXTENSION)
def create_custom_field(org: CdhOrg, body: schemas.CustomFieldIn) -> Any:
    with get_database().write() as session:
        return service.create_custom_field(session, org, body.key, body.name, body.type)


@router.patch("/custom_field/{field_id}", response_model=schemas.CustomFieldOut, tags=["CDH CustomField"],
              summary="Rename, archive or restore a custom field (openmaac extension)", openapi_extra=EXTENSION)
def update_custom_field(org: CdhOrg, field_id: TaskId, body: schemas.CustomFieldPatch) -> Any:
    with get_database().write() as session:
        return service.update_custom_field(session, org, field_id, body.model_dump(exclude_unset=True))

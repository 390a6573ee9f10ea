"""``/openapi/v1/behavior/download/{date}/{pageview,product,transaction}/`` (MAAC OpenAPI
v1.1.48, "Contact Tracking"): the contacts' website behaviour of one day, as CSV."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from openmaac.auth.deps import Org
from openmaac.cdh import behavior
from openmaac.web.input import InputRoute

router = APIRouter(prefix="/openapi/v1", tags=["Contact Tracking"], route_class=InputRoute)

SUMMARIES = {"pageview": "Pageview", "product": "Product", "transaction": "Transaction"}


def _route(kind: str) -> None:
    columns = ", ".join(f"`{column}`" for column in behavior.COLUMNS[kind])

    def download(org: Org, date: str) -> Any:
        start, end = behavior.day_window(date, org.tz)  # a bad date is a 400 before the stream starts
        return StreamingResponse(
            behavior.behavior_csv(org.id, org.tz, kind, start, end), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f"attachment; filename={behavior.filename(date, kind)}"})

    download.__name__ = f"behavior_download_{kind}"
    router.add_api_route(
        f"/behavior/download/{{date}}/{kind}/", download, methods=["GET"], summary=SUMMARIES[kind],
        response_class=StreamingResponse,
        responses={200: {"description": f"`{{date}}_{kind}.csv` (UTF-8 with BOM), columns {columns}",
                         "content": {"text/csv": {"schema": {"type": "string"}}}}},
        description=("`date`: YYYY-MM-DD, a whole day in the organisation's zone. Rows are the CDH engagement "
                     "events of that day whose `utm_term` names a tracked click of a contact (`lm:<click id>`, "
                     "within 7 days of the click); the utm columns are the clicked link's."))


for _kind in behavior.COLUMNS:
    _route(_kind)

"""``/openapi/v1/event/{event_id}/report/`` (MAAC OpenAPI, "Message performance")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from openmaac.auth.deps import Org
from openmaac.db.engine import get_database
from openmaac.reports import service
from openmaac.web.input import InputRoute
from openmaac.web.params import PathId

router = APIRouter(prefix="/openapi/v1", tags=["Message performance"], route_class=InputRoute)


class Total(BaseModel):
    opens: int
    clicks: int
    unique_clicks: int | None
    adds_to_cart: int
    transactions: int
    transaction_revenue: float


class UrlRow(BaseModel):
    id: int
    link: int
    url: str
    utm_campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_content: str | None
    clicks: int
    unique_clicks: int | None
    adds_to_cart: int
    transactions: int
    transaction_revenue: float
    tags: list[str]


class MessageRow(BaseModel):
    id: int
    message: str
    clicks: int
    tags: list[str]


class Report(BaseModel):
    total: Total
    urls: list[UrlRow]
    messages: list[MessageRow]


class EventReport(BaseModel):
    id: int
    report: Report


@router.get(
    "/event/{event_id}/report/", response_model=EventReport, summary="Get message performance report",
    description=("`start_date`/`end_date` (YYYY-MM-DD, the organisation's zone, inclusive; optional). "
                 "Opens are recorded when the recipient's LINE client loads a tracked image of the message "
                 "(like an e-mail open pixel), so messages without images report no opens."),
)
def event_report(org: Org, event_id: PathId, start_date: str | None = None, end_date: str | None = None) -> Any:
    with get_database().read() as session:
        return service.event_report(session, org, event_id, start_date, end_date)

"""The context a log line carries: the request (its id, the organisation of its token), the
job a worker runs, the webhook delivery being sent. Held in context variables, so each
request (an asyncio task) and each job (its own ``contextvars.Context``) sees only its own.

A request's context is one mutable ``RequestContext`` set by the request-id middleware:
FastAPI runs sync dependencies and endpoints in worker threads with a *copy* of the context,
so a variable set there would be lost; setting a field of the shared object is seen by the
middleware's access line and by every thread of that request.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestContext:
    request_id: str
    organization_id: int | None = None


request_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "openmaac_request", default=None)
organization_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("openmaac_organization_id", default=None)
job_kind: contextvars.ContextVar[str | None] = contextvars.ContextVar("openmaac_job_kind", default=None)
job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("openmaac_job_id", default=None)
webhook_endpoint: contextvars.ContextVar[int | None] = contextvars.ContextVar("openmaac_webhook_endpoint",
                                                                               default=None)
attempt: contextvars.ContextVar[int | None] = contextvars.ContextVar("openmaac_attempt", default=None)


def set_organization(org_id: int) -> None:
    """The organisation whose token authenticated this request (or whose work this is)."""
    request = request_context.get()
    if request is not None:
        request.organization_id = org_id
    organization_id.set(org_id)


def job_context(kind: str, id_: int, org_id: int | None = None) -> contextvars.Context:
    """A context to run one job in (``context.run(fn, ...)``): its lines carry the job's kind,
    id and organisation, and nothing leaks to the next job run by the same thread."""
    context = contextvars.copy_context()

    def enter() -> None:
        job_kind.set(kind)
        job_id.set(id_)
        organization_id.set(org_id)

    context.run(enter)
    return context


@contextmanager
def webhook_delivery_context(endpoint_id: int) -> Iterator[None]:
    token = webhook_endpoint.set(endpoint_id)
    try:
        yield
    finally:
        webhook_endpoint.reset(token)


def current_fields() -> dict[str, Any]:
    """The context of the current line: only the fields that are set."""
    fields: dict[str, Any] = {}
    request = request_context.get()
    if request is not None:
        fields["request_id"] = request.request_id
    org = request.organization_id if request is not None and request.organization_id is not None \
        else organization_id.get()
    for name, value in (("organization_id", org), ("job_kind", job_kind.get()), ("job_id", job_id.get()),
                        ("webhook_endpoint", webhook_endpoint.get()), ("attempt", attempt.get())):
        if value is not None:
            fields[name] = value
    return fields

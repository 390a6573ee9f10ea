"""The API token page: get a token (shown once), see the organisation's tokens, revoke one.

The same tokens as ``openmaac token create``; the service functions check that the user is an
admin of the organisation, so a hand-made request from anyone else is refused there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from openmaac.auth import service
from openmaac.console.rendering import render
from openmaac.console.session import Actor, CurrentActor
from openmaac.db.engine import get_database
from openmaac.web.errors import APIError, not_found
from openmaac.web.limits import MAX_ID

router = APIRouter()


def _tokens(actor: Actor) -> list[dict[str, Any]]:
    with get_database().read() as session:
        return [service.describe_token(row) for row in service.list_org_tokens(session, actor.org)]


def _page(request: Request, actor: Actor, *, new_token: str | None = None, label: str = "",
          errors: dict[str, list[str]] | None = None, revoked: str | None = None,
          status_code: int = 200) -> HTMLResponse:
    response = render(request, actor, "tokens/index.html", {
        "section": "tokens", "tokens": _tokens(actor), "new_token": new_token, "label": label,
        "errors": errors or {}, "revoked": revoked, "label_max": service.TOKEN_LABEL_MAX,
    }, status_code=status_code)
    # The page may hold a new token: keep it out of caches and the back-forward history.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/tokens/", response_class=HTMLResponse)
def tokens_page(request: Request, actor: CurrentActor, revoked: str | None = None) -> Response:
    return _page(request, actor, revoked=revoked[:16] if revoked else None)


def _create(actor: Actor, label: str) -> str:
    with get_database().write() as session:
        token, _row = service.create_org_token(session, actor.org, label)
    return token


@router.post("/tokens/", response_class=HTMLResponse)
async def create_token(request: Request, actor: CurrentActor) -> Response:
    form = await request.form()
    label = form.get("label")
    label = label if isinstance(label, str) else ""
    try:
        token = await run_in_threadpool(_create, actor, label)
    except APIError as exc:
        if exc.status_code != 400 or not isinstance(exc.body, dict):
            raise
        errors = exc.body
        return await run_in_threadpool(lambda: _page(request, actor, label=label, errors=errors, status_code=400))
    # Answered here, not after a redirect: the token is shown once and never travels in a URL.
    return await run_in_threadpool(lambda: _page(request, actor, new_token=token))


def _revoke(actor: Actor, token_id: int) -> str:
    with get_database().write() as session:
        return service.revoke_org_token(session, actor.org, token_id).prefix


def path_id(value: str) -> int:
    """An id from a console URL; anything that cannot be one is the console's 404 page."""
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or not 1 <= int(value) <= MAX_ID:
        raise not_found()
    return int(value)


@router.post("/tokens/{token_id}/revoke/")
def revoke_token(request: Request, actor: CurrentActor, token_id: str) -> Response:
    prefix = _revoke(actor, path_id(token_id))
    return RedirectResponse(f"{request.scope.get('root_path', '')}/console/tokens/?revoked={prefix}", status_code=303)

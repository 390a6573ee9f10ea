"""The API token page: get a token (shown once), see the organisation's tokens, revoke one;
the same for the organisation's CDH API keys (header ``apikey`` of ``/cdh/v1``).

The same tokens as ``openmaac token create`` and keys as ``openmaac cdh-key create``; the
service functions check that the user is an admin of the organisation, so a hand-made request
from anyone else is refused there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from openmaac.auth import service
from openmaac.cdh import keys as cdh_keys
from openmaac.console.rendering import render
from openmaac.console.session import Actor, CurrentActor
from openmaac.db.engine import get_database
from openmaac.web.errors import APIError, not_found
from openmaac.web.limits import MAX_ID

router = APIRouter()


def _listed(actor: Actor) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with get_database().read() as session:
        tokens = [service.describe_token(row) for row in service.list_org_tokens(session, actor.org)]
        return tokens, cdh_keys.list_cdh_keys(session, actor.org, active_only=True)


def _page(request: Request, actor: Actor, *, new_token: str | None = None, label: str = "",
          errors: dict[str, list[str]] | None = None, revoked: str | None = None,
          new_cdh_key: str | None = None, cdh_label: str = "", cdh_errors: dict[str, list[str]] | None = None,
          revoked_cdh: str | None = None, status_code: int = 200) -> HTMLResponse:
    tokens, keys = _listed(actor)
    response = render(request, actor, "tokens/index.html", {
        "section": "tokens", "tokens": tokens, "new_token": new_token, "label": label,
        "errors": errors or {}, "revoked": revoked, "label_max": service.TOKEN_LABEL_MAX,
        "cdh_keys": keys, "new_cdh_key": new_cdh_key, "cdh_label": cdh_label, "cdh_errors": cdh_errors or {},
        "revoked_cdh": revoked_cdh, "cdh_label_max": cdh_keys.LABEL_MAX,
    }, status_code=status_code)
    # The page may hold a new token or key: keep it out of caches and the back-forward history.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/tokens/", response_class=HTMLResponse)
def tokens_page(request: Request, actor: CurrentActor, revoked: str | None = None,
                revoked_cdh: str | None = None) -> Response:
    return _page(request, actor, revoked=revoked[:16] if revoked else None,
                 revoked_cdh=revoked_cdh[:16] if revoked_cdh else None)


def _create(actor: Actor, label: str) -> str:
    with get_database().write() as session:
        token, _row = service.create_org_token(session, actor.org, label)
    return token


@router.post("/tokens/", response_class=HTMLResponse)
async def create_token(request: Request, actor: CurrentActor) -> Response:
    label = await _form_label(request)
    try:
        token = await run_in_threadpool(_create, actor, label)
    except APIError as exc:
        if exc.status_code != 400 or not isinstance(exc.body, dict):
            raise
        errors = exc.body
        return await run_in_threadpool(lambda: _page(request, actor, label=label, errors=errors, status_code=400))
    # Answered here, not after a redirect: the token is shown once and never travels in a URL.
    return await run_in_threadpool(lambda: _page(request, actor, new_token=token))


async def _form_label(request: Request) -> str:
    label = (await request.form()).get("label")
    return label if isinstance(label, str) else ""


def _create_cdh_key(actor: Actor, label: str) -> str:
    with get_database().write() as session:
        return cdh_keys.create_cdh_key(session, actor.org, label)


@router.post("/tokens/cdh-keys/", response_class=HTMLResponse)
async def create_cdh_key(request: Request, actor: CurrentActor) -> Response:
    label = await _form_label(request)
    try:
        key = await run_in_threadpool(_create_cdh_key, actor, label)
    except APIError as exc:
        if exc.status_code != 400 or not isinstance(exc.body, dict):
            raise
        errors = exc.body
        return await run_in_threadpool(
            lambda: _page(request, actor, cdh_label=label, cdh_errors=errors, status_code=400))
    # As for tokens: shown once, in this answer, never in a URL.
    return await run_in_threadpool(lambda: _page(request, actor, new_cdh_key=key))


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


def _revoke_cdh_key(actor: Actor, key_id: int) -> str:
    with get_database().write() as session:
        return cdh_keys.revoke_cdh_key_by_id(session, actor.org, key_id)


@router.post("/tokens/cdh-keys/{key_id}/revoke/")
def revoke_cdh_key(request: Request, actor: CurrentActor, key_id: str) -> Response:
    prefix = _revoke_cdh_key(actor, path_id(key_id))
    return RedirectResponse(f"{request.scope.get('root_path', '')}/console/tokens/?revoked_cdh={prefix}",
                            status_code=303)

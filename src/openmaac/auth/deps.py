"""FastAPI dependencies for bearer-token authentication.

The dependencies are ``async``: a token looked up within the last two seconds is answered from
memory on the event loop, with no hop to a worker thread and no database session (every API
request takes this path); only a look-up that needs the database runs in the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from openmaac.auth.service import OrgContext, authenticate, authenticate_cached
from openmaac.db.engine import get_database
from openmaac.telemetry.context import set_organization
from openmaac.web.errors import APIError

bearer = HTTPBearer(auto_error=False, description="MAAC OpenAPI access token: `Authorization: Bearer {token}`")


def _look_up(token: str) -> OrgContext | None:
    org = authenticate_cached(token)
    if org is None:
        with get_database().lookup() as conn:
            org = authenticate(conn, token)
    return org


def _resolve(credentials: HTTPAuthorizationCredentials | None) -> OrgContext | None:
    """The token's organisation (from a synchronous dependency), or None."""
    if credentials is None or not credentials.credentials:
        return None
    org = _look_up(credentials.credentials)
    if org is not None:
        set_organization(org.id)
    return org


async def _resolve_on_loop(credentials: HTTPAuthorizationCredentials | None) -> OrgContext | None:
    if credentials is None or not credentials.credentials:
        return None
    org = authenticate_cached(credentials.credentials)
    if org is None:
        org = await run_in_threadpool(_look_up, credentials.credentials)
    if org is not None:
        set_organization(org.id)
    return org


def cached_org(request: Request) -> OrgContext | None:
    """``current_org`` from memory alone, for a route's fast lane (``web.input.fast_lane``): the
    organisation of a well-formed bearer token looked up within the last two seconds, noted as
    ``current_org`` notes it; None for anything else (the full dependency then answers)."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if not token or scheme.lower() != "bearer":
        return None
    org = authenticate_cached(token)
    if org is not None:
        set_organization(org.id)
        request.state.org = org
    return org


async def current_org(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OrgContext:
    """The organisation of the bearer token, or 401 in DRF's words."""
    if credentials is None:
        raise APIError(401, {"detail": "Authentication credentials were not provided."},
                       headers={"WWW-Authenticate": "Bearer"})
    org = await _resolve_on_loop(credentials)
    if org is None:
        raise APIError(401, {"detail": "Invalid token."}, headers={"WWW-Authenticate": "Bearer"})
    request.state.org = org
    return org


async def current_org_plain_text(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OrgContext:
    """SMS+ endpoints answer a bad or missing token with 403 text/plain."""
    org = await _resolve_on_loop(credentials)
    if org is None:
        raise APIError(403, text="You do not have permission to perform this action")
    request.state.org = org
    return org


Org = Annotated[OrgContext, Depends(current_org)]

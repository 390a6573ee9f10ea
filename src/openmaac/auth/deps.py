"""FastAPI dependencies for bearer-token authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from openmaac.auth.service import OrgContext, authenticate
from openmaac.db.engine import get_database
from openmaac.telemetry.context import set_organization
from openmaac.web.errors import APIError

bearer = HTTPBearer(auto_error=False, description="MAAC OpenAPI access token: `Authorization: Bearer {token}`")


def _resolve(credentials: HTTPAuthorizationCredentials | None) -> OrgContext | None:
    if credentials is None or not credentials.credentials:
        return None
    with get_database().read() as session:
        org = authenticate(session, credentials.credentials)
    if org is not None:
        set_organization(org.id)
    return org


def current_org(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OrgContext:
    """The organisation of the bearer token, or 401 in DRF's words."""
    if credentials is None:
        raise APIError(401, {"detail": "Authentication credentials were not provided."},
                       headers={"WWW-Authenticate": "Bearer"})
    org = _resolve(credentials)
    if org is None:
        raise APIError(401, {"detail": "Invalid token."}, headers={"WWW-Authenticate": "Bearer"})
    request.state.org = org
    return org


def current_org_plain_text(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OrgContext:
    """SMS+ endpoints answer a bad or missing token with 403 text/plain."""
    org = _resolve(credentials)
    if org is None:
        raise APIError(403, text="You do not have permission to perform this action")
    request.state.org = org
    return org


Org = Annotated[OrgContext, Depends(current_org)]

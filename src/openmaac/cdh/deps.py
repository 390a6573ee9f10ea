"""The ``apikey`` header of the CDH API (CDH OpenAPI 2.0.1, "Authentication")."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from openmaac.auth.service import OrgContext
from openmaac.cdh.keys import authenticate_cdh_key, cached_cdh_key
from openmaac.db.engine import get_database
from openmaac.telemetry.context import set_organization
from openmaac.web.errors import APIError

apikey_header = APIKeyHeader(name="apikey", auto_error=False,
                             description="CDH API key: `apikey: {API key}` (`openmaac cdh-key create`)")


# what FastAPI's own APIKeyHeader answers with its 401
CHALLENGE = {"WWW-Authenticate": "APIKey"}


def current_cdh_org(request: Request, key: Annotated[str | None, Depends(apikey_header)]) -> OrgContext:
    """The organisation of the ``apikey`` header, or 401 ``{"detail": ...}`` (FastAPI's shape)."""
    if not key:
        raise APIError(401, {"detail": "Not authenticated"}, headers=CHALLENGE)
    org = cached_cdh_key(key)  # most requests: no database session at all
    if org is None:
        with get_database().read() as session:
            org = authenticate_cdh_key(session, key)
    if org is None:
        raise APIError(401, {"detail": "Invalid API key"}, headers=CHALLENGE)
    set_organization(org.id)
    request.state.org = org
    return org


CdhOrg = Annotated[OrgContext, Depends(current_cdh_org)]

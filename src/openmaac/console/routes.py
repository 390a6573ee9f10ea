"""Every console page, under ``/console``: each part's router, and the CSRF check that runs
before any of their views (``session.csrf_protect``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from openmaac.console import auth_views, sms_plus_views, templates_views, tokens_views
from openmaac.console.session import csrf_protect

router = APIRouter(prefix="/console", include_in_schema=False, dependencies=[Depends(csrf_protect)])
router.include_router(auth_views.router)
router.include_router(tokens_views.router)
router.include_router(templates_views.router)
router.include_router(sms_plus_views.router)

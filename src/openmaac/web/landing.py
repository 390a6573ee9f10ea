"""The page at ``/``: where a newcomer who opens the server's address in a browser goes next."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from openmaac import __version__


class ApiRoot(BaseModel):
    documentation: str = "/docs"
    openapi: str = "/openapi.json"
    authentication: str = "Authorization: Bearer <token> (openmaac token create, or the console's API token page)"


def landing_router(*, simulators: bool) -> APIRouter:
    links = [
        ("/console/", "Console (sign in)"),
        ("/docs", "API documentation (Swagger UI)"),
        ("/redoc", "API documentation (ReDoc)"),
        ("/openapi.json", "OpenAPI document"),
        ("/healthz", "Health check"),
    ]
    if simulators:
        links.append(("/_simulators/line/_admin/docs", "LINE simulator admin API (this machine only)"))
    items = "\n".join(f'    <li><a href="{escape(href)}">{escape(label)}</a></li>' for href, label in links)
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>openmaac</title></head>
<body>
  <h1>openmaac {escape(__version__)}</h1>
  <p>The MAAC OpenAPI answers under <code>/openapi/v1/</code> with
     <code>Authorization: Bearer &lt;token&gt;</code> (<code>openmaac token create</code>).</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""
    router = APIRouter()

    @router.get("/", include_in_schema=False, response_class=HTMLResponse)
    def landing() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get(
        "/openapi/v1/", tags=["openmaac"], response_model=ApiRoot,
        summary="Where the API's documents are (openmaac extension; no token needed)",
        description="The base URL the server's banner prints answers too: it names the API documentation, "
                    "the OpenAPI document and how to authenticate. Every other path under it needs a token.",
        openapi_extra={"x-openmaac-extension": True},
    )
    def api_root() -> ApiRoot:
        return ApiRoot()

    return router

"""Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from this package.

FastAPI's own pages load their scripts, styles, favicon and (ReDoc) Google fonts from CDNs,
so on a machine without internet access they are blank. The pages built here load only the
copies vendored under ``web/static/vendor/`` (see its README for versions and updating),
served under ``/static/``; a page of this server references no other host. The simulators
mounted in this server get the same pages (``local_pages``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
SWAGGER_UI = f"{STATIC_PATH}/vendor/swagger-ui"
REDOC = f"{STATIC_PATH}/vendor/redoc"
FAVICON = f"{SWAGGER_UI}/favicon-32x32.png"

# Swagger UI shows a badge fetched from validator.swagger.io for documents not served from
# localhost: off, so the page never leaves this server.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def install(app: FastAPI) -> None:
    """Mount the vendored assets and the two pages; create the app with ``docs_url=None,
    redoc_url=None`` so FastAPI's CDN-loading pages are not registered."""
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    _add_pages(app, "/docs", "/redoc")


def local_pages(app: FastAPI) -> FastAPI:
    """An app mounted in this server (a simulator): its FastAPI documentation pages replaced by
    ones loading this server's vendored assets."""
    pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in pages]
    _add_pages(app, app.docs_url, app.redoc_url)
    return app


def _add_pages(app: FastAPI, docs_path: str | None, redoc_path: str | None) -> None:
    title = app.title

    def openapi_url(request: Request) -> str:
        # below a mount point (root_path), as FastAPI's own pages do
        return request.scope.get("root_path", "").rstrip("/") + (app.openapi_url or "/openapi.json")

    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request), title=f"{title} - Swagger UI",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js", swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=FAVICON, swagger_ui_parameters=SWAGGER_UI_PARAMETERS)

    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request), title=f"{title} - ReDoc", redoc_js_url=f"{REDOC}/redoc.standalone.js",
            redoc_favicon_url=FAVICON, with_google_fonts=False)

    if docs_path:
        app.add_route(docs_path, swagger_ui, include_in_schema=False)
    if redoc_path:
        app.add_route(redoc_path, redoc, include_in_schema=False)

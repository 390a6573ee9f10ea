"""Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from this package.

FastAPI's own pages load their scripts, styles, favicon and (ReDoc) Google fonts from CDNs,
so on a machine without internet access they are blank. The pages built here load only the
copies vendored under ``web/static/vendor/`` (see its README for versions and updating),
served under ``/static/``; a page of this server references no other host.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
SWAGGER_UI = f"{STATIC_PATH}/vendor/swagger-ui"
REDOC = f"{STATIC_PATH}/vendor/redoc"
FAVICON = f"{SWAGGER_UI}/favicon-32x32.png"

# Swagger UI shows a badge fetched from validator.swagger.io for documents not served from
# localhost: off, so the page never leaves this server.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def install(app: FastAPI, *, docs_path: str = "/docs", redoc_path: str = "/redoc") -> None:
    """Mount the vendored assets and the two pages; create the app with ``docs_url=None,
    redoc_url=None`` so FastAPI's CDN-loading pages are not registered."""
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    @app.get(docs_path, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} - Swagger UI",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js", swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=FAVICON, swagger_ui_parameters=SWAGGER_UI_PARAMETERS)

    @app.get(redoc_path, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{title} - ReDoc", redoc_js_url=f"{REDOC}/redoc.standalone.js",
            redoc_favicon_url=FAVICON, with_google_fonts=False)

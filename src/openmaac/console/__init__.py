"""The marketer console: server-rendered pages under ``/console/`` (docs/console.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from openmaac.config import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_console(app: FastAPI, settings: Settings) -> None:
    """The console's pages, its static files, its error pages and its security headers."""
    from fastapi.staticfiles import StaticFiles

    from openmaac.console.routes import router
    from openmaac.console.security import install

    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(router)
    install(app, settings)

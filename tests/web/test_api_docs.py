"""/docs (Swagger UI) and /redoc render in a browser that can reach nothing but this server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason=f"no Chromium at {CHROMIUM} (Debian package chromium) to render the pages")


@pytest.fixture
def browser(chromium: Any) -> Any:
    return chromium


def render(browser: Any, url: str, ready: str, screenshot: str) -> tuple[int, list[str]]:
    """Open ``url`` with every request off loopback aborted; wait until ``ready`` matches
    elements; return their count and the URLs that tried to leave."""
    left: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1600})

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(url)
    page.wait_for_selector(ready, timeout=30_000)
    page.wait_for_load_state("networkidle")
    count = page.locator(ready).count()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot))
    page.close()
    return count, left


def test_swagger_ui_renders_offline(base_url: str, browser: Any) -> None:
    operations, left = render(browser, f"{base_url}/docs", ".opblock", "docs.png")
    assert operations >= 40
    assert left == []


def test_redoc_renders_offline(base_url: str, browser: Any) -> None:
    # ReDoc renders a section per operation
    operations, left = render(browser, f"{base_url}/redoc", "[data-section-id*='/operation/']", "redoc.png")
    assert operations >= 40
    assert left == []


def test_the_line_simulators_admin_docs_render_offline(base_url: str, browser: Any) -> None:
    # linked from the start page
    operations, left = render(browser, f"{base_url}/_simulators/line/_admin/docs", ".opblock",
                              "line-simulator-docs.png")
    assert operations >= 10
    assert left == []


PAGES = ["/docs", "/redoc", *(f"/_simulators/{name}/{page}" for name in ("line", "twilio", "mitake", "whatsapp")
                                for page in ("_admin/docs", "redoc"))]


def test_pages_name_no_other_host(base_url: str) -> None:
    import httpx

    for path in PAGES:
        response = httpx.get(f"{base_url}{path}")
        assert response.status_code == 200, path
        assert "http://" not in response.text and "https://" not in response.text, path

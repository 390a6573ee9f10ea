"""Helpers of the console's browser tests (fixtures wrap them in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE / "screenshots"
AXE_SOURCE = HERE / "vendor" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Saves ``tests/console/screenshots/<name>.png`` (look at it)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    viewport = page.viewport_size
    if full_page and viewport:
        # a full-page capture keeps the viewport's height, so the sticky sidebar (100vh) would
        # sit where the page was scrolled to: grow the viewport to the whole page instead
        height = page.evaluate("() => document.documentElement.scrollHeight")
        page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
        try:
            page.screenshot(path=str(path))
        finally:
            page.set_viewport_size(viewport)
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it is now, of the given impacts."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # evaluated through the DevTools protocol: the page's Content-Security-Policy does not apply
        page.evaluate(AXE_SOURCE.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v.get("impact") in impacts]


def assert_accessible(page: Any) -> None:
    """Fails on axe-core's serious or critical violations, naming the rule and the elements."""
    violations = axe_violations(page)
    assert not violations, json.dumps(
        [{"rule": v["id"], "impact": v["impact"], "help": v["help"],
          "nodes": [node["target"] for node in v["nodes"]][:5]} for v in violations], indent=1)


def csrf_of(html: str) -> str:
    """The CSRF token a console page's forms carry."""
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@contextmanager
def http_sign_in(base_url: str, email: str, password: str, **client_options: Any) -> Iterator[Any]:
    """``with http_sign_in(...) as client``: an httpx client signed in to the console as a
    browser would be (for hand-made requests)."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30, **client_options) as client:
        page = client.get("/console/sign-in")
        answer = client.post("/console/sign-in", data={"email": email, "password": password, "next": "/console/",
                                                       "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 303, answer.text
        yield client

"""``/`` leads somewhere: a page whose every link answers."""

from __future__ import annotations

import re

import httpx


def test_start_page_links_answer(base_url: str) -> None:
    response = httpx.get(f"{base_url}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    links = re.findall(r'href="([^"]+)"', response.text)
    assert {"/console/", "/docs", "/openapi.json", "/_simulators/line/_admin/docs"} <= set(links)
    for link in links:
        # the console's address leads to its sign-in page
        assert httpx.get(f"{base_url}{link}", follow_redirects=True).status_code == 200, link


def test_the_api_base_url_the_banner_prints_answers(base_url: str) -> None:
    response = httpx.get(f"{base_url}/openapi/v1/")
    assert response.status_code == 200
    assert response.json()["documentation"] == "/docs" and response.json()["openapi"] == "/openapi.json"
    assert httpx.get(f"{base_url}/openapi/v1/member/").status_code == 401  # the rest still needs a token

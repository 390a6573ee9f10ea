"""A path that matches only with a trailing slash answers as Django's APPEND_SLASH does:
301, ``Location`` = the path plus ``/`` with the query string kept, any method, no body."""

from __future__ import annotations

import httpx


def test_get_without_slash_redirects_permanently(base_url: str) -> None:
    response = httpx.get(f"{base_url}/openapi/v1/member?line_uid=U1&email=a%2Bb%40x.tw")
    assert response.status_code == 301
    assert response.headers["location"] == "/openapi/v1/member/?line_uid=U1&email=a%2Bb%40x.tw"
    assert response.content == b""


def test_path_parameters_and_encoding_are_kept(base_url: str) -> None:
    response = httpx.get(f"{base_url}/openapi/v1/member/U%201")
    assert response.status_code == 301
    assert response.headers["location"] == "/openapi/v1/member/U%201/"


def test_post_without_slash_redirects_permanently(base_url: str) -> None:
    # Django in production answers 301 to a POST too; the client loses the body
    response = httpx.post(f"{base_url}/openapi/v1/tag", json={"name": "x"})
    assert response.status_code == 301
    assert response.headers["location"] == "/openapi/v1/tag/"


def test_redirect_followed_reaches_the_endpoint(tenant) -> None:  # type: ignore[no-untyped-def]
    response = tenant.client.get("/openapi/v1/member", follow_redirects=True)
    assert response.status_code == 200 and "results" in response.json()


def test_no_redirect_where_the_slash_path_matches_nothing(base_url: str) -> None:
    for path in ("/openapi/v1/nothing", "/openapi/v1/nothing/else", "/healthz/", "/line/webhook/123/"):
        response = httpx.get(f"{base_url}{path}")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found."}, path


def test_bare_api_root_leads_to_the_api_root(base_url: str) -> None:
    # /openapi/v1/ answers (the base URL the banner prints), so the slashless form is redirected to it
    response = httpx.get(f"{base_url}/openapi/v1")
    assert response.status_code == 301 and response.headers["location"] == "/openapi/v1/"

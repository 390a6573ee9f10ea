"""The fast lane of a ``fast_lane`` route answers exactly as FastAPI's own handler would.

Two routes with one endpoint, one marked ``fast_lane`` and one not, in an app with openmaac's
error handlers: every request must get the same status and body from both, and only the usual
request (a known token, a JSON body that validates) may skip FastAPI's handler.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from openmaac.web.errors import APIError, api_error_handler, http_error_handler, validation_error_handler
from openmaac.web.input import InputRoute, LaneRoute, fast_lane, plain_lane
from openmaac.web.params import BodyId
from openmaac.web.responses import OrjsonResponse

GOOD = "Bearer good-token"
full_handler_orgs: list[str] = []  # the organisations FastAPI's dependency resolved


async def org_dependency(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    if authorization.partition(" ")[2].strip() != "good-token":
        raise APIError(401, {"detail": "Invalid token."})
    full_handler_orgs.append("org-1")
    return "org-1"


def org_from_memory(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return "org-1" if scheme.lower() == "bearer" and token.strip() == "good-token" else None


Org = Annotated[str, Depends(org_dependency)]


class SendIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    template_id: BodyId
    event_id: BodyId | None = None
    data: dict[str, Any] = Field(max_length=3)


def _answer(org: str, body: SendIn) -> Any:
    if body.data.get("refuse"):
        raise APIError(400, {"data": ["refused by the endpoint"]})
    return OrjsonResponse({"org": org, "template_id": body.template_id, "event_id": body.event_id,
                           "data": body.data})


router = APIRouter(prefix="/openapi/v1", route_class=InputRoute)


@router.post("/fast/")
@fast_lane(org_from_memory)
def fast(org: Org, body: SendIn) -> Any:
    return _answer(org, body)


@router.post("/full/")
def full(org: Org, body: SendIn) -> Any:
    return _answer(org, body)


async def _answer_raw(org: str, request: Request) -> Any:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise APIError(400, text=f"JSON parse error - {exc}") from exc
    return OrjsonResponse({"org": org, "body": body})


@router.post("/fast_raw/")
@fast_lane(org_from_memory)
async def fast_raw(org: Org, request: Request) -> Any:
    return await _answer_raw(org, request)


@router.post("/full_raw/")
async def full_raw(org: Org, request: Request) -> Any:
    return await _answer_raw(org, request)


async def _answer_plain(channel_id: str, request: Request, x_line_signature: str | None) -> Any:
    body = await request.body()
    if x_line_signature != "good":
        raise APIError(401, {"detail": "Invalid signature."})
    return OrjsonResponse({"channel": channel_id, "length": len(body)})


plain_router = APIRouter(route_class=LaneRoute)


@plain_router.post("/fast_plain/{channel_id}")
@plain_lane
async def fast_plain(channel_id: str, request: Request, x_line_signature: str | None = Header(default=None)) -> Any:
    return await _answer_plain(channel_id, request, x_line_signature)


@plain_router.post("/full_plain/{channel_id}")
async def full_plain(channel_id: str, request: Request, x_line_signature: str | None = Header(default=None)) -> Any:
    return await _answer_plain(channel_id, request, x_line_signature)


def _app() -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]
    app.include_router(router)
    app.include_router(plain_router)
    return app


@pytest.fixture(scope="module")
def client() -> Any:
    with TestClient(_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def _both(client: TestClient, content: bytes, headers: dict[str, str], query: str = "",
          raw: bool = False) -> tuple[Any, Any]:
    answers = []
    for path in ("/openapi/v1/fast_raw/", "/openapi/v1/full_raw/") if raw else ("/openapi/v1/fast/", "/openapi/v1/full/"):
        response = client.post(path + query, content=content, headers=headers)
        answers.append((response.status_code, response.content))
    return answers[0], answers[1]


USUAL = orjson.dumps({"template_id": 7, "data": {"name": "Ann"}})
JSON = {"content-type": "application/json", "authorization": GOOD}


def test_the_usual_request_skips_fastapis_handler_and_answers_the_same(client: TestClient) -> None:
    full_handler_orgs.clear()
    fast_answer = client.post("/openapi/v1/fast/", content=USUAL, headers=JSON)
    assert full_handler_orgs == []  # answered by the fast lane
    full_answer = client.post("/openapi/v1/full/", content=USUAL, headers=JSON)
    assert full_handler_orgs == ["org-1"]
    assert fast_answer.status_code == full_answer.status_code == 200
    assert fast_answer.json() == full_answer.json() == {"org": "org-1", "template_id": 7, "event_id": None,
                                                        "data": {"name": "Ann"}}


@pytest.mark.parametrize(("content", "headers", "query"), [
    (USUAL, {"content-type": "application/json"}, ""),  # no token
    (USUAL, {"content-type": "application/json", "authorization": "Bearer other"}, ""),  # unknown token
    (USUAL, {"content-type": "application/json", "authorization": "Basic good-token"}, ""),
    (USUAL, {"content-type": "text/plain", "authorization": GOOD}, ""),  # not JSON by its type
    (USUAL, {"authorization": GOOD}, ""),  # no content type
    (b"", JSON, ""),  # no body
    (b"{", JSON, ""),  # not JSON
    (b'{"template_id": NaN, "data": {}}', JSON, ""),  # JSON only the standard library reads
    (b'{"template_id": 1, "data": {"big": 123456789012345678901234567890}}', JSON, ""),
    (b'{"template_id": 1, "data": {"s": "\\ud800"}}', JSON, ""),  # a lone surrogate
    ('{"template_id": 1, "data": {"s": "caf\u00e9"}}'.encode("utf-16"), JSON, ""),  # UTF-16
    (b'{"template_id": 1, "data": {"s": "a\\u0000b"}}', JSON, ""),  # a null character
    (USUAL, JSON, "?x=%00"),  # a null character in the query
    (USUAL, JSON, "?x=1"),
    (b'{"template_id": 0, "data": {}}', JSON, ""),  # fails validation
    (b'{"template_id": "7", "data": {}}', JSON, ""),  # lax: a numeric string is an id
    (b'{"data": {}}', JSON, ""),
    (b'[1, 2]', JSON, ""),
    (b'{"template_id": 1, "data": {"a": 1, "b": 2, "c": 3, "d": 4}}', JSON, ""),
    (b'{"template_id": 1, "data": {"refuse": true}}', JSON, ""),  # the endpoint's own error
    (USUAL, {"content-type": "application/json; charset=utf-8", "authorization": GOOD}, ""),
    (USUAL, {"content-type": "application/vnd.api+json", "authorization": GOOD}, ""),
])
def test_every_other_request_gets_fastapis_own_answer(client: TestClient, content: bytes,
                                                      headers: dict[str, str], query: str) -> None:
    for raw in (False, True):  # an endpoint taking the model, and one reading the body itself
        fast_answer, full_answer = _both(client, content, headers, query, raw=raw)
        assert fast_answer == full_answer


def test_an_endpoint_reading_the_body_itself_gets_it_from_the_fast_lane(client: TestClient) -> None:
    full_handler_orgs.clear()
    answer = client.post("/openapi/v1/fast_raw/", content=USUAL, headers=JSON)
    assert full_handler_orgs == []
    assert answer.status_code == 200 and answer.json() == {"org": "org-1", "body": orjson.loads(USUAL)}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)
bodies = st.fixed_dictionaries({}, optional={
    "template_id": st.integers(-5, 2**40) | st.text(max_size=4) | json_values,
    "event_id": st.none() | st.integers(-5, 2**40) | json_values,
    "data": st.dictionaries(st.text(max_size=6), json_values, max_size=5) | json_values,
    "other": json_values,
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_json_body_gets_the_same_answer_from_both(client: TestClient, body: dict[str, Any]) -> None:
    # the standard library writes it: integers beyond 64 bits too (orjson reads none of them)
    fast_answer, full_answer = _both(client, json.dumps(body).encode(), JSON)
    assert fast_answer == full_answer



@pytest.mark.parametrize(("path", "headers"), [
    ("1234567890", {"x-line-signature": "good"}),
    ("1234567890", {"X-Line-Signature": "bad"}),
    ("1234567890", {}),
    ("caf%C3%A9%20x", {"x-line-signature": "good"}),  # a path parameter decoded
])
def test_a_plain_lane_endpoint_gets_the_arguments_fastapi_would_give(client: TestClient, path: str,
                                                                     headers: dict[str, str]) -> None:
    fast_answer, full_answer = [(answer.status_code, answer.content) for answer in (
        client.post(f"/{route}/{path}", content=b"12345", headers=headers) for route in ("fast_plain", "full_plain"))]
    assert fast_answer == full_answer


def test_a_plain_lane_endpoint_is_called_without_fastapis_dependency_solving(client: TestClient,
                                                                           monkeypatch: Any) -> None:
    import fastapi.routing

    solved: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    for route in ("fast_plain", "full_plain"):
        assert client.post(f"/{route}/1", content=b"x", headers={"x-line-signature": "good"}).status_code == 200
    assert solved == ["/full_plain/1"]


def test_the_plain_lane_refuses_a_parameter_fastapi_could_refuse() -> None:
    refusing = APIRouter(route_class=LaneRoute)
    with pytest.raises(AssertionError, match="could refuse the parameter page"):
        @refusing.get("/listing/")
        @plain_lane
        async def listing(request: Request, page: int = 1) -> Any:
            return None
    with pytest.raises(AssertionError, match="could refuse the parameter number"):
        @refusing.get("/item/{number:int}")  # a path parameter the router converts
        @plain_lane
        async def item(request: Request, number: str) -> Any:
            return None

"""Input checks every API route shares: no null character in a path, query or JSON string.

PostgreSQL cannot store U+0000 in text (nor in JSON), so a ``"\\u0000"`` anywhere would fail
the insert with a 500; Django REST framework refuses it at every ``CharField`` with
"Null characters are not allowed.", and so does openmaac, for every string of the request.

``InputRoute`` is the route class of every API router. It adds one dependency that runs
after the endpoint's own (authentication first, as DRF authenticates before it parses): it
looks at the path and query parameters and, for a body that is not a form, at the raw
bytes, which hold a null character only as the escape ``\\u0000`` (JSON forbids raw control
characters), so a body without that escape is never parsed a second time.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Depends, Request, params
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import Message

from openmaac.common.validation import null_paths
from openmaac.web.errors import APIError, _insert
from openmaac.web.limits import route_class

NULL_MESSAGE = "Null characters are not allowed."
ERROR_PATH_MAX_DEPTH = 32
_ESCAPED_NULL = b"\\u0000"


def _may_be_json(request: Request) -> bool:
    """Forms are streamed by their routes (and checked there); any other body may be JSON,
    whatever its Content-Type says: some routes read theirs by hand."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type not in ("multipart/form-data", "application/x-www-form-urlencoded")


def _refuse(request: Request, paths: list[tuple[Any, ...]]) -> APIError:
    if route_class(request.url.path).plain_text:
        return APIError(400, text=NULL_MESSAGE)
    tree: dict[str, Any] = {}
    for path in paths:
        # a deeper path is reported where it passes the cap: the answer must stay encodable
        # (orjson refuses documents nested deeper than 254 levels)
        _insert(tree, list(path[:ERROR_PATH_MAX_DEPTH]) or ["non_field_errors"], NULL_MESSAGE)
    return APIError(400, tree)


async def reject_null_characters(request: Request) -> None:
    if "\x00" in request.url.path:
        raise APIError(404, {"detail": "Not found."})  # nothing is named with a null character
    paths: list[tuple[Any, ...]] = [
        (key if "\x00" not in key else "non_field_errors",)
        for key, value in request.query_params.multi_items() if "\x00" in key or "\x00" in value
    ]
    if not paths and _may_be_json(request):
        body = await request.body()
        if _ESCAPED_NULL in body:
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                return  # not JSON: the route answers its own parse error
            paths = list(null_paths(document))
    if paths:
        raise _refuse(request, paths)


def _with_input_check(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` with one more parameter, last: ``Depends(reject_null_characters)``.

    FastAPI solves an endpoint's dependencies in the order of its parameters, so the check
    runs after the route's own (its authentication). A route-level ``dependencies=`` would
    run first, and a dependency appended to ``route.dependant`` is lost when the router is
    included (FastAPI rebuilds the dependant from the endpoint for each inclusion).
    """
    signature = inspect.signature(endpoint)
    extra = inspect.Parameter("_input_checked", inspect.Parameter.KEYWORD_ONLY,
                              default=Depends(reject_null_characters))
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, _input_checked: None = None, **kwargs: Any) -> Any:
            return await endpoint(*args, **kwargs)
    else:
        @functools.wraps(endpoint)
        def wrapper(*args: Any, _input_checked: None = None, **kwargs: Any) -> Any:
            return endpoint(*args, **kwargs)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), extra])
    return wrapper


# -- the fast lane ---------------------------------------------------------------------------------
#
# FastAPI's handler for a route (reading the body, solving the dependencies, validating the body
# into the endpoint's arguments) cost a push 130 µs of CPU more than the same steps written out,
# measured in process with the sending stubbed (320 against 190 µs a request): a third of what
# separated the push from bare FastAPI. A route marked ``fast_lane`` answers the usual request
# itself, the same steps with the same outcome, and hands every other request to FastAPI's
# handler (the body it read kept, or its reading's error raised again): so every error (a bad
# token, a body that does not validate, a null character) is FastAPI's own answer.

_FAST_LANE = "_openmaac_fast_lane"
OrgResolver = Callable[[Request], Any]
RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


def fast_lane(resolve_org: OrgResolver) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks an endpoint of an ``InputRoute`` for the fast lane: ``(org, body: <pydantic model>)``
    (the body JSON) or ``(org, request: Request)`` (the endpoint reads the body itself), with no
    other parameter. ``resolve_org(request)``: the organisation the route's ``org`` dependency
    would give, from memory alone, else None (the request then goes FastAPI's way)."""
    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        setattr(endpoint, _FAST_LANE, resolve_org)
        return endpoint
    return mark


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def _replayed(request: Request, error: Exception) -> Request:
    """``request`` again, its body's reading raising ``error`` as it did the first time."""
    raised = False

    async def receive() -> Message:
        nonlocal raised
        if raised:
            return await request.receive()
        raised = True
        raise error
    return Request(request.scope, receive, request._send)


def _calling(endpoint: Callable[..., Any]) -> Callable[[dict[str, Any]], Awaitable[Response]]:
    """How a lane calls ``endpoint`` with its arguments: awaited, or in the thread pool as FastAPI
    runs a synchronous endpoint; the answer must be a Response (nothing left to serialise)."""
    is_async = inspect.iscoroutinefunction(endpoint)

    async def call(arguments: dict[str, Any]) -> Response:
        response = await endpoint(**arguments) if is_async else await run_in_threadpool(endpoint, **arguments)
        assert isinstance(response, Response), "a lane's endpoint answers a Response"
        return response
    return call


@dataclass(frozen=True)
class _Lane:
    endpoint: Callable[..., Any]
    resolve_org: OrgResolver
    model: type[BaseModel] | None  # None: the endpoint takes the request

    def arguments(self, request: Request, body: bytes) -> dict[str, Any] | None:
        """The endpoint's arguments when the request is the usual one, else None."""
        if request.scope.get("query_string") or _ESCAPED_NULL in body:
            return None
        if self.model is not None and not _is_json(request.headers.get("content-type")):
            return None
        org = self.resolve_org(request)
        if org is None:
            return None
        if self.model is None:
            return {"org": org, "request": request}
        try:  # read as FastAPI reads it (orjson would read an integer beyond 64 bits as a float)
            return {"org": org, "body": self.model.model_validate(json.loads(body))}
        except (ValueError, ValidationError):  # not JSON, not UTF-8/16/32, or not valid: FastAPI's way
            return None

    def handler(self, full: RouteHandler) -> RouteHandler:
        call = _calling(self.endpoint)

        async def handler(request: Request) -> Response:
            try:
                body = await request.body()
            except Exception as error:  # noqa: BLE001 - FastAPI's handler answers it, as it would have
                return await full(_replayed(request, error))
            arguments = self.arguments(request, body)
            if arguments is None:
                return await full(request)  # the request keeps the body read: FastAPI reads it again
            return await call(arguments)
        return handler


# -- the plain lane: an endpoint whose parameters FastAPI can never refuse -------------------------

_PLAIN_LANE = "_openmaac_plain_lane"


def plain_lane(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Marks an endpoint whose parameters are only the request, text path parameters and
    optional text headers (``Header(default=None)``): FastAPI can refuse none of them, so the
    route calls the endpoint with them straight, without solving its dependencies (a LINE
    webhook reads and checks its body itself)."""
    setattr(endpoint, _PLAIN_LANE, True)
    return endpoint


@dataclass(frozen=True)
class _PlainLane:
    endpoint: Callable[..., Any]
    # (parameter, where: "request" | "path" | "header", the path parameter's or header's name)
    sources: tuple[tuple[str, str, str], ...]

    def handler(self, full: RouteHandler) -> RouteHandler:
        # FastAPI's handler (``full``) is never needed: it could answer nothing else
        call, sources = _calling(self.endpoint), self.sources

        async def handler(request: Request) -> Response:
            return await call({name: request if where == "request"
                               else request.path_params[key] if where == "path" else request.headers.get(key)
                               for name, where, key in sources})
        return handler


def _plain_lane_of(path: str, endpoint: Callable[..., Any]) -> _PlainLane:
    hints = typing.get_type_hints(endpoint)
    convertors = compile_path(path)[2]  # the path's parameters, as the router will match them
    sources = []
    for name, parameter in inspect.signature(endpoint).parameters.items():
        default = parameter.default
        if hints.get(name) is Request:
            sources.append((name, "request", ""))
        elif isinstance(convertors.get(name), StringConvertor) and hints.get(name) is str:
            sources.append((name, "path", name))
        elif isinstance(default, params.Header) and default.default is None and hints.get(name) == str | None:
            alias = default.alias or (name.replace("_", "-") if default.convert_underscores else name)
            sources.append((name, "header", alias.lower()))
        else:
            raise AssertionError(f"plain_lane: FastAPI could refuse the parameter {name}")
    return _PlainLane(endpoint, tuple(sources))


def _lane_of(path: str, endpoint: Callable[..., Any]) -> _Lane | _PlainLane | None:
    if getattr(endpoint, _PLAIN_LANE, False):
        return _plain_lane_of(path, endpoint)
    resolve_org = getattr(endpoint, _FAST_LANE, None)
    if resolve_org is None:
        return None
    hints = typing.get_type_hints(endpoint)
    parameters = list(inspect.signature(endpoint).parameters)
    model = hints.get("body")
    if parameters == ["org", "body"] and isinstance(model, type) and issubclass(model, BaseModel):
        return _Lane(endpoint, resolve_org, model)
    assert parameters == ["org", "request"] and hints.get("request") is Request, \
        "fast_lane: (org, body: <model>) or (org, request: Request)"
    return _Lane(endpoint, resolve_org, None)


class LaneRoute(APIRoute):
    """A route class taking the fast lane of an endpoint marked ``fast_lane`` or ``plain_lane``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # before FastAPI builds the handler (in __init__); of the endpoint as written
        self._lane = _lane_of(path, inspect.unwrap(endpoint))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> RouteHandler:
        # FastAPI builds a route's handler here, once for the route and once per inclusion
        full = super().get_route_handler()
        return full if self._lane is None else self._lane.handler(full)


class InputRoute(LaneRoute):
    """The route class of every API router (``APIRouter(route_class=InputRoute)``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if route_class(path).checks_input:
            endpoint = _with_input_check(endpoint)
        super().__init__(path, endpoint, **kwargs)

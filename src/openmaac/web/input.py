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
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
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
# separated the push from bare FastAPI. A route marked ``fast_json`` answers the usual request
# itself, the same steps with the same outcome, and hands every other request to FastAPI's
# handler untouched, its body replayed: so every error (a bad token, a body that does not
# validate, JSON only the standard library reads, a null character) is FastAPI's own answer.

_FAST_JSON = "_openmaac_fast_json"
OrgResolver = Callable[[Request], Any]
RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


def fast_json(resolve_org: OrgResolver) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a synchronous endpoint ``(org, body: <pydantic model>)`` of an ``InputRoute`` for
    the fast lane. ``resolve_org(request)``: the organisation the route's ``org`` dependency would
    give, from memory alone, else None (the request then goes FastAPI's way)."""
    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        setattr(endpoint, _FAST_JSON, resolve_org)
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


def _fast_lane(full: RouteHandler, endpoint: Callable[..., Any], resolve_org: OrgResolver,
               model: type[BaseModel]) -> RouteHandler:
    def lean_arguments(request: Request, body: bytes) -> tuple[Any, BaseModel] | None:
        """The endpoint's arguments when the request is the usual one, else None."""
        if request.scope.get("query_string") or _ESCAPED_NULL in body \
                or not _is_json(request.headers.get("content-type")):
            return None
        org = resolve_org(request)
        if org is None:
            return None
        try:  # read as FastAPI reads it (orjson would read an integer beyond 64 bits as a float)
            value = model.model_validate(json.loads(body))
        except (ValueError, ValidationError):  # not JSON, not UTF-8/16/32, or not valid: FastAPI's way
            return None
        return org, value

    async def handler(request: Request) -> Response:
        try:
            body = await request.body()
        except Exception as error:  # noqa: BLE001 - FastAPI's handler answers it, as it would have
            return await full(_replayed(request, error))
        arguments = lean_arguments(request, body)
        if arguments is None:
            return await full(request)  # the body read is kept by the request: FastAPI reads it again
        org, value = arguments
        response = await run_in_threadpool(endpoint, org=org, body=value)
        assert isinstance(response, Response), "fast_json: the endpoint answers a Response"
        return response
    return handler


class InputRoute(APIRoute):
    """The route class of every API router (``APIRouter(route_class=InputRoute)``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        resolve_org = getattr(endpoint, _FAST_JSON, None)
        plain = endpoint
        if route_class(path).checks_input:
            endpoint = _with_input_check(endpoint)
        self._fast: tuple[Callable[..., Any], OrgResolver, type[BaseModel]] | None = None
        if resolve_org is not None:
            model = typing.get_type_hints(plain)["body"]
            assert isinstance(model, type) and issubclass(model, BaseModel), "fast_json: body must be a model"
            self._fast = (plain, resolve_org, model)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> RouteHandler:
        # FastAPI builds a route's handler here, once for the route and once per inclusion
        full = super().get_route_handler()
        return full if self._fast is None else _fast_lane(full, *self._fast)

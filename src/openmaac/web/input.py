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
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Depends, Request
from fastapi.routing import APIRoute

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


class InputRoute(APIRoute):
    """The route class of every API router (``APIRouter(route_class=InputRoute)``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if route_class(path).checks_input:
            endpoint = _with_input_check(endpoint)
        super().__init__(path, endpoint, **kwargs)

"""The served OpenAPI document, told truthfully: the statuses each operation really answers.

FastAPI documents a 422 on every operation with parameters, but openmaac answers validation
errors as Django REST framework does (400, ``web/errors.py``), and FastAPI knows nothing of the
401/403 of the bearer dependencies, the 404 of lookups, the 413 of the request-body limit or the
429 of the rate limits. ``describe_errors`` rewrites the generated document from the route table:

* 400 where an operation takes input (parameters, a body, or the raw request it parses);
* 401 (JSON, ``WWW-Authenticate``) or 403 (text/plain or JSON, as the MAAC SMS+ endpoints
  answer) from the authentication dependency the route depends on;
* 404 where a path parameter names a row;
* 413 wherever a body is accepted;
* 429 with ``Retry-After`` where the endpoint calls the rate limiter;

plus the few facts the route table cannot show (``OVERRIDES``). Error bodies are described by
two components: ``ValidationError`` (field -> messages, nested for nested input) and ``Detail``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from openmaac.web.ratelimit import LIMITS

REF = "#/components/schemas/"
JSON = "application/json"
TEXT = "text/plain"

SCHEMAS: dict[str, dict[str, Any]] = {
    "ValidationError": {
        "title": "ValidationError",
        "description": (
            "Django REST framework field errors (400): each field names its messages, nested objects "
            "(and list items, by index) nest the same way; errors of the whole body are under "
            "`non_field_errors`."
        ),
        "type": "object",
        "additionalProperties": {"anyOf": [
            {"type": "array", "items": {"anyOf": [{"type": "string"}, {"$ref": REF + "ValidationError"}]}},
            {"$ref": REF + "ValidationError"},
        ]},
        "example": {"name": ["This field is required."], "data": {"0": {"line_uid": ["This field is required."]}}},
    },
    "Detail": {
        "title": "Detail",
        "description": "Django REST framework's error body for everything but field errors.",
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
        "example": {"detail": "Not found."},
    },
    "LineMessageError": {
        "title": "LineMessageError",
        "description": "LINE Messaging API's error body, for message objects LINE would refuse.",
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object", "properties": {
                "message": {"type": "string"}, "property": {"type": "string"}}}},
        },
    },
}

SCHEMAS["FastAPIValidationError"] = {
    "title": "FastAPIValidationError",
    "description": "The CDH API's validation errors (422), in FastAPI's shape (CDH OpenAPI 2.0.1).",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "array", "items": {
        "type": "object", "required": ["loc", "msg", "type"],
        "properties": {"loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                       "msg": {"type": "string"}, "type": {"type": "string"}}}}},
}

DETAIL = {"$ref": REF + "Detail"}
BAD_REQUEST = {"anyOf": [{"$ref": REF + "ValidationError"}, DETAIL]}
TEXT_BODY = {"type": "string"}

# What each authentication dependency answers for a missing or invalid token, by its name (the
# document must not import the domains that define some of them).
AUTH_ANSWERS: dict[str, tuple[int, str]] = {
    "current_org": (401, JSON),
    "current_org_plain_text": (403, TEXT),   # SMS+ (MAAC SMS+ API): 403 text/plain
    "current_org_json_403": (403, JSON),     # SMS+ sending records: 403 JSON
    "current_cdh_org": (401, JSON),          # the CDH API's apikey header
}
# The CDH API (CDH OpenAPI 2.0.1) is a FastAPI service: its validation errors are 422.
FASTAPI_STYLE = re.compile(r"^/cdh/")

DESCRIPTIONS = {
    400: "Invalid input: field errors (`{\"field\": [\"message\"]}`) or `{\"detail\": \"...\"}`",
    401: "Missing or invalid access token",
    403: "Missing or invalid access token, or not allowed",
    404: "Not found (also for another organisation's ids)",
    413: "Request body too large",
    415: "Unsupported content type",
    429: "Rate limited",
    503: "Temporarily unavailable; nothing was sent",
}

# Facts the route table cannot show, by (method, path): status -> {media type: schema}.
OVERRIDES: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    # custom segments parse their multipart (or, for PATCH, JSON) body themselves and refuse
    # other content types
    ("post", "/openapi/v1/custom_segment/"): {415: {JSON: DETAIL}},
    ("patch", "/openapi/v1/custom_segment/{segment_id}/"): {415: {JSON: DETAIL}},
    # the signed, expiring link: a bad signature answers 403
    ("get", "/openapi/v1/member/import/{task_id}/mismatch/"): {403: {JSON: DETAIL}},
    # invalid LINE message objects answer LINE's own error body
    ("post", "/openapi/v1/template/"): {400: {JSON: {"anyOf": [*BAD_REQUEST["anyOf"], {
        "$ref": REF + "LineMessageError"}]}}},
    # the tag or the contact named in the body (other ids in bodies are field errors, as DRF's
    # "Invalid pk" ones)
    ("post", "/openapi/v1/taglinemember/"): {404: {JSON: DETAIL}},
    ("delete", "/openapi/v1/taglinemember/"): {404: {JSON: DETAIL}},
    # SMS+ message sending answers in text/plain, a too large body too
    ("post", "/openapi/v1/pnp/message/push/"): {413: {TEXT: TEXT_BODY}},
    ("post", "/openapi/v1/pnp/message/multicast/"): {413: {TEXT: TEXT_BODY}, 503: {TEXT: TEXT_BODY}},
    # "pnp_setting_id not found"
    ("get", "/openapi/v1/pnp/message/"): {404: {JSON: DETAIL}},
    # field errors as JSON, the sending refusals (not approved, no points) in SMS+'s text/plain
    ("post", "/openapi/v1/pnp/upload/{upload_id}/send/"): {400: {JSON: BAD_REQUEST, TEXT: TEXT_BODY}},
    # the LINE webhook authenticates by signature, not token
    ("post", "/line/webhook/{channel_id}"): {401: {JSON: DETAIL}},
    # providers' callbacks answer their reasons in text/plain; a malformed organisation id is a
    # field error or, as an id no row can have, DRF's JSON 404
    ("get", "/sms_plus/callbacks/{provider_name}/{organization_id}"): {
        400: {JSON: BAD_REQUEST, TEXT: TEXT_BODY}, 403: {TEXT: TEXT_BODY}, 404: {JSON: DETAIL, TEXT: TEXT_BODY}},
    ("post", "/sms_plus/callbacks/{provider_name}/{organization_id}"): {
        400: {JSON: BAD_REQUEST, TEXT: TEXT_BODY}, 403: {TEXT: TEXT_BODY}, 404: {JSON: DETAIL, TEXT: TEXT_BODY}},
    ("post", "/sms_plus/callbacks/whatsapp"): {400: {TEXT: TEXT_BODY}, 403: {TEXT: TEXT_BODY}},
    # CDH: at most 10 running imports and one export per organisation; a custom field's key once
    ("post", "/cdh/v1/member/import"): {409: {JSON: DETAIL}},
    ("post", "/cdh/v1/member/export"): {409: {JSON: DETAIL}},
    ("post", "/cdh/v1/custom_field"): {409: {JSON: DETAIL}},
    # a member openmaac does not know
    ("patch", "/cdh/v1/member"): {404: {JSON: DETAIL}},
    # the export's signed link: unknown or tampered 404, expired 410
    ("get", "/cdh/v1/task/{task_id}/download"): {410: {JSON: DETAIL}},
}
# Redirects answer 302 only; FastAPI's default 200 would be a lie.
REDIRECTS = {("get", "/r/{code}"), ("get", "/o/{code}/{rest}"), ("get", "/sms_plus/j/{code}")}

_LIMITER_CALL = re.compile(r"limiter\.check\(\s*[\w.]+\s*,\s*\"(\w+)\"\s*\)")
_BODY_METHODS = {"post", "put", "patch"}


def install(app: FastAPI) -> None:
    """Serve the rewritten document (built once, on first request, like FastAPI's own)."""
    generate = app.openapi
    described: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, cached until the routes change
        if not described or described[-1] is not document:
            described[:] = [describe_errors(document, app.routes)]
        return described[-1]

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, those of included routers too, with its effective path and dependencies."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            yield cast(APIRoute, context)


def describe_errors(document: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.update(SCHEMAS)
    seen: set[tuple[str, str]] = set()
    for route in api_routes(routes):
        if not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            key = (method.lower(), route.path_format)
            operation = document["paths"].get(route.path_format, {}).get(key[0])
            if operation is None:  # HEAD twins of GET routes
                continue
            seen.add(key)
            _describe(operation, route, key)
    unknown = (set(OVERRIDES) | REDIRECTS) - seen
    if unknown:
        raise LookupError(f"OpenAPI overrides name no operation: {sorted(unknown)}")
    return document


def _describe(operation: dict[str, Any], route: APIRoute, key: tuple[str, str]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    method, _path = key
    dependant = route.dependant
    has_body = bool(dependant.body_params) or "requestBody" in operation or method in _BODY_METHODS
    takes_input = has_body or bool(
        dependant.path_params or dependant.query_params or dependant.header_params or dependant.cookie_params
        or _reads_request(dependant))

    if takes_input:
        _answer(responses, 400, {JSON: BAD_REQUEST})
    auth = _auth_answer(route)
    if auth is not None:
        status, media = auth
        scheme = "`APIKey`" if FASTAPI_STYLE.match(key[1]) else "`Bearer`"
        headers = {"WWW-Authenticate": {"description": scheme, "required": True, "schema": {"type": "string"}}}
        _answer(responses, status, {media: DETAIL if media == JSON else TEXT_BODY},
                headers=headers if status == 401 else None)
    if dependant.path_params:
        _answer(responses, 404, {JSON: DETAIL})
    if has_body:
        _answer(responses, 413, {JSON: DETAIL})
    if takes_input and FASTAPI_STYLE.match(key[1]):
        _answer(responses, 422, {JSON: {"$ref": REF + "FastAPIValidationError"}},
                description="Invalid input (FastAPI's `detail` list of `loc`, `msg`, `type`)")
    for name in _rate_limits(route):
        count, period = LIMITS[name]
        per = "second" if period == 1 else ("minute" if period == 60 else f"{period:g} seconds")
        _answer(responses, 429, {JSON: DETAIL},
                description=f"Rate limited: at most {count} requests a {per} per organisation",
                headers={"Retry-After": {"description": "Seconds until a request is accepted again",
                                         "required": True, "schema": {"type": "integer", "minimum": 1}}})
    for status, content in OVERRIDES.get(key, {}).items():
        _answer(responses, status, content, replace=True)
    if key in REDIRECTS:
        responses.pop("200", None)
    for status_text, response in responses.items():
        _complete_declared(int(status_text) if status_text.isdigit() else 0, response)


def _answer(responses: dict[str, Any], status: int, content: dict[str, Any], *, description: str | None = None,
            headers: dict[str, Any] | None = None, replace: bool = False) -> None:
    """Document ``status``; what the route declared itself (``responses=``) is kept."""
    entry = responses.setdefault(str(status), {})
    phrase = HTTPStatus(status).phrase
    if description or not entry.get("description") or entry["description"] == phrase:
        entry["description"] = description or DESCRIPTIONS.get(status, phrase)
    declared = entry.get("content") or {}
    if replace or not declared:
        entry["content"] = {media: {"schema": schema} for media, schema in content.items()}
    if headers:
        entry.setdefault("headers", {}).update(headers)


def _complete_declared(status: int, response: dict[str, Any]) -> None:
    """A media type declared without a schema (``{"text/plain": {}}``) gets the one it answers."""
    for media, spec in (response.get("content") or {}).items():
        if spec.get("schema"):
            continue
        if media.startswith("text/"):
            spec["schema"] = TEXT_BODY
        elif media == JSON and status >= 400:
            spec["schema"] = BAD_REQUEST if status == 400 else DETAIL


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _reads_request(dependant: Dependant) -> bool:
    """The endpoint, or a dependency other than authentication, parses the raw request itself."""
    if dependant.request_param_name is not None:
        return True
    return any(sub.request_param_name is not None and getattr(sub.call, "__name__", "") not in AUTH_ANSWERS
               for sub in _dependencies(dependant))


def _auth_answer(route: APIRoute) -> tuple[int, str] | None:
    """The answer of the route's token dependency; a new one must be added to AUTH_ANSWERS."""
    calls = [sub.call for sub in _dependencies(route.dependant) if sub.call is not None]
    names = {getattr(call, "__name__", "") for call in calls}
    known = names & set(AUTH_ANSWERS)
    if known:
        return AUTH_ANSWERS[sorted(known)[0]]
    if any(type(call).__name__ == "HTTPBearer" for call in calls):
        raise LookupError(f"{route.path}: bearer dependency without a documented answer (AUTH_ANSWERS)")
    return None


def _rate_limits(route: APIRoute) -> list[str]:
    """Names of the limits the endpoint checks (``limiter.check(org.id, "push")``)."""
    endpoint: Callable[..., Any] = inspect.unwrap(route.endpoint)
    try:
        source = inspect.getsource(endpoint)
    except (OSError, TypeError):
        return []
    return _LIMITER_CALL.findall(source)

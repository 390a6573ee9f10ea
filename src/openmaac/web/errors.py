"""Error bodies in the shapes the MAAC OpenAPI (a Django REST framework service) answers.

Validation errors: ``{"field": ["This field is required."]}`` with status 400.
Other errors: ``{"detail": "..."}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from openmaac.web.responses import OrjsonResponse


class APIError(Exception):
    """An error answered as-is: ``body`` is JSON unless ``text`` is set."""

    def __init__(self, status_code: int, body: Any = None, *, text: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(text or repr(body))
        self.status_code = status_code
        self.body = body
        self.text = text
        self.headers = headers or {}

    def to_response(self) -> Response:
        if self.text is not None:
            return PlainTextResponse(self.text, status_code=self.status_code, headers=self.headers)
        return OrjsonResponse(self.body, status_code=self.status_code, headers=self.headers)


def not_found() -> APIError:
    return APIError(404, {"detail": "Not found."})


def field_errors(errors: dict[str, Any]) -> APIError:
    """400 with DRF field errors, e.g. ``field_errors({"mobile": ["Enter a valid phone number."]})``."""
    return APIError(400, errors)


def detail(status_code: int, message: str) -> APIError:
    return APIError(status_code, {"detail": message})


def _type_name(value: Any) -> str:
    return {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
        type(value), type(value).__name__
    )


def drf_message(error: dict[str, Any]) -> str:
    """Translate one pydantic error into the message Django REST framework gives."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "This field is required."
    if value is None and kind not in ("value_error", "assertion_error"):
        return "This field may not be null."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "A valid integer is required."
    if kind in ("float_parsing", "float_type", "decimal_parsing", "decimal_type"):
        return "A valid number is required."
    if kind in ("bool_parsing", "bool_type"):
        return "Must be a valid boolean."
    if kind == "string_type":
        return "Not a valid string."
    if kind in ("literal_error", "enum"):
        return f'"{value}" is not a valid choice.'
    if kind.startswith("date_") or kind == "date_type":
        return "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
    if kind.startswith("datetime_"):
        return (
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        )
    if kind == "string_too_short":
        if ctx.get("min_length", 1) <= 1:
            return "This field may not be blank."
        return f"Ensure this field has at least {ctx.get('min_length')} characters."
    if kind == "string_too_long":
        return f"Ensure this field has no more than {ctx.get('max_length')} characters."
    if kind == "too_short":
        if ctx.get("min_length", 1) <= 1:
            return "This list may not be empty."
        return f"Ensure this field has at least {ctx.get('min_length')} elements."
    if kind == "too_long":
        return f"Ensure this field has no more than {ctx.get('max_length')} elements."
    if kind == "list_type":
        return f'Expected a list of items but got type "{_type_name(value)}".'
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"Invalid data. Expected a dictionary, but got {_type_name(value)}."
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"Ensure this value is greater than or equal to {bound}."
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        return f"Ensure this value is less than or equal to {bound}."
    if kind == "value_error":
        message = str(ctx.get("error") or error.get("msg", "Invalid value."))
        return message.removeprefix("Value error, ")
    return str(error.get("msg", "Invalid value."))


def _insert(tree: dict[str, Any], path: list[Any], message: str) -> None:
    node: Any = tree
    for index, key in enumerate(path):
        key = str(key)
        last = index == len(path) - 1
        if last:
            node.setdefault(key, [])
            if isinstance(node[key], list):
                node[key].append(message)
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child


def drf_errors(errors: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    tree: dict[str, Any] = {}
    for error in errors:
        loc = list(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            return 400, {"detail": f"JSON parse error - {error.get('ctx', {}).get('error', 'invalid JSON')}"}
        if loc and loc[0] in ("body", "query", "path", "form"):
            loc = loc[1:]
        # pydantic puts the union member / function name in the path; DRF does not.
        loc = [part for part in loc if not (isinstance(part, str) and ("[" in part or part.startswith("function-")))]
        if not loc:
            loc = ["non_field_errors"]
        _insert(tree, loc, drf_message(error))
    return 400, tree


# The CDH API (CDH OpenAPI 2.0.1) is a FastAPI service: its validation errors are FastAPI's own,
# 422 with {"detail": [{"loc", "msg", "type"}]}, not Django REST framework's.
FASTAPI_STYLE_PREFIXES = ("/cdh/",)


def fastapi_style(path: str) -> bool:
    return path.startswith(FASTAPI_STYLE_PREFIXES)


def fastapi_validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    from fastapi.encoders import jsonable_encoder

    # without FastAPI's "input": it echoes what was sent, any JSON at all (integers past 64 bits,
    # lone surrogates) that the answer could then not encode
    return {"detail": jsonable_encoder([{key: error[key] for key in ("type", "loc", "msg", "ctx") if key in error}
                                        for error in errors])}


async def validation_error_handler(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    cdh = fastapi_style(request.url.path)
    if any(tuple(error.get("loc", ()))[:1] == ("path",) for error in errors):
        # A path naming something that cannot exist (an id past 2**63 - 1, or not a number)
        # is Not found, as Django's URL resolver and lookup answer it; the body is not looked at.
        return OrjsonResponse({"detail": "Not Found" if cdh else "Not found."}, status_code=404)
    if cdh:
        return OrjsonResponse(fastapi_validation_body(errors), status_code=422)
    status_code, body = drf_errors(errors)
    return OrjsonResponse(body, status_code=status_code)


async def api_error_handler(_request: Request, exc: APIError) -> Response:
    return exc.to_response()


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
    if fastapi_style(request.url.path):  # FastAPI's own words: "Not Found", "Method Not Allowed"
        body: Any = {"detail": exc.detail}
    elif exc.status_code == 404:
        body = {"detail": "Not found."}
    elif exc.status_code == 405:
        body = {"detail": f'Method "{request.method}" not allowed.'}
    else:
        body = {"detail": exc.detail}
    return OrjsonResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

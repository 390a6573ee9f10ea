"""Id and integer types shared by every router, so no out-of-range number reaches the database.

Ids are positive 64-bit integers (``1 .. 2**63 - 1``, what BIGINT holds):

* ``PathId``: an id in the URL. One that cannot exist answers 404 ``Not found.``, as
  Django's ``<int:pk>`` route followed by a lookup that finds nothing does (path validation
  errors become 404 in ``web/errors.py``).
* ``BodyId``: an id in a JSON body. Out of range answers 400 with Django REST framework's
  ``PrimaryKeyRelatedField`` text: ``Invalid pk "…" - object does not exist.``
* ``QueryId``: an id filter in a query string: 400 with DRF's ``IntegerField`` bound texts.

``parse_id`` does the same for the few handlers that read their JSON or query by hand.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from openmaac.web.limits import MAX_ID, MAX_QUERY_TEXT


def invalid_pk(value: Any) -> str:
    return f'Invalid pk "{value}" - object does not exist.'


def _check_body_id(value: int) -> int:
    if not 1 <= value <= MAX_ID:
        raise PydanticCustomError("invalid_pk", invalid_pk(value))
    return value


PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]  # an optional id filter
BodyId = Annotated[int, AfterValidator(_check_body_id), Field(json_schema_extra={"minimum": 1, "maximum": MAX_ID})]
# A free-text filter: compared with a column of at most 255 characters, so a longer one can
# match nothing (and a 60 KB LIKE pattern is past what SQLite accepts).
QueryText = Annotated[str | None, Query(max_length=MAX_QUERY_TEXT)]


def parse_id(value: Any) -> int | None:
    """An id sent as a JSON number or a string of digits, or None when it is not one or
    cannot exist (out of 1 .. 2**63 - 1)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            return None
        value = int(text)
    if not isinstance(value, int) or not 1 <= value <= MAX_ID:
        return None
    return value

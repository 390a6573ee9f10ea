"""Small validators shared by services, answering in Django REST framework's words."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)

MSG_EMAIL = "Enter a valid email address."
MSG_PHONE = "Enter a valid phone number."
MSG_DATE = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
MSG_REQUIRED = "This field is required."
MSG_NULL = "This field may not be null."
MSG_BLANK = "This field may not be blank."


def choice_error(value: object) -> str:
    return f'"{value}" is not a valid choice.'


def is_email(value: str) -> bool:
    return len(value) <= 320 and EMAIL_RE.match(value) is not None


def parse_iso_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


# --- Django REST framework's CharField and IntegerField, for hand-parsed bodies ----------------

DB_ID_MAX = 2**63 - 1  # the largest id (or other BIGINT) PostgreSQL and SQLite can hold
INTEGER_MAX = 2**31 - 1  # the largest value of an INTEGER column on PostgreSQL
MSG_INVALID_STRING = "Not a valid string."
MSG_INVALID_INTEGER = "A valid integer is required."
MSG_NULL_CHARACTERS = "Null characters are not allowed."
_DECIMAL_ZEROS = re.compile(r"\.0*\s*$")


def null_paths(value: Any) -> Iterator[tuple[Any, ...]]:
    """Where in a decoded JSON document a string holds a NUL character (PostgreSQL can store
    none in text or JSONB), in document order; a key holding one is reported as its object's
    ``non_field_errors``. Iterative: a deeply nested document must not exhaust the stack."""
    pending: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                yield path
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    yield (*path, "non_field_errors")
                    continue
                children.append(((*path, key), child))
            pending.extend(reversed(children))
        elif isinstance(item, list | tuple):
            pending.extend(reversed([((*path, index), child) for index, child in enumerate(item)]))


def has_nul(value: object) -> bool:
    """True when a NUL character is in any string (or key) of a decoded JSON value."""
    return next(null_paths(value), None) is not None


def char_field(value: object, *, max_length: int, allow_blank: bool = False,
               allow_null: bool = False) -> tuple[str | None, list[str]]:
    """``(cleaned, errors)`` as DRF's ``CharField(max_length=…)`` gives them, in its order:
    null, then blank (after trimming whitespace), then type, then every validator (maximum
    length, NUL characters) on the trimmed text. A too-long value is never called blank."""
    if value is None:
        return None, ([] if allow_null else [MSG_NULL])
    if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip() == "":
        return "", ([] if allow_blank else [MSG_BLANK])
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, [MSG_INVALID_STRING]
    text = str(value).strip()
    errors = []
    if len(text) > max_length:
        errors.append(f"Ensure this field has no more than {max_length} characters.")
    if "\x00" in text:
        errors.append(MSG_NULL_CHARACTERS)
    return (None if errors else text), errors


def plain_char_fields(values: list[Any], *, max_length: int) -> bool:
    """Whether every value is a plain, already trimmed string within the length, that
    :func:`char_field` takes as it is (a request's 500 LINE user ids, in one pass)."""
    return all(type(v) is str and 0 < len(v) <= max_length and "\x00" not in v for v in values) and \
        all(v == v.strip() for v in values)


def char_fields(values: list[Any], *, max_length: int) -> list[tuple[str | None, list[str]]]:
    """:func:`char_field` of each value (no blank, no null). A list of plain strings
    (:func:`plain_char_fields`) is checked in one pass, without a call per value; any other
    list is checked value by value."""
    if plain_char_fields(values, max_length=max_length):
        return [(v, []) for v in values]
    return [char_field(v, max_length=max_length) for v in values]


def integer_field(value: object, *, min_value: int | None = None,
                  max_value: int | None = None) -> tuple[int | None, list[str]]:
    """``(number, errors)`` as DRF's ``IntegerField`` gives them: an integer, or a number or
    numeric string whose decimals are all zero ("5", 5.0), is accepted; 2.5, 1e30 (written as
    a float) and booleans are "A valid integer is required."; then the bounds."""
    if value is None:
        return None, [MSG_NULL]
    if isinstance(value, str) and len(value) > 1000:
        return None, ["String value too large."]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, [MSG_INVALID_INTEGER]
    try:
        number = int(_DECIMAL_ZEROS.sub("", str(value)))
    except ValueError:
        return None, [MSG_INVALID_INTEGER]
    if max_value is not None and number > max_value:
        return None, [f"Ensure this value is less than or equal to {max_value}."]
    if min_value is not None and number < min_value:
        return None, [f"Ensure this value is greater than or equal to {min_value}."]
    return number, []

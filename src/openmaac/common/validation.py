"""Small validators shared by services, answering in Django REST framework's words."""

from __future__ import annotations

import re
from datetime import date

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

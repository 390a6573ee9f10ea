"""Message templates: LINE message objects with ``{{param}}`` and ``{{contact.*}}`` placeholders.

``parameters`` are the distinct ``{{name}}`` placeholders in order of first appearance; the
caller of a send supplies them. ``{{contact.<field>}}`` placeholders are filled from the
recipient's contact record and are not parameters.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.channels.line_messages import error_body, validate_messages
from openmaac.db.base import utcnow
from openmaac.templates.models import MessageTemplate
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.pagination import paginate_by_id

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")
CONTACT_FIELDS = (
    "line_uid",
    "line_display_name",
    "display_name",
    "customer_id",
    "email",
    "mobile",
    "gender",
    "birthday",
)


def _strings(value: Any) -> Any:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def placeholders(messages: Any) -> list[str]:
    """Every placeholder name in order of first appearance, without repeats."""
    seen: dict[str, None] = {}
    for text in _strings(messages):
        for match in PLACEHOLDER.finditer(text):
            seen.setdefault(match.group(1), None)
    return list(seen)


def split_placeholders(messages: Any) -> tuple[list[str], list[str]]:
    """(parameters, contact fields) used by ``messages``."""
    parameters: list[str] = []
    contact_fields: list[str] = []
    for name in placeholders(messages):
        if name.startswith("contact."):
            contact_fields.append(name.split(".", 1)[1])
        elif "." not in name:
            parameters.append(name)
    return parameters, contact_fields


def render(messages: list[dict[str, Any]], params: dict[str, Any], contact: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Fill placeholders. Missing contact values (or no contact at all) render empty."""

    def fill(text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("contact."):
                value = (contact or {}).get(name.split(".", 1)[1])
            else:
                value = params.get(name)
            return "" if value is None else str(value)

        return PLACEHOLDER.sub(replace, text)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return fill(value)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return [walk(message) for message in messages]


def serialize(template: MessageTemplate, *, with_messages: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": template.id, "name": template.name, "parameters": list(template.parameters)}
    if with_messages:
        body["messages"] = template.messages
    return body


def list_templates(session: Session, org: OrgContext, start: str | None) -> dict[str, Any]:
    stmt = select(MessageTemplate).where(MessageTemplate.organization_id == org.id)
    page = paginate_by_id(session, stmt, MessageTemplate.id, scope=f"template:{org.id}", start=start)
    return {"results": [serialize(t) for t in page.rows], "next": page.next}


def get_template(session: Session, org_id: int, template_id: int) -> MessageTemplate:
    template = session.scalar(
        select(MessageTemplate).where(MessageTemplate.organization_id == org_id, MessageTemplate.id == template_id)
    )
    if template is None:
        raise not_found()
    return template


def validate_template_messages(messages: Any) -> list[str]:
    """Raise 400 (LINE's error body) for invalid message objects; return the parameters."""
    details = validate_messages(messages)
    if details:
        raise APIError(400, error_body(details))
    parameters, contact_fields = split_placeholders(messages)
    unknown = [f for f in contact_fields if f not in CONTACT_FIELDS]
    if unknown:
        allowed = ", ".join("{{contact." + f + "}}" for f in CONTACT_FIELDS)
        raise field_errors(
            {"messages": [f"Unknown contact placeholder {{{{contact.{unknown[0]}}}}}; use one of: {allowed}."]}
        )
    return parameters


def create_template(session: Session, org: OrgContext, name: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    parameters = validate_template_messages(messages)
    now = utcnow()
    template = MessageTemplate(organization_id=org.id, name=name, messages=messages, parameters=parameters,
                               created_at=now, updated_at=now)
    session.add(template)
    session.flush()
    return serialize(template, with_messages=True)

"""Message templates: LINE message objects with ``{{param}}`` and ``{{contact.*}}`` placeholders.

``parameters`` are the distinct ``{{name}}`` placeholders in order of first appearance; the
caller of a send supplies them. ``{{contact.<field>}}`` placeholders are filled from the
recipient's contact record and are not parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext, require_role
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


NAME_MAX = 255


def validate_template_name(name: Any) -> str:
    """The API model's rule for ``name`` (1-255 characters), in DRF's words, for callers that
    do not go through that model (the console)."""
    if not isinstance(name, str):
        raise field_errors({"name": ["Not a valid string."]})
    if not name.strip():
        raise field_errors({"name": ["This field may not be blank."]})
    if len(name) > NAME_MAX:
        raise field_errors({"name": [f"Ensure this field has no more than {NAME_MAX} characters."]})
    return name


def validate_template(name: Any, messages: Any) -> list[str]:
    """Every rule a template must meet; returns its parameters. Name problems and message
    problems are reported together (one 400 whose body holds ``name`` and LINE's
    ``message``/``details``) so a form can show all of them at once."""
    errors: dict[str, Any] = {}
    try:
        validate_template_name(name)
    except APIError as exc:
        errors.update(exc.body)
    parameters: list[str] = []
    try:
        parameters = validate_template_messages(messages)
    except APIError as exc:
        errors.update(exc.body)
    if errors:
        raise APIError(400, errors)
    return parameters


def create_template(session: Session, org: OrgContext, name: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    require_role(org, "marketer")
    parameters = validate_template(name, messages)
    now = utcnow()
    template = MessageTemplate(organization_id=org.id, name=name, messages=messages, parameters=parameters,
                               created_at=now, updated_at=now)
    session.add(template)
    session.flush()
    return serialize(template, with_messages=True)


def update_template(session: Session, org: OrgContext, template_id: int, name: str,
                    messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace a template's name and messages (same rules as creating one). Its id stays, so
    automation tools that hold it keep working; sends made after the edit use the new messages."""
    require_role(org, "marketer")
    template = get_template(session, org.id, template_id)
    parameters = validate_template(name, messages)
    template.name = name
    template.messages = messages
    template.parameters = parameters
    template.updated_at = utcnow()
    session.flush()
    return serialize(template, with_messages=True)


@dataclass(frozen=True)
class TemplateListPage:
    """One page of the console's template list, newest first."""

    templates: list[MessageTemplate]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def search_templates(session: Session, org: OrgContext, query: str = "", page: int = 1,
                     per_page: int = 25) -> TemplateListPage:
    """Templates whose name contains ``query`` (case-insensitive) or whose id is ``query``."""
    condition = MessageTemplate.organization_id == org.id
    stmt = select(MessageTemplate).where(condition)
    count = select(func.count()).select_from(MessageTemplate).where(condition)
    query = query.strip()
    if query:
        matches = MessageTemplate.name.icontains(query, autoescape=True)
        if query.isdigit() and len(query) < 19:
            matches = matches | (MessageTemplate.id == int(query))
        stmt = stmt.where(matches)
        count = count.where(matches)
    total = int(session.scalar(count) or 0)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = session.scalars(stmt.order_by(MessageTemplate.id.desc()).offset((page - 1) * per_page).limit(per_page)).all()
    return TemplateListPage(templates=list(rows), total=total, page=page, per_page=per_page)

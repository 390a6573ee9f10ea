"""The templates library: list with search, a template's page (its Template ID, parameters and
messages), and the editor (create and edit) with its live preview.

Views parse the form and call ``openmaac.templates.service``, the code ``POST template/`` runs:
the same validation, and the same role check (marketer or admin to create or edit).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from openmaac.auth.service import require_role
from openmaac.console import template_editor as editor
from openmaac.console.rendering import N_, render
from openmaac.console.session import Actor, CurrentActor
from openmaac.console.template_preview import chip, chips, is_shown_image, preview_context
from openmaac.console.tokens_views import path_id
from openmaac.db.engine import get_database
from openmaac.templates import service
from openmaac.templates.models import MessageTemplate
from openmaac.web.errors import APIError

router = APIRouter()

# texts the template service answers with, kept in the catalog (shown through `|translate`)
N_("May not be empty")
N_("This field may not be blank.")
N_("Size must be between 1 and 5")
N_("Ensure this field has no more than 255 characters.")

PER_PAGE = 25
QUERY_MAX = 255


def can_edit(actor: Actor) -> bool:
    """Whether to offer the editor (the service decides what is allowed)."""
    return actor.role in ("admin", "marketer")


def _page_number(value: str) -> int:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else 1


@router.get("/templates/", response_class=HTMLResponse)
def templates_page(request: Request, actor: CurrentActor, q: str = "", page: str = "1") -> Response:
    query = q[:QUERY_MAX]
    with get_database().read() as session:
        found = service.search_templates(session, actor.org, query, _page_number(page), PER_PAGE)
    results_only = request.headers.get("HX-Request") == "true" and request.headers.get("HX-Target") == "template-results"
    return render(request, actor, "templates/list.html", {
        "section": "templates", "found": found, "q": query, "can_edit": can_edit(actor), "chips": chips, "chip": chip,
    }, block="results" if results_only else None)


def _load(actor: Actor, template_id: str) -> MessageTemplate:
    with get_database().read() as session:
        return service.get_template(session, actor.org.id, path_id(template_id))


@router.get("/templates/new/", response_class=HTMLResponse)
def new_template_page(request: Request, actor: CurrentActor) -> Response:
    require_role(actor.org, "marketer")
    return _editor_page(request, actor, editor.EditorState(name="", drafts=[editor.new_draft()]), None)


@router.get("/templates/{template_id}/", response_class=HTMLResponse)
def template_page(request: Request, actor: CurrentActor, template_id: str) -> Response:
    template = _load(actor, template_id)
    _, contact_fields = service.split_placeholders(template.messages)
    example = {"template_id": template.id,
               "data": {"line_uid": "U4af4980629...", **{name: "..." for name in template.parameters}}}
    return render(request, actor, "templates/detail.html", {
        "section": "templates", "template": template, "can_edit": can_edit(actor),
        "contact_fields": contact_fields, "push_example": json.dumps(example, ensure_ascii=False, indent=2),
        "preview_messages": template.messages, "chips": chips, "chip": chip, "is_shown_image": is_shown_image,
    })


@router.get("/templates/{template_id}/edit/", response_class=HTMLResponse)
def edit_template_page(request: Request, actor: CurrentActor, template_id: str) -> Response:
    require_role(actor.org, "marketer")
    template = _load(actor, template_id)
    state = editor.EditorState(name=template.name, drafts=editor.drafts_from_messages(template.messages))
    return _editor_page(request, actor, state, template)


def _editor_page(request: Request, actor: Actor, state: editor.EditorState, template: MessageTemplate | None,
                 *, status_code: int = 200, block: str | None = None, messages: list[Any] | None = None) -> HTMLResponse:
    if messages is None:
        messages, _ = state.messages()
    base = "/console/templates/"
    return render(request, actor, "templates/edit.html", {
        "section": "templates", "state": state, "template": template,
        "form_action": f"{base}{template.id}/edit/" if template else f"{base}new/",
        "cancel_url": f"{base}{template.id}/" if template else base,
        "kinds": editor.KINDS, "action_types": editor.ACTION_TYPES,
        **preview_context(messages),
    }, status_code=status_code, block=block)


def _save(actor: Actor, template_id: int | None, state: editor.EditorState) -> int | None:
    """Create or update; on invalid input put the errors on the state and return ``None``."""
    messages, complete = state.messages()
    name = state.name.strip()
    try:
        if not complete:
            # Some JSON cannot be read: still report every other problem at once, judging
            # stand-ins in place of the unreadable messages (never saved).
            service.validate_template(name, [m if m is not None else {"type": "text", "text": "-"} for m in messages])
            return None
        with get_database().write() as session:
            if template_id is None:
                return int(service.create_template(session, actor.org, name, messages)["id"])
            return int(service.update_template(session, actor.org, template_id, name, messages)["id"])
    except APIError as exc:
        if exc.status_code != 400:
            raise
        state.add_service_errors(exc.body)
        return None


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=2000)


@router.post("/templates/new/", response_class=HTMLResponse)
async def create_template(request: Request, actor: CurrentActor) -> Response:
    state = editor.state_from_form(await _form(request))
    saved = await run_in_threadpool(_save, actor, None, state)
    if saved is None:
        return await run_in_threadpool(lambda: _editor_page(request, actor, state, None, status_code=400))
    return RedirectResponse(f"/console/templates/{saved}/?saved=1", status_code=303)


@router.post("/templates/{template_id}/edit/", response_class=HTMLResponse)
async def update_template(request: Request, actor: CurrentActor, template_id: str) -> Response:
    template = await run_in_threadpool(_load, actor, template_id)
    state = editor.state_from_form(await _form(request))
    saved = await run_in_threadpool(_save, actor, template.id, state)
    if saved is None:
        return await run_in_threadpool(lambda: _editor_page(request, actor, state, template, status_code=400))
    return RedirectResponse(f"/console/templates/{saved}/?saved=1", status_code=303)


@router.post("/templates/editor/", response_class=HTMLResponse)
async def editor_operation(request: Request, actor: CurrentActor) -> Response:
    """The editor's add/remove/move/kind buttons: the editor re-drawn from the posted fields
    (only its block for htmx, the whole page otherwise). Nothing is saved."""
    require_role(actor.org, "marketer")
    form = await _form(request)
    state = editor.state_from_form(form)
    operation = form.get("op")
    editor.apply_operation(state.drafts, operation if isinstance(operation, str) else "")
    template_field = form.get("template")
    template = (await run_in_threadpool(_load, actor, template_field)
                if isinstance(template_field, str) and template_field else None)
    htmx = request.headers.get("HX-Request") == "true"
    response = await run_in_threadpool(
        lambda: _editor_page(request, actor, state, template, block="editor" if htmx else None))
    if htmx:
        response.headers["HX-Trigger-After-Settle"] = "refresh-preview"  # once the new fields are in the form
    return response


@router.post("/templates/preview/", response_class=HTMLResponse)
async def preview(request: Request, actor: CurrentActor) -> Response:
    """The live preview: the posted messages as chat bubbles, and the parameters they use."""
    state = editor.state_from_form(await _form(request))
    messages, _ = state.messages()
    return render(request, actor, "templates/edit.html", {
        "section": "templates", "state": state, **preview_context(messages),
    }, block="preview")

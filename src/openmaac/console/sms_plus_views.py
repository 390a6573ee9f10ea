"""The console's SMS+ pages: the SMS+ list (list performance, points balance), a scenario's
"formal sending" page (upload a list, map its columns, preview, send, follow the delivery,
delete a list) and the scenario settings pages (admins).

Views parse the request, call the SMS+ services (``openmaac.sms_plus``: the same functions
the API calls, which check the role) and render; an ``APIError`` they do not turn into a form
error becomes core's error page (403, 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from openmaac.auth.service import OrgContext, require_role
from openmaac.console.rendering import N_, gettext, render
from openmaac.console.session import CurrentActor
from openmaac.db.engine import get_database
from openmaac.sms_plus import performance, uploads
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpSetting
from openmaac.templates.models import MessageTemplate
from openmaac.web.errors import APIError, not_found
from openmaac.web.params import parse_id

router = APIRouter()

SECTION = "sms_plus"
BASE = "/console/sms-plus"
# how often a list's delivery progress is polled while messages are under way
PROGRESS_POLL_SECONDS = 2
TEMPLATE_CHOICES_MAX = 1000
INVALID_SHOWN = 100

# English texts of the SMS+ services that these pages show translated (marked for the catalog):
# the channel names, the time range's refusals, the send and upload refusals.
SERVICE_TEXTS = (
    N_("LINE push"), N_("LINE notification"), N_("WhatsApp"), N_("SMS"),
    N_("Enter dates as YYYY-MM-DD."), N_("The start date must not be after the end date."),
    N_("Choose a range of at most 366 days."), N_("Choose a CSV or XLSX file."), N_("This list was already sent."),
    N_("your SMS points are insufficient, please recharge before sending"),
    N_("pnp content is not approved by LINE"), N_("pnp setting not found"), N_("The file is larger than 25 MB."),
    N_("This field is required."),
)


def allowed(org: OrgContext, minimum: str) -> bool:
    """Whether the services would let this role do it (to show or hide a button; the service
    checks again when it is pressed)."""
    try:
        require_role(org, minimum)
    except APIError:
        return False
    return True


def _id(raw: str) -> int:
    value = parse_id(raw)
    if value is None:
        raise not_found()
    return value


def _is_htmx(request: Request, target: str | None = None) -> bool:
    if request.headers.get("HX-Request") != "true":
        return False
    return target is None or request.headers.get("HX-Target") == target


def _messages(exc: APIError) -> dict[str, list[str]]:
    """Any service error as ``{field: [message, ...]}`` for a form: DRF field errors (nested
    ones flattened to their leaf names), ``detail``, LINE's ``message``/``details`` for message
    objects, or the SMS+ plain-text answers (under ``__all__``)."""
    if exc.text is not None:
        return {"__all__": [exc.text]}
    body = exc.body
    found: dict[str, list[str]] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            if "details" in node and isinstance(node["details"], list):
                found.setdefault(key, []).extend(
                    f"{detail.get('property', '')}: {detail.get('message', '')}".strip(": ")
                    for detail in node["details"] if isinstance(detail, dict))
                return
            for child_key, child in node.items():
                walk(child, key if child_key in ("detail", "message", "non_field_errors") else str(child_key))
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, str):
                    found.setdefault(key, []).append(item)
                else:
                    walk(item, key)
        elif isinstance(node, str):
            found.setdefault(key, []).append(node)

    walk(body, "__all__")
    return found


def _errors(request: Request, actor: Any, exc: APIError) -> dict[str, list[str]]:
    """The service's messages for a form, in the reader's language where the catalog has them
    (shown escaped: a message may quote a file's cell or column name)."""
    return {field: [gettext(request, actor, message) for message in messages]
            for field, messages in _messages(exc).items()}


# --- the SMS+ list ---------------------------------------------------------------------------------

@router.get("/sms-plus/")
def sms_plus_list(request: Request, actor: CurrentActor, start: str | None = None, end: str | None = None,
                  scenario: str | None = None) -> Response:
    org = actor.org
    range_error = None
    try:
        first, last = performance.parse_range(start, end, org.tz)
    except performance.RangeError as exc:
        range_error = gettext(request, actor, str(exc))
        first, last = performance.parse_range(None, None, org.tz)
    scenario_id = parse_id(scenario) if scenario else None
    with get_database().read() as session:
        result = performance.list_performance(session, org, first, last, scenario_id)
        balance = performance.balance_status(session, org.id)
    context = {
        "section": SECTION, "performance": result, "chart": result.chart_data(), "balance": balance,
        "range_error": range_error, "start": first.isoformat(), "end": last.isoformat(),
        "scenario_id": scenario_id, "can_configure": allowed(org, "admin"),
        "low_floor": performance.LOW_BALANCE_FLOOR, "usage_days": performance.USAGE_WINDOW_DAYS,
        "presets": _presets(org),
    }
    block = "results" if _is_htmx(request, "performance") else None
    return render(request, actor, "sms_plus/list.html", context, block=block)


def _presets(org: OrgContext) -> list[tuple[str, str, str]]:
    """(label key, start, end) of the quick ranges: the last 7, 30 and 90 days."""
    from datetime import datetime, timedelta

    today = datetime.now(org.tz).date()
    return [(str(days), (today - timedelta(days=days - 1)).isoformat(), today.isoformat()) for days in (7, 30, 90)]


# --- a scenario's formal-sending page --------------------------------------------------------------

def _scenario(session: Any, org: OrgContext, setting_id: int, *, lock: bool = False) -> PnpSetting:
    setting = svc.get_setting(session, org.id, setting_id, lock=lock)
    if setting is None:
        raise not_found()
    return setting


def _scenario_page(request: Request, actor: CurrentActor, setting_id: int, *, errors: dict[str, list[str]] | None
                   = None, phone_column: str = "", status_code: int = 200, block: str | None = None) -> Response:
    with get_database().read() as session:
        setting = _scenario(session, actor.org, setting_id)
        lists = [uploads.serialize(u) | {"created_at": u.created_at}
                 for u in uploads.list_uploads(session, actor.org.id, setting_id)]
        balance = performance.balance_status(session, actor.org.id)
        context = {"section": SECTION, "setting": setting, "channels": performance.channels_of(setting),
                   "uploads": lists, "balance": balance, "errors": errors or {}, "phone_column": phone_column,
                   "can_send": allowed(actor.org, "marketer"), "can_configure": allowed(actor.org, "admin"),
                   "max_mb": uploads.MAX_BYTES // (1024 * 1024), "max_bytes": uploads.MAX_BYTES}
        return render(request, actor, "sms_plus/scenario.html", context, block=block, status_code=status_code)


@router.get("/sms-plus/{setting_id}/")
def scenario_page(request: Request, actor: CurrentActor, setting_id: str) -> Response:
    return _scenario_page(request, actor, _id(setting_id))


@router.post("/sms-plus/{setting_id}/uploads")
async def upload_list(request: Request, actor: CurrentActor, setting_id: str) -> Response:
    """The upload form (multipart: ``file``, ``phone_column``). From the page's script (header
    ``X-Upload-Fragment``, sent with progress events): 200 with ``X-Console-Location`` to go to,
    or 400 with the form's fragment and its errors; without script: 303, or the page with errors."""
    identifier = _id(setting_id)
    require_role(actor.org, "marketer")  # before reading 25 MB; the service checks it again
    fragment = request.headers.get("X-Upload-Fragment") == "1"
    form = await request.form(max_part_size=uploads.MAX_BYTES + 1024 * 1024)
    file = form.get("file")
    phone_column = str(form.get("phone_column") or "").strip()
    try:
        if not isinstance(file, UploadFile) or not file.filename:
            raise APIError(400, {"file": ["Choose a CSV or XLSX file."]})
        result = await run_in_threadpool(uploads.receive, actor.org, identifier, file.filename, file.file,
                                         phone_column or None)
    except APIError as exc:
        if exc.status_code != 400:
            raise
        return _scenario_page(request, actor, identifier, errors=_errors(request, actor, exc), phone_column=phone_column,
                              status_code=400, block="upload_form" if fragment else None)
    finally:
        await form.close()
    location = f"{BASE}/{identifier}/uploads/{result['id']}/"
    if fragment:
        return Response(status_code=200, headers={"X-Console-Location": location})
    return RedirectResponse(location, status_code=303)


def _upload(session: Any, org: OrgContext, setting_id: int, upload_id: int) -> tuple[PnpSetting, Any]:
    setting = _scenario(session, org, setting_id)
    upload = uploads.get_upload(session, org.id, upload_id)
    if upload.pnp_setting_id != setting.id:
        raise not_found()
    return setting, upload


def _mapping_from(params: Any, setting: PnpSetting) -> dict[str, dict[str, str | None]]:
    """The parameter -> column choices of the mapping form (fields ``pnp.NAME`` / ``sms.NAME``)."""
    return {"pnp": {name: (params.get(f"pnp.{name}") or None) for name in (setting.parameters or [])},
            "sms": {name: (params.get(f"sms.{name}") or None) for name in (setting.sms_parameters or [])}}


def _upload_context(session: Any, actor: CurrentActor, setting: PnpSetting, upload: Any,
                    mapping: dict[str, dict[str, str | None]] | None = None) -> dict[str, Any]:
    body = uploads.serialize(upload)
    mapping = mapping or uploads.default_mapping(setting, upload)
    first_row = body["preview"][0] if body["preview"] else None
    sent = body["status"] != "uploaded"
    return {
        "section": SECTION, "setting": setting, "upload": body, "created_at": upload.created_at,
        "mapping": mapping, "filled": uploads.filled_contents(setting, first_row, mapping),
        "invalid_shown": body["invalid_rows"][:INVALID_SHOWN],
        "can_send": allowed(actor.org, "marketer") and not sent, "sent": sent,
        "progress": uploads.progress(session, actor.org.id, upload.id) if sent else None,
        "poll_seconds": PROGRESS_POLL_SECONDS, "errors": {},
        "base": f"{BASE}/{setting.id}/uploads/{upload.id}/",
    }


@router.get("/sms-plus/{setting_id}/uploads/{upload_id}/")
def upload_page(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    with get_database().read() as session:
        setting, upload = _upload(session, actor.org, _id(setting_id), _id(upload_id))
        return render(request, actor, "sms_plus/upload.html", _upload_context(session, actor, setting, upload))


@router.get("/sms-plus/{setting_id}/uploads/{upload_id}/preview")
def template_preview(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    """The template preview filled from the first row with the columns chosen so far."""
    with get_database().read() as session:
        setting, upload = _upload(session, actor.org, _id(setting_id), _id(upload_id))
        context = _upload_context(session, actor, setting, upload, _mapping_from(request.query_params, setting))
        return render(request, actor, "sms_plus/upload.html", context, block="template_preview")


@router.get("/sms-plus/{setting_id}/uploads/{upload_id}/confirm")
def confirm_send(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    """The confirmation before sending: recipients and the points the list may hold, or what is
    missing (a parameter without a column, too few points)."""
    identifier, list_id = _id(setting_id), _id(upload_id)
    with get_database().read() as session:
        setting, upload = _upload(session, actor.org, identifier, list_id)
        mapping = _mapping_from(request.query_params, setting)
        context = _upload_context(session, actor, setting, upload, mapping)
    try:
        context["confirming"] = True
        context["plan"] = uploads.estimate_send(actor.org, list_id, {"mapping": mapping})
    except APIError as exc:
        if exc.status_code != 400:
            raise
        context["errors"] = _errors(request, actor, exc)
    return render(request, actor, "sms_plus/upload.html", context, block="confirm")


@router.post("/sms-plus/{setting_id}/uploads/{upload_id}/send")
async def send_list(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    identifier, list_id = _id(setting_id), _id(upload_id)
    form = await request.form()
    with get_database().read() as session:
        setting, _upload_row = _upload(session, actor.org, identifier, list_id)
        mapping = _mapping_from(form, setting)
    try:
        await run_in_threadpool(uploads.send, actor.org, list_id, {"mapping": mapping})
    except APIError as exc:
        if exc.status_code != 400:
            raise
        with get_database().read() as session:
            setting, upload = _upload(session, actor.org, identifier, list_id)
            context = _upload_context(session, actor, setting, upload, mapping)
        context["errors"] = _errors(request, actor, exc)
        return render(request, actor, "sms_plus/upload.html", context, status_code=400)
    return RedirectResponse(f"{BASE}/{identifier}/uploads/{list_id}/", status_code=303)


@router.get("/sms-plus/{setting_id}/uploads/{upload_id}/progress")
def delivery_progress(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    """The list's delivery, polled by the page until it is final (then without its trigger)."""
    with get_database().read() as session:
        setting, upload = _upload(session, actor.org, _id(setting_id), _id(upload_id))
        return render(request, actor, "sms_plus/upload.html", _upload_context(session, actor, setting, upload),
                      block="progress")


@router.post("/sms-plus/{setting_id}/uploads/{upload_id}/delete")
def delete_list(request: Request, actor: CurrentActor, setting_id: str, upload_id: str) -> Response:
    identifier, list_id = _id(setting_id), _id(upload_id)
    with get_database().read() as session:
        _upload(session, actor.org, identifier, list_id)
    uploads.delete_upload(actor.org, list_id)
    return RedirectResponse(f"{BASE}/{identifier}/", status_code=303)


# --- scenario settings (admins) --------------------------------------------------------------------

def _template_choices(session: Any, org_id: int) -> list[tuple[int, str]]:
    rows = session.execute(select(MessageTemplate.id, MessageTemplate.name)
                           .where(MessageTemplate.organization_id == org_id)
                           .order_by(MessageTemplate.id.desc()).limit(TEMPLATE_CHOICES_MAX)).all()
    return [(int(row[0]), f"{row[1]} (#{row[0]})") for row in rows]


def _form_values(setting: PnpSetting | None) -> dict[str, Any]:
    import json

    if setting is None:
        return {"name": "", "status": "enable", "line_push_enabled": False, "line_push_template_id": "",
                "pnp_enabled": True, "pnp_messages": '[\n  {"type": "text", "text": "Hello {{name}}"}\n]',
                "pnp_approval_status": "pending", "fallback_enabled": True, "sms_text": "",
                "fallback_period": "1440", "whatsapp_enabled": False, "whatsapp_template_name": "",
                "whatsapp_language": ""}
    return {"name": setting.name, "status": setting.status, "line_push_enabled": setting.line_push_enabled,
            "line_push_template_id": str(setting.line_push_template_id or ""), "pnp_enabled": setting.pnp_enabled,
            "pnp_messages": json.dumps(setting.pnp_messages or [], ensure_ascii=False, indent=2),
            "pnp_approval_status": setting.pnp_approval_status, "fallback_enabled": setting.fallback_enabled,
            "sms_text": setting.sms_text or "", "fallback_period": str(setting.fallback_period),
            "whatsapp_enabled": setting.whatsapp_enabled,
            "whatsapp_template_name": setting.whatsapp_template_name or "",
            "whatsapp_language": setting.whatsapp_language or ""}


def _submitted(form: Any) -> dict[str, Any]:
    """The form as typed, to show it again with its errors."""
    values: dict[str, Any] = {key: str(form.get(key, "")) for key in (
        "name", "status", "line_push_template_id", "pnp_messages", "pnp_approval_status", "sms_text",
        "fallback_period", "whatsapp_template_name", "whatsapp_language")}
    values.update({key: key in form for key in svc.SWITCHES})
    return values


def _settings_page(request: Request, actor: CurrentActor, setting: PnpSetting | None, values: dict[str, Any],
                   errors: dict[str, list[str]], status_code: int = 200) -> Response:
    with get_database().read() as session:
        templates = _template_choices(session, actor.org.id)
    context = {"section": SECTION, "setting": setting, "values": values, "errors": errors,
               "templates": templates, "creating": setting is None}
    return render(request, actor, "sms_plus/setting_form.html", context, status_code=status_code)


@router.get("/sms-plus/settings/new")
def new_setting(request: Request, actor: CurrentActor) -> Response:
    require_role(actor.org, "admin")
    return _settings_page(request, actor, None, _form_values(None), {})


@router.post("/sms-plus/settings/new")
async def create_setting(request: Request, actor: CurrentActor) -> Response:
    form = {key: str(value) for key, value in (await request.form()).items()}
    try:
        changes = svc.changes_from_form(form, creating=True)

        def save() -> dict[str, Any]:
            with get_database().write() as session:
                return svc.save_setting(session, actor.org, changes)

        saved = await run_in_threadpool(save)
    except APIError as exc:
        if exc.status_code != 400:
            raise
        return _settings_page(request, actor, None, _submitted(form), _errors(request, actor, exc), status_code=400)
    return RedirectResponse(f"{BASE}/{saved['id']}/", status_code=303)


@router.get("/sms-plus/settings/{setting_id}/")
def edit_setting(request: Request, actor: CurrentActor, setting_id: str) -> Response:
    require_role(actor.org, "admin")
    with get_database().read() as session:
        setting = _scenario(session, actor.org, _id(setting_id))
    return _settings_page(request, actor, setting, _form_values(setting), {})


@router.post("/sms-plus/settings/{setting_id}/")
async def update_setting(request: Request, actor: CurrentActor, setting_id: str) -> Response:
    identifier = _id(setting_id)
    form = {key: str(value) for key, value in (await request.form()).items()}
    with get_database().read() as session:
        current = _scenario(session, actor.org, identifier)
    try:
        changes = svc.changes_from_form(form, creating=False)

        def save() -> dict[str, Any]:
            with get_database().write() as session:
                return svc.save_setting(session, actor.org, changes, _scenario(session, actor.org, identifier,
                                                                               lock=True))

        await run_in_threadpool(save)
    except APIError as exc:
        if exc.status_code != 400:
            raise
        return _settings_page(request, actor, current, _submitted(form), _errors(request, actor, exc), status_code=400)
    return RedirectResponse(f"{BASE}/{identifier}/", status_code=303)

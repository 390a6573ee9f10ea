"""SMS+ scenarios (``pnp/setting/``), sending (``pnp/message/push|multicast/``) and the status
query (``pnp/message/``).

Errors of the send endpoints are ``text/plain`` with the spec's texts (MAAC OpenAPI v1.1.48); the status
query answers DRF-style JSON. The delivery itself runs on the job queue (``engine``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import and_, bindparam, case, func, insert, or_, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext, require_role
from openmaac.channels.sms.segments import sms_segments
from openmaac.common.validation import char_field
from openmaac.db.base import utcnow
from openmaac.jobs.queue import enqueue_many
from openmaac.messaging.models import MessageEvent
from openmaac.sms_plus import points
from openmaac.sms_plus.models import AnyPnpMessage, PnpMessage, PnpSetting
from openmaac.sms_plus.settings import DISPATCH_SAFETY_NET_SECONDS, minutes
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import PLACEHOLDER, validate_template_messages
from openmaac.web.errors import APIError, field_errors
from openmaac.web.limits import MAX_QUERY_TEXT
from openmaac.web.pagination import PAGE_SIZE, decode_token, encode_token
from openmaac.web.params import invalid_pk, parse_id
from openmaac.web.times import parse_datetime, render

# --- statuses (MAAC OpenAPI v1.1.48) ----------------------------------------------------------------------

LINE_PUSH_PREPARING = "line_push_preparing"
LINE_PUSH_DELIVERED = "line_push_delivered"
LINE_PUSH_FAILED = "line_push_failed"
LINE_PUSH_UNDELIVERABLE = "line_push_undeliverable"
PNP_PREPARING = "pnp_preparing"
PNP_ACCEPTED = "pnp_accepted"
PNP_DELIVERED = "pnp_delivered"
PNP_FAILED = "pnp_failed"
PNP_UNDELIVERABLE = "pnp_undeliverable"
SMS_PREPARING = "sms_preparing"
SMS_ACCEPTED = "sms_accepted"
SMS_DELIVERED = "sms_delivered"
SMS_FAILED = "sms_failed"
SMS_UNDELIVERABLE = "sms_undeliverable"
SMS_BLOCKED = "sms_blocked"
SMS_TEMPORARY_ERROR = "sms_temporary_error"
SMS_CALLBACK_TIMEOUT = "sms_callback_timeout"
# WhatsApp (openmaac: MAAC OpenAPI v1.1.48 names no WhatsApp statuses; see docs/api.md "WhatsApp step")
WHATSAPP_PREPARING = "whatsapp_preparing"
WHATSAPP_ACCEPTED = "whatsapp_accepted"
WHATSAPP_DELIVERED = "whatsapp_delivered"
WHATSAPP_FAILED = "whatsapp_failed"
WHATSAPP_UNDELIVERABLE = "whatsapp_undeliverable"
WHATSAPP_FINAL = (WHATSAPP_DELIVERED, WHATSAPP_FAILED, WHATSAPP_UNDELIVERABLE)

STATUSES = (
    LINE_PUSH_PREPARING, LINE_PUSH_DELIVERED, LINE_PUSH_FAILED, LINE_PUSH_UNDELIVERABLE,
    PNP_PREPARING, PNP_ACCEPTED, PNP_DELIVERED, PNP_FAILED, PNP_UNDELIVERABLE,
    SMS_PREPARING, SMS_ACCEPTED, SMS_DELIVERED, SMS_FAILED, SMS_UNDELIVERABLE, SMS_BLOCKED,
    SMS_TEMPORARY_ERROR, SMS_CALLBACK_TIMEOUT,
    WHATSAPP_PREPARING, WHATSAPP_ACCEPTED, WHATSAPP_DELIVERED, WHATSAPP_FAILED, WHATSAPP_UNDELIVERABLE,
)
DELIVERED = (LINE_PUSH_DELIVERED, PNP_DELIVERED, SMS_DELIVERED, WHATSAPP_DELIVERED)

# --- texts (MAAC OpenAPI v1.1.48) -------------------------------------------------------------------------

NOT_FOUND = "pnp setting not found"
PATTERN = "this value does not match the required pattern"
NO_POINTS = "your SMS points are insufficient, please recharge before sending"
EMIT_FAILED = "failed to emit messages"
NOT_APPROVED = "pnp content is not approved by LINE"
TEMPLATE_NOT_FOUND = "line push template not found"
EVENT_NOT_FOUND = "event not found"
MULTICAST_MAX = 150

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
JOIN_LINK = "join_link"


def text_error(message: str, status_code: int = 400) -> APIError:
    return APIError(status_code, text=message)


def required(field: str) -> APIError:
    return text_error(f"{field} field is required")


# --- scenarios ----------------------------------------------------------------------------------

def _parameters_of(value: Any) -> list[str]:
    """``{{name}}`` placeholders (not ``contact.*`` nor ``join_link``), in order of appearance."""
    seen: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            for match in PLACEHOLDER.finditer(node):
                name = match.group(1)
                if "." not in name and name != JOIN_LINK:
                    seen.setdefault(name, None)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return list(seen)


def placeholder_names(value: Any) -> set[str]:
    from openmaac.templates.service import placeholders

    return set(placeholders(value))


def metric_of(session: Session, setting: PnpSetting) -> dict[str, int]:
    """The scenario's ``metric``, counted from its messages when asked (no counter row that
    every state change would have to update): ``all`` messages; ``sms`` forwarded to SMS;
    ``pnp`` delivered through LINE (push or PNP); ``fail`` ended without any delivery."""
    line = or_(PnpMessage.line_push_status == LINE_PUSH_DELIVERED, PnpMessage.pnp_status == PNP_DELIVERED)
    delivered = or_(line, PnpMessage.sms_status == SMS_DELIVERED, PnpMessage.whatsapp_status == WHATSAPP_DELIVERED)
    row = session.execute(select(
        func.count(),
        func.coalesce(func.sum(case((PnpMessage.sms_status.is_not(None), 1), else_=0)), 0),
        func.coalesce(func.sum(case((line, 1), else_=0)), 0),
        func.coalesce(func.sum(case((delivered, 0), (PnpMessage.finished.is_(True), 1), else_=0)), 0),
    ).where(PnpMessage.organization_id == setting.organization_id,
            PnpMessage.pnp_setting_id == setting.id)).one()
    return {"all": int(row[0]), "fail": int(row[3]), "pnp": int(row[2]), "sms": int(row[1])}


def serialize_setting(setting: PnpSetting, *, metric: dict[str, int] | None = None,
                      content: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": setting.id,
        "name": setting.name,
        "status": setting.status,
        "line_push_enabled": setting.line_push_enabled,
        "pnp_enabled": setting.pnp_enabled,
        "fallback_enabled": setting.fallback_enabled,
        "fallback_period": setting.fallback_period,
        "parameters": list(setting.parameters or []),
        "sms_parameters": list(setting.sms_parameters or []),
    }
    if metric is not None:
        body["metric"] = metric
    if content:
        body.update({
            "line_push_template_id": setting.line_push_template_id,
            "pnp_messages": setting.pnp_messages,
            "pnp_approval_status": setting.pnp_approval_status,
            "sms_text": setting.sms_text,
            "whatsapp_enabled": setting.whatsapp_enabled,
            "whatsapp_template_name": setting.whatsapp_template_name,
            "whatsapp_language": setting.whatsapp_language,
        })
    return body


_SETTING = select(PnpSetting).where(PnpSetting.organization_id == bindparam("org"), PnpSetting.id == bindparam("id"))
_SETTING_LOCKED = _SETTING.with_for_update()


def get_setting(session: Session, organization_id: int, setting_id: int, *, lock: bool = False) -> PnpSetting | None:
    """``lock``: for an edit, whose checks must see an edit committed meanwhile (PostgreSQL)."""
    return session.scalar(_SETTING_LOCKED if lock else _SETTING, {"org": organization_id, "id": setting_id})


def list_settings(session: Session, org: OrgContext, start: str | None) -> dict[str, Any]:
    from openmaac.web.pagination import paginate_by_id

    stmt = select(PnpSetting).where(PnpSetting.organization_id == org.id)
    page = paginate_by_id(session, stmt, PnpSetting.id, scope=f"pnp_setting:{org.id}", start=start)
    return {"results": [serialize_setting(s) for s in page.rows], "next": page.next}


SETTING_FIELDS = ("name", "status", "line_push_enabled", "line_push_template_id", "pnp_enabled", "pnp_messages",
                  "pnp_approval_status", "fallback_enabled", "sms_text", "fallback_period", "whatsapp_enabled",
                  "whatsapp_template_name", "whatsapp_language")


# the columns' widths (PostgreSQL refuses longer text)
SETTING_TEXT_MAX_LENGTH = {"name": 255, "whatsapp_template_name": 512, "whatsapp_language": 32}


def clean_setting_changes(body: Any, *, creating: bool) -> dict[str, Any]:
    """The API's validation of a scenario's fields (types, choices, lengths): the changes to
    give ``save_setting``, or 400 with DRF field errors. The console's form goes through it too."""
    if not isinstance(body, dict):
        raise field_errors({"non_field_errors": ["Invalid data. Expected a dictionary."]})
    errors: dict[str, list[str]] = {}
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key not in SETTING_FIELDS:
            continue
        if key in ("line_push_enabled", "pnp_enabled", "fallback_enabled", "whatsapp_enabled"):
            if not isinstance(value, bool):
                errors[key] = ["Must be a valid boolean."]
        elif key in SETTING_TEXT_MAX_LENGTH:
            # DRF's CharField: blank, type, then the length and NUL checks on the trimmed text
            value, problems = char_field(value, max_length=SETTING_TEXT_MAX_LENGTH[key], allow_blank=key != "name",
                                         allow_null=key != "name")
            if problems:
                errors[key] = problems
        elif key == "status":
            if value not in ("enable", "disable"):
                errors[key] = [f'"{value}" is not a valid choice.']
        elif key == "pnp_approval_status":
            if value not in ("pending", "approved", "rejected"):
                errors[key] = [f'"{value}" is not a valid choice.']
        elif key == "fallback_period":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 43200:
                errors[key] = ["Ensure this value is an integer between 0 and 43200."]
        elif key in ("line_push_template_id",):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                errors[key] = ["A valid integer is required."]
            elif value is not None and parse_id(value) is None:
                errors[key] = [invalid_pk(value)]
        elif key == "pnp_messages":
            if not isinstance(value, list):
                errors[key] = [f'Expected a list of items but got type "{type(value).__name__}".']
        elif key == "sms_text":
            if value is not None and not isinstance(value, str):
                errors[key] = ["Not a valid string."]
        changes[key] = value
    if creating and "name" not in changes:
        errors["name"] = ["This field is required."]
    if errors:
        raise field_errors(errors)
    return changes


SWITCHES = ("line_push_enabled", "pnp_enabled", "fallback_enabled", "whatsapp_enabled")


def changes_from_form(form: dict[str, str], *, creating: bool) -> dict[str, Any]:
    """A scenario settings form (the console's: text fields, checkboxes, a JSON text area for
    the PNP messages) as the API's JSON body, checked by ``clean_setting_changes``. Every field
    is always sent (a form is complete), so an unticked checkbox is ``false``."""
    body: dict[str, Any] = {key: key in form for key in SWITCHES}
    errors: dict[str, list[str]] = {}
    for key in ("name", "status", "pnp_approval_status", "sms_text"):
        if key in form:
            body[key] = form[key]
    for key in ("whatsapp_template_name", "whatsapp_language"):
        body[key] = form.get(key, "").strip() or None
    template = form.get("line_push_template_id", "").strip()
    body["line_push_template_id"] = (int(template) if template.isdigit() else template) if template else None
    period = form.get("fallback_period", "").strip()
    body["fallback_period"] = int(period) if period.isdigit() else period
    raw_messages = form.get("pnp_messages", "").strip()
    if raw_messages:
        try:
            body["pnp_messages"] = orjson.loads(raw_messages)
        except orjson.JSONDecodeError as exc:
            errors["pnp_messages"] = [f"Enter valid JSON: {exc}"]
    else:
        body["pnp_messages"] = []
    try:
        changes = clean_setting_changes(body, creating=creating)
    except APIError as exc:
        errors = {**exc.body, **errors}
    if errors:
        raise field_errors(errors)
    return changes


def save_setting(session: Session, org: OrgContext, changes: dict[str, Any],
                 setting: PnpSetting | None = None) -> dict[str, Any]:
    """Create (``setting`` None) or edit a scenario; ``changes`` holds only the fields given.
    Admins only (the API acts as admin)."""
    require_role(org, "admin")
    creating = setting is None
    if setting is None:
        now = utcnow()
        setting = PnpSetting(organization_id=org.id, name="", status="enable", line_push_enabled=False,
                             pnp_enabled=False, pnp_messages=[], pnp_approval_status="pending",
                             fallback_enabled=False, sms_text="", fallback_period=1440, whatsapp_enabled=False,
                             parameters=[], sms_parameters=[], metric_all=0, metric_fail=0, metric_pnp=0,
                             metric_sms=0, created_at=now, updated_at=now)
    errors: dict[str, list[str]] = {}
    if "pnp_messages" in changes and changes["pnp_messages"] != setting.pnp_messages:
        validate_template_messages(changes["pnp_messages"])
        # new content needs LINE's approval again (unless this request also records it)
        if "pnp_approval_status" not in changes:
            setting.pnp_approval_status = "pending"
    template_id = changes.get("line_push_template_id")
    if template_id is not None and session.scalar(
        select(MessageTemplate.id).where(MessageTemplate.organization_id == org.id, MessageTemplate.id == template_id)
    ) is None:
        errors["line_push_template_id"] = [f'Invalid pk "{template_id}" - object does not exist.']
    for key, value in changes.items():
        setattr(setting, key, value)
    if creating and not setting.name:
        errors["name"] = ["This field is required."]
    if setting.pnp_enabled and not setting.pnp_messages:
        errors["pnp_messages"] = ["This field is required when pnp_enabled is true."]
    if setting.fallback_enabled and not (setting.sms_text or "").strip():
        errors["sms_text"] = ["This field is required when fallback_enabled is true."]
    if setting.whatsapp_enabled and not setting.whatsapp_template_name:
        errors["whatsapp_template_name"] = ["This field is required when whatsapp_enabled is true."]
    if not (setting.line_push_enabled or setting.pnp_enabled or setting.fallback_enabled
            or setting.whatsapp_enabled):
        errors.setdefault("non_field_errors", []).append(
            "Enable at least one of line_push_enabled, pnp_enabled, whatsapp_enabled and fallback_enabled.")
    if errors:
        raise field_errors(errors)
    setting.parameters = _parameters_of(setting.pnp_messages or [])
    setting.sms_parameters = _parameters_of(setting.sms_text or "")
    setting.updated_at = utcnow()
    if creating:
        session.add(setting)
    session.flush()
    return serialize_setting(setting, metric=metric_of(session, setting), content=True)


# --- sending ------------------------------------------------------------------------------------

def phone_hash(phone: str) -> str:
    """The SHA-256 hex LINE's PNP expects: of the E.164 number, or the given hash lower-cased."""
    if SHA256_HEX.match(phone):
        return phone.lower()
    return hashlib.sha256(phone.encode()).hexdigest()


def render_text(text: str, params: dict[str, Any], extra: dict[str, str] | None = None) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if extra and name in extra:
            return extra[name]
        value = params.get(name)
        return "" if value is None else str(value)

    return PLACEHOLDER.sub(replace, text)


def _params(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise required(field)
    cleaned: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, dict | list):
            raise text_error(f"{key} field is invalid")
        cleaned[str(key)] = item if isinstance(item, str) else str(item)
    return cleaned


def _require_params(params: dict[str, str], names: list[str]) -> None:
    for name in names:
        if name not in params:
            raise required(name)


def _whatsapp(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise required("whatsapp")
    for field in ("template_name", "language", "template_data"):
        if value.get(field) in (None, ""):
            raise required(field)
    if not isinstance(value["template_data"], dict):
        raise required("template_data")
    for part in ("header", "body"):
        section = value["template_data"].get(part)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("parameters", []), list):
            raise required("parameters")
        for parameter in section.get("parameters", []):
            if isinstance(parameter, dict):
                kind = parameter.get("type")
                if kind not in ("text", "image", "video", "document", "location"):
                    raise required("type")
                if kind == "text" and not parameter.get("text"):
                    raise required("text")
                if kind in ("image", "video", "document") and not (parameter.get("media_id")
                                                                  or parameter.get("media_url")):
                    raise required("media_url")
                if kind == "document" and not parameter.get("filename"):
                    raise required("filename")
                if kind == "location":
                    for field in ("latitude", "longitude", "name", "address"):
                        if not parameter.get(field):
                            raise required(field)
            elif not isinstance(parameter, str):
                raise required("parameters")
    return {"template_name": str(value["template_name"]), "language": str(value["language"]),
            "template_data": value["template_data"]}


@dataclass
class Recipient:
    """One validated entry of a push or multicast."""

    phone_number: str
    hashed: bool
    pnp: dict[str, str]
    sms: dict[str, str]
    line_push: dict[str, str] | None
    line_push_template_id: int | None
    whatsapp: dict[str, Any] | None
    customized_id: str | None
    sms_text: str | None
    sms_segments: int


def parse_setting_id(value: Any) -> int:
    if value is None:
        raise required("pnp_setting_id")
    if isinstance(value, bool):
        raise text_error(NOT_FOUND)
    try:
        setting_id = parse_id(int(value))
    except (TypeError, ValueError):
        raise text_error(NOT_FOUND) from None
    if setting_id is None:  # no scenario can have it (out of 1 .. 2**63 - 1)
        raise text_error(NOT_FOUND)
    return setting_id


def usable_setting(session: Session, org_id: int, setting_id: int) -> PnpSetting:
    setting = get_setting(session, org_id, setting_id)
    if setting is None or setting.status != "enable":
        raise text_error(NOT_FOUND)
    return setting


def _event_id_well_formed(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | str) and str(value).isdigit()


def _template_id_well_formed(value: Any) -> bool:
    return not isinstance(value, bool) and str(value).isdigit()


def event_id_candidate(value: Any) -> int | None:
    """The event id ``value`` names, when it is well formed (for a look-up made before the checks)."""
    return parse_id(value) if value is not None and _event_id_well_formed(value) else None


def check_event_id(value: Any, exists: Any) -> int | None:
    """``event_id`` checked in the spec's order: its pattern, then whether the organisation has
    it (``exists(event_id)``)."""
    if value is None:
        return None
    if not _event_id_well_formed(value):
        raise text_error(PATTERN)
    event_id = parse_id(value)
    if event_id is None or not exists(event_id):
        raise text_error(EVENT_NOT_FOUND)
    return event_id


def parse_event_id(session: Session, org_id: int, value: Any) -> int | None:
    return check_event_id(value, lambda event_id: session.scalar(select(MessageEvent.id).where(
        MessageEvent.organization_id == org_id, MessageEvent.id == event_id)) is not None)


def line_push_template_candidate(entry: Any) -> int | None:
    """The LINE push template id an entry names, when it is well formed (for a look-up made
    before ``parse_recipient``)."""
    raw = entry.get("line_push_template_id") if isinstance(entry, dict) else None
    return parse_id(raw) if raw is not None and _template_id_well_formed(raw) else None


def parse_recipient(session: Session | None, org_id: int, setting: PnpSetting, entry: Any, *,
                    allow_line_push: bool, templates: dict[int, list[str]]) -> Recipient:
    """One entry checked. ``templates``: the parameters of LINE push templates known to exist;
    one not among them is looked up with ``session`` (None: the caller looked it up already,
    so it does not exist)."""
    if not isinstance(entry, dict):
        raise required("data")
    phone = entry.get("phone_number")
    if phone in (None, ""):
        raise required("phone_number")
    if not isinstance(phone, str):
        raise text_error(PATTERN)
    phone = phone.strip()
    hashed = bool(SHA256_HEX.match(phone))
    if not hashed and not E164.match(phone):
        raise text_error(PATTERN)
    if hashed and setting.fallback_enabled:
        # a hash cannot be texted: only scenarios without SMS take one (MAAC OpenAPI v1.1.48)
        raise text_error(PATTERN)
    if "pnp" not in entry:
        raise required("pnp")
    pnp = _params(entry.get("pnp"), "pnp")
    if "sms" not in entry:
        raise required("sms")
    sms = _params(entry.get("sms"), "sms")
    if setting.pnp_enabled:
        _require_params(pnp, list(setting.parameters or []))
    if setting.fallback_enabled:
        _require_params(sms, list(setting.sms_parameters or []))
    line_push = None
    template_id = None
    if allow_line_push and setting.line_push_enabled:
        raw_template = entry.get("line_push_template_id")
        if raw_template is None:
            raise required("line_push_template_id")
        if not _template_id_well_formed(raw_template):
            raise text_error(TEMPLATE_NOT_FOUND)
        template_id = parse_id(raw_template)
        if template_id is None:
            raise text_error(TEMPLATE_NOT_FOUND)
        if template_id not in templates:
            if session is None:
                raise text_error(TEMPLATE_NOT_FOUND)
            row = session.execute(select(MessageTemplate.parameters).where(
                MessageTemplate.organization_id == org_id, MessageTemplate.id == template_id)).first()
            if row is None:
                raise text_error(TEMPLATE_NOT_FOUND)
            templates[template_id] = list(row[0] or [])
        if "line_push" not in entry:
            raise required("line_push")
        line_push = _params(entry.get("line_push"), "line_push")
        _require_params(line_push, templates[template_id])
    whatsapp = None
    if entry.get("whatsapp") is not None:
        whatsapp = _whatsapp(entry["whatsapp"])
    customized_id = entry.get("customized_id")
    if customized_id is not None:
        if not isinstance(customized_id, str | int) or isinstance(customized_id, bool):
            raise text_error(PATTERN)
        customized_id = str(customized_id)[:255]
    sms_text = None
    segments = 0
    if setting.fallback_enabled and not hashed:
        # the join link is a fixed-length URL: count it with a placeholder of that length
        sms_text = render_text(setting.sms_text, sms, {JOIN_LINK: "{{join_link}}"})  # filled at send time
        _encoding, segments = sms_segments(render_text(setting.sms_text, sms, {JOIN_LINK: "x" * join_link_length()}))
    return Recipient(phone_number=phone, hashed=hashed, pnp=pnp, sms=sms, line_push=line_push,
                     line_push_template_id=template_id, whatsapp=whatsapp, customized_id=customized_id,
                     sms_text=sms_text, sms_segments=segments)


def join_link_length() -> int:
    from openmaac.sms_plus.join_links import link_length

    return link_length()


def whatsapp_template(setting: PnpSetting, params: dict[str, Any] | None, hashed: bool) -> dict[str, Any] | None:
    """The WhatsApp template a message goes out with, or None when it has no WhatsApp step: the
    scenario has WhatsApp on, the number is E.164 (a hash cannot be messaged) and a template is
    named (the request's ``whatsapp``, else the scenario's template and language)."""
    if not setting.whatsapp_enabled or hashed:
        return None
    given = (params or {}).get("whatsapp") or {}
    name = given.get("template_name") or setting.whatsapp_template_name
    if not name:
        return None
    return {"template_name": str(name), "language": str(given.get("language") or setting.whatsapp_language or "en_US"),
            "template_data": given.get("template_data") or {}}


def initial_status(setting: PnpSetting, recipient: Recipient, *, line_push: bool) -> dict[str, Any]:
    if line_push and setting.line_push_enabled and recipient.line_push_template_id is not None:
        return {"status": LINE_PUSH_PREPARING, "line_push_status": LINE_PUSH_PREPARING}
    if setting.pnp_enabled:
        return {"status": PNP_PREPARING, "pnp_status": PNP_PREPARING}
    if whatsapp_template(setting, {"whatsapp": recipient.whatsapp}, recipient.hashed) is not None:
        return {"status": WHATSAPP_PREPARING, "whatsapp_status": WHATSAPP_PREPARING}
    return {"status": SMS_PREPARING, "sms_status": SMS_PREPARING}


def message_values(org_id: int, setting: PnpSetting, recipient: Recipient, event_id: int | None, *, line_push: bool,
                   upload_id: int | None, now: datetime, fallback_at: datetime) -> dict[str, Any]:
    """The columns a new message is inserted with (``fallback_at``: when its fallback timer is
    due unless it starts with SMS or WhatsApp); every message names the same columns."""
    first = initial_status(setting, recipient, line_push=line_push)
    return dict(
        organization_id=org_id, pnp_setting_id=setting.id, event_id=event_id,
        customized_id=recipient.customized_id, phone_number=recipient.phone_number,
        phone_hash=phone_hash(recipient.phone_number), hashed_input=recipient.hashed, upload_id=upload_id,
        params={"pnp": recipient.pnp, "sms": recipient.sms, "line_push": recipient.line_push,
                "whatsapp": recipient.whatsapp},
        line_push_template_id=recipient.line_push_template_id if first["status"] == LINE_PUSH_PREPARING
        else None,
        sms_text=recipient.sms_text, sms_segments=recipient.sms_segments, points_held=recipient.sms_segments,
        sms_attempts=0, finished=False,
        # LINE echoes it in the delivery webhook (16-100 characters); set before the insert
        delivery_tag=f"openmaac-pnp-{secrets.token_hex(16)}",
        fallback_at=now if first["status"] in (SMS_PREPARING, WHATSAPP_PREPARING) else fallback_at,
        created_at=now, updated_at=now,
        **{"line_push_status": None, "pnp_status": None, "whatsapp_status": None, "sms_status": None, **first},
    )


_INSERT_MESSAGES = insert(PnpMessage.__table__).returning(PnpMessage.__table__.c.id, sort_by_parameter_order=True)


def create_messages(session: Session, org_id: int, setting: PnpSetting, recipients: list[Recipient],
                    event_id: int | None, *, line_push: bool, upload_id: int | None = None,
                    safety_net: bool = False, hold_first: bool = False) -> list[PnpMessage]:
    """Insert the messages, hold their SMS points, queue their first step and fallback timers,
    emit their first status: one transaction (the caller's), which a refusal (too few points,
    raised) must roll back.

    The points are held last: the organisation's balance row, which every acceptance and every
    release of its points updates, then stays locked only from the hold to the commit, not
    while 150 messages, their jobs and events are written (on PostgreSQL concurrent multicasts
    queued behind each other's whole transaction there). ``hold_first``: for a caller that
    returns the refusal and commits the transaction anyway (a group commit's batch), nothing
    may be written before the hold."""
    from openmaac.sms_plus import engine

    needed = sum(r.sms_segments for r in recipients)
    note = f"{len(recipients)} SMS+ message(s)"
    if hold_first and needed and not points.hold(session, org_id, needed, note=note):
        raise text_error(NO_POINTS)
    now = utcnow()
    fallback_at = now + minutes(setting.fallback_period)
    rows = [message_values(org_id, setting, recipient, event_id, line_push=line_push, upload_id=upload_id, now=now,
                           fallback_at=fallback_at) for recipient in recipients]
    # one multi-row INSERT ... RETURNING (the ORM's unit of work cost more than the insert); the
    # objects handed back are built from the same values, not attached to the session
    ids = [row[0] for row in session.connection().execute(_INSERT_MESSAGES, rows)]
    messages = [PnpMessage(id=message_id, **row) for message_id, row in zip(ids, rows, strict=True)]
    jobs: list[dict[str, Any]] = []
    batch: list[int] = []  # PNP steps of a multicast / upload: one job for the lot (engine.run_pnp_batch)
    for message in messages:
        if message.status not in (SMS_PREPARING, WHATSAPP_PREPARING):
            if safety_net or message.status != PNP_PREPARING:
                run_at = now + timedelta(seconds=DISPATCH_SAFETY_NET_SECONDS) if safety_net else now
                jobs.append({"kind": engine.DISPATCH, "payload": {"message_id": message.id},
                             "organization_id": org_id, "run_at": run_at,
                             "unique_key": f"{engine.DISPATCH}:{message.id}"})
            else:
                batch.append(message.id)
    # the fallback timers: one job for the messages due at the same time (engine.run_fallback_batch),
    # a message alone keeps a job of its own (dropped when it ends early)
    due: dict[datetime, list[PnpMessage]] = {}
    for message in messages:
        due.setdefault(message.fallback_at or now, []).append(message)
    for run_at, messages_due in due.items():
        for start in range(0, len(messages_due), MULTICAST_MAX):  # a job's work stays well within its lease
            group = messages_due[start:start + MULTICAST_MAX]
            if len(group) == 1:
                jobs.append({"kind": engine.FALLBACK, "payload": {"message_id": group[0].id},
                             "organization_id": org_id, "run_at": run_at,
                             "unique_key": f"{engine.FALLBACK}:{group[0].id}"})
                continue
            jobs.append({"kind": engine.FALLBACK, "payload": {"message_ids": [m.id for m in group]},
                         "organization_id": org_id, "run_at": run_at,
                         "unique_key": f"{engine.FALLBACK}:batch:{group[0].id}"})
    for start in range(0, len(batch), MULTICAST_MAX):
        ids = batch[start:start + MULTICAST_MAX]
        jobs.append({"kind": engine.DISPATCH, "payload": {"message_ids": ids}, "organization_id": org_id,
                     "run_at": now, "unique_key": f"{engine.DISPATCH}:batch:{ids[0]}"})
    enqueue_many(session, jobs)
    session.flush()
    engine.emit_status(session, setting, messages)
    if not hold_first and needed and not points.hold(session, org_id, needed, note=note):
        raise text_error(NO_POINTS)  # the caller's transaction rolls back what was written above
    return messages


# --- status query -------------------------------------------------------------------------------

def serialize_message(message: PnpMessage, tz: ZoneInfo, *, whatsapp: bool = False) -> dict[str, Any]:
    """One record of the status query; ``whatsapp`` (the scenario has WhatsApp on, or the message
    went through it) appends the WhatsApp fields after the spec's."""
    body = {
        "phone_number": message.phone_number,
        "pnp_message_id": message.id,
        "status": message.status,
        "line_push_template_id": message.line_push_template_id,
        "line_push_status": message.line_push_status,
        "line_push_delivered_at": render(message.line_push_delivered_at, tz),
        "line_push_error_category": message.line_push_error_category,
        "pnp_status": message.pnp_status,
        "pnp_delivered_at": render(message.pnp_delivered_at, tz),
        "sms_status": message.sms_status,
        "sms_delivered_at": render(message.sms_delivered_at, tz),
        "sms_error_category": message.sms_error_category,
        "updated_at": render(message.updated_at, tz),
        "event_id": message.event_id,
        "customized_id": message.customized_id,
    }
    if whatsapp or message.whatsapp_status is not None:
        body.update(whatsapp_fields(message, tz))
    return body


def whatsapp_fields(message: AnyPnpMessage, tz: ZoneInfo) -> dict[str, Any]:
    return {"whatsapp_status": message.whatsapp_status,
            "whatsapp_delivered_at": render(message.whatsapp_delivered_at, tz),
            "whatsapp_error_category": message.whatsapp_error_category}


def query_messages(session: Session, org: OrgContext, query: dict[str, str]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    bounds: dict[str, datetime] = {}
    for name in ("updated_at_min", "updated_at_max"):
        raw = query.get(name)
        if raw is None or raw == "":
            errors[name] = ["This field is required."]
            continue
        parsed = parse_datetime(raw, org.tz)
        if isinstance(parsed, str):
            errors[name] = [parsed]
        else:
            bounds[name] = parsed
    setting_id: int | None = None
    raw_id = query.get("pnp_setting_id")
    if raw_id is None or raw_id == "":
        errors["pnp_setting_id"] = ["This field is required."]
    else:
        try:
            setting_id = int(raw_id)
        except ValueError:
            errors["pnp_setting_id"] = ["A valid integer is required."]
        else:
            if parse_id(setting_id) is None:
                setting_id = None  # no scenario can have it: the 404 below
    customized_id = query.get("customized_id")
    if customized_id and len(customized_id) > MAX_QUERY_TEXT:
        errors["customized_id"] = [f"Ensure this field has no more than {MAX_QUERY_TEXT} characters."]
    if errors:
        raise field_errors(errors)
    setting = get_setting(session, org.id, setting_id) if setting_id is not None else None
    if setting is None or setting_id is None:
        raise APIError(404, {"detail": "pnp_setting_id not found"})
    scope = f"pnp_message:{org.id}:{setting_id}"
    stmt = select(PnpMessage).where(
        PnpMessage.organization_id == org.id,
        PnpMessage.pnp_setting_id == setting_id,
        PnpMessage.updated_at >= bounds["updated_at_min"],
        PnpMessage.updated_at <= bounds["updated_at_max"],
    )
    if query.get("customized_id"):
        stmt = stmt.where(PnpMessage.customized_id == query["customized_id"])
    start = query.get("start")
    if start:
        position = decode_token(scope, start)
        try:
            last_at = datetime.fromisoformat(str(position["u"]))
            last_id = int(position["id"])
        except (KeyError, TypeError, ValueError):
            raise APIError(400, {"detail": "Invalid cursor"}) from None
        stmt = stmt.where(or_(PnpMessage.updated_at < last_at,
                              and_(PnpMessage.updated_at == last_at, PnpMessage.id < last_id)))
    rows = list(session.scalars(stmt.order_by(PnpMessage.updated_at.desc(), PnpMessage.id.desc())
                                .limit(PAGE_SIZE + 1)))
    next_token = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        next_token = encode_token(scope, {"u": rows[-1].updated_at.isoformat(), "id": rows[-1].id})
    return {"next": next_token, "results": [serialize_message(m, org.tz, whatsapp=setting.whatsapp_enabled) for m in rows]}

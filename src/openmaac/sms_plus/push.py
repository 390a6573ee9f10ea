"""The SMS+ push (``pnp/message/push/``) on its hot path.

A push is answered with LINE's outcome, so its PNP call happens inside the request. What the
database must do around it is cut to the minimum:

- **one read statement** for everything the checks need (the scenario, the event, the LINE
  channel, the LINE push template's parameters) on a ``Database.lookup()`` connection (no ORM
  session; autocommit on PostgreSQL);
- **acceptance through group commit**: the message, its points hold, its safety-net and
  fallback jobs and its first status event, written together with the other pushes accepted
  at the same moment (one transaction per batch, each request answered after its own commit);
  the LINE rate slot of its PNP call is leased in the same transaction;
- **the PNP answer recorded through group commit**: one conditional ``UPDATE ... RETURNING``
  (the message moves on only from ``pnp_preparing``, as the state machine does everywhere) and
  the safety net dropped; on PostgreSQL both are one statement of data-modifying CTEs.

Everything else (a LINE push first, join links in the PNP content, no LINE channel) goes the
general way, ``engine.run_line_steps``, with the same effects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.channels import line_rate
from openmaac.channels.models import LineChannel
from openmaac.channels.service import line_api_base_url
from openmaac.db.base import UTCDateTime, utcnow
from openmaac.db.engine import get_database
from openmaac.db.group_commit import group_commit
from openmaac.jobs.models import Job
from openmaac.messaging.models import MessageEvent
from openmaac.sms_plus import engine
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpMessage, PnpSetting
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import render as render_template
from openmaac.web.errors import APIError

_S = PnpSetting.__table__
_M = PnpMessage.__table__
_E = MessageEvent.__table__
_C = LineChannel.__table__
_T = MessageTemplate.__table__
_J = Job.__table__
_SETTING_COLUMNS = [column.name for column in _S.c]

# everything a push's checks read, in one statement: the scenario; the event, the channel and
# the LINE push template come back as NULLs when missing
_LOOKUP = (select(*_S.c, _E.c.id.label("found_event_id"), _C.c.api_base_url, _C.c.access_token, _C.c.channel_id,
                  _T.c.id.label("found_template_id"), _T.c.parameters.label("template_parameters"))
           .select_from(_S.outerjoin(_E, and_(_E.c.organization_id == _S.c.organization_id,
                                              _E.c.id == bindparam("event")))
                        .outerjoin(_C, _C.c.organization_id == _S.c.organization_id)
                        .outerjoin(_T, and_(_T.c.organization_id == _S.c.organization_id,
                                            _T.c.id == bindparam("template"))))
           .where(_S.c.organization_id == bindparam("org"), _S.c.id == bindparam("setting"))
           .limit(1))

# the PNP answer: the message moves on only from pnp_preparing (a delivery webhook, or a
# fallback timer after the LINE step's grace, may have moved it first); the row as it is now
_ANSWER = (update(_M).where(_M.c.id == bindparam("b_id"), _M.c.pnp_status == svc.PNP_PREPARING)
           .values(status=bindparam("b_status"), pnp_status=bindparam("b_status"),
                   updated_at=bindparam("b_now", type_=UTCDateTime()))
           .returning(*_M.c))
# the safety net: by its unique key (SQLite plans an equality on the unique index by it)
_DROP_JOB = delete(_J).where(_J.c.unique_key == bindparam("key"), _J.c.status == "ready")
# PostgreSQL: the same two in one statement (every data-modifying CTE runs, read or not)
_PG_ANSWER = text(f"""
WITH job AS (DELETE FROM jobs WHERE unique_key = :key AND status = 'ready' RETURNING id),
msg AS (UPDATE pnp_messages SET status = :b_status, pnp_status = :b_status, updated_at = :b_now
        WHERE id = :b_id AND pnp_status = '{svc.PNP_PREPARING}' RETURNING *)
SELECT {", ".join(f"msg.{column.name}" for column in _M.c)} FROM msg""").bindparams(
    bindparam("b_now", type_=UTCDateTime())).columns(*_M.c)


def _setting_of(row: Any) -> PnpSetting | None:
    if row is None:
        return None
    mapping = row._mapping
    # a plain object of the values read (never attached to a session: nothing writes it)
    return PnpSetting(**{name: mapping[name] for name in _SETTING_COLUMNS})


def push_message(org: OrgContext, body: Any) -> dict[str, Any]:
    """``pnp/message/push/``: checks (the spec's order and texts), acceptance, the LINE steps."""
    if not isinstance(body, dict):
        raise svc.required("pnp_setting_id")
    setting_id = svc.parse_setting_id(body.get("pnp_setting_id"))
    data = body.get("data")
    raw_event = body.get("event_id")
    template_id = svc.line_push_template_candidate(data)
    database = get_database()
    try:
        with database.lookup() as conn:
            row = conn.execute(_LOOKUP, {"org": org.id, "setting": setting_id,
                                         "event": svc.event_id_candidate(raw_event), "template": template_id}).first()
    except DBAPIError as exc:
        raise svc.text_error(svc.EMIT_FAILED, 503) from exc
    setting = _setting_of(row)
    if setting is None or setting.status != "enable":
        raise svc.text_error(svc.NOT_FOUND)
    assert row is not None
    if data is None:
        raise svc.required("data")
    found_event = row.found_event_id
    event_id = svc.check_event_id(raw_event, lambda event: found_event is not None and int(found_event) == event)
    templates = {int(row.found_template_id): list(row.template_parameters or [])} \
        if row.found_template_id is not None else {}
    recipient = svc.parse_recipient(None, org.id, setting, data, allow_line_push=True, templates=templates)
    if setting.pnp_enabled and setting.pnp_approval_status != "approved":
        raise svc.text_error(svc.NOT_APPROVED)
    channel_id = str(row.channel_id) if row.channel_id is not None else None
    try:
        accepted = group_commit(database, "sms_plus.push.accept").run(
            lambda session: _accept(session, org.id, setting, recipient, event_id, channel_id))
    except DBAPIError as exc:
        raise svc.text_error(svc.EMIT_FAILED, 503) from exc
    if isinstance(accepted, APIError):
        raise accepted
    message = accepted
    if message.status in (svc.SMS_PREPARING, svc.WHATSAPP_PREPARING):
        return {"id": message.id, "result": engine.RESULT_SUCCESS}
    pnp_first = message.status == svc.PNP_PREPARING and channel_id is not None \
        and svc.JOIN_LINK not in svc.placeholder_names(setting.pnp_messages)
    if not pnp_first:
        # the message and scenario as just committed: no re-read
        return {"id": message.id, "result": engine.run_line_steps(message.id, known=(message, setting),
                                                                   safety_net=True)}
    base_url = line_api_base_url(row.api_base_url)
    return {"id": message.id, "result": _pnp(message, setting, base_url, str(row.access_token), str(channel_id))}


def _accept(session: Session, organization_id: int, setting: PnpSetting, recipient: svc.Recipient,
            event_id: int | None, channel_id: str | None) -> PnpMessage | APIError:
    """One push's acceptance in a group commit's transaction. A refusal (too few points) is
    returned, not raised: it wrote nothing, and the other pushes of the batch commit."""
    try:
        message = svc.create_messages(session, organization_id, setting, [recipient], event_id, line_push=True,
                                      safety_net=True)[0]
    except APIError as refused:
        return refused
    if channel_id is not None and message.status == svc.PNP_PREPARING:
        # the PNP call's rate slot, leased in this transaction rather than one of its own
        line_rate.prefetch(session.connection(), get_database(), channel_id, "pnp_push")
    return message


def _pnp(message: PnpMessage, setting: PnpSetting, base_url: str, token: str, channel_id: str) -> str:
    """The PNP step of a just-accepted push: the call, then its answer recorded."""
    pnp_messages = render_template(list(setting.pnp_messages or []), dict((message.params or {}).get("pnp") or {}),
                                   None)
    tag = message.delivery_tag or f"openmaac-pnp-{message.id}-tag-padding"
    outcome = engine.line_call(base_url, token, "/bot/pnp/push", {"to": message.phone_hash, "messages": pnp_messages},
                               {"X-Line-Delivery-Tag": tag}, "pnp_push", channel_id, to=message.phone_hash,
                               messages=pnp_messages, delivery_tag=tag)
    status = svc.PNP_ACCEPTED if outcome.ok else svc.PNP_FAILED
    group_commit(get_database(), "sms_plus.push.record").run(
        lambda session: _record(session, message.id, setting, status))
    return engine.result_of(outcome)


def _record(session: Session, message_id: int, setting: PnpSetting, status: str) -> None:
    """The PNP answer, in a group commit's transaction: the status (from pnp_preparing only), its
    events, the safety net dropped, and what the state machine does after a LINE step."""
    conn = session.connection()
    params = {"b_id": message_id, "b_status": status, "b_now": utcnow(), "key": f"{engine.DISPATCH}:{message_id}"}
    if conn.dialect.name == "postgresql":
        row = conn.execute(_PG_ANSWER, params).first()
    else:
        conn.execute(_DROP_JOB, params)
        row = conn.execute(_ANSWER, params).first()
    if row is None:
        return  # moved on meanwhile: nothing to record (as the general path)
    message = PnpMessage(**row._mapping)  # the row as updated (a plain object)
    engine.emit_status(session, setting, [message])
    if engine.nothing_left(message, setting):
        loaded = engine.load_message(session, message_id, lock=True, setting=setting)  # ended here: through the ORM
        if loaded is not None:
            engine.finish(session, loaded[0], setting)
        return
    engine.wake_overdue_fallback(session, message)

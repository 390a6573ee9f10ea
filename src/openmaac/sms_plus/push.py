"""The SMS+ push (``pnp/message/push/``) on its hot path.

A push is answered with LINE's outcome, so its PNP call happens inside the request. What the
database must do around it is cut to the minimum:

- **one read statement** for everything the checks need (the scenario, the event, the LINE
  channel, the LINE push template's parameters) on a ``Database.lookup()`` connection (no ORM
  session; autocommit on PostgreSQL);
- **acceptance through group commit**: the message, its points hold and ledger row, its
  safety-net and fallback jobs and its first status event, written together with the other
  pushes accepted at the same moment (one transaction per batch, each request answered after its
  own commit); the LINE rate slot of its PNP call is leased in the same transaction. On
  PostgreSQL holds, messages, jobs and rate slots of a batch's pushes are ONE statement of
  data-modifying CTEs (``_accept_pnp_many_pg``; a push whose organisation's balance does not
  cover the batch is accepted alone, by the one-push statement);
- **the PNP answer recorded through group commit**: one conditional ``UPDATE ... RETURNING``
  (the message moves on only from ``pnp_preparing``, as the state machine does everywhere) and
  the safety net dropped; on PostgreSQL the answers of a batch are one statement of
  data-modifying CTEs for all of them, as its PNP-first acceptances are.

Every statement is prebuilt and runs on the driver's cursor (``db/driver.py``), and the message
is a plain ``PnpMessageRow``, never an ORM object: SQLAlchemy's per-statement execution and the
ORM's instrumented objects cost more than the database's own work here.

Everything else (a LINE push first, join links in the PNP content, no LINE channel) goes the
general way, ``engine.run_line_steps``, with the same effects.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.channels import line_rate
from openmaac.channels.models import LineChannel
from openmaac.channels.service import line_api_base_url
from openmaac.db.base import UTCDateTime, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.db.engine import get_database, json_dumps
from openmaac.db.group_commit import REQUEST_WRITES, group_commit
from openmaac.jobs.models import Job
from openmaac.jobs.queue import IDLE_POLL_SECONDS
from openmaac.messaging.models import MessageEvent
from openmaac.sms_plus import engine
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpMessage, PnpMessageRow, PnpSetting
from openmaac.sms_plus.settings import DISPATCH_SAFETY_NET_SECONDS, minutes
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import render as render_template
from openmaac.web.errors import APIError
from openmaac.webhooks.service import pg_targets_rows, remember_targets

_S = PnpSetting.__table__
_M = PnpMessage.__table__
_E = MessageEvent.__table__
_C = LineChannel.__table__
_T = MessageTemplate.__table__
_J = Job.__table__
_SETTING_WIDTH = len(_S.c)

# everything a push's checks read, in one statement: the scenario; the event, the channel and
# the LINE push template come back as NULLs when missing (after the scenario's columns, in this order)
_LOOKUP = DriverStatement(
    select(*_S.c, _E.c.id.label("found_event_id"), _C.c.api_base_url, _C.c.access_token, _C.c.channel_id,
           _T.c.id.label("found_template_id"), _T.c.parameters.label("template_parameters"))
    .select_from(_S.outerjoin(_E, and_(_E.c.organization_id == _S.c.organization_id,
                                       _E.c.id == bindparam("event")))
                 .outerjoin(_C, _C.c.organization_id == _S.c.organization_id)
                 .outerjoin(_T, and_(_T.c.organization_id == _S.c.organization_id,
                                     _T.c.id == bindparam("template"))))
    .where(_S.c.organization_id == bindparam("org"), _S.c.id == bindparam("setting"))
    .limit(1))

# acceptance of a push whose first step is PNP (SQLite: one statement each; the hold is points.hold's)
_INSERT_MESSAGE = DriverStatement(insert(_M).returning(_M.c.id))
_INSERT_JOB = DriverStatement(insert(_J))
_MESSAGE_COLUMNS = [column.name for column in _M.c]
_UNSET = {name: None for name in _MESSAGE_COLUMNS}  # the columns a new message leaves NULL

# the PNP answer: the message moves on only from pnp_preparing (a delivery webhook, or a
# fallback timer after the LINE step's grace, may have moved it first); the row as it is now
_ANSWER = DriverStatement(
    update(_M).where(_M.c.id == bindparam("b_id"), _M.c.pnp_status == svc.PNP_PREPARING)
    .values(status=bindparam("b_status"), pnp_status=bindparam("b_status"),
            updated_at=bindparam("b_now", type_=UTCDateTime()))
    .returning(*_M.c))
# the safety net: by its unique key (SQLite plans an equality on the unique index by it)
_DROP_JOB = DriverStatement(delete(_J).where(_J.c.unique_key == bindparam("key"), _J.c.status == "ready"))
# PostgreSQL: the PNP answers of a group-commit batch at once (``_record_many_pg``), in one
# statement of data-modifying CTEs (every one runs, read or not): the safety nets by their keys
# (the unique index), each message from pnp_preparing only (by its id in ``:ids`` too: joined
# only to the unnested rows, the messages were read by scanning the whole table, up to some ten
# thousand rows), the rows as updated
_PG_ANSWERS = DriverStatement(text(f"""
WITH o AS (SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[])) AS o(id, status)),
job AS (DELETE FROM jobs WHERE unique_key = ANY(CAST(:keys AS text[])) AND status = 'ready' RETURNING id),
msg AS (UPDATE pnp_messages m SET status = o.status, pnp_status = o.status, updated_at = :b_now FROM o
        WHERE m.id = o.id AND m.id = ANY(CAST(:ids AS bigint[])) AND m.pnp_status = '{svc.PNP_PREPARING}'
        RETURNING m.*)
SELECT {", ".join(f"msg.{column.name}" for column in _M.c)} FROM msg ORDER BY msg.id""").bindparams(
    bindparam("b_now", type_=UTCDateTime())).columns(*_M.c))


@functools.cache
def _pg_accept(with_rate: bool) -> DriverStatement:
    """PostgreSQL: a PNP-first push's acceptance in ONE statement of data-modifying CTEs: the
    points hold (balance debit and ledger row, as ``points.hold``), the message (only when the
    hold succeeded or none is needed), its safety-net and fallback jobs, and, when this process
    needs a fresh batch of the channel's LINE rate slots, that batch (``line_rate.PG_TAKE``,
    only with a message). No row: too few points, nothing written. Built on first use, when
    every table's column types are known (the casts type the bare parameters of the SELECT)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    names = [name for name in _MESSAGE_COLUMNS if name in _ACCEPTED_COLUMNS]
    values = ", ".join(f"CAST(:m_{name} AS {_M.c[name].type.compile(dialect=dialect)})" for name in names)
    rate = ""
    answer = "SELECT msg.id FROM msg"
    if with_rate:
        rate = f",\nrate AS ({line_rate.pg_take_if('SELECT 1 FROM msg')})"
        answer = "SELECT msg.id, rate.next_free, rate.db_now FROM msg LEFT JOIN rate ON true"
    return DriverStatement(text(f"""
WITH bal AS (
  UPDATE sms_point_balances SET balance = balance - :amount, updated_at = :now
  WHERE organization_id = :org AND :amount > 0 AND balance >= :amount RETURNING balance),
ent AS (
  INSERT INTO sms_point_entries (organization_id, kind, amount, balance_after, pnp_message_id, note, created_at)
  SELECT :org, 'hold', -:amount, bal.balance, NULL, :note, :now FROM bal RETURNING id),
msg AS (
  INSERT INTO pnp_messages ({", ".join(names)})
  SELECT {values} WHERE :amount = 0 OR EXISTS (SELECT 1 FROM bal) RETURNING id),
job AS (
  INSERT INTO jobs (kind, payload, organization_id, run_at, priority, max_attempts, unique_key, status, attempts,
                    created_at)
  SELECT '{engine.DISPATCH}', jsonb_build_object('message_id', msg.id), :org, :dispatch_at, 100, 10,
         '{engine.DISPATCH}:' || msg.id, 'ready', 0, :now FROM msg
  UNION ALL
  SELECT '{engine.FALLBACK}', jsonb_build_object('message_id', msg.id), :org, :fallback_at, 100, 10,
         '{engine.FALLBACK}:' || msg.id, 'ready', 0, :now FROM msg
  RETURNING id){rate}
{answer}"""))


@functools.cache
def _pg_accept_many() -> DriverStatement:
    """PostgreSQL: the PNP-first pushes of a group-commit batch accepted together, in ONE
    statement (``_accept_pnp_many_pg``): the messages (``:rows``, JSON objects of their columns
    and ``amount``, their points to hold), with their ids drawn first; per organisation ONE
    balance debit of all its holds, made only when the balance covers them all, and a ledger row
    per hold with the balance after it, in order; the messages of the organisations debited (or
    with nothing to hold), their safety-net and fallback jobs; and the LINE rate slots of the
    channels this process needs (``line_rate.leases_in_statement``). One row per message
    accepted (its place in ``:rows`` and id), then one per channel leased, then the webhook
    targets of each organisation (``:orgs``; what the messages' first status events would
    otherwise read in a round trip of their own, webhooks.pg_targets_rows). A message of an
    organisation whose balance did not cover the batch's holds is not written: its caller
    accepts it alone, as before."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    names = [name for name in _MESSAGE_COLUMNS if name in _ACCEPTED_COLUMNS]
    record = ", ".join(f"{name} {_M.c[name].type.compile(dialect=dialect)}" for name in names)
    columns = ", ".join(names)
    return DriverStatement(text(f"""
WITH v AS MATERIALIZED (
  SELECT nextval(pg_get_serial_sequence('pnp_messages', 'id')) AS id, v.*
  FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({record}, amount integer))
       WITH ORDINALITY AS v({columns}, amount, ord)),
need AS (SELECT organization_id AS org, sum(amount) AS total FROM v GROUP BY organization_id),
bal AS (
  UPDATE sms_point_balances b SET balance = b.balance - need.total, updated_at = :now FROM need
  WHERE b.organization_id = need.org AND need.total > 0 AND b.balance >= need.total
  RETURNING b.organization_id AS org, b.balance + need.total AS before),
ok AS MATERIALIZED (
  SELECT v.*, bal.before - sum(v.amount) OVER (PARTITION BY v.organization_id ORDER BY v.ord) AS balance_after
  FROM v LEFT JOIN bal ON bal.org = v.organization_id
  WHERE bal.org IS NOT NULL OR v.organization_id IN (SELECT org FROM need WHERE total = 0)),
ent AS (
  INSERT INTO sms_point_entries (organization_id, kind, amount, balance_after, pnp_message_id, note, created_at)
  SELECT organization_id, 'hold', -amount, balance_after, NULL, :note, :now FROM ok WHERE amount > 0 ORDER BY ord),
msg AS (INSERT INTO pnp_messages (id, {columns}) SELECT id, {columns} FROM ok ORDER BY ord),
job AS (
  INSERT INTO jobs (kind, payload, organization_id, run_at, priority, max_attempts, unique_key, status, attempts,
                    created_at)
  SELECT '{engine.DISPATCH}', jsonb_build_object('message_id', id), organization_id, :dispatch_at, 100, 10,
         '{engine.DISPATCH}:' || id, 'ready', 0, :now FROM ok
  UNION ALL
  SELECT '{engine.FALLBACK}', jsonb_build_object('message_id', id), organization_id, fallback_at, 100, 10,
         '{engine.FALLBACK}:' || id, 'ready', 0, :now FROM ok),
rate AS ({line_rate.PG_TAKE_MANY})
SELECT 0, ok.ord, ok.id, NULL, NULL, NULL, CAST(NULL AS json), CAST(NULL AS text) FROM ok
UNION ALL
SELECT 1, 0, NULL, rate.channel_id, rate.next_free, rate.db_now, NULL, NULL FROM rate
UNION ALL
SELECT 2, 0, tg.org, NULL, NULL, NULL, tg.targets, tg.tz FROM ({pg_targets_rows(":orgs")}) AS tg(org, targets, tz)
ORDER BY 1, 2""").bindparams(bindparam("now", type_=UTCDateTime()), bindparam("dispatch_at", type_=UTCDateTime())))


# the columns acceptance writes (svc.message_values names them all, whatever the message)
_ACCEPTED_COLUMNS = frozenset(_MESSAGE_COLUMNS) - {"id", "line_push_delivered_at", "line_push_error_category",
                                                   "line_uid", "pnp_delivered_at", "sms_delivered_at",
                                                   "sms_error_category", "sms_provider", "sms_provider_message_id",
                                                   "sms_reference", "sms_retry_until", "whatsapp_message_id",
                                                   "whatsapp_delivered_at", "whatsapp_error_category",
                                                   "send_started_at"}


def _setting_of(row: Any) -> PnpSetting | None:
    if row is None:
        return None
    return engine.plain_setting(row[:_SETTING_WIDTH])


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
            row = _LOOKUP.execute(conn, {"org": org.id, "setting": setting_id,
                                         "event": svc.event_id_candidate(raw_event), "template": template_id}).first()
    except DBAPIError as exc:
        raise svc.text_error(svc.EMIT_FAILED, 503) from exc
    setting = _setting_of(row)
    if setting is None or setting.status != "enable":
        raise svc.text_error(svc.NOT_FOUND)
    assert row is not None
    found_event, api_base_url, access_token, found_channel, found_template, template_parameters = \
        row[_SETTING_WIDTH:]
    if data is None:
        raise svc.required("data")
    event_id = svc.check_event_id(raw_event, lambda event: found_event is not None and int(found_event) == event)
    templates = {int(found_template): list(template_parameters or [])} if found_template is not None else {}
    recipient = svc.parse_recipient(None, org.id, setting, data, allow_line_push=True, templates=templates)
    if setting.pnp_enabled and setting.pnp_approval_status != "approved":
        raise svc.text_error(svc.NOT_APPROVED)
    channel_id = str(found_channel) if found_channel is not None else None
    # the usual push: PNP first, on a channel, without join links (which need the message's id
    # before the content): the prebuilt acceptance; anything else the general one
    pnp_first = channel_id is not None and svc.initial_status(setting, recipient, line_push=True)["status"] \
        == svc.PNP_PREPARING and svc.JOIN_LINK not in svc.placeholder_names(setting.pnp_messages)
    writes = group_commit(database, REQUEST_WRITES)
    accepted: PnpMessageRow | PnpMessage | APIError
    try:
        if pnp_first and not database.is_sqlite:  # accepted with the others of its batch, in one statement
            accepted = writes.run_batched(_accept_pnp_many_pg,
                                          _PnpToAccept(org.id, setting, recipient, event_id, str(channel_id)))
        else:
            accepted = writes.run(
                lambda session: _accept_pnp(session, org.id, setting, recipient, event_id, str(channel_id))
                if pnp_first else _accept(session, org.id, setting, recipient, event_id, channel_id))
    except DBAPIError as exc:
        raise svc.text_error(svc.EMIT_FAILED, 503) from exc
    if isinstance(accepted, APIError):
        raise accepted
    message = accepted
    if message.status in (svc.SMS_PREPARING, svc.WHATSAPP_PREPARING):
        return {"id": message.id, "result": engine.RESULT_SUCCESS}
    if not pnp_first:
        assert isinstance(message, PnpMessage)
        # the message and scenario as just committed: no re-read
        return {"id": message.id, "result": engine.run_line_steps(message.id, known=(message, setting),
                                                                   safety_net=True)}
    assert isinstance(message, PnpMessageRow)
    base_url = line_api_base_url(api_base_url)
    return {"id": message.id, "result": _pnp(message, setting, base_url, str(access_token), str(channel_id))}


def _accept(session: Session, organization_id: int, setting: PnpSetting, recipient: svc.Recipient,
            event_id: int | None, channel_id: str | None) -> PnpMessage | APIError:
    """One push's acceptance in a group commit's transaction, the general way (a LINE push
    first, join links, no channel...). A refusal (too few points) is returned, not raised: it
    wrote nothing, and the other pushes of the batch commit."""
    try:
        message = svc.create_messages(session, organization_id, setting, [recipient], event_id, line_push=True,
                                      safety_net=True, hold_first=True)[0]
    except APIError as refused:
        return refused
    if channel_id is not None and message.status == svc.PNP_PREPARING:
        # the PNP call's rate slot, leased in this transaction rather than one of its own
        line_rate.prefetch(session.connection(), get_database(), channel_id, "pnp_push")
    return message


def _accept_pnp(session: Session, organization_id: int, setting: PnpSetting, recipient: svc.Recipient,
                event_id: int | None, channel_id: str) -> PnpMessageRow | APIError:
    """A PNP-first push's acceptance in a group commit's transaction, with prebuilt statements:
    the same rows as ``create_messages`` (points hold and its ledger row, the message, its
    safety-net and fallback jobs, the first status event) and the PNP call's rate slot."""
    conn = session.connection()
    database = get_database()
    now = utcnow()
    values = svc.message_values(organization_id, setting, recipient, event_id, line_push=True, upload_id=None,
                                now=now, fallback_at=now + minutes(setting.fallback_period))
    amount = recipient.sms_segments
    note = "1 SMS+ message(s)"  # as create_messages writes it for one recipient
    jobs_at = (now + timedelta(seconds=DISPATCH_SAFETY_NET_SECONDS), values["fallback_at"])
    if conn.dialect.name == "postgresql":
        with line_rate.lease_in_statement(database, channel_id, "pnp_push") as taking:
            row = _pg_accept(taking is not None).execute(conn, {
                "org": organization_id, "amount": amount, "note": note, "now": now, "dispatch_at": jobs_at[0],
                "fallback_at": jobs_at[1], **{f"m_{name}": value for name, value in values.items()},
                "m_params": json_dumps(values["params"]), **(taking.params if taking is not None else {})}).first()
            if row is None:
                return svc.text_error(svc.NO_POINTS)
            if taking is not None and row[1] is not None:
                taking.taken(row[1], row[2])
        message_id = int(row[0])
    else:
        from openmaac.sms_plus import points

        if amount and not points.hold(session, organization_id, amount, note=note):
            return svc.text_error(svc.NO_POINTS)
        message_id = int(_INSERT_MESSAGE.execute(conn, values).scalar_one())
        for kind, run_at in zip((engine.DISPATCH, engine.FALLBACK), jobs_at, strict=True):
            _INSERT_JOB.execute(conn, {
                "kind": kind, "payload": {"message_id": message_id}, "organization_id": organization_id,
                "run_at": run_at, "priority": 100, "max_attempts": 10, "unique_key": f"{kind}:{message_id}",
                "status": "ready", "attempts": 0, "created_at": now})
        # the PNP call's rate slot, leased in this transaction rather than one of its own
        line_rate.prefetch(conn, database, channel_id, "pnp_push")
    if min(jobs_at) <= now + timedelta(seconds=IDLE_POLL_SECONDS):
        session.info["jobs_enqueued"] = True  # as enqueue_many: wake the worker only for a job due soon
    message = PnpMessageRow(**{**_UNSET, **values, "id": message_id})
    engine.emit_status(session, setting, [message])
    return message


@dataclass(frozen=True)
class _PnpToAccept:
    """A PNP-first push to accept on PostgreSQL with the others of its group-commit batch."""

    organization_id: int
    setting: PnpSetting
    recipient: svc.Recipient
    event_id: int | None
    channel_id: str


def _accept_pnp_many_pg(session: Session, pushes: list[_PnpToAccept]) -> list[PnpMessageRow | APIError]:
    """PostgreSQL: the PNP-first pushes of a batch accepted as ``_accept_pnp`` accepts one, in
    one statement (``_pg_accept_many``). A push of an organisation whose balance did not cover
    all of the batch's holds is then accepted alone by ``_accept_pnp``, in order, so the points
    go first come, first served exactly as one by one."""
    conn = session.connection()
    database = get_database()
    now = utcnow()
    dispatch_at = now + timedelta(seconds=DISPATCH_SAFETY_NET_SECONDS)
    values = [svc.message_values(push.organization_id, push.setting, push.recipient, push.event_id,
                                 line_push=True, upload_id=None, now=now,
                                 fallback_at=now + minutes(push.setting.fallback_period)) for push in pushes]
    rows = json_dumps([{**{name: value for name, value in row.items() if name in _ACCEPTED_COLUMNS},
                        "amount": push.recipient.sms_segments} for push, row in zip(pushes, values, strict=True)])
    with line_rate.leases_in_statement(database, (push.channel_id for push in pushes), "pnp_push") as (
            takings, rate_params):
        answer = _pg_accept_many().execute(conn, {
            "rows": rows, "now": now, "dispatch_at": dispatch_at, "note": "1 SMS+ message(s)",
            "orgs": sorted({push.organization_id for push in pushes}), **rate_params}).rows
        accepted = {int(ord_) - 1: int(message_id) for part, ord_, message_id, *_rest in answer if part == 0}
        for part, _ord, org_id, channel_id, next_free, db_now, targets, tz_name in answer:
            if part == 1:
                takings[channel_id].taken(next_free, db_now)
            elif part == 2:
                remember_targets(session, int(org_id), targets, tz_name)
    results: list[PnpMessageRow | APIError] = []
    for index, (push, row) in enumerate(zip(pushes, values, strict=True)):
        if index in accepted:
            message = PnpMessageRow(**{**_UNSET, **row, "id": accepted[index]})
            engine.emit_status(session, push.setting, [message])
            results.append(message)
        else:  # its organisation's balance did not cover the batch: alone, in order
            results.append(_accept_pnp(session, push.organization_id, push.setting, push.recipient, push.event_id,
                                       push.channel_id))
    if accepted and min(dispatch_at, *(row["fallback_at"] for row in values)) <= now + timedelta(
            seconds=IDLE_POLL_SECONDS):
        session.info["jobs_enqueued"] = True  # as enqueue_many: wake the worker only for a job due soon
    return results


def _pnp(message: PnpMessageRow, setting: PnpSetting, base_url: str, token: str, channel_id: str) -> str:
    """The PNP step of a just-accepted push: the call, then its answer recorded."""
    pnp_messages = render_template(list(setting.pnp_messages or []), dict((message.params or {}).get("pnp") or {}),
                                   None)
    tag = message.delivery_tag or f"openmaac-pnp-{message.id}-tag-padding"
    outcome = engine.line_call(base_url, token, "/bot/pnp/push", {"to": message.phone_hash, "messages": pnp_messages},
                               {"X-Line-Delivery-Tag": tag}, "pnp_push", channel_id, to=message.phone_hash,
                               messages=pnp_messages, delivery_tag=tag)
    status = svc.PNP_ACCEPTED if outcome.ok else svc.PNP_FAILED
    database = get_database()
    writes = group_commit(database, REQUEST_WRITES)
    if database.is_sqlite:
        writes.run(lambda session: _record(session, message.id, setting, status))
    else:  # recorded with the other answers of its batch, in one statement
        writes.run_batched(_record_many_pg, (message.id, setting, status))
    return engine.result_of(outcome)


def _record(session: Session, message_id: int, setting: PnpSetting, status: str) -> None:
    """SQLite: the PNP answer, in a group commit's transaction: the status (from pnp_preparing
    only), its events, the safety net dropped, and what the state machine does after a LINE
    step (PostgreSQL records a batch's answers together: ``_record_many_pg``)."""
    conn = session.connection()
    _DROP_JOB.execute(conn, {"key": f"{engine.DISPATCH}:{message_id}"})
    row = _ANSWER.execute(conn, {"b_id": message_id, "b_status": status, "b_now": utcnow()}).first()
    if row is None:
        return  # moved on meanwhile: nothing to record (as the general path)
    _after_answer(session, [(PnpMessageRow(*row), setting)])  # the row as updated (a plain object)


def _record_many_pg(session: Session, answers: list[tuple[int, PnpSetting, str]]) -> list[None]:
    """PostgreSQL: the PNP answers ``(message id, scenario, status)`` of a batch recorded as
    ``_record`` records one, with one statement for all (``_PG_ANSWERS``)."""
    settings = {message_id: setting for message_id, setting, _status in answers}
    rows = _PG_ANSWERS.execute(session.connection(), {
        "ids": [message_id for message_id, _setting, _status in answers],
        "statuses": [status for _message_id, _setting, status in answers],
        "keys": [f"{engine.DISPATCH}:{message_id}" for message_id, _setting, _status in answers],
        "b_now": utcnow()}).rows
    _after_answer(session, [(message, settings[message.id]) for message in (PnpMessageRow(*row) for row in rows)])
    return [None] * len(answers)


def _after_answer(session: Session, recorded: list[tuple[PnpMessageRow, PnpSetting]]) -> None:
    """What the state machine does after the PNP answers ``recorded`` (messages as updated, with
    their scenarios): their events, then each one's end, or its fallback timer woken if due."""
    by_setting: dict[int, tuple[PnpSetting, list[PnpMessageRow]]] = {}
    for message, setting in recorded:
        by_setting.setdefault(setting.id, (setting, []))[1].append(message)
    for setting, messages in by_setting.values():
        engine.emit_status(session, setting, messages)
    ended: list[PnpMessageRow] = []
    for message, setting in recorded:
        if engine.nothing_left(message, setting):
            ended.append(message)
        else:
            engine.wake_overdue_fallback(session, message)
    if ended:
        engine.finish_many(session, ended)  # ended here (their points and timers; written by statement)

"""The SMS+ delivery state machine, on the durable job queue.

LINE push (when the scenario has it and the phone matches exactly one contact) -> LINE
notification message (PNP, ``POST /bot/pnp/push`` with the hashed number and
``X-Line-Delivery-Tag``; delivered when LINE's ``delivery`` webhook brings the tag back) ->
SMS after ``fallback_period`` minutes without delivery (temporary errors retried until the
retry window closes; ``sms_callback_timeout`` when the provider never reports).

Jobs: ``sms_plus.dispatch`` (the LINE steps; for a push the request runs them inline and the
job is only a safety net), ``sms_plus.fallback`` (the timer: SMS or the end), and
``sms_plus.sms_timeout`` (the callback deadline). Every status change is one transaction that
also updates ``updated_at``, the scenario's metric, and emits ``pnp.status_updated`` (MAAC)
and ``sms_plus.status.update`` (CDH). Handlers are idempotent: each step re-reads the message
and acts only from the state it expects. No network call happens inside a transaction.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Connection, bindparam, delete, select, text, update
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class

from openmaac.auth.models import Organization
from openmaac.channels.models import LineChannel
from openmaac.channels.service import line_api_base_url
from openmaac.channels.sms.base import DeliveryReport, DeliveryStatus, ErrorCategory
from openmaac.contacts.models import Contact
from openmaac.db.base import UTCDateTime, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.db.engine import Database, get_database, json_dumps
from openmaac.db.group_commit import GroupCommit, group_commit
from openmaac.jobs.models import Job
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, RetryLater, handler
from openmaac.sms_plus import points
from openmaac.sms_plus import service as svc
from openmaac.sms_plus import whatsapp as wa
from openmaac.sms_plus.models import AnyPnpMessage, PnpMessage, PnpMessageRow, PnpSetting
from openmaac.sms_plus.settings import SMS_RETRY_INTERVAL_MINUTES, minutes
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import render as render_template
from openmaac.web.times import render, zone
from openmaac.webhooks.events import Event, emit_many
from openmaac.webhooks.service import pg_targets_columns, remember_targets

log = logging.getLogger("openmaac.sms_plus")
PROVIDER_MESSAGE_ID_MAX = 128  # the width of pnp_messages.sms_provider_message_id

DISPATCH = "sms_plus.dispatch"
FALLBACK = "sms_plus.fallback"
SMS_TIMEOUT = "sms_plus.sms_timeout"
LINE_STEP_GRACE_SECONDS = 60.0  # a LINE step not finished after this long died with its worker

SMS_FINAL = (svc.SMS_DELIVERED, svc.SMS_FAILED, svc.SMS_UNDELIVERABLE, svc.SMS_BLOCKED, svc.SMS_CALLBACK_TIMEOUT)
RETRY_NAMESPACE = uuid.UUID("6f1c2a52-5d0e-4a57-9d1e-4f5c1c6b9a10")

# push API result strings (MAAC OpenAPI v1.1.48)
RESULT_SUCCESS = "success"
RESULT_MAINTENANCE = "we're under maintenance"
RESULT_FAILED = "failed to send messages"
RESULT_TOKEN = "access token expired"
RESULT_TIMEOUT = "timeout"


# --- emitting -------------------------------------------------------------------------------------

def status_data(message: AnyPnpMessage, setting: PnpSetting, tz: Any) -> dict[str, Any]:
    """The ``data`` of ``pnp.status_updated`` / ``sms_plus.status.update`` (MAAC OpenAPI v1.1.48, in order)."""
    return {
        "pnp_setting_id": setting.id,
        "pnp_setting_name": setting.name,
        "pnp_message_id": message.id,
        "event_id": message.event_id,
        "customized_id": message.customized_id,
        "phone_number": message.phone_number,
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
    } | (svc.whatsapp_fields(message, tz) if setting.whatsapp_enabled or message.whatsapp_status else {})


def _tz(session: Session, organization_id: int) -> Any:
    cache: dict[int, Any] = session.info.setdefault("sms_plus_tz", {})
    if organization_id not in cache:
        name = session.scalar(select(Organization.timezone).where(Organization.id == organization_id))
        cache[organization_id] = zone(name or "Asia/Taipei")
    return cache[organization_id]


def emit_status(session: Session, setting: PnpSetting, messages: Iterable[AnyPnpMessage]) -> None:
    items = list(messages)
    if not items:
        return

    def events() -> Iterator[Event]:
        # consumed only when the organisation has webhook endpoints (emit_many looks first)
        tz = _tz(session, setting.organization_id)
        for message in items:
            data = status_data(message, setting, tz)
            key = f"pnp:{message.id}"
            yield Event("pnp.status_updated", data, key)
            yield Event("sms_plus.status.update", data, key)

    emit_many(session, setting.organization_id, events())


# --- transitions ----------------------------------------------------------------------------------

# Built once with bound parameters (each state change runs them; building them cost more
# than running them)
_M = PnpMessage.__table__
_MESSAGE_ROW = ", ".join(column.name for column in _M.c)  # a PnpMessageRow's columns, in order
_MESSAGE = select(PnpMessage).where(PnpMessage.id == bindparam("id"))
_MESSAGE_LOCKED = _MESSAGE.with_for_update()
_CHANNEL = select(LineChannel.__table__.c.api_base_url, LineChannel.__table__.c.access_token,
                  LineChannel.__table__.c.channel_id).where(LineChannel.__table__.c.organization_id == bindparam("org"))


def _line_endpoint(session: Session, organization_id: int) -> tuple[str, str, str] | None:
    """The organisation's LINE API base URL, access token and channel id (one Core read)."""
    row = session.connection().execute(_CHANNEL, {"org": organization_id}).first()
    if row is None:
        return None
    return line_api_base_url(row[0]), str(row[1]), str(row[2])


def load_message(session: Session, message_id: int, *, lock: bool = False,
          setting: PnpSetting | None = None) -> tuple[PnpMessage, PnpSetting] | None:
    """The message (locked on PostgreSQL) and its scenario (``setting`` when the caller has it:
    only read, never changed, so a copy loaded earlier serves)."""
    locked = lock and session.get_bind().dialect.name == "postgresql"
    message = session.scalar(_MESSAGE_LOCKED if locked else _MESSAGE, {"id": message_id})
    if message is None:
        return None
    if setting is None or setting.id != message.pnp_setting_id:
        setting = session.get(PnpSetting, message.pnp_setting_id)
    if setting is None:
        return None
    return message, setting


def change(session: Session, message: PnpMessage, setting: PnpSetting, **fields: Any) -> None:
    """Apply a status change: ``updated_at`` and both webhooks (the row is written with the
    transaction's flush; the scenario's metric is counted from the messages when read)."""
    for key, value in fields.items():
        setattr(message, key, value)
    message.updated_at = utcnow()
    emit_status(session, setting, [message])


def delivered(message: AnyPnpMessage) -> bool:
    return (message.line_push_status == svc.LINE_PUSH_DELIVERED or message.pnp_status == svc.PNP_DELIVERED
            or message.sms_status == svc.SMS_DELIVERED or message.whatsapp_status == svc.WHATSAPP_DELIVERED)


def finish(session: Session, message: PnpMessage, setting: PnpSetting) -> None:
    """The message reached its end: release unused points, drop its waiting timers."""
    finish_many(session, [message])


def _timer_keys(message: AnyPnpMessage) -> list[str]:
    keys = [f"{FALLBACK}:{message.id}", f"{FALLBACK}:{message.id}:whatsapp", f"{FALLBACK}:{message.id}:line",
            f"{FALLBACK}:{message.id}:single"]
    if message.sms_reference:
        keys += [f"{FALLBACK}:{message.id}:{message.sms_reference}", f"{SMS_TIMEOUT}:{message.sms_reference}"]
    return keys


def finish_many(session: Session, messages: Iterable[AnyPnpMessage]) -> None:
    """Messages that reached their end: release their unused points (one balance update per
    organisation), drop their waiting timers (one look-up and one delete). A ``PnpMessage`` is
    written with the session's flush; a ``PnpMessageRow`` (no ORM object) by a statement here."""
    rows = _end(session, messages)
    if rows:
        _MARK_FINISHED.execute_many(session.connection(), [{"b_id": message_id} for message_id in rows])


def _end(session: Session, messages: Iterable[AnyPnpMessage]) -> list[int]:
    """``finish_many`` but for writing the ``PnpMessageRow`` messages ended (``finished``,
    ``points_held``), whose ids it returns: a caller writing those rows anyway writes them too."""
    releases, keys, rows = _ending(messages)
    for organization_id, items in releases.items():
        points.release_many(session, organization_id, items)
    _delete_waiting_jobs(session, keys)
    return rows


def _ending(messages: Iterable[AnyPnpMessage]) -> tuple[dict[int, list[tuple[int | None, int]]], list[str], list[int]]:
    """What ending these messages takes, their fields set (``finished``, ``points_held``): the
    points to release per organisation ``(message id, amount)``, the keys of the timers to
    drop, the ids of the ``PnpMessageRow`` messages (which no flush writes)."""
    releases: dict[int, list[tuple[int | None, int]]] = {}
    keys: list[str] = []
    rows: list[int] = []
    for message in messages:
        if message.finished:
            continue
        message.finished = True
        if message.points_held:
            releases.setdefault(message.organization_id, []).append((message.id, message.points_held))
            message.points_held = 0
        if isinstance(message, PnpMessageRow):
            rows.append(message.id)
        # its fallback timer (and SMS callback deadline) would only find it finished: spare the
        # queue those runs (a timer running right now is left to complete itself)
        keys += _timer_keys(message)
    return releases, keys, rows


def _delete_waiting_jobs(session: Session, keys: list[str]) -> None:
    """Delete the jobs under these unique keys that are waiting (not running).

    On SQLite, one equality per key (an executemany of one prepared statement): SQLite, which
    keeps no statistics, answered ``unique_key IN (...) AND status = 'ready'`` with a long list
    through the (status, run_at, priority) index, i.e. by scanning every waiting job (the
    100,000 fallback timers of a campaign), while an equality is always planned by the unique
    index. On PostgreSQL one statement (planned by the unique index); never a job being claimed."""
    if not keys:
        return
    conn = session.connection()  # no autoflush: the jobs table has no ORM objects here
    if conn.dialect.name == "postgresql":
        for start in range(0, len(keys), 500):
            _DELETE_READY_BY_KEYS.execute(conn, {"keys": json_dumps(keys[start:start + 500])})
        return
    _DELETE_READY_BY_ONE_KEY.execute_many(conn, [{"key": key} for key in keys])


# a plain message row (no ORM object) that finish_many ended
_MARK_FINISHED = DriverStatement(update(PnpMessage.__table__).where(PnpMessage.__table__.c.id == bindparam("b_id"))
                                 .values(finished=True, points_held=0))
# on the driver's cursor (db/driver.py); PostgreSQL's keys as one JSON array (a prebuilt
# statement has no expanding IN), still planned by the unique index
_DELETE_READY_BY_ONE_KEY = DriverStatement(delete(Job.__table__).where(
    Job.__table__.c.unique_key == bindparam("key"), Job.__table__.c.status == "ready"))
_DELETE_READY_BY_KEYS = DriverStatement(text(
    "DELETE FROM jobs WHERE unique_key = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(:keys AS jsonb)))) "
    "AND status = 'ready'"))


def sms_possible(message: AnyPnpMessage, setting: PnpSetting) -> bool:
    return bool(setting.fallback_enabled and not message.hashed_input and message.sms_text is not None)


def whatsapp_possible(message: AnyPnpMessage, setting: PnpSetting) -> bool:
    return svc.whatsapp_template(setting, message.params, message.hashed_input) is not None


def line_pending(message: AnyPnpMessage) -> bool:
    return message.line_push_status == svc.LINE_PUSH_PREPARING or message.pnp_status in (
        svc.PNP_PREPARING, svc.PNP_ACCEPTED)


def nothing_left(message: AnyPnpMessage, setting: PnpSetting) -> bool:
    return delivered(message) or (not line_pending(message) and not sms_possible(message, setting)
                                  and not whatsapp_possible(message, setting))


def finish_if_nothing_left(session: Session, message: PnpMessage, setting: PnpSetting) -> None:
    if nothing_left(message, setting):
        finish(session, message, setting)


# --- LINE calls -----------------------------------------------------------------------------------

@dataclass
class LineOutcome:
    ok: bool
    status_code: int | None = None
    body: Any = None
    timeout: bool = False


def line_call(base_url: str, token: str, path: str, body: dict[str, Any], headers: dict[str, str],
               method_name: str, channel_id: str = "", **client_kwargs: Any) -> LineOutcome:
    """Call LINE through ``LineClient`` (shared per-channel rate limit, LINE's retry policy)."""
    from openmaac.channels import line_client

    client_cls = line_client.LineClient
    if hasattr(client_cls, method_name):
        api_error = getattr(line_client, "LineAPIError", None)
        timeout_error = getattr(line_client, "LineTimeout", None)
        options: dict[str, Any] = {}
        try:
            from openmaac.channels import line_rate

            options["limiter"] = line_rate.limiter(get_database(), channel_id)
        except (ImportError, AttributeError, TypeError):
            pass
        try:
            with client_cls(base_url, token, **options) as client:
                getattr(client, method_name)(**client_kwargs)
            return LineOutcome(ok=True)
        except ValueError as exc:  # the client refused the messages (invalid after rendering)
            return LineOutcome(ok=False, status_code=400, body={"message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - classified below
            if timeout_error is not None and isinstance(exc, timeout_error):
                return LineOutcome(ok=False, timeout=True)
            if api_error is not None and isinstance(exc, api_error):
                return LineOutcome(ok=False, status_code=exc.status_code, body=exc.body)
            if isinstance(exc, httpx.TimeoutException):
                return LineOutcome(ok=False, timeout=True)
            if isinstance(exc, httpx.HTTPError):
                return LineOutcome(ok=False, status_code=503, body={"message": str(exc)})
            raise
    try:
        response = httpx.post(f"{base_url.rstrip('/')}{path}", json=body, timeout=10.0,
                              headers={"Authorization": f"Bearer {token}", **headers})
    except httpx.TimeoutException:
        return LineOutcome(ok=False, timeout=True)
    except httpx.HTTPError as exc:
        return LineOutcome(ok=False, status_code=503, body={"message": str(exc)})
    if response.status_code == 200:
        return LineOutcome(ok=True)
    try:
        parsed = response.json()
    except ValueError:
        parsed = response.text
    return LineOutcome(ok=False, status_code=response.status_code, body=parsed)


def result_of(outcome: LineOutcome) -> str:
    if outcome.ok:
        return RESULT_SUCCESS
    if outcome.timeout:
        return RESULT_TIMEOUT
    if outcome.status_code == 401:
        return RESULT_TOKEN
    if outcome.status_code is not None and outcome.status_code >= 500:
        return RESULT_MAINTENANCE
    return RESULT_FAILED


def _monthly_limit(outcome: LineOutcome) -> bool:
    message = outcome.body.get("message", "") if isinstance(outcome.body, dict) else str(outcome.body or "")
    return outcome.status_code == 429 and "monthly limit" in message.lower()


# --- the LINE steps (push API inline; multicast through the job) -----------------------------------

def run_line_steps(message_id: int, *, known: tuple[PnpMessage, PnpSetting] | None = None,
                   safety_net: bool = False) -> str:
    """LINE push then PNP, each from the state it expects. Returns the push API's result.

    ``known``: the message and scenario as the push request just saved them (spares reading
    them again). ``safety_net``: the push runs the steps itself, so the last transaction also
    removes the job that would have re-run them had the request died."""
    database = get_database()
    with database.read() as session:
        loaded = known or load_message(session, message_id)
        if loaded is None:
            return RESULT_FAILED
        message, setting = loaded
        endpoint = _line_endpoint(session, message.organization_id)
        if endpoint is None:
            return RESULT_FAILED
        base_url, token, channel_id = endpoint
        contacts: list[tuple[str | None, str]] = []
        template_messages: list[dict[str, Any]] | None = None
        if message.line_push_status == svc.LINE_PUSH_PREPARING and not message.hashed_input:
            contacts = [(row[0], row[1]) for row in session.execute(
                select(Contact.line_uid, Contact.status).where(
                    Contact.organization_id == message.organization_id, Contact.mobile == message.phone_number)
                .limit(2))]
            if message.line_push_template_id is not None:
                template_messages = session.scalar(select(MessageTemplate.messages).where(
                    MessageTemplate.organization_id == message.organization_id,
                    MessageTemplate.id == message.line_push_template_id))
    result: str | None = None

    if message.line_push_status == svc.LINE_PUSH_PREPARING:
        fields: dict[str, Any]
        if len(contacts) != 1 or not contacts[0][0] or template_messages is None:
            fields = {"line_push_status": svc.LINE_PUSH_FAILED, "line_push_error_category": "member_not_found"}
            result = RESULT_FAILED
        elif contacts[0][1] == "unfollow":
            fields = {"line_push_status": svc.LINE_PUSH_UNDELIVERABLE, "line_push_error_category": "member_not_found"}
            result = RESULT_FAILED
        else:
            line_uid = str(contacts[0][0])
            with database.read() as session:
                contact = session.scalar(select(Contact).where(
                    Contact.organization_id == message.organization_id, Contact.line_uid == line_uid))
                contact_values = {key: getattr(contact, key, None) for key in (
                    "line_uid", "line_display_name", "display_name", "customer_id", "email", "mobile", "gender",
                    "birthday")} if contact else None
            rendered = render_template(template_messages, dict((message.params or {}).get("line_push") or {}),
                                       contact_values)
            retry_key = str(uuid.uuid5(RETRY_NAMESPACE, f"line-push:{message.id}"))
            outcome = line_call(base_url, token, "/v2/bot/message/push", {"to": line_uid, "messages": rendered},
                                 {"X-Line-Retry-Key": retry_key}, "push", channel_id, to=line_uid, messages=rendered,
                                 retry_key=retry_key)
            if outcome.ok or outcome.status_code == 409:
                fields = {"line_push_status": svc.LINE_PUSH_DELIVERED, "line_push_delivered_at": utcnow(),
                          "line_uid": line_uid}
                result = RESULT_SUCCESS
            elif _monthly_limit(outcome):
                fields = {"line_push_status": svc.LINE_PUSH_UNDELIVERABLE,
                          "line_push_error_category": "reach_monthly_limit"}
                result = RESULT_FAILED
            elif outcome.timeout or (outcome.status_code or 0) >= 500:
                fields = {"line_push_status": svc.LINE_PUSH_UNDELIVERABLE, "line_push_error_category": "others"}
                result = result_of(outcome)
            else:
                fields = {"line_push_status": svc.LINE_PUSH_FAILED, "line_push_error_category": "others"}
                result = result_of(outcome)
        with database.write() as session:
            loaded = load_message(session, message_id, lock=True, setting=setting)
            if loaded is None:
                return RESULT_FAILED
            message, setting = loaded
            if safety_net and not (setting.pnp_enabled and message.line_push_status == svc.LINE_PUSH_PREPARING
                                   and fields["line_push_status"] != svc.LINE_PUSH_DELIVERED):
                _drop_safety_net(session, message_id)  # no PNP step follows
                safety_net = False
            if message.line_push_status == svc.LINE_PUSH_PREPARING:
                fields["status"] = fields["line_push_status"]
                change(session, message, setting, **fields)
                if message.line_push_status != svc.LINE_PUSH_DELIVERED and setting.pnp_enabled \
                        and message.pnp_status is None:
                    change(session, message, setting, status=svc.PNP_PREPARING, pnp_status=svc.PNP_PREPARING)
                finish_if_nothing_left(session, message, setting)
                if message.pnp_status != svc.PNP_PREPARING:
                    wake_overdue_fallback(session, message)
        if message.line_push_status == svc.LINE_PUSH_DELIVERED:
            return RESULT_SUCCESS

    if setting.pnp_enabled and message.pnp_status == svc.PNP_PREPARING and not message.finished:
        pnp_params = dict((message.params or {}).get("pnp") or {})
        if svc.JOIN_LINK in svc.placeholder_names(setting.pnp_messages):
            from openmaac.sms_plus.join_links import links_for

            with database.write() as session:
                pnp_params[svc.JOIN_LINK] = links_for(session, message.organization_id, message.id, "pnp")
        pnp_messages = render_template(list(setting.pnp_messages or []), pnp_params, None)
        tag = message.delivery_tag or f"openmaac-pnp-{message.id}-tag-padding"
        outcome = line_call(base_url, token, "/bot/pnp/push", {"to": message.phone_hash, "messages": pnp_messages},
                             {"X-Line-Delivery-Tag": tag}, "pnp_push", channel_id, to=message.phone_hash,
                             messages=pnp_messages, delivery_tag=tag)
        pnp_result = result_of(outcome)
        with database.write() as session:
            loaded = load_message(session, message_id, lock=True, setting=setting)
            if loaded is None:
                return RESULT_FAILED
            message, setting = loaded
            if safety_net:
                _drop_safety_net(session, message_id)
                safety_net = False
            if message.pnp_status == svc.PNP_PREPARING:
                status = svc.PNP_ACCEPTED if outcome.ok else svc.PNP_FAILED
                change(session, message, setting, status=status, pnp_status=status)
                finish_if_nothing_left(session, message, setting)
                wake_overdue_fallback(session, message)
        result = pnp_result if result is None or pnp_result == RESULT_SUCCESS else pnp_result
    if safety_net:
        drop_safety_net([message_id])
    return result or RESULT_SUCCESS


def wake_overdue_fallback(session: Session, message: AnyPnpMessage) -> None:
    """The LINE steps are done; a fallback timer that came due meanwhile (and is waiting for
    them, see run_fallback) can run now."""
    if message.finished or message.fallback_at is None or message.fallback_at > utcnow():
        return
    # a job of its own (the timer may be running at this moment and about to reschedule itself)
    enqueue(session, FALLBACK, {"message_id": message.id}, organization_id=message.organization_id,
            run_at=utcnow(), unique_key=f"{FALLBACK}:{message.id}:line")


def _drop_safety_net(session: Session, message_id: int) -> None:
    _delete_waiting_jobs(session, [f"{DISPATCH}:{message_id}"])


def drop_safety_net(message_ids: list[int]) -> None:
    """The push request ran the LINE steps itself: its waiting safety-net jobs can go."""
    if not message_ids:
        return
    with get_database().write() as session:
        _delete_waiting_jobs(session, [f"{DISPATCH}:{i}" for i in message_ids])


PNP_CHUNK = 50  # PNP sends marked in flight, then recorded, together
PNP_CONCURRENCY = 16  # PNP calls in flight at once, all chunks of this process together
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _pnp_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=PNP_CONCURRENCY, thread_name_prefix="openmaac-pnp")
        return _pool


# the messages of a PNP batch by id (a JSON array), as plain rows on the driver's cursor; the
# locking form (PostgreSQL) in id order: concurrent lockers never deadlock
_BY_IDS = {(postgres, lock): DriverStatement(text(
    f"SELECT {_MESSAGE_ROW} FROM pnp_messages WHERE id "
    + ("= ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST(:ids AS jsonb)) AS bigint)))" if postgres
       else "IN (SELECT value FROM json_each(:ids))")
    + " ORDER BY id" + (" FOR UPDATE" if lock else "")).columns(*_M.c))
    for postgres in (False, True) for lock in (False, True)}
_LINE_ENDPOINT = DriverStatement(_CHANNEL)
_PNP_IN_FLIGHT = DriverStatement(update(_M).where(_M.c.id == bindparam("b_id")).values(
    send_started_at=bindparam("b_at", type_=_M.c.send_started_at.type)))
# a PNP send's outcome (and what it ended), written back whole: the row is locked meanwhile
_PNP_RECORDED = DriverStatement(update(_M).where(_M.c.id == bindparam("b_id")).values(
    send_started_at=bindparam("b_at", type_=_M.c.send_started_at.type), status=bindparam("b_status"),
    pnp_status=bindparam("b_pnp_status"), updated_at=bindparam("b_now", type_=_M.c.updated_at.type),
    finished=bindparam("b_finished"), points_held=bindparam("b_points_held")))


def _message_rows(conn: Any, ids: list[int], *, lock: bool) -> list[PnpMessageRow]:
    """The messages ``ids`` as plain rows, in id order (``lock``: locked on PostgreSQL)."""
    postgres = conn.dialect.name == "postgresql"
    return [PnpMessageRow(*row) for start in range(0, len(ids), 500)
            for row in _BY_IDS[(postgres, lock and postgres)].execute(conn, {"ids": json_dumps(ids[start:start + 500])}).rows]


_SETTING_NAMES = [column.name for column in PnpSetting.__table__.c]
_PNP_SETTING_CLASS = manager_of_class(PnpSetting)
_mappers_configured = False


def _unattached(manager: Any, values: Iterable[tuple[str, Any]]) -> Any:
    """An instance of ``manager``'s class built as the ORM's loader builds one: the values
    straight into its ``__dict__``, never attached to a session. The constructor would set each
    through its instrumentation, ten times the cost (2 against 24 µs for a scenario's 23)."""
    global _mappers_configured
    if not _mappers_configured:  # reading an attribute needs the mappers configured (a constructor
        configure_mappers()  # would have configured them; a process may read these first)
        _mappers_configured = True
    instance = manager.new_instance()
    instance.__dict__.update(values)
    return instance


def plain_setting(values: Sequence[Any]) -> PnpSetting:
    """A scenario as a plain object of a row's values, in the table's column order (never
    attached to a session: nothing writes it; once or twice per SMS+ push)."""
    return _unattached(_PNP_SETTING_CLASS, zip(_SETTING_NAMES, values, strict=True))  # type: ignore[no-any-return]


def _settings_by_id(conn: Any, setting_ids: Iterable[int]) -> dict[int, PnpSetting]:
    """The scenarios, as plain objects of the values read (only read, never attached)."""
    settings: dict[int, PnpSetting] = {}
    for setting_id in sorted(set(setting_ids)):
        found = _SETTING.execute(conn, {"id": setting_id}).first()
        if found is not None:
            settings[setting_id] = plain_setting(found)
    return settings


def _set_fields(message: PnpMessageRow, fields: dict[str, Any], now: datetime) -> None:
    """A status change of a plain row whose events the caller emits and whose row it writes."""
    for key, value in fields.items():
        setattr(message, key, value)
    message.updated_at = now


def _pnp_recorded(message: PnpMessageRow) -> dict[str, Any]:
    return {"b_id": message.id, "b_at": message.send_started_at, "b_status": message.status,
            "b_pnp_status": message.pnp_status, "b_now": message.updated_at, "b_finished": message.finished,
            "b_points_held": message.points_held}


def run_pnp_batch(message_ids: list[int]) -> None:
    """The PNP step of many messages (a multicast or an upload: no LINE push), in one job.

    One read for the messages, their scenario and channel; then, by chunks of ``PNP_CHUNK``:
    one transaction marks the chunk in flight (``send_started_at``), the PNP calls go out, one
    transaction records their outcomes. PNP has no retry key, so a message found marked by a
    later run (its worker died mid-chunk) is not sent again: it counts as accepted and waits
    for LINE's delivery webhook like any accepted PNP, the fallback timer deciding after that.
    Messages are plain rows read and written by prebuilt statements on the driver's cursor.
    """
    database = get_database()
    with database.lookup() as conn:
        messages = _message_rows(conn, sorted(set(message_ids)), lock=False)
        if not messages:
            return
        settings = _settings_by_id(conn, (m.pnp_setting_id for m in messages))
        found = _LINE_ENDPOINT.execute(conn, {"org": messages[0].organization_id}).first()
    if found is None:
        return
    base_url, token, channel_id = line_api_base_url(found[0]), str(found[1]), str(found[2])
    singles = [m.id for m in messages if m.line_push_status == svc.LINE_PUSH_PREPARING]
    for message_id in singles:  # not made by multicast; the general path handles it
        run_line_steps(message_id)
    pending = [m for m in messages if m.pnp_status == svc.PNP_PREPARING and not m.finished
               and m.line_push_status != svc.LINE_PUSH_PREPARING and m.pnp_setting_id in settings
               and settings[m.pnp_setting_id].pnp_enabled]
    for start in range(0, len(pending), PNP_CHUNK):
        chunk = pending[start:start + PNP_CHUNK]
        ids = [m.id for m in chunk]
        # the chunk's transactions, each run again should PostgreSQL end a deadlock with it (a
        # group commit locking the same messages for delivery webhooks): the record comes after
        # the calls, and a record lost would leave the chunk "in flight" until a later run took
        # it over as accepted, PNPs LINE refused included
        bodies = database.write_retrying(partial(_mark_pnp_chunk, ids=ids, settings=settings))
        if not bodies:
            continue
        def call(item: tuple[PnpMessageRow, list[dict[str, Any]]]) -> LineOutcome:
            message, body = item
            tag = message.delivery_tag or f"openmaac-pnp-{message.id}-tag-padding"
            return line_call(
                base_url, token, "/bot/pnp/push",
                {"to": message.phone_hash, "messages": body}, {"X-Line-Delivery-Tag": tag},
                "pnp_push", channel_id, to=message.phone_hash, messages=body, delivery_tag=tag)

        sending = [(message, bodies[message.id]) for message in chunk if message.id in bodies]
        # several calls in flight (the LINE round trip, not our CPU, bounds one at a time)
        outcomes: dict[int, LineOutcome] = dict(zip(
            [m.id for m, _body in sending], _pnp_pool().map(call, sending) if len(sending) > 1 else map(call, sending),
            strict=True))
        database.write_retrying(partial(_record_pnp_chunk, settings=settings, outcomes=outcomes))


def _mark_pnp_chunk(session: Session, ids: list[int], settings: dict[int, PnpSetting]) -> dict[int, list[dict[str, Any]]]:
    """A chunk's messages still to send marked in flight (``send_started_at``), those a dead run
    left in flight past the grace taken over as accepted. Each marked message's PNP content."""
    conn = session.connection()
    now = utcnow()
    bodies: dict[int, list[dict[str, Any]]] = {}
    in_flight: list[dict[str, Any]] = []
    taken_over: list[PnpMessageRow] = []
    for message in _message_rows(conn, ids, lock=True):
        setting = settings[message.pnp_setting_id]
        if message.pnp_status != svc.PNP_PREPARING or message.finished:
            continue
        if message.send_started_at is not None:
            if (now - message.send_started_at).total_seconds() < SEND_GRACE_SECONDS:
                continue  # another run is sending it
            # sent or not before its worker died: never twice; as if accepted
            message.send_started_at = None
            _set_fields(message, {"status": svc.PNP_ACCEPTED, "pnp_status": svc.PNP_ACCEPTED}, now)
            emit_status(session, setting, [message])
            wake_overdue_fallback(session, message)
            taken_over.append(message)
            continue
        params = dict((message.params or {}).get("pnp") or {})
        if svc.JOIN_LINK in svc.placeholder_names(setting.pnp_messages):
            from openmaac.sms_plus.join_links import links_for

            params[svc.JOIN_LINK] = links_for(session, message.organization_id, message.id, "pnp")
        bodies[message.id] = render_template(list(setting.pnp_messages or []), params, None)
        in_flight.append({"b_id": message.id, "b_at": now})
    _PNP_IN_FLIGHT.execute_many(conn, in_flight)
    _PNP_RECORDED.execute_many(conn, [_pnp_recorded(message) for message in taken_over])
    return bodies


def _record_pnp_chunk(session: Session, settings: dict[int, PnpSetting], outcomes: dict[int, LineOutcome]) -> None:
    """LINE's answers to a chunk's PNP calls: each message still ``pnp_preparing`` accepted or
    failed, its events, its end or its overdue fallback timer woken."""
    conn = session.connection()
    # locked on PostgreSQL: a delivery webhook recorded meanwhile must not be overwritten
    now = utcnow()
    emitted: dict[int, list[PnpMessageRow]] = {}
    ended: list[PnpMessageRow] = []
    recorded = _message_rows(conn, sorted(outcomes), lock=True)
    for message in recorded:
        setting = settings[message.pnp_setting_id]
        message.send_started_at = None
        if message.pnp_status == svc.PNP_PREPARING:
            status = svc.PNP_ACCEPTED if outcomes[message.id].ok else svc.PNP_FAILED
            _set_fields(message, {"status": status, "pnp_status": status}, now)
            emitted.setdefault(setting.id, []).append(message)
            if nothing_left(message, setting):
                ended.append(message)
            else:
                wake_overdue_fallback(session, message)
    # the chunk's events and ends together (one look-up of webhook targets, of timers)
    for setting_id, changed in emitted.items():
        emit_status(session, settings[setting_id], changed)
    _end(session, ended)  # their points and timers; the rows are written here:
    _PNP_RECORDED.execute_many(conn, [_pnp_recorded(message) for message in recorded])


@handler(DISPATCH)
def dispatch_job(payload: dict[str, Any], _context: JobContext) -> None:
    if "message_ids" in payload:
        run_pnp_batch([int(i) for i in payload["message_ids"]])
    else:
        run_line_steps(int(payload["message_id"]))


# --- PNP delivery (LINE's ``delivery`` webhook) ----------------------------------------------------

# SQLite: the messages of a webhook request's delivery tags (a JSON array), by one prebuilt
# statement on the driver's cursor, in id order. Planned by the unique index on delivery_tag: the
# organisation is compared as ``+organization_id``, which no index serves (SQLite, without
# statistics, otherwise walked the organisation's messages by its (organization_id, ...) index
# for the tags of a JSON list). PostgreSQL reads them with more in one statement
# (``_PG_DELIVERY_READ``).
_BY_TAGS = DriverStatement(text(
    f"SELECT {_MESSAGE_ROW} FROM pnp_messages "
    "WHERE delivery_tag IN (SELECT value FROM json_each(:tags)) AND +organization_id = :org ORDER BY id")
    .columns(*_M.c))
_SETTING = DriverStatement(select(*PnpSetting.__table__.c).where(PnpSetting.__table__.c.id == bindparam("id")))
_SETTING_SELECT = ", ".join(f"s.{column.name}" for column in PnpSetting.__table__.c)
# PostgreSQL: what recording deliveries reads, in ONE statement (a group commit's transaction
# waits for the interpreter lock after each round trip, under load a millisecond or more): the
# messages of the tags (locked, in id order), each with its scenario's columns (NULLs when it
# is gone), whether the LINE user its delivery names is a contact of the organisation and that
# contact's number, and the organisation's webhook targets (webhooks.pg_targets_columns).
_PG_DELIVERY_READ = DriverStatement(text(f"""
SELECT {", ".join(f"m.{column.name}" for column in _M.c)}, {_SETTING_SELECT},
       c.line_uid IS NOT NULL, c.mobile, {pg_targets_columns()}
FROM pnp_messages m
JOIN unnest(CAST(:tags AS text[]), CAST(:uids AS text[])) AS t(tag, uid) ON t.tag = m.delivery_tag
LEFT JOIN pnp_settings s ON s.id = m.pnp_setting_id
LEFT JOIN LATERAL (SELECT line_uid, mobile FROM contacts
                   WHERE organization_id = :org AND line_uid = t.uid LIMIT 1) c ON true
WHERE m.organization_id = :org AND m.delivery_tag = ANY(CAST(:tags AS text[]))
ORDER BY m.id FOR UPDATE OF m"""))
# a delivered message: its PNP status (and overall status), and its end when there is one
_DELIVERED = DriverStatement(update(_M).where(_M.c.id == bindparam("b_id")).values(
    pnp_status=bindparam("b_pnp_status"), pnp_delivered_at=bindparam("b_at", type_=_M.c.pnp_delivered_at.type),
    status=bindparam("b_status"), updated_at=bindparam("b_now", type_=_M.c.updated_at.type),
    finished=bindparam("b_finished"), points_held=bindparam("b_points_held"), line_uid=bindparam("b_line_uid")))
_CONTACT_MOBILES = DriverStatement(text(  # SQLite (PostgreSQL: in _PG_DELIVERY_READ)
    "SELECT line_uid, mobile FROM contacts WHERE organization_id = :org AND line_uid IN (SELECT value FROM json_each(:uids))"))


# PostgreSQL: a delivery webhook's writes in ONE statement of data-modifying CTEs: the delivered
# rows (as computed in Python), their ends' points released (the balance, created if missing as
# points.release_many does, and a ledger row per message with the balance after it, in order)
# and their waiting timers dropped; what SQLite writes with the same statements one by one. The
# ids come again as an array: joined only to the JSON rows, which the planner counts as a
# hundred, the messages were read by scanning the whole table, up to some ten thousand rows
_PG_DELIVERIES = DriverStatement(text("""
WITH v AS (
  SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id bigint, pnp_status text, pnp_delivered_at timestamptz,
                                                              status text, updated_at timestamptz, finished boolean,
                                                              points_held integer, line_uid text)),
upd AS (
  UPDATE pnp_messages m SET pnp_status = v.pnp_status, pnp_delivered_at = v.pnp_delivered_at, status = v.status,
         updated_at = v.updated_at, finished = v.finished, points_held = v.points_held, line_uid = v.line_uid
  FROM v WHERE m.id = v.id AND m.id = ANY(CAST(:ids AS bigint[])) RETURNING m.id),
job AS (
  DELETE FROM jobs WHERE unique_key = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(:keys AS jsonb))))
  AND status = 'ready' RETURNING id),
bal AS (
  INSERT INTO sms_point_balances (organization_id, balance, updated_at) SELECT :org, :released, :now WHERE :released > 0
  ON CONFLICT (organization_id) DO UPDATE SET balance = sms_point_balances.balance + EXCLUDED.balance,
                                              updated_at = EXCLUDED.updated_at
  RETURNING balance),
ent AS (
  INSERT INTO sms_point_entries (organization_id, kind, amount, balance_after, pnp_message_id, note, created_at)
  SELECT :org, 'release', e.amount, bal.balance - :released + e.running, e.message_id, NULL, :now
  FROM bal, jsonb_to_recordset(CAST(:entries AS jsonb)) AS e(message_id bigint, amount integer, running integer)
  ORDER BY e.running RETURNING id)
SELECT count(*) FROM upd""").bindparams(bindparam("now", type_=UTCDateTime())))


def _write_deliveries_pg(conn: Any, organization_id: int, delivered: list[PnpMessageRow],
                         releases: dict[int, list[tuple[int | None, int]]], keys: list[str], now: datetime) -> None:
    entries: list[dict[str, Any]] = []
    running = 0
    for message_id, amount in releases.get(organization_id, []):
        if amount > 0:  # as points.release_many
            running += amount
            entries.append({"message_id": message_id, "amount": amount, "running": running})
    assert set(releases) <= {organization_id}  # record_pnp_deliveries: one organisation a call
    _PG_DELIVERIES.execute(conn, {
        "org": organization_id, "now": now, "released": running, "entries": json_dumps(entries),
        "keys": json_dumps(keys), "ids": [m.id for m in delivered], "rows": json_dumps([
            {"id": m.id, "pnp_status": m.pnp_status, "pnp_delivered_at": m.pnp_delivered_at, "status": m.status,
             "updated_at": m.updated_at, "finished": m.finished, "points_held": m.points_held, "line_uid": m.line_uid}
            for m in delivered])})


def record_pnp_deliveries(session: Session, organization_id: int,
                          deliveries: list[tuple[str | None, datetime, str | None]]) -> int:
    """LINE's ``delivery`` events of one webhook request, or of a group commit's batch of them,
    ``(tag, occurred_at, line_uid)``, in the receiver's transaction: the messages read (and
    locked on PostgreSQL) by one statement, their changes emitted, their ends recorded and their
    rows written together, with prebuilt statements on plain rows (no ORM objects: their load
    and flush cost more than the database's work). On PostgreSQL the scenarios, the contacts'
    numbers and the webhook targets come with the messages (``_PG_DELIVERY_READ``) and the
    writes are one statement: two round trips in all. Returns how many messages matched."""
    tags = sorted({tag for tag, _at, _uid in deliveries if tag})
    if not tags:
        return 0
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    by_tag: dict[str, PnpMessageRow] = {}
    settings: dict[int, PnpSetting] = {}
    mobiles: dict[str, str | None] = {}  # the organisation's contacts among the LINE users named: their numbers
    if postgres:
        first_uid: dict[str, str | None] = {}
        for tag, _at, line_uid in deliveries:
            if tag:
                first_uid.setdefault(tag, line_uid)  # the first delivery of a tag is the one that counts
        width, setting_width = len(_M.c), len(_SETTING_NAMES)
        rows = _PG_DELIVERY_READ.execute(conn, {"org": organization_id, "tags": tags,
                                                "uids": [first_uid[tag] for tag in tags]}).rows
        for row in rows:
            message = PnpMessageRow(*row[:width])
            by_tag[str(message.delivery_tag)] = message
            setting_values = row[width:width + setting_width]
            if setting_values[0] is not None and int(setting_values[0]) not in settings:
                settings[int(setting_values[0])] = plain_setting(setting_values)
            contact_found, mobile = row[width + setting_width:width + setting_width + 2]
            if contact_found:
                mobiles[str(first_uid[str(message.delivery_tag)])] = mobile
        if rows:
            remember_targets(session, organization_id, rows[0][-2], rows[0][-1])
    else:
        for start in range(0, len(tags), 500):
            for row in _BY_TAGS.execute(conn, {"org": organization_id, "tags": json_dumps(tags[start:start + 500])}).rows:
                message = PnpMessageRow(*row)
                by_tag[str(message.delivery_tag)] = message
        settings = _settings_by_id(conn, (message.pnp_setting_id for message in by_tag.values()))
    if not by_tag:
        return 0
    now = utcnow()
    changed: dict[int, list[PnpMessageRow]] = {}
    ended: list[PnpMessageRow] = []
    binds: list[tuple[PnpSetting, PnpMessageRow, str]] = []
    for tag, occurred_at, line_uid in deliveries:
        found_message = by_tag.get(tag) if tag else None
        if found_message is None or found_message.pnp_status == svc.PNP_DELIVERED:
            continue
        message = found_message
        setting = settings.get(message.pnp_setting_id)
        if setting is None:
            continue
        message.pnp_status = svc.PNP_DELIVERED
        message.pnp_delivered_at = occurred_at
        if message.sms_status is None:
            message.status = svc.PNP_DELIVERED
            ended.append(message)
        message.updated_at = now
        changed.setdefault(setting.id, []).append(message)
        if line_uid and not message.hashed_input:
            binds.append((setting, message, line_uid))
    for setting_id, messages in changed.items():
        emit_status(session, settings[setting_id], messages)
    if postgres:
        ending = _ending(ended)  # written below, with the rows, in one statement
    else:
        _end(session, ended)  # their points and timers; the rows are written below
    if binds:
        from openmaac.sms_plus.join_links import bind_phone

        if not postgres:  # one look-up for the lot: a PNP binds only a friend whose number is not this one yet
            uids = sorted({line_uid for _setting, _message, line_uid in binds})
            for start in range(0, len(uids), 500):
                mobiles.update((str(uid), mobile) for uid, mobile in _CONTACT_MOBILES.execute(
                    conn, {"org": organization_id, "uids": json_dumps(uids[start:start + 500])}).rows)
        for setting, message, line_uid in binds:
            if line_uid in mobiles and mobiles[line_uid] != message.phone_number:
                bind_phone(session, organization_id, setting, message, line_uid, "pnp", only_if_new=True)
    delivered = [message for messages in changed.values() for message in messages]
    if postgres:
        if delivered:  # (nothing delivered now: nothing ended either)
            _write_deliveries_pg(conn, organization_id, delivered, *ending[:2], now)
    else:
        _DELIVERED.execute_many(conn, [
            {"b_id": message.id, "b_pnp_status": message.pnp_status, "b_at": message.pnp_delivered_at,
             "b_status": message.status, "b_now": message.updated_at, "b_finished": message.finished,
             "b_points_held": message.points_held, "b_line_uid": message.line_uid}  # bind_phone sets line_uid
            for message in delivered])
    return sum(len(messages) for messages in changed.values())


# --- fallback: SMS (or the end) --------------------------------------------------------------------

def _sms_error_fields(category: ErrorCategory | None, *, at_send: bool) -> dict[str, Any]:
    if category is ErrorCategory.BLOCKED:
        return {"sms_status": svc.SMS_BLOCKED, "sms_error_category": None}
    if category is ErrorCategory.INVALID_NUMBER:
        status = svc.SMS_FAILED if at_send else svc.SMS_UNDELIVERABLE
        return {"sms_status": status, "sms_error_category": "invalid_phone_number"}
    if category is ErrorCategory.CONTENT_REJECTED:
        status = svc.SMS_FAILED if at_send else svc.SMS_UNDELIVERABLE
        return {"sms_status": status, "sms_error_category": "sensitive_words"}
    if not at_send and category in (ErrorCategory.TEMPORARY, None):
        return {"sms_status": svc.SMS_UNDELIVERABLE, "sms_error_category": "target_reception_issue"}
    return {"sms_status": svc.SMS_FAILED if at_send else svc.SMS_UNDELIVERABLE, "sms_error_category": "others"}


SEND_GRACE_SECONDS = 30.0  # an upstream send not finished after this long died with its process


def _leaving_line_with_status(message: PnpMessage) -> dict[str, Any]:
    """:func:`_leaving_line`'s fields, with the message's status following the LINE step's."""
    fields = _leaving_line(message)
    if "pnp_status" in fields:
        fields["status"] = fields["pnp_status"]
    elif "line_push_status" in fields:
        fields["status"] = fields["line_push_status"]
    return fields


def _leaving_line(message: PnpMessage) -> dict[str, Any]:
    """The LINE fields of a message moving on to WhatsApp or SMS (no delivery by now)."""
    fields: dict[str, Any] = {}
    if message.pnp_status in (svc.PNP_PREPARING, svc.PNP_ACCEPTED):
        fields["pnp_status"] = svc.PNP_UNDELIVERABLE
    if message.line_push_status == svc.LINE_PUSH_PREPARING:
        fields["line_push_status"] = svc.LINE_PUSH_UNDELIVERABLE
        fields["line_push_error_category"] = "others"
    return fields


def _remaining(until: datetime | None, now: datetime) -> float:
    return 0.0 if until is None else max((until - now).total_seconds(), 0.0)


@dataclass
class _WhatsAppSend:
    phone: str
    template: dict[str, Any]
    reference: str


def _whatsapp_step(session: Session, message: PnpMessage, setting: PnpSetting, wait_minutes: float,
                   now: datetime) -> float | _WhatsAppSend | None:
    """Inside the fallback's transaction: start the WhatsApp send, wait for its outcome (a float:
    seconds), or None when WhatsApp is over (not delivered) and the message goes on."""
    status = message.whatsapp_status
    if message.send_started_at is not None:
        if (now - message.send_started_at).total_seconds() < SEND_GRACE_SECONDS:
            return 0.5  # under way in another run
        # The send died mid-call: WhatsApp cannot be asked whether it took the message and a
        # second send could reach the person twice, so wait for a status webhook (they carry
        # our reference) until the deadline, as for an accepted message.
        if now < (message.fallback_at or now):
            return _remaining(message.fallback_at, now)
    elif status in (None, svc.WHATSAPP_PREPARING):
        template = svc.whatsapp_template(setting, message.params, message.hashed_input)
        assert template is not None
        fields = {"status": svc.WHATSAPP_PREPARING, "whatsapp_status": svc.WHATSAPP_PREPARING,
                  **_leaving_line(message)}
        if status is None:
            change(session, message, setting, **fields)
        else:  # a WhatsApp-first message: its whatsapp_preparing was emitted when it was created
            for key, value in fields.items():
                setattr(message, key, value)
        message.fallback_at = now + minutes(wait_minutes)
        message.send_started_at = now
        return _WhatsAppSend(message.phone_number, template, wa.reference(message.id))
    elif status == svc.WHATSAPP_ACCEPTED and now < (message.fallback_at or now):
        return _remaining(message.fallback_at, now)
    if status in (svc.WHATSAPP_PREPARING, svc.WHATSAPP_ACCEPTED):
        message.send_started_at = None
        change(session, message, setting, status=svc.WHATSAPP_UNDELIVERABLE,
               whatsapp_status=svc.WHATSAPP_UNDELIVERABLE, whatsapp_error_category=wa.CALLBACK_TIMEOUT)
    return None


def _send_whatsapp(message_id: int, config: Any, plan: _WhatsAppSend) -> float | None:
    from openmaac.sms_plus import providers

    with providers.open_whatsapp(config) as client:
        result = client.send_template(plan.phone, plan.template["template_name"], plan.template["language"],
                                      wa.components(plan.template.get("template_data")), reference=plan.reference)
    with get_database().write() as session:
        loaded = load_message(session, message_id, lock=True)
        if loaded is None:
            return None
        message, setting = loaded
        message.send_started_at = None
        if result.provider_message_id and not message.whatsapp_message_id:
            message.whatsapp_message_id = result.provider_message_id
        if message.finished:
            return None
        now = utcnow()
        if result.accepted:
            if message.whatsapp_status == svc.WHATSAPP_PREPARING:
                change(session, message, setting, status=svc.WHATSAPP_ACCEPTED, whatsapp_status=svc.WHATSAPP_ACCEPTED)
            if message.whatsapp_status == svc.WHATSAPP_ACCEPTED:
                return _remaining(message.fallback_at, now)
            return 0.0  # a failed status got here first: on to SMS
        if message.whatsapp_status == svc.WHATSAPP_PREPARING:
            change(session, message, setting, status=svc.WHATSAPP_FAILED, whatsapp_status=svc.WHATSAPP_FAILED,
                   whatsapp_error_category=wa.category_of(result.error_category))
        return 0.0  # on to SMS, or the end


def _claimed(organization_id: int, message_id: int, sids: list[str]) -> set[str]:
    with get_database().read() as session:
        return set(session.scalars(select(PnpMessage.sms_provider_message_id).where(
            PnpMessage.organization_id == organization_id, PnpMessage.sms_provider_message_id.in_(sids),
            PnpMessage.id != message_id)))


def run_fallback(message_id: int) -> float | None:
    """The fallback timer: WhatsApp (when the scenario has it), then SMS (and its retries).
    Returns seconds until it must run again, or None."""
    from openmaac.sms_plus import providers

    database = get_database()
    with database.write() as session:
        loaded = load_message(session, message_id, lock=True)
        if loaded is None:
            return None
        message, setting = loaded
        if message.finished or message.sms_status in SMS_FINAL or message.sms_status == svc.SMS_ACCEPTED:
            return None
        if delivered(message):
            finish(session, message, setting)
            return None
        in_flight = message.pnp_status == svc.PNP_PREPARING or message.line_push_status == svc.LINE_PUSH_PREPARING
        age = (utcnow() - message.updated_at).total_seconds()
        if in_flight and age < LINE_STEP_GRACE_SECONDS:
            # the LINE step is queued or under way: it wakes this timer when it is done; failing
            # that (its worker died), look again once the grace is over
            return LINE_STEP_GRACE_SECONDS - age
        if in_flight:
            message.send_started_at = None  # a LINE step's mark, left by a worker that died
        config = providers.config_of(session, message.organization_id)
        now = utcnow()
        if message.sms_status is None and message.whatsapp_status not in svc.WHATSAPP_FINAL \
                and whatsapp_possible(message, setting):
            step = _whatsapp_step(session, message, setting, config.whatsapp_wait_minutes, now)
            if isinstance(step, _WhatsAppSend):
                whatsapp_plan: _WhatsAppSend | None = step
            elif step is not None:
                return step
            else:
                whatsapp_plan = None
        else:
            whatsapp_plan = None
        if whatsapp_plan is None:
            if not sms_possible(message, setting):
                fields = _leaving_line_with_status(message)
                if fields:
                    change(session, message, setting, **fields)
                message.send_started_at = None
                finish(session, message, setting)
                return None
            unknown_since: datetime | None = None
            if message.send_started_at is not None and (now - message.send_started_at).total_seconds() \
                    < SEND_GRACE_SECONDS:
                return 0.5  # a send is under way in another run
            if message.send_started_at is not None and message.sms_reference is not None \
                    and message.sms_status in (svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR):
                # an SMS send died mid-call (or got no answer): look its outcome up before sending again
                unknown_since = message.send_started_at
            else:
                message.send_started_at = None
                _start_sms_attempt(session, message, setting, config, now)
                message.send_started_at = now
            text = _sms_text_to_send(session, message)
            reference = message.sms_reference
            phone = message.phone_number
        session.flush()
    if whatsapp_plan is not None:
        return _send_whatsapp(message_id, config, whatsapp_plan)
    assert reference is not None
    with providers.open_provider(config) as provider:
        result = None
        if unknown_since is not None:
            try:
                result = providers.find_unknown_send(provider, phone, text, unknown_since,
                                                     lambda sids: _claimed(config.organization_id, message_id, sids))
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("SMS+ message %s: cannot look up an unfinished send yet: %s", message_id, exc)
                return max(minutes(SMS_RETRY_INTERVAL_MINUTES).total_seconds(), 1.0)
        if result is None:
            result = provider.send(phone, text, reference=reference, callback_url=providers.callback_url(config))
    return _record_sms_send(message_id, config, reference, result)


def _start_sms_attempt(session: Session, message: PnpMessage, setting: PnpSetting, config: Any,
                       now: datetime) -> None:
    """A new SMS attempt: the first (``sms_preparing``, a new reference) or a retry after a
    temporary error (the next reference)."""
    if message.sms_status is None or message.sms_reference is None:
        fields = _first_sms_attempt(message, config, now)
        if message.sms_status == svc.SMS_PREPARING:
            # an SMS-only scenario starts in sms_preparing: no second status event
            for key, value in fields.items():
                setattr(message, key, value)
        else:
            change(session, message, setting, **fields)
    elif message.sms_status == svc.SMS_TEMPORARY_ERROR:
        attempt = message.sms_attempts + 1
        message.sms_attempts = attempt
        message.sms_reference = f"pnp{message.id}r{attempt}"
        message.sms_provider_message_id = None


def _first_sms_attempt(message: PnpMessage, config: Any, now: datetime) -> dict[str, Any]:
    """The fields of a message's first SMS attempt (``sms_preparing``, its first reference, the
    retry window from now; its LINE step left undelivered)."""
    return {"status": svc.SMS_PREPARING, "sms_status": svc.SMS_PREPARING, "sms_attempts": 1,
            "sms_reference": f"pnp{message.id}r1", "sms_retry_until": now + minutes(config.retry_window_minutes),
            **_leaving_line(message)}


def _sms_text_to_send(session: Session, message: PnpMessage) -> str:
    """The SMS text, its join link filled in (and kept: a retry sends the same link)."""
    text = message.sms_text or ""
    if "{{" in text:
        from openmaac.sms_plus.join_links import links_for

        text = svc.render_text(text, {}, {svc.JOIN_LINK: links_for(session, message.organization_id, message.id,
                                                                    "sms")})
        message.sms_text = text
    return text


def _record_sms_send(message_id: int, config: Any, reference: str, result: Any) -> float | None:
    with get_database().write() as session:
        loaded = load_message(session, message_id, lock=True)
        if loaded is None:
            return None
        message, setting = loaded
        again = _record_sms_outcome(session, message, setting, config, reference, result, timeouts=None)
        session.flush()
        return again


def _record_sms_outcome(session: Session, message: PnpMessage, setting: PnpSetting, config: Any, reference: str,
                        result: Any, *, timeouts: list[tuple[int, str]] | None,
                        emitted: list[PnpMessage] | None = None) -> float | None:
    """Record one send's answer on the (locked) message. Returns seconds until its fallback must
    run again (a temporary error or no answer), or None. ``timeouts``: where an accepted send's
    callback deadline goes (one job for a batch); None: a job of its own, enqueued here.
    ``emitted``: where a message whose status changed goes, its events emitted by the caller
    together with others'; None: emitted here."""
    def status_change(**fields: Any) -> None:
        if emitted is None:
            change(session, message, setting, **fields)
        else:
            _set(message, fields, utcnow())
            emitted.append(message)

    if message.sms_reference != reference:
        return None
    if not result.accepted and result.outcome_unknown \
            and message.sms_status in (svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR) \
            and message.sms_retry_until is not None and utcnow() < message.sms_retry_until:
        # no answer (it may have been taken): keep the attempt open, look it up next time
        message.send_started_at = utcnow() - timedelta(seconds=SEND_GRACE_SECONDS)
        if message.sms_status != svc.SMS_TEMPORARY_ERROR:
            status_change(status=svc.SMS_TEMPORARY_ERROR, sms_status=svc.SMS_TEMPORARY_ERROR, sms_error_category=None)
        return max(minutes(SMS_RETRY_INTERVAL_MINUTES).total_seconds(), 0.05)
    message.send_started_at = None
    message.sms_provider = config.provider
    if result.provider_message_id and not message.sms_provider_message_id:
        message.sms_provider_message_id = result.provider_message_id
    if result.accepted:
        message.points_held = 0  # the hold is now a charge
        if message.sms_status in (svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR):
            status_change(status=svc.SMS_ACCEPTED, sms_status=svc.SMS_ACCEPTED, sms_error_category=None)
        if timeouts is not None:
            timeouts.append((message.id, reference))
            return None
        session.flush()
        enqueue(session, SMS_TIMEOUT, {"message_id": message.id, "reference": reference},
                organization_id=message.organization_id,
                run_at=utcnow() + minutes(config.callback_timeout_minutes),
                unique_key=f"{SMS_TIMEOUT}:{reference}")
        return None
    if message.sms_status not in (svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR):
        return None  # a report got there first
    retry_until = message.sms_retry_until
    if result.error_category is ErrorCategory.TEMPORARY:
        if retry_until is not None and utcnow() < retry_until:
            if message.sms_status != svc.SMS_TEMPORARY_ERROR:
                status_change(status=svc.SMS_TEMPORARY_ERROR, sms_status=svc.SMS_TEMPORARY_ERROR,
                              sms_error_category=None)
            return max(minutes(SMS_RETRY_INTERVAL_MINUTES).total_seconds(), 0.05)
        status_change(status=svc.SMS_FAILED, sms_status=svc.SMS_FAILED, sms_error_category="others")
        finish(session, message, setting)
        return None
    fields = _sms_error_fields(result.error_category, at_send=True)
    fields["status"] = fields["sms_status"]
    status_change(**fields)
    finish(session, message, setting)
    return None


@handler(FALLBACK)
def fallback_job(payload: dict[str, Any], context: JobContext) -> None:
    if "message_ids" in payload:
        run_fallback_batch([int(i) for i in payload["message_ids"]], context)
        return
    again = run_fallback(int(payload["message_id"]))
    if again is not None:
        raise RetryLater(again, "SMS+ fallback: waiting for an outcome or retrying")


# --- the fallback of a batch (a multicast or an upload: one timer for its messages) ----------------

SMS_CHUNK = 50  # SMS sends marked under way, then recorded, together
SMS_CONCURRENCY = 16  # SMS sends in flight at once, all chunks of this process together
_sms_pool: ThreadPoolExecutor | None = None


def _sms_send_pool() -> ThreadPoolExecutor:
    global _sms_pool
    with _pool_lock:
        if _sms_pool is None:
            _sms_pool = ThreadPoolExecutor(max_workers=SMS_CONCURRENCY, thread_name_prefix="openmaac-sms")
        return _sms_pool


def single_fallback_key(message_id: int) -> str:
    """The unique key of a message's own fallback job when its batch's timer hands it over."""
    return f"{FALLBACK}:{message_id}:single"


@dataclass
class _SmsSend:
    message_id: int
    phone: str
    text: str
    reference: str


_MESSAGES_BY_ID = select(PnpMessage).where(PnpMessage.id.in_(bindparam("ids", expanding=True))).order_by(PnpMessage.id)
_MESSAGES_BY_ID_LOCKED = _MESSAGES_BY_ID.with_for_update()


def _locked_messages(session: Session, ids: list[int]) -> list[PnpMessage]:
    """The messages (locked on PostgreSQL, in id order: concurrent lockers never deadlock)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return list(session.scalars(_MESSAGES_BY_ID_LOCKED if postgres else _MESSAGES_BY_ID, {"ids": ids}))


def _settings_of(session: Session, messages: Iterable[PnpMessage]) -> dict[int, PnpSetting]:
    """The scenarios of these messages, read through Core (no autoflush, no identity map): plain
    objects of the values read, which the state machine only reads."""
    return _settings_by_id(session.connection(), (m.pnp_setting_id for m in messages))


# --- plain messages: Core rows as unattached objects, written back column by column ------------------

_TABLE = PnpMessage.__table__
_COLUMN_NAMES = tuple(column.key for column in _TABLE.c)  # the attributes are named as their columns
_PLAIN_BY_IDS = select(*_TABLE.c).where(_TABLE.c.id.in_(bindparam("ids", expanding=True))).order_by(_TABLE.c.id)
_PLAIN_BY_IDS_LOCKED = _PLAIN_BY_IDS.with_for_update()
_OPEN_IDS = select(_TABLE.c.id).where(_TABLE.c.id.in_(bindparam("ids", expanding=True)),
                                      _TABLE.c.finished.is_(False)).order_by(_TABLE.c.id)
_UPDATE_BY_ID = update(_TABLE).where(_TABLE.c.id == bindparam("message_id"))
_PNP_MESSAGE_CLASS = manager_of_class(PnpMessage)


class PlainMessages:
    """Messages read through Core into unattached ``PnpMessage`` objects, which the state
    machine's functions change as they would ORM ones; :meth:`write` then updates, per message,
    only the columns that changed (one ``executemany`` per set of columns). Costs what the
    statements cost, without the ORM's identity map, load events and unit of work, which made
    most of an SMS batch's and a delivery report's CPU. A message read twice through one
    instance is the same object (its first copy, with its changes), as in an ORM session."""

    def __init__(self) -> None:
        self.messages: dict[int, PnpMessage] = {}
        self._written: dict[int, dict[str, Any]] = {}  # the values the database holds, by message

    def adopt(self, values: dict[str, Any]) -> PnpMessage:
        message_id = int(values["id"])
        message = self.messages.get(message_id)
        if message is None:
            message = self.messages[message_id] = _unattached(_PNP_MESSAGE_CLASS, values.items())
            self._written[message_id] = values
        return message

    def read(self, session: Session, ids: list[int], *, lock: bool = True) -> list[PnpMessage]:
        """The messages of ``ids`` in id order (locked on PostgreSQL when ``lock``: in id order,
        so concurrent lockers never deadlock)."""
        if not ids:
            return []
        conn = session.connection()
        statement = _PLAIN_BY_IDS_LOCKED if lock and conn.dialect.name == "postgresql" else _PLAIN_BY_IDS
        found: list[PnpMessage] = []
        for start in range(0, len(ids), 500):
            found += [self.adopt(dict(zip(_COLUMN_NAMES, row, strict=True)))
                      for row in conn.execute(statement, {"ids": ids[start:start + 500]})]
        return found

    def write(self, session: Session) -> None:
        """Update the columns each message changed since it was read (or last written)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for message_id, message in self.messages.items():
            written = self._written[message_id]
            current = message.__dict__  # (the instrumented attributes keep their values there)
            changed = {name: value for name in _COLUMN_NAMES if (value := current.get(name)) != written[name]}
            if changed:
                groups.setdefault(tuple(changed), []).append({"message_id": message_id, **changed})
                self._written[message_id] = {**written, **changed}
        conn = session.connection()
        for rows in groups.values():
            conn.execute(_UPDATE_BY_ID, rows)


def open_message_ids(ids: list[int]) -> list[int]:
    """Which of ``ids`` are not finished yet (read without a lock: a finished message never
    opens again, so what is seen finished here is finished for good)."""
    found: list[int] = []
    with get_database().lookup() as conn:
        for start in range(0, len(ids), 500):
            found += [int(row[0]) for row in conn.execute(_OPEN_IDS, {"ids": ids[start:start + 500]})]
    return found


def _hand_over(session: Session, message: PnpMessage, run_at: datetime) -> None:
    """Leave this message to a fallback job of its own (``run_fallback``): its case is not the
    plain first SMS (WhatsApp, a LINE step under way, a send whose outcome is unknown, a retry)."""
    enqueue(session, FALLBACK, {"message_id": message.id}, organization_id=message.organization_id,
            run_at=run_at, unique_key=single_fallback_key(message.id))


def run_fallback_batch(message_ids: list[int], context: JobContext | None = None) -> None:
    """The fallback timer of a batch of messages (created together, so due together).

    Only the messages still open are read (in a campaign most were delivered through LINE and
    finished long before). By chunks of ``SMS_CHUNK`` of those: one transaction takes the
    messages that go to SMS now (state ``sms_preparing``, a new reference, ``send_started_at``
    set, as ``run_fallback`` does one), finishes those delivered meanwhile and hands every
    other case to a job of its own; the sends go out with no transaction open
    (``SMS_CONCURRENCY`` at once); one transaction records their answers, with one
    callback-deadline job for the chunk. A crash between the two leaves the messages marked
    under way: the batch runs again once its lease passes, and hands them over to
    ``run_fallback``, which looks the send up at the provider before sending again."""

    database = get_database()
    ids = open_message_ids(sorted(set(message_ids)))
    chunks = [ids[start:start + SMS_CHUNK] for start in range(0, len(ids), SMS_CHUNK)] or [[]]
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        # run again when PostgreSQL ends a deadlock with it: a group commit's transaction of
        # several SMS status callbacks locks their messages in the order they came, and this
        # transaction locks its chunk in id order (nothing was sent yet: a victim only waits)
        plans, config, marked_at = database.write_retrying(
            partial(_mark_sms_chunk, chunk=chunk, context=context if last else None))
        if plans:
            # committed: from now on the database says "under way" too
            send_memo.under_way(config.organization_id, [plan.reference for plan in plans], marked_at)
            _send_and_record(plans, config, context if last else None)


def _mark_sms_chunk(session: Session, *, chunk: list[int],
                    context: JobContext | None) -> tuple[list[_SmsSend], Any, float]:
    """``run_fallback_batch``'s transaction for one chunk, before its sends: the SMS to send now
    (their messages marked under way), the provider's configuration, and when they were marked;
    ``context``: the job, completed here when the chunk has nothing to send."""
    from openmaac.sms_plus import providers

    plans: list[_SmsSend] = []
    config: Any = None
    plain = PlainMessages()
    messages = plain.read(session, chunk)
    settings = _settings_of(session, messages) if messages else {}
    now, marked_at = utcnow(), time.monotonic()  # (the memo's mark is no later than the row's)
    ended: list[PnpMessage] = []
    emitted: dict[int, list[PnpMessage]] = {}
    for message in messages:
        setting = settings.get(message.pnp_setting_id)
        if setting is None or message.finished or message.sms_status in SMS_FINAL \
                or message.sms_status == svc.SMS_ACCEPTED:
            continue
        if delivered(message):
            ended.append(message)
            continue
        in_flight = message.pnp_status == svc.PNP_PREPARING \
            or message.line_push_status == svc.LINE_PUSH_PREPARING
        if in_flight:
            # the LINE step wakes the message's timer when it is done; failing that (its
            # worker died), its own job looks again once the grace is over
            age = (now - message.updated_at).total_seconds()
            _hand_over(session, message, now + timedelta(seconds=max(LINE_STEP_GRACE_SECONDS - age, 0.0)))
            continue
        if message.send_started_at is not None or message.sms_status == svc.SMS_TEMPORARY_ERROR \
                or (message.sms_status is None and message.whatsapp_status not in svc.WHATSAPP_FINAL
                    and whatsapp_possible(message, setting)):
            _hand_over(session, message, now)
            continue
        if not sms_possible(message, setting):
            fields = _leaving_line_with_status(message)
            if fields:
                _set(message, fields, now)
                emitted.setdefault(setting.id, []).append(message)
            ended.append(message)
            continue
        if config is None:
            config = providers.config_of(session, message.organization_id)
        if message.sms_status is None or message.sms_reference is None:
            if message.sms_status != svc.SMS_PREPARING:  # an SMS-only message emitted it when created
                emitted.setdefault(setting.id, []).append(message)
            _set(message, _first_sms_attempt(message, config, now), now)
        message.send_started_at = now
        text = _sms_text_to_send(session, message)
        assert message.sms_reference is not None
        plans.append(_SmsSend(message.id, message.phone_number, text, message.sms_reference))
    for setting_id, changed in emitted.items():
        emit_status(session, settings[setting_id], changed)
    finish_many(session, ended)
    plain.write(session)
    if not plans and context is not None:
        context.complete_in(session)
    return plans, config, marked_at


def _set(message: PnpMessage, fields: dict[str, Any], now: datetime) -> None:
    """A status change whose events the caller emits (for many messages at once)."""
    for key, value in fields.items():
        setattr(message, key, value)
    message.updated_at = now


def _send_and_record(plans: list[_SmsSend], config: Any, context: JobContext | None) -> None:
    """Send the SMS of ``plans`` (no transaction open), then record every answer in one transaction."""
    from openmaac.sms_plus import providers

    with providers.open_provider(config) as provider:
        callback = providers.callback_url(config)

        def send(plan: _SmsSend) -> Any:
            return provider.send(plan.phone, plan.text, reference=plan.reference, callback_url=callback)

        results = list(_sms_send_pool().map(send, plans) if len(plans) > 1 else map(send, plans))
    by_id = {plan.message_id: (plan, result) for plan, result in zip(plans, results, strict=True)}
    accepted = [plan.reference for plan, result in by_id.values() if result.accepted and result.provider_message_id]
    # while the answers are being recorded, and after, only acceptance is known: the rest is
    # decided from the database again
    send_memo.forget(config.organization_id, [plan.reference for plan in plans])

    def record(session: Session) -> None:
        plain = PlainMessages()
        messages = plain.read(session, sorted(by_id))
        settings = _settings_of(session, messages)
        timeouts: list[tuple[int, str]] = []
        emitted: dict[int, list[PnpMessage]] = {}
        now = utcnow()
        for message in messages:
            setting = settings.get(message.pnp_setting_id)
            if setting is None:
                continue
            plan, result = by_id[message.id]
            again = _record_sms_outcome(session, message, setting, config, plan.reference, result, timeouts=timeouts,
                                        emitted=emitted.setdefault(setting.id, []))
            if again is not None:
                _hand_over(session, message, now + timedelta(seconds=again))
        # the chunk's events together (one look-up of the organisation's webhook endpoints)
        for setting_id, changed in emitted.items():
            emit_status(session, settings[setting_id], changed)
        plain.write(session)
        if timeouts:
            enqueue(session, SMS_TIMEOUT, {"items": [[i, ref] for i, ref in timeouts]},
                    organization_id=config.organization_id,
                    run_at=now + minutes(config.callback_timeout_minutes),
                    unique_key=f"{SMS_TIMEOUT}:batch:{timeouts[0][1]}")
        if context is not None:
            context.complete_in(session)

    # run again should PostgreSQL end a deadlock with it (a group commit's status callbacks
    # locking the same messages): the SMS went out, their answers must not be lost
    get_database().write_retrying(record)
    send_memo.accepted(config.organization_id, accepted)


def run_sms_timeouts(items: list[tuple[int, str]], context: JobContext | None = None) -> None:
    """The callback deadline of a chunk of accepted SMS: those still without a final report end
    ``sms_callback_timeout`` (one transaction; those already final are not read)."""
    references = dict(items)
    open_ids = open_message_ids(sorted(references))
    with get_database().write() as session:
        plain = PlainMessages()
        messages = plain.read(session, open_ids)
        settings = _settings_of(session, messages) if messages else {}
        now = utcnow()
        emitted: dict[int, list[PnpMessage]] = {}
        ended: list[PnpMessage] = []
        for message in messages:
            setting = settings.get(message.pnp_setting_id)
            if setting is not None and message.sms_status == svc.SMS_ACCEPTED \
                    and message.sms_reference == references[message.id]:
                _set(message, {"status": svc.SMS_CALLBACK_TIMEOUT, "sms_status": svc.SMS_CALLBACK_TIMEOUT,
                               "sms_error_category": None}, now)
                emitted.setdefault(setting.id, []).append(message)
                ended.append(message)
        for setting_id, changed in emitted.items():
            emit_status(session, settings[setting_id], changed)
        finish_many(session, ended)
        plain.write(session)
        if context is not None:
            context.complete_in(session)


@handler(SMS_TIMEOUT)
def sms_timeout_job(payload: dict[str, Any], context: JobContext) -> None:
    if "items" in payload:
        run_sms_timeouts([(int(i), str(ref)) for i, ref in payload["items"]], context)
        return
    with get_database().write() as session:
        loaded = load_message(session, int(payload["message_id"]), lock=True)
        if loaded is None:
            return
        message, setting = loaded
        if message.sms_status == svc.SMS_ACCEPTED and message.sms_reference == payload.get("reference"):
            change(session, message, setting, status=svc.SMS_CALLBACK_TIMEOUT, sms_status=svc.SMS_CALLBACK_TIMEOUT,
                   sms_error_category=None)
            finish(session, message, setting)


# --- what this process knows of its own SMS sends (Twilio's ``sent`` answered without the database) --

class SendMemo:
    """The SMS references this process's batches marked under way or saw accepted, so that a
    provider's ``sent`` report about one (the first of the two status callbacks of every SMS)
    is known to change nothing without reading the database, as :func:`_report_changes_nothing`
    would decide from the row: under way (state ``sms_preparing``, ``send_started_at`` fresh:
    the send's own answer is about to be recorded) until ``SEND_GRACE_SECONDS`` after the mark,
    or accepted with the provider's id recorded (states only move forward from there, and a
    report about an earlier attempt changes nothing either). An entry is dropped before a
    send's answer other than acceptance is recorded, and "accepted" is noted only once that
    record committed; what the memo does not know goes to the database as before. Another
    process's sends are simply not in it. Bounded: the oldest entries go first."""

    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], float | None] = {}  # None: accepted; else under way since (monotonic)

    def _put(self, organization_id: int, references: Iterable[str], value: float | None) -> None:
        with self._lock:
            for reference in references:
                key = (organization_id, reference)
                self._entries.pop(key, None)  # re-inserted last: the newest is evicted last
                self._entries[key] = value
            while len(self._entries) > self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]

    def under_way(self, organization_id: int, references: Iterable[str], since: float) -> None:
        self._put(organization_id, references, since)

    def accepted(self, organization_id: int, references: Iterable[str]) -> None:
        self._put(organization_id, references, None)

    def forget(self, organization_id: int, references: Iterable[str]) -> None:
        with self._lock:
            for reference in references:
                self._entries.pop((organization_id, reference), None)

    def sent_changes_nothing(self, organization_id: int, report: DeliveryReport) -> bool:
        """True when ``report`` is a ``sent`` report about a send this process knows to be under
        way or accepted (False: not known here; the database decides)."""
        if report.status is not DeliveryStatus.SENT or not report.reference:
            return False
        with self._lock:
            if (organization_id, report.reference) not in self._entries:
                return False
            since = self._entries[(organization_id, report.reference)]
        return since is None or time.monotonic() - since < SEND_GRACE_SECONDS


send_memo = SendMemo()


# --- SMS delivery reports --------------------------------------------------------------------------

def report_is_storable(report: DeliveryReport) -> bool:
    """False for a report whose ids the database cannot look up or keep: a NUL character
    (PostgreSQL refuses one) or a provider id longer than its column. No provider sends one."""
    ids = (report.provider_message_id or "", report.reference or "")
    return len(ids[0]) <= PROVIDER_MESSAGE_ID_MAX and not any("\x00" in value for value in ids)


def _message_lookup(column: str, *, lock: bool) -> DriverStatement:
    statement = select(*_TABLE.c).where(_TABLE.c.organization_id == bindparam("org"),
                                        _TABLE.c[column] == bindparam("value")).limit(1)
    return DriverStatement(statement.with_for_update() if lock else statement)


# a report's message, whole, on the driver's cursor (locked on PostgreSQL)
_REPORT_LOOKUPS = {lock: (_message_lookup("sms_provider_message_id", lock=lock),
                          _message_lookup("sms_reference", lock=lock)) for lock in (False, True)}
_REPORTED = "sms_plus_reported"  # session.info: the messages a batch of reports read (PlainMessages)
_REPORT_SETTINGS = "sms_plus_report_settings"  # session.info: their scenarios, by id


def _report_message(session: Session, organization_id: int, report: DeliveryReport, *,
                    lock: bool) -> PnpMessage | None:
    """The message a report is about, by the provider's id, else by our reference: one of the
    batch's plain messages (the same object when two reports of the batch name it)."""
    conn = session.connection()
    by_provider_id, by_reference = _REPORT_LOOKUPS[lock and conn.dialect.name == "postgresql"]
    row = None
    if report.provider_message_id:
        row = by_provider_id.execute(conn, {"org": organization_id, "value": report.provider_message_id}).first()
    if row is None and report.reference:
        row = by_reference.execute(conn, {"org": organization_id, "value": report.reference}).first()
    if row is None:
        return None
    plain: PlainMessages = session.info.setdefault(_REPORTED, PlainMessages())
    return plain.adopt(dict(zip(_COLUMN_NAMES, row, strict=True)))


def _report_setting(session: Session, setting_id: int) -> PnpSetting | None:
    """A report's scenario (read through Core once per batch of reports; only read)."""
    cache: dict[int, PnpSetting | None] = session.info.setdefault(_REPORT_SETTINGS, {})
    if setting_id not in cache:
        cache[setting_id] = _settings_by_id(session.connection(), [setting_id]).get(setting_id)
    return cache[setting_id]


# what deciding whether a report changes anything reads (one row on the driver's cursor, no ORM object)
_SEEN_COLUMNS = [_TABLE.c[name] for name in ("sms_reference", "sms_status", "send_started_at",
                                             "sms_provider_message_id")]


@dataclass(frozen=True)
class _Seen:
    sms_reference: str | None
    sms_status: str | None
    send_started_at: datetime | None
    sms_provider_message_id: str | None


_SEEN_BY = {column: DriverStatement(select(*_SEEN_COLUMNS).where(
    _TABLE.c.organization_id == bindparam("org"), _TABLE.c[column] == bindparam("value")).limit(1))
    for column in ("sms_provider_message_id", "sms_reference")}


def _seen(conn: Connection, organization_id: int, report: DeliveryReport) -> _Seen | None:
    row = None
    if report.provider_message_id:
        row = _SEEN_BY["sms_provider_message_id"].execute(
            conn, {"org": organization_id, "value": report.provider_message_id}).first()
    if row is None and report.reference:
        row = _SEEN_BY["sms_reference"].execute(conn, {"org": organization_id, "value": report.reference}).first()
    return _Seen(*row) if row is not None else None


def _report_changes_nothing(message: Any, report: DeliveryReport) -> bool:
    """Whether the report would leave the message as it is (states only move forward, so what a
    read without the write lock saw stays true): Twilio's ``sent`` after the send's own answer
    was recorded, a report about an earlier attempt, or about a message already final."""
    if message is None:
        return True
    if report.reference and message.sms_reference and report.reference != message.sms_reference:
        return True
    if report.status is DeliveryStatus.SENT and message.sms_status == svc.SMS_PREPARING \
            and message.send_started_at is not None \
            and (utcnow() - message.send_started_at).total_seconds() < SEND_GRACE_SECONDS:
        # the send is under way and its own answer (acceptance, provider id) is about to be
        # recorded; should its process die first, the recovery looks the send up at the provider
        return True
    if not message.sms_provider_message_id and report.provider_message_id:
        return False
    if message.sms_status in SMS_FINAL:
        return True
    return report.status is DeliveryStatus.SENT and message.sms_status not in (
        svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR)


def apply_sms_report(organization_id: int, report: DeliveryReport) -> bool:
    """Apply one provider delivery report. True when it matched a message.

    Read first: many reports (Twilio's ``sent`` once the send was recorded, or while the send's
    own answer is being recorded) change nothing and need no write. The others are written by
    ``report_writes``: reports arriving together share one transaction, each answered once it committed."""
    if send_memo.sent_changes_nothing(organization_id, report):
        return True
    database = get_database()
    with database.lookup() as conn:
        seen = _seen(conn, organization_id, report)
    if _report_changes_nothing(seen, report):
        return seen is not None
    return report_writes(database).run(_report_work(organization_id, report))


def _apply_report(session: Session, organization_id: int, report: DeliveryReport, ended: list[PnpMessage]) -> bool:
    """One report in the caller's write transaction; the messages it ends go to ``ended``."""
    message = _report_message(session, organization_id, report, lock=True)
    if message is None:
        return False
    if report.reference and message.sms_reference and report.reference != message.sms_reference:
        return True  # a report about an earlier attempt
    setting = _report_setting(session, message.pnp_setting_id)
    if setting is None:
        return False
    if not message.sms_provider_message_id and report.provider_message_id:
        message.sms_provider_message_id = report.provider_message_id
    if message.sms_status in SMS_FINAL:
        return True
    if report.status is DeliveryStatus.SENT:
        if message.sms_status in (svc.SMS_PREPARING, svc.SMS_TEMPORARY_ERROR):
            message.points_held = 0
            change(session, message, setting, status=svc.SMS_ACCEPTED, sms_status=svc.SMS_ACCEPTED,
                   sms_error_category=None)
            # the send's own answer may never be recorded (its process died): the callback
            # deadline starts here too (one job per reference, whoever comes first)
            from openmaac.sms_plus import providers

            config = providers.config_of(session, organization_id)
            enqueue(session, SMS_TIMEOUT, {"message_id": message.id, "reference": message.sms_reference},
                    organization_id=organization_id,
                    run_at=utcnow() + minutes(config.callback_timeout_minutes),
                    unique_key=f"{SMS_TIMEOUT}:{message.sms_reference}")
        return True
    message.points_held = 0  # the provider took it
    if report.status is DeliveryStatus.DELIVERED:
        change(session, message, setting, status=svc.SMS_DELIVERED, sms_status=svc.SMS_DELIVERED,
               sms_delivered_at=utcnow(), sms_error_category=None)
        ended.append(message)
        return True
    if report.status is DeliveryStatus.TEMPORARY_ERROR and message.sms_retry_until is not None \
            and utcnow() < message.sms_retry_until:
        change(session, message, setting, status=svc.SMS_TEMPORARY_ERROR, sms_status=svc.SMS_TEMPORARY_ERROR,
               sms_error_category=None)
        enqueue(session, FALLBACK, {"message_id": message.id}, organization_id=organization_id,
                run_at=utcnow() + minutes(SMS_RETRY_INTERVAL_MINUTES),
                unique_key=f"{FALLBACK}:{message.id}:{message.sms_reference}")
        return True
    if report.status is DeliveryStatus.TEMPORARY_ERROR:
        fields = {"sms_status": svc.SMS_FAILED, "sms_error_category": "target_reception_issue"}
    else:
        fields = _sms_error_fields(report.error_category, at_send=False)
    fields["status"] = fields["sms_status"]
    change(session, message, setting, **fields)
    ended.append(message)
    return True


_ENDED = "sms_plus_ended"  # session.info: the messages a batch of reports ended


def _report_work(organization_id: int, report: DeliveryReport) -> Callable[[Session], bool]:
    """One report as a write of the reports' group commit (the messages it ends are finished
    together at the batch's end)."""
    def work(session: Session) -> bool:
        return _apply_report(session, organization_id, report, session.info.setdefault(_ENDED, []))
    return work


def _finish_ended(session: Session) -> None:
    """The end of a batch of reports: the messages they ended finished together, then every
    message they changed written (the column values each changed)."""
    finish_many(session, session.info.pop(_ENDED, []))
    plain: PlainMessages | None = session.info.pop(_REPORTED, None)
    if plain is not None:
        plain.write(session)


def report_writes(database: Database) -> GroupCommit:
    """Group commit for delivery reports: reports arriving together share one transaction, each
    caller answered once it committed; a failing transaction is retried report by report. The
    reports read their messages as plain objects (``PlainMessages``: a message two reports name
    is found by its reference and is then the same object, with the first report's changes), and
    the batch ends with one ``finish_many`` over the messages its reports ended and one write of
    the columns they changed."""
    return group_commit(database, "sms_plus.reports", on_batch_end=_finish_ended, autoflush=False)


# --- WhatsApp status webhooks ----------------------------------------------------------------------

def whatsapp_message_org(reference: str | None, provider_message_id: str | None) -> int | None:
    """The organisation of the message a WhatsApp status is about (to pick the app secret that
    must have signed it)."""
    message_id = wa.message_id_of(reference)
    with get_database().read() as session:
        if message_id is not None:
            org = session.scalar(select(PnpMessage.organization_id).where(PnpMessage.id == message_id))
            if org is not None:
                return int(org)
        if provider_message_id:
            org = session.scalar(select(PnpMessage.organization_id).where(
                PnpMessage.whatsapp_message_id == provider_message_id).limit(1))
            if org is not None:
                return int(org)
    return None


def apply_whatsapp_report(organization_id: int, report: DeliveryReport) -> bool:
    """Apply one verified WhatsApp status (sent / delivered / read / failed). True when it matched."""
    with get_database().write() as session:
        # Only the id first: a message object read here, before the lock below is granted, would
        # stay in the session as it was then (PostgreSQL), and a change committed by the
        # transaction that held the lock (the send's answer, another status) would go unseen
        # and be applied a second time.
        found: int | None = None
        message_id = wa.message_id_of(report.reference)
        if message_id is not None:
            found = session.scalar(select(PnpMessage.id).where(PnpMessage.organization_id == organization_id,
                                                               PnpMessage.id == message_id))
        if found is None and report.provider_message_id:
            found = session.scalar(select(PnpMessage.id).where(
                PnpMessage.organization_id == organization_id,
                PnpMessage.whatsapp_message_id == report.provider_message_id).limit(1))
        if found is None:
            return False
        loaded = load_message(session, found, lock=True)
        if loaded is None:
            return False
        message, setting = loaded
        if report.provider_message_id and not message.whatsapp_message_id:
            message.whatsapp_message_id = report.provider_message_id
        current = message.whatsapp_status
        if current is None or current == svc.WHATSAPP_DELIVERED:
            return True
        # the message's own status follows WhatsApp only while WhatsApp is its latest channel
        leading = message.sms_status is None and not message.finished
        if report.status is DeliveryStatus.SENT:
            if current == svc.WHATSAPP_PREPARING:
                change(session, message, setting, **({"status": svc.WHATSAPP_ACCEPTED} if leading else {}),
                       whatsapp_status=svc.WHATSAPP_ACCEPTED)
            return True
        if report.status is DeliveryStatus.DELIVERED:
            change(session, message, setting, **({"status": svc.WHATSAPP_DELIVERED} if leading else {}),
                   whatsapp_status=svc.WHATSAPP_DELIVERED, whatsapp_delivered_at=utcnow(),
                   whatsapp_error_category=None)
            if leading:
                finish(session, message, setting)
            return True
        if current not in (svc.WHATSAPP_PREPARING, svc.WHATSAPP_ACCEPTED):
            return True  # already failed or timed out: a late failure changes nothing
        change(session, message, setting, **({"status": svc.WHATSAPP_UNDELIVERABLE} if leading else {}),
               whatsapp_status=svc.WHATSAPP_UNDELIVERABLE,
               whatsapp_error_category=wa.category_of(report.error_category))
        if leading:
            # on to SMS (or the end) now, not at the WhatsApp deadline
            message.fallback_at = utcnow()
            enqueue(session, FALLBACK, {"message_id": message.id}, organization_id=organization_id,
                    run_at=utcnow(), unique_key=f"{FALLBACK}:{message.id}:whatsapp")
        return True

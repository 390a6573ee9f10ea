"""Sending direct messages through LINE, effectively once.

Every accepted request is durable before it is answered: the direct message, its recipients
and its job are written in one transaction. Each call to LINE is a ``DirectMessageSend`` row
holding its ``X-Line-Retry-Key``, written BEFORE the call; whoever makes the call again
(after a timeout, a 500, or a crash of the process that made it) reuses that key, and LINE's
409 ("already accepted") counts as sent. So LINE executes each call at most once, and every
call is eventually made.

- push: recorded (message, recipient, send row leased to the request), then LINE is called
  in the request and the outcome answered. Should the process die before recording the
  outcome, the push sweep (``SWEEP_KIND``) finds the send whose lease lapsed and queues the
  message's send job, which finishes it with the same key. A push does not write a recovery
  job of its own: its acceptance makes sure the sweep job of its moment exists (one per
  ``SWEEP_BUCKET_SECONDS``, due after the lease of every push accepted in it).
- enhanced multicast: one shared parameter set, so the message is rendered (and its links
  tracked per message) once, at acceptance, and the LINE call rows are written with the
  request: the job only calls LINE and records the outcome.
- multicast: the ``direct_message.send`` job renders each recipient's messages (tracking links
  and images when an event is given) and groups recipients whose rendered messages are
  identical into LINE multicast calls (at most 500 ids; single recipients go by push, LINE's
  faster-limited endpoint).

The job of a message is the only one sending its multicast calls: it runs under a short job
lease (``JOB_LEASE_SECONDS``) renewed by a heartbeat while it runs, so if its process dies
the restarted (or any other) worker takes the job over within that time, and then takes over
the calls the dead run had leased (their lease died with the job's), finishing them with
their stored retry keys. Each step is one short write transaction: start (plan, claim a
batch), then per batch "record the outcomes and claim the next batch", the last one also
marking the message sent. No transaction is open during a LINE call.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from http import HTTPStatus
from typing import Any

import orjson
from sqlalchemy import Text, and_, bindparam, cast, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from openmaac.auth.models import Organization
from openmaac.auth.service import OrgContext
from openmaac.channels import line_rate
from openmaac.channels.line_client import (
    MULTICAST_MAX_RECIPIENTS,
    LineAPIError,
    LineClient,
    LineTimeout,
    new_retry_key,
)
from openmaac.channels.models import LineChannel
from openmaac.channels.service import line_api_base_url
from openmaac.common.validation import char_fields, plain_char_fields
from openmaac.contacts.models import LINE_UID_MAX_LENGTH, Contact
from openmaac.db.base import JSONType, UTCDateTime, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.db.engine import get_database, json_dumps
from openmaac.db.group_commit import REQUEST_WRITES, group_commit
from openmaac.jobs.models import Job
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, RetryLater, handler
from openmaac.links import rewrite
from openmaac.links import service as links
from openmaac.messaging import direct, notify
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, DirectMessageSend
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import render
from openmaac.web.errors import field_errors
from openmaac.webhooks import service as webhooks

JOB_KIND = "direct_message.send"
SWEEP_KIND = "direct_message.push_sweep"
SWEEP_BUCKET_SECONDS = 5  # the pushes accepted within one such span share one sweep job
SWEEP_BATCH = 500  # lapsed pushes queued per statement of a sweep
BATCH = 50  # LINE calls claimed (leased) together by a job
CONCURRENCY = 8  # LINE calls of one job in flight at once
JOB_LEASE_SECONDS = 15.0  # a running send job's lease; the heartbeat renews it every third of it
# send jobs run in batches: a message whose calls were all answered waits at most this long for
# the other messages' calls before it is recorded (recording them together saves transactions)
RECORD_WITHIN_SECONDS = 1.0


def line_timeout() -> float:
    """Seconds to wait for one LINE answer (``OPENMAAC_LINE_TIMEOUT``, default 10)."""
    return float(os.environ.get("OPENMAAC_LINE_TIMEOUT", "10"))


def line_attempts() -> int:
    """HTTP attempts per LINE call, retries included (``OPENMAAC_LINE_MAX_ATTEMPTS``, default 3)."""
    return max(1, int(os.environ.get("OPENMAAC_LINE_MAX_ATTEMPTS", "3")))


def send_lease() -> timedelta:
    """How long a claimed LINE call is reserved for its caller (all attempts and backoffs)."""
    return timedelta(seconds=line_attempts() * (line_timeout() + 8.0) + 30.0)


@dataclass(frozen=True)
class Line:
    """Where and as whom a channel's calls go."""

    base_url: str | None  # None: the built-in simulator (channels.service.line_api_base_url)
    access_token: str
    channel_id: str

    def client(self) -> LineClient:
        # cheap: the HTTP connection pool is shared per process (line_client._shared_http)
        return LineClient(line_api_base_url(self.base_url), self.access_token, timeout=line_timeout(), max_attempts=line_attempts(),
                          limiter=line_rate.limiter(get_database(), self.channel_id))


@dataclass(frozen=True)
class MessageRef:
    """What recording needs of a direct message (and what ``links.Tracker`` and ``notify`` read)."""

    id: int
    organization_id: int
    category: str
    event_id: int | None
    # False: an enhanced multicast whose call rows list its recipients (no row per recipient)
    recipient_rows: bool = True


# -- outcomes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    outcome: str  # success | timeout | error | rejected (LINE answered non-2xx)
    status_code: int | None = None
    body: Any = None

    def failure_text(self) -> str:
        """``fail_info[].response``: "timeout", LINE's error body as JSON text, or "<code> <reason>"."""
        if self.outcome == "timeout":
            return "timeout"
        if self.outcome == "rejected" and self.status_code is not None:
            quota = isinstance(self.body, dict) and "monthly limit" in str(self.body.get("message", ""))
            if self.status_code == 429 and not quota:
                return "429 Too Many Requests"
            if isinstance(self.body, dict):
                return json.dumps(self.body)
            try:
                reason = HTTPStatus(self.status_code).phrase
            except ValueError:
                reason = ""
            return f"{self.status_code} {reason}".strip()
        return "error"

    def push_result(self) -> Any:
        """The push API's ``result``: "success", "timeout", "error" or LINE's error object."""
        if self.outcome == "success":
            return "success"
        if self.outcome == "timeout":
            return "timeout"
        if (self.outcome == "rejected" and self.status_code is not None and 400 <= self.status_code < 500
                and isinstance(self.body, dict)):
            return self.body
        return "error"


def call_line(client: LineClient, method: str, to: list[str], messages: list[dict[str, Any]],
              retry_key: str) -> Outcome:
    try:
        if method == "push":
            client.push(to[0], messages, retry_key=retry_key)
        else:
            client.multicast(to, messages, retry_key=retry_key)
    except LineTimeout as exc:
        return Outcome("error" if exc.connect_failed else "timeout")
    except LineAPIError as exc:
        return Outcome("rejected", exc.status_code, exc.body)
    except Exception as exc:  # a bug or a malformed call must fail this send, not the whole job
        return Outcome("error", None, repr(exc)[:500])
    return Outcome("success", 200)


# -- LINE call rows -------------------------------------------------------------------------------

# A send row's ``recipient_ids[i]`` stands for the recipient of ``to[i]``: either the id of its
# ``direct_message_recipients`` row, or, for an enhanced multicast, a ``[mark, contact_id]``
# pair: that recipient's row is written only when the call's outcome is recorded, with its
# final status (one write per recipient instead of an insert and an update; no per-recipient
# tracking needs the row earlier).
RecipientRef = int | list[int]


@dataclass(frozen=True)
class Claimed:
    """One LINE call taken by a caller: ``recipient_ids[i]`` is the recipient of ``to[i]``."""

    id: int
    method: str
    to: list[str]
    messages: list[dict[str, Any]]
    retry_key: str
    # the references, or their JSON text as claimed: read only if recording needs them (a
    # sent enhanced multicast without recipient rows does not: 500 pairs left undecoded)
    refs: list[RecipientRef] | str

    @cached_property
    def recipient_ids(self) -> list[RecipientRef]:
        # ids and marks only, all within 64 bits: orjson reads them as json would, 4x faster
        return orjson.loads(self.refs) if isinstance(self.refs, str) else self.refs

    @property
    def deferred(self) -> bool:
        """The recipients' rows are written when the outcome is recorded (references are
        ``[mark, contact_id]`` pairs)."""
        if isinstance(self.refs, str):
            return self.refs.lstrip()[1:].lstrip().startswith("[")
        return bool(self.refs) and isinstance(self.refs[0], list)


def _send_row(dm: MessageRef, method: str, recipients: Sequence[tuple[RecipientRef, str]],
              messages: list[dict[str, Any]], locked_until: datetime | None, now: datetime) -> dict[str, Any]:
    return {"direct_message_id": dm.id, "organization_id": dm.organization_id, "method": method,
            "retry_key": new_retry_key(), "recipient_ids": [ref for ref, _uid in recipients],
            "to": [uid for _ref, uid in recipients], "messages": messages, "status": "pending",
            "locked_until": locked_until, "created_at": now}


def _send_rows(dm: MessageRef, recipients: Sequence[tuple[RecipientRef, str]], messages: list[dict[str, Any]],
               now: datetime) -> list[dict[str, Any]]:
    """The LINE calls for recipients of one identical message: push for one, else multicasts of ≤500."""
    if len(recipients) == 1:
        return [_send_row(dm, "push", recipients, messages, None, now)]
    return [_send_row(dm, "multicast", recipients[i:i + MULTICAST_MAX_RECIPIENTS], messages, None, now)
            for i in range(0, len(recipients), MULTICAST_MAX_RECIPIENTS)]


# Prebuilt statements with bound parameters: built once, their compiled forms cached, so a
# send costs the database's work and not SQLAlchemy's expression building (which was about
# half the CPU of a 500-recipient message here).
_D = DirectMessage.__table__
_R = DirectMessageRecipient.__table__
_S = DirectMessageSend.__table__
_C = LineChannel.__table__
_J = Job.__table__


def _claim_statement(postgres: bool) -> Any:
    candidates = (select(_S.c.id).where(
        _S.c.direct_message_id == bindparam("dm"), _S.c.status == "pending",
        or_(_S.c.locked_until.is_(None), _S.c.locked_until < bindparam("now", type_=UTCDateTime())),
    ).order_by(_S.c.id).limit(bindparam("lim")))
    if postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    return (update(_S).where(_S.c.id.in_(candidates.scalar_subquery()))
            .values(locked_until=bindparam("until", type_=UTCDateTime()))
            .returning(_S.c.id, _S.c.method, cast(_S.c.to, Text), _S.c.messages, _S.c.retry_key,
                       cast(_S.c.recipient_ids, Text)))  # as JSON text: see claim()


def _pg_send_job_cte(run_at: str) -> str:
    """The ``job`` CTE of the PostgreSQL accepting statements: the message ``dm``'s send job (as
    ``_enqueue_send`` writes it), due at ``run_at`` (a bound parameter's name)."""
    return f"""job AS (
  INSERT INTO jobs (kind, payload, organization_id, run_at, priority, max_attempts, unique_key, status, attempts,
                    created_at)
  SELECT :kind, jsonb_build_object('id', dm.id), :org, {run_at}, 100, 10, :key_prefix || dm.id, 'ready', 0, :now
  FROM dm RETURNING id)"""


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}
_RECORD_SEND = (update(_S).where(_S.c.id == bindparam("sid"), _S.c.status == "pending")
                .values(status="done", outcome=bindparam("b_outcome"), status_code=bindparam("b_code"),
                        response_body=bindparam("b_body", type_=JSONType), completed_at=bindparam("b_now", type_=UTCDateTime()),
                        locked_until=None))
_MARK_SPLIT = update(_S).where(_S.c.id == bindparam("sid")).values(outcome="split")
_RECIPIENTS_SENT = (update(_R).where(_R.c.id.in_(bindparam("ids", expanding=True)))
                    .values(status="sent", sent_at=bindparam("b_now", type_=UTCDateTime()), response=None))
_RECIPIENTS_FAILED = (update(_R).where(_R.c.id.in_(bindparam("ids", expanding=True)))
                      .values(status="failed", response=bindparam("b_response")))
_RANGE_SENT = (update(_R).where(_R.c.id.between(bindparam("lo"), bindparam("hi")))
               .values(status="sent", sent_at=bindparam("b_now", type_=UTCDateTime()), response=None))
_RANGE_FAILED = (update(_R).where(_R.c.id.between(bindparam("lo"), bindparam("hi")))
                 .values(status="failed", response=bindparam("b_response")))
_PENDING_SENDS = select(func.count()).select_from(_S).where(_S.c.direct_message_id == bindparam("dm"),
                                                             _S.c.status == "pending")
_STATUS = select(_D.c.status, _D.c.recipient_rows).where(_D.c.id == bindparam("dm"))
_COUNTS = select(_R.c.status, func.count()).where(_R.c.direct_message_id == bindparam("dm")).group_by(_R.c.status)
# a message without recipient rows: its recipients by the outcome of the calls listing them
# (its total and the entries that are no contact were counted at acceptance): one UPDATE adds
# the recipients of the calls that failed
_MARK_LISTED_SENT = {
    postgres: (update(_D).where(_D.c.id == bindparam("dm"), _D.c.status != "sent")
               .values(status="sent", sent_at=bindparam("b_now", type_=UTCDateTime()),
                       updated_at=bindparam("b_now", type_=UTCDateTime()),
                       fail_count=_D.c.fail_count + func.coalesce(
                           select(func.sum((func.jsonb_array_length if postgres else func.json_array_length)(_S.c.to)))
                           .where(_S.c.direct_message_id == bindparam("dm"), _S.c.status == "done",
                                  _S.c.outcome != "success", _S.c.outcome != "split")
                           .scalar_subquery(), 0)))
    for postgres in (False, True)}
_DONE_SENDS = (select(_S.c.to, _S.c.recipient_ids, _S.c.outcome, _S.c.status_code, _S.c.response_body,
                      _S.c.completed_at)
               .where(_S.c.direct_message_id == bindparam("dm"), _S.c.status == "done", _S.c.outcome != "split"))
_FAIL_LEFTOVERS = (update(_R).where(_R.c.direct_message_id == bindparam("dm"), _R.c.status == "pending")
                   .values(status="failed", response="error"))
_MARK_SENT = (update(_D).where(_D.c.id == bindparam("dm"), _D.c.status != "sent")
              .values(status="sent", sent_at=bindparam("b_now", type_=UTCDateTime()),
                      updated_at=bindparam("b_now", type_=UTCDateTime()), total_count=bindparam("b_total"),
                      fail_count=bindparam("b_failed")))
_MESSAGE_AND_LINE = {
    postgres: (select(_D.c.organization_id, _D.c.category, _D.c.status, _D.c.template_id, _D.c.event_id,
                      _D.c.recipient_rows, _C.c.api_base_url, _C.c.access_token, _C.c.channel_id)
               .select_from(_D.outerjoin(_C, _C.c.organization_id == _D.c.organization_id))
               .where(_D.c.id == bindparam("dm")))
    for postgres in (False, True)}
_MESSAGE_AND_LINE[True] = _MESSAGE_AND_LINE[True].with_for_update(of=_D)
_MARK_SENDING = (update(_D).where(_D.c.id == bindparam("dm"))
                 .values(status="sending", updated_at=bindparam("b_now", type_=UTCDateTime())))
_RELEASE = (update(_S).where(_S.c.direct_message_id == bindparam("dm"), _S.c.status == "pending",
                             _S.c.locked_until.is_not(None)).values(locked_until=None))
_INSERT_SENDS = insert(_S)
_INSERT_MESSAGE = insert(_D).returning(_D.c.id)
_INSERT_RECIPIENT = insert(_R).returning(_R.c.id)
_INSERT_SEND = insert(_S).returning(_S.c.id)
_MARK_PUSH_SENT = (update(_D).where(_D.c.id == bindparam("dm"), _D.c.status != "sent")
                   .values(status="sent", sent_at=bindparam("b_now", type_=UTCDateTime()),
                           updated_at=bindparam("b_now", type_=UTCDateTime()), total_count=1,
                           fail_count=bindparam("b_failed")))
_INSERT_JOB = insert(_J)
# a LINE call row whose JSON columns come encoded (SQLite: stored as the text they are)
_INSERT_CALL_ENCODED = insert(_S).values(
    direct_message_id=bindparam("dm"), organization_id=bindparam("org"), method=bindparam("method"),
    retry_key=bindparam("retry_key"), recipient_ids=bindparam("refs", type_=Text()),
    to=bindparam("to", type_=Text()), messages=bindparam("messages", type_=Text()), status="pending",
    locked_until=None, created_at=bindparam("now", type_=UTCDateTime()))
# PostgreSQL: an untracked enhanced multicast's message, its LINE call (unless no recipient is
# a contact) and its job in one statement (the same rows as SQLite's three inserts)
_PG_ACCEPT_ENHANCED = text("""
WITH dm AS (
  INSERT INTO direct_messages (organization_id, category, template_id, event_id, status, tracked, params,
                               recipient_rows, total_count, fail_count, created_at, updated_at)
  VALUES (:org, 'enhanced_multicast', :template, NULL, 'pending', false, CAST(:params AS jsonb), false, :total,
          :failed, :now, :now) RETURNING id),
snd AS (
  INSERT INTO direct_message_sends (direct_message_id, organization_id, method, retry_key, recipient_ids, "to",
                                    messages, status, locked_until, created_at)
  SELECT dm.id, :org, :method, :retry_key, CAST(:refs AS jsonb), CAST(:to AS jsonb), CAST(:messages AS jsonb),
         'pending', NULL, :now FROM dm WHERE :with_call RETURNING id),
""" + _pg_send_job_cte(":now") + """
SELECT dm.id FROM dm""")
_DROP_RECOVERY = delete(_J).where(_J.c.unique_key == bindparam("key"), _J.c.status == "ready")
# a push's acceptance makes sure the sweep job of its moment exists (the same SQL on both
# databases: nothing is written when it does, and a speculative insert costs no row then)
_ENSURE_SWEEP_SQL = """INSERT INTO jobs (kind, payload, organization_id, run_at, priority, max_attempts, unique_key,
                  status, attempts, created_at)
VALUES (:sweep_kind, '{}', NULL, :sweep_at, 100, 10, :sweep_key, 'ready', 0, :now)
ON CONFLICT (unique_key) DO NOTHING"""
_ENSURE_SWEEP = text(_ENSURE_SWEEP_SQL).bindparams(bindparam("sweep_at", type_=UTCDateTime()),
                                                   bindparam("now", type_=UTCDateTime()))
# the pushes whose caller died: a call still pending after its lease, of a push (by id, from
# ``after``: a sweep goes through them in order)
_LAPSED_PUSHES = (select(_S.c.id, _S.c.direct_message_id, _S.c.organization_id)
                  .where(_S.c.status == "pending", _S.c.method == "push",
                         _S.c.locked_until < bindparam("now", type_=UTCDateTime()), _S.c.id > bindparam("after"))
                  .order_by(_S.c.id).limit(SWEEP_BATCH))

# PostgreSQL: the untracked pushes of one group-commit batch are accepted (message, LINE call
# row, and the sweep job of the moment made sure of) in ONE statement of data-modifying CTEs
# over arrays, one row per push, and their LINE answers recorded (call, message) in one more:
# two round trips per batch instead of two per push (what the generic path writes, in the same
# columns; SQLite has no DML in CTEs and no round trips to save). The message ids are drawn
# first (``v``, materialised once), so the call rows can name their message. The statement also
# takes the LINE rate slots of the channels whose lease in this process ran out
# (line_rate.leases_in_statement), a row each after the pushes': with 24 organisations pushing
# at once a channel's lease was stale at nearly every push, and a round trip per channel cost
# one per push.
_PG_ACCEPT_PUSHES = text("""
WITH v AS MATERIALIZED (
  SELECT nextval(pg_get_serial_sequence('direct_messages', 'id')) AS dm_id, v.*
  FROM unnest(CAST(:orgs AS bigint[]), CAST(:templates AS bigint[]), CAST(:params AS text[]),
              CAST(:retry_keys AS text[]), CAST(:recipients AS text[]), CAST(:tos AS text[]),
              CAST(:messages AS text[])) WITH ORDINALITY
       AS v(org, template, params, retry_key, recipients, to_list, messages, ord)),
dm AS (
  INSERT INTO direct_messages (id, organization_id, category, template_id, event_id, status, tracked, params,
                               recipient_rows, total_count, fail_count, created_at, updated_at)
  SELECT dm_id, org, 'push', template, NULL, 'sending', false, CAST(params AS jsonb), false, 1, 0, :now, :now
  FROM v ORDER BY ord),
snd AS (
  INSERT INTO direct_message_sends (direct_message_id, organization_id, method, retry_key, recipient_ids, "to",
                                    messages, status, locked_until, created_at)
  SELECT dm_id, org, 'push', retry_key, CAST(recipients AS jsonb), CAST(to_list AS jsonb),
         CAST(messages AS jsonb), 'pending', :until, :now FROM v ORDER BY ord RETURNING id, direct_message_id),
sweep AS (""" + _ENSURE_SWEEP_SQL + """),
rate AS (""" + line_rate.PG_TAKE_MANY + """)
SELECT 0, v.ord, v.dm_id, snd.id, NULL, NULL, NULL FROM v JOIN snd ON snd.direct_message_id = v.dm_id
UNION ALL
SELECT 1, 0, NULL, NULL, rate.channel_id, rate.next_free, rate.db_now FROM rate
ORDER BY 1, 2""")
# Record: each call from pending only (its message's send job, queued by the sweep after the
# lease, may have recorded it first), its message marked sent only with it; the ids of the
# calls recorded here.
_PG_RECORD_PUSHES = text("""
WITH o AS (
  SELECT * FROM unnest(CAST(:sids AS bigint[]), CAST(:outcomes AS text[]), CAST(:codes AS integer[]),
                       CAST(:bodies AS text[]), CAST(:dms AS bigint[]), CAST(:failed AS integer[]))
         AS o(sid, outcome, code, body, dm, failed)),
snd AS (
  UPDATE direct_message_sends s SET status = 'done', outcome = o.outcome, status_code = o.code,
         response_body = CAST(o.body AS jsonb), completed_at = :now, locked_until = NULL
  FROM o WHERE s.id = o.sid AND s.status = 'pending' RETURNING s.id),
dm AS (
  UPDATE direct_messages m SET status = 'sent', sent_at = :now, updated_at = :now, total_count = 1,
         fail_count = o.failed
  FROM o JOIN snd ON snd.id = o.sid WHERE m.id = o.dm AND m.status <> 'sent' RETURNING m.id)
SELECT 0, snd.id, NULL::bigint, NULL::json, NULL::text FROM snd
UNION ALL
SELECT 1, NULL, r.* FROM (""" + webhooks.pg_targets_rows(":announcing") + """) r""")
# ... and the webhook targets of the organisations with a success to announce (message.send),
# a row each after the calls': not a round trip per organisation of their own

# A push's statements run on the driver's cursor (db/driver.py): the same SQL and conversions
# without SQLAlchemy's per-statement execution machinery, a large share of a push's CPU.
_PUSHES_ACCEPT_PG = DriverStatement(_PG_ACCEPT_PUSHES)
_PUSHES_RECORD_PG = DriverStatement(_PG_RECORD_PUSHES)
_PUSH_INSERT_MESSAGE = DriverStatement(_INSERT_MESSAGE)
_PUSH_INSERT_RECIPIENT = DriverStatement(_INSERT_RECIPIENT)
_PUSH_INSERT_SEND = DriverStatement(_INSERT_SEND)
_PUSH_INSERT_JOB = DriverStatement(_INSERT_JOB)
_PUSH_RECORD_SEND = DriverStatement(_RECORD_SEND)
_PUSH_RECIPIENT = {True: DriverStatement(_RANGE_SENT), False: DriverStatement(_RANGE_FAILED)}
_PUSH_MARK_SENT = DriverStatement(_MARK_PUSH_SENT)
_PUSH_ENSURE_SWEEP = DriverStatement(_ENSURE_SWEEP)
# the send job's statements, run for every message
_CLAIM_DRIVER = {postgres: DriverStatement(statement) for postgres, statement in _CLAIM.items()}
_MESSAGE_AND_LINE_DRIVER = {postgres: DriverStatement(statement) for postgres, statement in _MESSAGE_AND_LINE.items()}
_MARK_SENDING_DRIVER = DriverStatement(_MARK_SENDING)
_PENDING_SENDS_DRIVER = DriverStatement(_PENDING_SENDS)
_MARK_LISTED_SENT_DRIVER = {postgres: DriverStatement(statement) for postgres, statement in _MARK_LISTED_SENT.items()}
# an untracked enhanced multicast's acceptance (with _PUSH_INSERT_MESSAGE and _PUSH_INSERT_JOB)
_ACCEPT_ENHANCED_PG = DriverStatement(_PG_ACCEPT_ENHANCED)
_ACCEPT_CALL = DriverStatement(_INSERT_CALL_ENCODED)

# PostgreSQL: the send jobs of one batch start and record in ONE statement per step for all of
# their messages (data-modifying CTEs, set-based on the messages' ids), instead of three
# (start) and four (record) round trips per message. The same rows and conditions as the
# per-message statements above; what they do not cover (a multicast to plan, a run to take
# over, a call to split, recipient rows to write) still goes the per-message way.
#
# Start: the messages (locked, as _MESSAGE_AND_LINE locks one) with their channel, those
# pending marked sending, and up to :lim free calls of each leased (a multicast still to plan,
# and a message whose earlier run died, are left to ``_start_in``). One row per claimed call,
# or one with NULL call columns for a message with none.
_PG_START_BATCH = text("""
WITH d AS (
  SELECT m.id, m.organization_id, m.category, m.status, m.template_id, m.event_id, m.recipient_rows,
         c.api_base_url, c.access_token, c.channel_id
  FROM direct_messages m LEFT JOIN line_channels c ON c.organization_id = m.organization_id
  WHERE m.id = ANY(CAST(:dms AS bigint[])) ORDER BY m.id FOR UPDATE OF m),
mark AS (
  UPDATE direct_messages SET status = 'sending', updated_at = :now
  WHERE id IN (SELECT id FROM d WHERE status = 'pending' AND category <> 'multicast') RETURNING id),
pick AS (
  SELECT x.id FROM d CROSS JOIN LATERAL (
    SELECT s.id FROM direct_message_sends s
    WHERE s.direct_message_id = d.id AND s.status = 'pending'
      AND (s.locked_until IS NULL OR s.locked_until < :now)
    ORDER BY s.id LIMIT :lim FOR UPDATE SKIP LOCKED) x
  WHERE (d.status = 'pending' AND d.category <> 'multicast') OR (d.status = 'sending' AND d.category = 'push')),
claimed AS (
  UPDATE direct_message_sends s SET locked_until = :until FROM pick WHERE s.id = pick.id
  RETURNING s.id, s.direct_message_id, s.method, CAST(s."to" AS text) AS to_text, s.messages, s.retry_key,
            CAST(s.recipient_ids AS text) AS refs)
SELECT d.id, d.organization_id, d.category, d.status, d.template_id, d.event_id, d.recipient_rows,
       d.api_base_url, d.access_token, d.channel_id,
       c.id, c.method, c.to_text, c.messages, c.retry_key, c.refs
FROM d LEFT JOIN claimed c ON c.direct_message_id = d.id ORDER BY d.id, c.id""")
# Record: the answered calls of messages without recipient rows (the calls list them), each
# recorded once (a call already recorded is skipped); every message with no call left marked
# sent, its failed recipients (those of its calls LINE did not accept) counted, and its job
# deleted (while this worker holds it). The snapshot of the statement still sees the calls it
# records as pending: ``snd`` tells them apart. One row per message: the calls left, the ids of
# the calls recorded here as sent, and (when one was) the organisation's webhook targets.
_PG_RECORD_BATCH = text("""
WITH o AS (
  SELECT * FROM unnest(CAST(:sids AS bigint[]), CAST(:outcomes AS text[]), CAST(:codes AS integer[]),
                       CAST(:bodies AS text[])) AS o(sid, outcome, code, body)),
snd AS (
  UPDATE direct_message_sends s SET status = 'done', outcome = o.outcome, status_code = o.code,
         response_body = CAST(o.body AS jsonb), completed_at = :now, locked_until = NULL
  FROM o WHERE s.id = o.sid AND s.status = 'pending'
  RETURNING s.id, s.direct_message_id, s.outcome, jsonb_array_length(s."to") AS listed),
r AS (
  SELECT q.dm, q.job, (SELECT count(*) FROM direct_message_sends p
                       WHERE p.direct_message_id = q.dm AND p.status = 'pending'
                         AND p.id NOT IN (SELECT id FROM snd)) AS calls_left
  FROM unnest(CAST(:dms AS bigint[]), CAST(:jobs AS bigint[])) AS q(dm, job)),
fin AS (
  UPDATE direct_messages m SET status = 'sent', sent_at = :now, updated_at = :now,
         fail_count = m.fail_count
           + coalesce((SELECT sum(jsonb_array_length(s."to")) FROM direct_message_sends s
                       WHERE s.direct_message_id = m.id AND s.status = 'done' AND s.outcome <> 'success'
                         AND s.outcome <> 'split'), 0)
           + coalesce((SELECT sum(snd.listed) FROM snd WHERE snd.direct_message_id = m.id
                       AND snd.outcome <> 'success'), 0)
  FROM r WHERE m.id = r.dm AND r.calls_left = 0 AND m.status <> 'sent' RETURNING m.id),
job AS (
  DELETE FROM jobs WHERE id IN (SELECT job FROM r WHERE calls_left = 0) AND locked_by = :worker RETURNING id)
SELECT r.dm, r.calls_left,
       ARRAY(SELECT snd.id FROM snd WHERE snd.direct_message_id = r.dm AND snd.outcome = 'success'),
       """ + webhooks.pg_targets_columns("EXISTS (SELECT 1 FROM snd WHERE snd.outcome = 'success')") + """
FROM r""")
_START_BATCH_PG = DriverStatement(_PG_START_BATCH)
_RECORD_BATCH_PG = DriverStatement(_PG_RECORD_BATCH)


def claim(session: Session, dm_id: int, limit: int, now: datetime) -> list[Claimed]:
    """Lease up to ``limit`` pending calls of the message whose lease is free (in the caller's
    write): one ``UPDATE ... RETURNING``."""
    conn = session.connection()
    rows = _CLAIM_DRIVER[conn.dialect.name == "postgresql"].execute(
        conn, {"dm": dm_id, "now": now, "lim": limit, "until": now + send_lease()}).rows
    # ``to`` (user ids: strings) read by orjson, the references when needed (Claimed)
    return sorted((Claimed(int(i), m, orjson.loads(to), msgs, key, refs)
                   for i, m, to, msgs, key, refs in rows), key=lambda c: c.id)


# -- recording ------------------------------------------------------------------------------------

def record(session: Session, dm: MessageRef, results: Sequence[tuple[Claimed, Outcome]]) -> int:
    """Record the outcomes of LINE calls (each once: a call already recorded is skipped).
    Returns how many were recorded here."""
    now = utcnow()
    conn = session.connection()
    sent_ids: list[int] = []
    sent_listed: list[Claimed] = []  # sent calls whose recipients have no rows: the calls list them
    recorded = 0
    for send, outcome in results:
        done = _PUSH_RECORD_SEND.execute(conn, {
            "sid": send.id, "b_outcome": outcome.outcome, "b_code": outcome.status_code,
            "b_body": outcome.body if outcome.outcome != "success" else None, "b_now": now}).rowcount
        if not done:
            continue
        recorded += 1
        if send.method == "multicast" and _bad_recipient(outcome) and len(send.to) > 1:
            # LINE refuses a whole multicast when one of its ids is bad (nothing was sent):
            # send to each recipient by push instead, so only the bad ones fail
            conn.execute(_INSERT_SENDS, [_send_row(dm, "push", [(ref, uid)], send.messages, None, now)
                                         for ref, uid in zip(send.recipient_ids, send.to, strict=True)])
            conn.execute(_MARK_SPLIT, {"sid": send.id})
            continue
        success = outcome.outcome == "success"
        if send.deferred:
            if dm.recipient_rows:
                pairs = [(int(ref[0]), uid, ref[1]) for ref, uid in zip(send.recipient_ids, send.to, strict=True)]  # type: ignore[index]
                write_recipients(conn, dm, pairs, "sent" if success else "failed",
                                 None if success else outcome.failure_text(), now if success else None)
            # else: the call row just recorded is the recipients' record
            if success:
                sent_listed.append(send)
            continue
        ids = [int(ref) for ref in send.recipient_ids]  # type: ignore[arg-type]
        if ids == list(range(ids[0], ids[0] + len(ids))):  # the usual case: a run of ids, one range
            params: dict[str, Any] = {"lo": ids[0], "hi": ids[-1]}
            if success:
                conn.execute(_RANGE_SENT, {**params, "b_now": now})
            else:
                conn.execute(_RANGE_FAILED, {**params, "b_response": outcome.failure_text()})
        else:
            for chunk in range(0, len(ids), 1000):
                params = {"ids": ids[chunk:chunk + 1000]}
                if success:
                    conn.execute(_RECIPIENTS_SENT, {**params, "b_now": now})
                else:
                    conn.execute(_RECIPIENTS_FAILED, {**params, "b_response": outcome.failure_text()})
        if success:
            sent_ids += ids
    notify.sent(session, dm, sent_ids, now, contacts=_contacts_of(sent_listed) if sent_listed else None)
    return recorded


def _contacts_of(sends: list[Claimed]) -> Iterator[tuple[str, int | None]]:
    """``(line_uid, contact_id)`` of the recipients the deferred calls list (read only when a
    webhook endpoint wants ``message.send``)."""
    for send in sends:
        for ref, uid in zip(send.recipient_ids, send.to, strict=True):
            yield uid, ref[1]  # type: ignore[index]


def listed_recipients(session: Session, dm_id: int) -> list[tuple[int, str, str, str | None]]:
    """``(mark, line_uid, status, response)`` of the recipients of a message without recipient
    rows, as its recorded LINE calls list them (a split call's pushes stand for it)."""
    entries: list[tuple[int, str, str, str | None]] = []
    for to, refs, outcome, code, body, _at in session.connection().execute(_DONE_SENDS, {"dm": dm_id}):
        success = outcome == "success"
        response = None if success else Outcome(outcome, code, body).failure_text()
        entries += [(int(ref[0]), uid, "sent" if success else "failed", response)
                    for ref, uid in zip(refs, to, strict=True)]
    return entries


def _bad_recipient(outcome: Outcome) -> bool:
    """A 400 that is not about the messages (LINE's "Failed to send messages" for a bad ``to``)."""
    if outcome.outcome != "rejected" or outcome.status_code != 400:
        return False
    details = outcome.body.get("details") if isinstance(outcome.body, dict) else None
    return not any(str((d or {}).get("property", "")).startswith("messages") for d in details or [])


def finalize(session: Session, dm_id: int, *, sending: bool = False, recipient_rows: bool = True) -> bool:
    """Mark the message sent once no LINE call is left. Returns True when it is (now) sent.
    ``sending``: the caller knows the message is being sent (it runs its job), and
    ``recipient_rows`` is the message's."""
    conn = session.connection()
    if not sending:
        row = conn.execute(_STATUS, {"dm": dm_id}).first()
        if row is None or row[0] == "sent":
            return True
        if row[0] == "pending":
            return False
        recipient_rows = bool(row[1])
    if _PENDING_SENDS_DRIVER.execute(conn, {"dm": dm_id}).scalar():
        return False
    if not recipient_rows:
        _MARK_LISTED_SENT_DRIVER[conn.dialect.name == "postgresql"].execute(conn, {"dm": dm_id, "b_now": utcnow()})
        return True
    counts = {status: int(n) for status, n in conn.execute(_COUNTS, {"dm": dm_id})}
    if counts.get("pending"):
        # recipients left pending without a call (should not happen) fail rather than hang
        conn.execute(_FAIL_LEFTOVERS, {"dm": dm_id})
        counts["failed"] = counts.get("failed", 0) + counts.pop("pending")
    conn.execute(_MARK_SENT, {"dm": dm_id, "b_now": utcnow(), "b_total": sum(counts.values()),
                              "b_failed": counts.get("failed", 0)})
    return True


# -- push (synchronous) ---------------------------------------------------------------------------

def _push_lookup_statement() -> Any:
    org, contact = Organization.__table__, Contact.__table__
    return (direct.TEMPLATE_AND_EVENT
            .add_columns(_C.c.api_base_url, _C.c.access_token, _C.c.channel_id, contact.c.id,
                         *[contact.c[name] for name in direct.CONTACT_FIELDS])
            .outerjoin(_C, _C.c.organization_id == org.c.id)
            .outerjoin(contact, and_(contact.c.organization_id == org.c.id, contact.c.line_uid == bindparam("uid")))
            .limit(1))


# everything a push reads, in one statement (one round trip on PostgreSQL): the template, the
# event, the channel and the recipient's contact; a missing one comes back as NULLs
_PUSH_LOOKUP = DriverStatement(_push_lookup_statement())


def _accept_push(session: Session, org: OrgContext, template_id: int, event_ref: int | None, line_uid: str,
                 contact_id: int, params: dict[str, str], rendered: list[dict[str, Any]],
                 line: Line | None) -> tuple[MessageRef, int, str, list[RecipientRef], list[dict[str, Any]]]:
    """Record an accepted push before LINE is called: the message, the LINE call row with its
    retry key (leased to this caller), the sweep job of the moment (``sweep_params``), and
    lease the call's rate slot.
    ``(message, call id, retry key, the call's recipient refs, messages as sent)``.

    An untracked push (no ``event_id``) has no recipient row: like an untracked enhanced
    multicast, its call row lists its one recipient (``[mark, contact id]``) and is its record
    (``GET direct_message/{id}/`` reads it there), and its parameters are the message's. A
    tracked push keeps the row its opens and clicks are attributed to."""
    conn = session.connection()
    now = utcnow()
    lease = send_lease()
    messages = rendered
    retry_key = new_retry_key()
    _PUSH_ENSURE_SWEEP.execute(conn, {**sweep_params(now, lease), "now": now})
    if event_ref is None:
        refs: list[RecipientRef] = [[0, contact_id]]
        dm = _insert_push(conn, org, template_id, None, params, now, recipient_rows=False)
        send_id = _insert_push_call(conn, dm, refs, line_uid, messages, retry_key, now + lease, now)
    else:
        dm = _insert_push(conn, org, template_id, event_ref, None, now, recipient_rows=True)
        recipient_id = int(_PUSH_INSERT_RECIPIENT.execute(conn, {
            "direct_message_id": dm.id, "organization_id": org.id, "mark": 0, "line_uid": line_uid,
            "contact_id": contact_id, "params": params, "status": "pending"}).scalar_one())
        refs = [recipient_id]
        tracker = links.Tracker(session, dm, links.get_setting(session, org.id))  # type: ignore[arg-type]
        messages = tracker.track(rendered, recipient_id)
        tracker.save()
        send_id = _insert_push_call(conn, dm, refs, line_uid, messages, retry_key, now + lease, now)
    if line is not None:  # the LINE call's rate slot, leased in this transaction
        line_rate.prefetch(conn, get_database(), line.channel_id, "push")
    return dm, send_id, retry_key, refs, messages


def _insert_push(conn: Any, org: OrgContext, template_id: int, event_ref: int | None, params: dict[str, str] | None,
                 now: datetime, *, recipient_rows: bool) -> MessageRef:
    dm_id = int(_PUSH_INSERT_MESSAGE.execute(conn, {
        "organization_id": org.id, "category": "push", "template_id": template_id, "event_id": event_ref,
        "status": "sending", "tracked": event_ref is not None, "params": params, "recipient_rows": recipient_rows,
        "total_count": 1, "fail_count": 0, "created_at": now, "updated_at": now}).scalar_one())
    return MessageRef(dm_id, org.id, "push", event_ref, recipient_rows)


def _insert_push_call(conn: Any, dm: MessageRef, refs: list[RecipientRef], line_uid: str,
                      messages: list[dict[str, Any]], retry_key: str, until: datetime, now: datetime) -> int:
    """The push's LINE call row, leased to this caller until ``until`` (a plain prebuilt INSERT)."""
    return int(_PUSH_INSERT_SEND.execute(conn, {
        "direct_message_id": dm.id, "organization_id": dm.organization_id, "method": "push",
        "retry_key": retry_key, "recipient_ids": refs, "to": [line_uid], "messages": messages,
        "status": "pending", "locked_until": until, "created_at": now}).scalar_one())


def sweep_params(now: datetime, lease: timedelta) -> dict[str, Any]:
    """The sweep job covering the pushes accepted at ``now`` with ``lease``: one per
    ``SWEEP_BUCKET_SECONDS`` and lease, due a second after the lease of the last push its span
    can hold (the worker needs no wake-up at commit: it looks at least every half second)."""
    global _last_sweep
    start = int(now.timestamp()) // SWEEP_BUCKET_SECONDS * SWEEP_BUCKET_SECONDS
    last = _last_sweep
    if last[0] == start and last[1] == lease:
        return last[2]  # the same span's (a few thousand pushes share it)
    end = datetime.fromtimestamp(start + SWEEP_BUCKET_SECONDS, UTC)
    params = {"sweep_kind": SWEEP_KIND, "sweep_key": f"{SWEEP_KIND}:{start}:{lease.total_seconds():g}",
              "sweep_at": end + lease + timedelta(seconds=1)}
    _last_sweep = (start, lease, params)
    return params


_last_sweep: tuple[int, timedelta, dict[str, Any]] = (-1, timedelta(0), {})


@handler(SWEEP_KIND)
def sweep_lapsed_pushes(_payload: dict[str, Any], _context: JobContext) -> None:
    """Queue the send job of every push whose call is still pending after its lease (its
    caller died between acceptance and recording): the job makes the call again with its
    stored retry key. Pushes already queued are skipped (the job's unique key)."""
    database = get_database()
    after = 0
    while True:
        with database.write() as session:
            rows = session.execute(_LAPSED_PUSHES, {"now": utcnow(), "after": after}).all()
            for _send_id, dm_id, organization_id in rows:
                enqueue(session, JOB_KIND, {"id": dm_id}, organization_id=organization_id,
                        unique_key=f"{JOB_KIND}:{dm_id}")
        if len(rows) < SWEEP_BATCH:
            return
        after = rows[-1][0]


def _record_push(session: Session, dm: MessageRef, send: Claimed, outcome: Outcome) -> None:
    """Record a push's one LINE call: the call, its recipient's row if it has one, and the
    message sent (unless its send job, queued by the sweep, recorded the call first)."""
    conn = session.connection()
    success = outcome.outcome == "success"
    at = utcnow()
    recorded = _PUSH_RECORD_SEND.execute(conn, {
        "sid": send.id, "b_outcome": outcome.outcome, "b_code": outcome.status_code,
        "b_body": None if success else outcome.body, "b_now": at}).rowcount
    if recorded:
        if dm.recipient_rows:
            rid = int(send.recipient_ids[0])  # type: ignore[arg-type]
            _PUSH_RECIPIENT[success].execute(conn, {"lo": rid, "hi": rid, "b_now": at} if success else
                                             {"lo": rid, "hi": rid, "b_response": outcome.failure_text()})
        _PUSH_MARK_SENT.execute(conn, {"dm": dm.id, "b_now": at, "b_failed": 0 if success else 1})
    _after_recording(session, dm, send, outcome, bool(recorded), at)


def _after_recording(session: Session, dm: MessageRef, send: Claimed, outcome: Outcome, recorded: bool,
                     at: datetime) -> None:
    """What follows a push's recorded answer: ``message.send`` for a recorded success; for a
    call its send job (queued by the sweep) recorded first, the message finished and a job
    still waiting gone."""
    if recorded and outcome.outcome == "success":  # the message is sent: announce it
        ref = send.recipient_ids[0]
        if isinstance(ref, list):  # [mark, contact id]: no recipient row
            notify.sent(session, dm, [], at, contacts=[(send.to[0], ref[1])])
        else:
            notify.sent(session, dm, [int(ref)], at)
    elif not recorded and finalize(session, dm.id):  # its send job recorded it first
        session.connection().execute(_DROP_RECOVERY, {"key": f"{JOB_KIND}:{dm.id}"})


@dataclass(frozen=True)
class _PushToAccept:
    """An untracked push to accept on PostgreSQL, with the others of its group-commit batch."""

    org: OrgContext
    template_id: int
    line_uid: str
    contact_id: int
    params: dict[str, str]
    messages: list[dict[str, Any]]
    line: Line | None


def _accept_pushes_pg(session: Session, pushes: list[_PushToAccept]) -> list[tuple[MessageRef, int, str]]:
    """PostgreSQL: the untracked pushes of a batch accepted as ``_accept_push`` accepts one, in
    one statement (``_PG_ACCEPT_PUSHES``) that also leases the LINE rate slots of their channels
    where this process needs them: ``(message, call id, retry key)`` each."""
    conn = session.connection()
    database = get_database()
    now = utcnow()
    lease = send_lease()
    retry_keys = [new_retry_key() for _push in pushes]
    channels = (push.line.channel_id for push in pushes if push.line is not None)
    with line_rate.leases_in_statement(database, channels, "push") as (takings, rate_params):
        rows = _PUSHES_ACCEPT_PG.execute(conn, {
            "orgs": [push.org.id for push in pushes], "templates": [push.template_id for push in pushes],
            "params": [json_dumps(push.params) for push in pushes], "retry_keys": retry_keys,
            "recipients": [json_dumps([[0, push.contact_id]]) for push in pushes],
            "tos": [json_dumps([push.line_uid]) for push in pushes],
            "messages": [json_dumps(push.messages) for push in pushes],
            "now": now, "until": now + lease, **sweep_params(now, lease), **rate_params}).rows
        for _part, _ord, _dm, _send, channel_id, next_free, db_now in rows[len(pushes):]:
            takings[channel_id].taken(next_free, db_now)
    return [(MessageRef(int(row[2]), push.org.id, "push", None, recipient_rows=False), int(row[3]), retry_key)
            for push, row, retry_key in zip(pushes, rows[:len(pushes)], retry_keys, strict=True)]


@dataclass(frozen=True)
class _PushAnswer:
    """An untracked push's LINE answer to record on PostgreSQL, with the others of its batch."""

    dm: MessageRef
    send: Claimed
    outcome: Outcome


def _record_pushes_pg(session: Session, answers: list[_PushAnswer]) -> list[None]:
    """PostgreSQL: the answers of a batch's untracked pushes recorded as ``_record_push``
    records one, in one statement (``_PG_RECORD_PUSHES``), then each one's aftermath."""
    at = utcnow()
    bodies = [None if answer.outcome.outcome == "success" or answer.outcome.body is None
              else json_dumps(answer.outcome.body) for answer in answers]
    rows = _PUSHES_RECORD_PG.execute(session.connection(), {
        "sids": [answer.send.id for answer in answers], "outcomes": [answer.outcome.outcome for answer in answers],
        "codes": [answer.outcome.status_code for answer in answers], "bodies": bodies,
        "dms": [answer.dm.id for answer in answers],
        "failed": [0 if answer.outcome.outcome == "success" else 1 for answer in answers],
        "announcing": sorted({answer.dm.organization_id for answer in answers if answer.outcome.outcome == "success"}),
        "now": at}).rows
    recorded = {int(row[1]) for row in rows if row[0] == 0}
    for _part, _sid, organization_id, targets, tz_name in (row for row in rows if row[0] == 1):
        webhooks.remember_targets(session, int(organization_id), targets, tz_name)
    for answer in answers:
        _after_recording(session, answer.dm, answer.send, answer.outcome, answer.send.id in recorded, at)
    return [None] * len(answers)


def push(org: OrgContext, template_id: int, event_id: int | None, data: dict[str, Any]) -> dict[str, Any]:
    database = get_database()
    errors: dict[str, Any] = {}
    line_uid = direct.line_uid_of(data, errors)
    with database.lookup() as conn:
        found = _PUSH_LOOKUP.execute(conn, {"org": org.id, "template": template_id, "event": event_id,
                                            "uid": line_uid}).first()
    template, event = direct.template_and_event_of(found, template_id, event_id)
    assert found is not None  # else template_and_event_of answered the 400
    event_ref, event_name = event if event else (None, None)
    line = Line(found[5], found[6], found[7]) if found[7] is not None else None
    contact = (int(found[8]), direct.contact_fields_of(found[9:])) if found[8] is not None else None
    params, param_errors = direct.clean_params(template, data)
    errors.update(param_errors)
    if line_uid and contact is None and "line_uid" not in errors:
        errors["line_uid"] = [direct.CONTACT_NOT_FOUND + "."]
    if not errors:
        rendered = render(template.messages, params, contact[1] if contact else None)
        errors.update(direct.check_images(direct.image_slots(template), rendered))
    if errors:
        raise field_errors({"data": errors})
    assert contact is not None and line_uid is not None
    writes = group_commit(database, REQUEST_WRITES)
    # on PostgreSQL an untracked push is accepted and recorded as one of its batch's set
    together = event_ref is None and not database.is_sqlite
    if together:
        dm, send_id, retry_key = writes.run_batched(
            _accept_pushes_pg, _PushToAccept(org, template.id, line_uid, contact[0], params, rendered, line))
        refs: list[RecipientRef] = [[0, contact[0]]]
        messages = rendered
    else:
        dm, send_id, retry_key, refs, messages = writes.run(
            lambda session: _accept_push(session, org, template.id, event_ref, line_uid, contact[0], params,
                                         rendered, line))
    if line is None:
        outcome = Outcome("error")
    else:
        outcome = call_line(line.client(), "push", [line_uid], messages, retry_key)
    send = Claimed(send_id, "push", [line_uid], messages, retry_key, refs)
    # recorded together with the other pushes answered meanwhile (one transaction for all)
    if together:
        writes.run_batched(_record_pushes_pg, _PushAnswer(dm, send, outcome))
    else:
        writes.run(lambda session: _record_push(session, dm, send, outcome))
    return {"id": dm.id, "event_id": event_ref, "event": event_name, "result": outcome.push_result()}


# -- multicast and enhanced multicast (asynchronous) ---------------------------------------------

def _insert_message(session: Session, org: OrgContext, category: str, template: direct.TemplateRow,
                    event_id: int | None, recipients: int, shared: dict[str, str] | None,
                    now: datetime, recipient_rows: bool = True, failed: int = 0) -> MessageRef:
    """The direct message, pending (``failed``: the recipients already failed, without rows only)."""
    dm_id = int(session.connection().execute(_INSERT_MESSAGE, {
        "organization_id": org.id, "category": category, "template_id": template.id, "event_id": event_id,
        "status": "pending", "tracked": event_id is not None, "params": shared, "recipient_rows": recipient_rows,
        "total_count": recipients, "fail_count": failed, "created_at": now, "updated_at": now}).scalar_one())
    return MessageRef(dm_id, org.id, category, event_id, recipient_rows)


def _enqueue_send(session: Session, dm: MessageRef, now: datetime) -> None:
    """The message's send job, as ``jobs.queue.enqueue`` writes it (its key is new: no conflict
    to handle), through a prebuilt INSERT."""
    session.connection().execute(_INSERT_JOB, {
        "kind": JOB_KIND, "payload": {"id": dm.id}, "organization_id": dm.organization_id, "run_at": now,
        "priority": 100, "max_attempts": 10, "unique_key": f"{JOB_KIND}:{dm.id}", "status": "ready", "attempts": 0,
        "created_at": now})
    session.info["jobs_enqueued"] = True  # wakes the embedded worker at commit


_RECIPIENT_COLUMNS = "direct_message_id, organization_id, mark, line_uid, contact_id, status, response, sent_at"


def write_recipients(conn: Any, dm: MessageRef, recipients: Sequence[tuple[int, str, int | None]], status: str,
                     response: str | None, sent_at: datetime | None) -> None:
    """Recipient rows ``(mark, line_uid, contact_id)`` of one outcome, through the driver (for
    500 rows SQLAlchemy's per-row work cost more than the insert): SQLite's executemany, or
    PostgreSQL's COPY (a 500-row INSERT spends longer in the driver's parsing of its 4,000
    placeholders than in the server)."""
    if not recipients:
        return
    if conn.dialect.name == "sqlite":
        # UTCDateTime's storage on SQLite: naive UTC text, as SQLAlchemy writes it
        at = sent_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sent_at is not None else None
        conn.exec_driver_sql(f"INSERT INTO direct_message_recipients ({_RECIPIENT_COLUMNS}) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(dm.id, dm.organization_id, mark, uid, contact_id, status, response, at)
                              for mark, uid, contact_id in recipients])
        return
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(
            f"COPY direct_message_recipients ({_RECIPIENT_COLUMNS}) FROM STDIN") as copy:
        for mark, uid, contact_id in recipients:
            copy.write_row((dm.id, dm.organization_id, mark, uid, contact_id, status, response, sent_at))


def multicast(org: OrgContext, template_id: int, event_id: int | None, data: list[dict[str, Any]]) -> dict[str, Any]:
    with get_database().read() as session:
        template, event = direct.template_and_event(session.connection(), org.id, template_id, event_id)
        slots = direct.image_slots(template)
        all_errors: list[dict[str, Any]] = []
        cleaned: list[tuple[str, dict[str, str]]] = []
        for item in data:
            errors: dict[str, Any] = {}
            uid = direct.line_uid_of(item, errors)
            params, param_errors = direct.clean_params(template, item)
            errors.update(param_errors)
            all_errors.append(errors)
            cleaned.append((uid or "", params))
        contacts = direct.contacts_by_uid(session, org.id, [uid for uid, _ in cleaned if uid])
        for index, (uid, params) in enumerate(cleaned):
            if not all_errors[index] and slots:
                rendered = render(template.messages, params, direct.contact_fields(contacts.get(uid)))
                all_errors[index].update(direct.check_images(slots, rendered))
        if any(all_errors):
            raise field_errors({"data": all_errors})
    entries = [(uid, params, contacts[uid].id if uid in contacts else None) for uid, params in cleaned]
    now = utcnow()
    with get_database().write() as session:
        dm = _insert_message(session, org, "multicast", template, event[0] if event else None, len(entries), None,
                             now)
        # rows now: the job tracks links and images per recipient (by row id)
        session.connection().execute(insert(DirectMessageRecipient), [
            {"direct_message_id": dm.id, "organization_id": org.id, "mark": mark, "line_uid": uid,
             "contact_id": contact_id, "params": params, "status": "pending" if contact_id is not None else "failed",
             "response": None if contact_id is not None else direct.CONTACT_NOT_FOUND}
            for mark, (uid, params, contact_id) in enumerate(entries)])
        _enqueue_send(session, dm, now)
    return {"id": dm.id, "result": "pending"}


def enhanced_multicast(org: OrgContext, template_id: int, event_id: int | None, line_uids: list[str],
                       data: dict[str, Any]) -> dict[str, Any]:
    """Accepted with its LINE calls planned: one shared rendering, so nothing is left to plan."""
    with get_database().lookup() as conn:
        template, event = direct.template_and_event(conn, org.id, template_id, event_id)
        params, errors = direct.clean_params(template, data)
        rendered = render(template.messages, params, None) if not errors else []
        if not errors:
            errors.update(direct.check_images(direct.image_slots(template), rendered))
        if errors:
            raise field_errors({"data": errors})
        # each as DRF's CharField(max_length=LINE_UID_MAX_LENGTH) would take it
        if plain_char_fields(line_uids, max_length=LINE_UID_MAX_LENGTH):
            uids = line_uids  # taken as they are (no list of 500 (value, errors) pairs)
        else:
            checked = char_fields(line_uids, max_length=LINE_UID_MAX_LENGTH)
            problems = {str(i): errors for i, (_uid, errors) in enumerate(checked) if errors}
            if problems:
                raise field_errors({"line_uids": problems})
            uids = [uid or "" for uid, _errors in checked]
        untracked = event is None and len(uids) <= MULTICAST_MAX_RECIPIENTS
        if untracked and conn.dialect.name == "postgresql" and uids:
            # the usual case in one self-committing statement (``_PG_ACCEPT_LISTED``)
            accepted = _accept_listed_pg(conn, org, template.id, params, rendered, uids)
            if accepted is not None:
                return accepted
        listed = direct.listed_contacts(conn, org.id, uids) if untracked else None
        contact_ids = direct.contact_ids_by_uid(conn, org.id, uids) if listed is None else {}
    if untracked:
        if listed is not None:  # every uid a contact: the call's lists as the database built them
            return _accept_untracked(org, template.id, params, rendered, len(uids), *listed, len(uids), [])
        unknown = [(mark, uid, None) for mark, uid in enumerate(uids) if uid not in contact_ids]
        to = [uid for uid in uids if uid in contact_ids]
        refs = json_dumps([[mark, contact_ids[uid]] for mark, uid in enumerate(uids) if uid in contact_ids])
        return _accept_untracked(org, template.id, params, rendered, len(uids), refs, json_dumps(to), len(to),
                                 unknown)
    event_ref = event[0] if event else None
    # Rows per recipient only when a recipient will be looked up later: a tap on one of a
    # tracked message's actions (message / postback) is attributed through them (links.record_tap).
    # Otherwise the call rows, which list the recipients, are their record: no 500 rows and
    # index entries per message.
    recipient_rows = event is not None and bool(rewrite.actions(rendered))
    unknown = [(mark, uid, None) for mark, uid in enumerate(uids) if uid not in contact_ids]
    now = utcnow()
    with get_database().write() as session:
        dm = _insert_message(session, org, "enhanced_multicast", template, event_ref, len(uids),
                             params, now, recipient_rows, 0 if recipient_rows else len(unknown))
        messages = rendered
        if event is not None:  # per-message links only
            tracker = links.Tracker(session, dm, links.get_setting(session, org.id))  # type: ignore[arg-type]
            messages = tracker.track(rendered, None)
            tracker.save()
        # the uids that are not contacts fail now; the others' rows come with their outcome
        write_recipients(session.connection(), dm, unknown, "failed", direct.CONTACT_NOT_FOUND, None)
        recipients: list[tuple[RecipientRef, str]] = [([mark, contact_ids[uid]], uid) for mark, uid in enumerate(uids)
                                                      if uid in contact_ids]
        if recipients:
            session.connection().execute(_INSERT_SENDS, _send_rows(dm, recipients, messages, now))
        _enqueue_send(session, dm, now)
    return {"id": dm.id, "result": "pending"}


# PostgreSQL: an untracked enhanced multicast whose uids are ALL contacts (the usual case), as
# one statement on an autocommit connection: the call's lists built from the contacts (as
# direct.listed_contacts builds them), then the message, its call and its job (as
# _PG_ACCEPT_ENHANCED writes them), written only when every uid was found (else nothing is
# written and the caller takes the general way). One round trip where the lists, BEGIN, the
# accepting statement and COMMIT were four; the statement is atomic, so it commits alone.
_PG_ACCEPT_LISTED = text("""
WITH j AS (
  SELECT j.ord, j.value, c.id AS contact_id
  FROM json_array_elements_text(CAST(:uids AS json)) WITH ORDINALITY AS j(value, ord)
  JOIN contacts AS c ON c.organization_id = :org AND c.line_uid = j.value),
l AS (
  SELECT CAST(json_agg(json_build_array(j.ord - 1, j.contact_id) ORDER BY j.ord) AS jsonb) AS refs,
         CAST(json_agg(j.value ORDER BY j.ord) AS jsonb) AS uids, count(*) AS listed
  FROM j),
dm AS (
  INSERT INTO direct_messages (organization_id, category, template_id, event_id, status, tracked, params,
                               recipient_rows, total_count, fail_count, created_at, updated_at)
  SELECT :org, 'enhanced_multicast', :template, NULL, 'pending', false, CAST(:params AS jsonb), false, :total, 0,
         :now, :now
  FROM l WHERE l.listed = :total RETURNING id),
snd AS (
  INSERT INTO direct_message_sends (direct_message_id, organization_id, method, retry_key, recipient_ids, "to",
                                    messages, status, locked_until, created_at)
  SELECT dm.id, :org, :method, :retry_key, l.refs, l.uids, CAST(:messages AS jsonb), 'pending', NULL, :now
  FROM dm, l RETURNING id),
""" + _pg_send_job_cte(":now") + """
SELECT (SELECT id FROM dm)""")
_ACCEPT_LISTED_PG = DriverStatement(_PG_ACCEPT_LISTED)


def _accept_listed_pg(conn: Any, org: OrgContext, template_id: int, params: dict[str, str],
                      messages: list[dict[str, Any]], uids: list[str]) -> dict[str, Any] | None:
    """PostgreSQL, on the request's autocommit lookup connection: accept an untracked enhanced
    multicast in one statement when every uid is a contact (``_PG_ACCEPT_LISTED``); None (and
    nothing written) when one is not."""
    dm_id = _ACCEPT_LISTED_PG.execute(conn, {
        "uids": orjson.dumps(uids).decode(), "org": org.id, "template": template_id, "params": json_dumps(params),
        "total": len(uids), "now": utcnow(), "method": "push" if len(uids) == 1 else "multicast",
        "retry_key": new_retry_key(), "messages": json_dumps(messages), "kind": JOB_KIND,
        "key_prefix": f"{JOB_KIND}:"}).scalar()
    if dm_id is None:
        return None
    get_database().committed_jobs()  # wakes the embedded worker, as a write() that enqueued would
    return {"id": int(dm_id), "result": "pending"}


def _accept_untracked(org: OrgContext, template_id: int, params: dict[str, str], messages: list[dict[str, Any]],
                      total: int, refs: str, to: str, listed: int,
                      unknown: list[tuple[int, str, None]]) -> dict[str, Any]:
    """An enhanced multicast without an event (no links to track, no recipient rows): its one
    LINE call (``listed`` recipients: ``refs`` and ``to`` as JSON text) encoded before the
    write (the write lock is not held while 500 ids become JSON), then written; ``unknown``:
    the uids that are no contact, failed at once. On SQLite, whose writes queue for one lock
    anyway, together with those of the other requests accepted meanwhile (group commit: one
    transaction for all, each request answering once its own write is committed); on
    PostgreSQL the message, its call and its job are one statement, in a transaction of the
    request's own. Every statement runs on the driver's cursor (``DriverStatement``)."""
    database = get_database()
    call = {"method": "push" if listed == 1 else "multicast", "retry_key": new_retry_key(),
            "refs": refs, "to": to, "messages": json_dumps(messages)}
    now = utcnow()

    def write(session: Session) -> int:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            dm_id = int(_ACCEPT_ENHANCED_PG.execute(conn, {
                "org": org.id, "template": template_id, "params": json_dumps(params), "total": total,
                "failed": len(unknown), "now": now, "with_call": listed > 0, **call, "kind": JOB_KIND,
                "key_prefix": f"{JOB_KIND}:"}).scalar_one())
            dm = MessageRef(dm_id, org.id, "enhanced_multicast", None, False)
        else:
            dm = MessageRef(int(_PUSH_INSERT_MESSAGE.execute(conn, {
                "organization_id": org.id, "category": "enhanced_multicast", "template_id": template_id,
                "event_id": None, "status": "pending", "tracked": False, "params": params, "recipient_rows": False,
                "total_count": total, "fail_count": len(unknown), "created_at": now,
                "updated_at": now}).scalar_one()), org.id, "enhanced_multicast", None, False)
            if listed:
                _ACCEPT_CALL.execute(conn, {"dm": dm.id, "org": org.id, "now": now, **call})
            _PUSH_INSERT_JOB.execute(conn, {
                "kind": JOB_KIND, "payload": {"id": dm.id}, "organization_id": org.id, "run_at": now,
                "priority": 100, "max_attempts": 10, "unique_key": f"{JOB_KIND}:{dm.id}", "status": "ready",
                "attempts": 0, "created_at": now})
        # the uids that are not contacts fail now
        write_recipients(conn, dm, unknown, "failed", direct.CONTACT_NOT_FOUND, None)
        session.info["jobs_enqueued"] = True  # wakes the embedded worker at commit
        return dm.id

    if not database.is_sqlite:
        # PostgreSQL runs the writes of concurrent requests side by side (and groups their WAL
        # flushes itself): one group would queue these ~40 KB writes behind each other
        with database.write() as session:
            return {"id": write(session), "result": "pending"}
    return {"id": group_commit(database, "enhanced_multicast.accept").run(write), "result": "pending"}


# -- the job --------------------------------------------------------------------------------------

def plan(session: Session, dm: MessageRef, template_id: int | None) -> None:
    """Render, track and group a multicast's recipients into LINE calls (in the start transaction)."""
    recipients = session.execute(
        select(DirectMessageRecipient.id, DirectMessageRecipient.line_uid, DirectMessageRecipient.contact_id,
               DirectMessageRecipient.params)
        .where(DirectMessageRecipient.direct_message_id == dm.id, DirectMessageRecipient.status == "pending")
        .order_by(DirectMessageRecipient.mark)).all()
    template = session.get(MessageTemplate, template_id) if template_id else None
    if template is None:
        session.execute(update(DirectMessageRecipient).where(
            DirectMessageRecipient.direct_message_id == dm.id, DirectMessageRecipient.status == "pending",
        ).values(status="failed", response="error"))
        return
    tracked = dm.event_id is not None
    tracker = links.Tracker(session, dm, links.get_setting(session, dm.organization_id)) if tracked else None  # type: ignore[arg-type]
    contact_ids = [cid for _rid, _uid, cid, _params in recipients if cid is not None]
    contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(contact_ids)))} \
        if contact_ids else {}
    groups: dict[str, tuple[list[dict[str, Any]], list[tuple[int, str]]]] = {}
    for rid, uid, cid, params in recipients:
        messages = render(template.messages, params or {}, direct.contact_fields(contacts.get(cid) if cid else None))
        if tracker is not None:
            messages = tracker.track(messages, rid)
        key = json.dumps(messages, sort_keys=True, separators=(",", ":"))
        groups.setdefault(key, (messages, []))[1].append((rid, uid))
    if tracker is not None:
        tracker.save()
    now = utcnow()
    rows = [row for messages, members in groups.values() for row in _send_rows(dm, members, messages, now)]
    if rows:
        session.execute(insert(DirectMessageSend), rows)


def start(dm_id: int, context: JobContext | None = None) -> tuple[MessageRef | None, Line | None, list[Claimed], bool]:
    """The first step of a run: (message, LINE, first batch, done). One write transaction that
    plans the message if needed and takes over the calls of a run that died; when there is
    nothing left to do, it also deletes the job (``context``)."""
    with get_database().write() as session:
        return _start_in(session, dm_id, context, utcnow())


def _start_in(session: Session, dm_id: int, context: JobContext | None,
              now: datetime) -> tuple[MessageRef | None, Line | None, list[Claimed], bool]:
    """``start`` in the caller's write transaction."""
    conn = session.connection()
    row = _MESSAGE_AND_LINE_DRIVER[conn.dialect.name == "postgresql"].execute(conn, {"dm": dm_id}).first()
    if row is None:
        if context is not None:
            context.complete_in(session)
        return None, None, [], True
    organization_id, category, status, template_id, event_id, rows, base_url, access_token, channel_id = row
    dm = MessageRef(dm_id, organization_id, category, event_id, bool(rows))
    line = Line(base_url, access_token, channel_id) if channel_id is not None else None
    if status == "sent":
        if context is not None:
            context.complete_in(session)
        return dm, line, [], True
    if status == "pending":
        if category == "multicast":
            plan(session, dm, template_id)
        _MARK_SENDING_DRIVER.execute(conn, {"dm": dm_id, "b_now": now})
    elif category != "push":
        # This job is the only sender of a multicast's calls, and it runs once at a time
        # (its lease): calls still leased belong to an earlier run that died mid-call.
        conn.execute(_RELEASE, {"dm": dm_id})
    batch = claim(session, dm_id, BATCH, now)
    done = finalize(session, dm_id, sending=True, recipient_rows=dm.recipient_rows) if not batch else False
    if done and context is not None:
        context.complete_in(session)
    return dm, line, batch, done


class _Heartbeat:
    """Renews the leases of the send jobs running in this process, every third of the lease."""

    def __init__(self) -> None:
        self.jobs: dict[int, int] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, job_id: int) -> None:
        with self.lock:
            self.jobs[job_id] = self.jobs.get(job_id, 0) + 1
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="openmaac-send-heartbeat", daemon=True)
                self.thread.start()

    def remove(self, job_id: int) -> None:
        with self.lock:
            left = self.jobs.get(job_id, 0) - 1
            if left > 0:
                self.jobs[job_id] = left
            else:
                self.jobs.pop(job_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(JOB_LEASE_SECONDS / 3)
            with self.lock:
                ids = sorted(self.jobs)
            if not ids:
                continue
            try:
                with get_database().write() as session:
                    session.connection().execute(update(Job).where(Job.id.in_(ids), Job.status == "running")
                                    .values(locked_until=utcnow() + timedelta(seconds=JOB_LEASE_SECONDS)))
            except Exception:  # a database hiccup: try again at the next beat
                continue


heartbeat = _Heartbeat()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _calls_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4 * CONCURRENCY, thread_name_prefix="openmaac-line")
        return _pool


def call_all(line: Line | None, batch: list[Claimed]) -> list[Outcome]:
    if line is None:
        return [Outcome("error") for _ in batch]
    client = line.client()
    if len(batch) == 1:
        send = batch[0]
        return [call_line(client, send.method, send.to, send.messages, send.retry_key)]
    results: list[Outcome] = []
    pool = _calls_pool()
    for window in range(0, len(batch), CONCURRENCY):
        results += pool.map(lambda s: call_line(client, s.method, s.to, s.messages, s.retry_key),
                            batch[window:window + CONCURRENCY])
    return results


@dataclass
class _Run:
    """One send job's message within a batch of them."""

    dm_id: int
    context: JobContext
    dm: MessageRef | None = None
    line: Line | None = None
    batch: list[Claimed] | None = None
    done: bool = False
    outcomes: list[Outcome] = field(default_factory=list)  # of the batch's calls, by index
    unanswered: int = 0


def _retry_when_released(dm_id: int) -> RetryLater:
    """The job of a message with calls still leased by another caller (a push answering its
    request) runs again once their lease has passed."""
    with get_database().read() as session:
        until = session.scalar(select(func.min(DirectMessageSend.locked_until)).where(
            DirectMessageSend.direct_message_id == dm_id, DirectMessageSend.status == "pending"))
    wait = (until - utcnow()).total_seconds() if until else 1.0
    return RetryLater(max(1.0, wait + 0.5), "LINE calls still leased")


def run_direct_messages(items: list[tuple[dict[str, Any], JobContext]]) -> list[BaseException | None]:
    """The send jobs one claim took, together (the worker's batch handler): one write
    transaction starts them all, their LINE calls go out side by side, and the outcomes are
    recorded together (with the next calls of the messages not done claimed), instead of two
    transactions per message. A message whose calls have all been answered waits at most
    ``RECORD_WITHIN_SECONDS`` for the others' (one slow LINE call does not hold the rest).
    Each message's steps are those of ``run_direct_message``, which takes over should the
    batch fail as a whole."""
    runs = [_Run(int(payload["id"]), context) for payload, context in items]
    database = get_database()
    for run in runs:
        heartbeat.add(run.context.job_id)
    try:
        with database.write() as session:
            now = utcnow()
            if session.connection().dialect.name == "postgresql":
                _start_all_pg(session, runs, now)
            else:
                for run in runs:
                    run.dm, run.line, run.batch, run.done = _start_in(session, run.dm_id, run.context, now)
        calls: dict[Future[Outcome], tuple[_Run, int]] = {}
        for run in runs:
            _submit_calls(run, calls)
        answered: list[_Run] = []  # every call of their batch answered, not yet recorded
        oldest = 0.0  # when the first of them was
        while calls or answered:
            if answered and (not calls or time.monotonic() - oldest >= RECORD_WITHIN_SECONDS):
                with database.write() as session:
                    one_by_one = answered
                    if session.connection().dialect.name == "postgresql":
                        one_by_one = _record_all_pg(session, answered)
                    for run in one_by_one:
                        assert run.dm is not None and run.batch is not None
                        record(session, run.dm, list(zip(run.batch, run.outcomes, strict=True)))
                        run.done = finalize(session, run.dm_id, sending=True, recipient_rows=run.dm.recipient_rows)
                        if run.done:  # the job ends with the message marked sent
                            run.context.complete_in(session)
                        run.batch = [] if run.done else claim(session, run.dm_id, BATCH, utcnow())
                for run in answered:
                    _submit_calls(run, calls)
                answered = []
                continue
            timeout = max(0.0, oldest + RECORD_WITHIN_SECONDS - time.monotonic()) if answered else None
            finished, _ = wait_for_futures(list(calls), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                run, index = calls.pop(future)
                run.outcomes[index] = future.result()
                run.unanswered -= 1
                if run.unanswered == 0:
                    if not answered:
                        oldest = time.monotonic()
                    answered.append(run)
    finally:
        for run in runs:
            heartbeat.remove(run.context.job_id)
    return [None if run.done else _retry_when_released(run.dm_id) for run in runs]


def _start_all_pg(session: Session, runs: list[_Run], now: datetime) -> None:
    """PostgreSQL: ``_start_in`` for every run of a batch, in one statement (``_PG_START_BATCH``);
    a multicast still to plan and a message whose earlier run died go through ``_start_in``."""
    conn = session.connection()
    rows = _START_BATCH_PG.execute(conn, {"dms": [run.dm_id for run in runs], "now": now,
                                          "until": now + send_lease(), "lim": BATCH}).rows
    found: dict[int, tuple[Any, ...]] = {}
    calls: dict[int, dict[int, Claimed]] = {}
    for row in rows:
        dm_id = int(row[0])
        found.setdefault(dm_id, row)
        if row[10] is not None:
            call_id, method, to, messages, retry_key, refs = row[10:16]
            calls.setdefault(dm_id, {})[int(call_id)] = Claimed(int(call_id), method, orjson.loads(to), messages,
                                                                 retry_key, refs)
    for run in runs:
        message = found.get(run.dm_id)
        if message is None:  # the message is gone
            run.context.complete_in(session)
            run.dm, run.line, run.batch, run.done = None, None, [], True
            continue
        organization_id, category, status, _template_id, event_id, recipient_rows = message[1:7]
        base_url, access_token, channel_id = message[7:10]
        if (status == "pending" and category == "multicast") or (status == "sending" and category != "push"):
            run.dm, run.line, run.batch, run.done = _start_in(session, run.dm_id, run.context, now)
            continue
        run.dm = MessageRef(run.dm_id, organization_id, category, event_id, bool(recipient_rows))
        run.line = Line(base_url, access_token, channel_id) if channel_id is not None else None
        if status == "sent":
            run.context.complete_in(session)
            run.batch, run.done = [], True
            continue
        run.batch = sorted(calls.get(run.dm_id, {}).values(), key=lambda c: c.id)
        run.done = False if run.batch else finalize(session, run.dm_id, sending=True,
                                                    recipient_rows=run.dm.recipient_rows)
        if run.done:
            run.context.complete_in(session)
    _prefetch_multicast_slots(conn, runs)


def _prefetch_multicast_slots(conn: Any, runs: list[_Run]) -> None:
    """Lease the LINE rate slots of the batch's multicast calls in its start transaction, as
    many as it makes per channel (line_rate.prefetch: only when this process holds no fresh
    slot): a statement in a transaction already open, instead of a transaction of its own per
    five calls when the calls ask the limiter."""
    wanted: dict[str, int] = {}
    for run in runs:
        if run.line is not None and run.batch:
            count = sum(1 for send in run.batch if send.method == "multicast")
            if count:
                wanted[run.line.channel_id] = wanted.get(run.line.channel_id, 0) + count
    database = get_database()
    for channel_id, count in wanted.items():
        smallest = max(1, int(line_rate.rate_of("multicast") * line_rate.LEASE_SECONDS))
        line_rate.prefetch(conn, database, channel_id, "multicast", batch=max(smallest, count))


def _recorded_together(run: _Run) -> bool:
    """Whether ``_record_all_pg`` can record ``run``'s answered calls: its recipients have no
    rows (its calls list them) and no call is to be split into pushes."""
    assert run.dm is not None and run.batch is not None
    if run.dm.recipient_rows or run.context.worker_id is None:
        return False
    return all(send.deferred and not (send.method == "multicast" and _bad_recipient(outcome) and len(send.to) > 1)
               for send, outcome in zip(run.batch, run.outcomes, strict=True))


def _record_all_pg(session: Session, runs: list[_Run]) -> list[_Run]:
    """PostgreSQL: ``record``, ``finalize`` and the job's completion for the runs whose calls
    list their recipients, one statement per organisation (``_PG_RECORD_BATCH``), their next
    calls claimed when some are left. Answers the runs left to record one by one."""
    together: dict[int, list[_Run]] = {}
    one_by_one: list[_Run] = []
    for run in runs:
        if _recorded_together(run):
            assert run.dm is not None
            together.setdefault(run.dm.organization_id, []).append(run)
        else:
            one_by_one.append(run)
    conn = session.connection()
    for organization_id, group in together.items():
        now = utcnow()
        sids: list[int] = []
        outcomes: list[str] = []
        codes: list[int | None] = []
        bodies: list[str | None] = []
        for run in group:
            for send, outcome in zip(run.batch or [], run.outcomes, strict=True):
                sids.append(send.id)
                outcomes.append(outcome.outcome)
                codes.append(outcome.status_code)
                success = outcome.outcome == "success"
                bodies.append(None if success or outcome.body is None else json_dumps(outcome.body))
        rows = _RECORD_BATCH_PG.execute(conn, {
            "sids": sids, "outcomes": outcomes, "codes": codes, "bodies": bodies, "now": now,
            "dms": [run.dm_id for run in group], "jobs": [run.context.job_id for run in group],
            "worker": group[0].context.worker_id, "org": organization_id}).rows
        if any(row[2] for row in rows):  # a call recorded as sent: the targets were read
            webhooks.remember_targets(session, organization_id, rows[0][3], rows[0][4])
        by_dm = {int(row[0]): row for row in rows}
        for run in group:
            assert run.dm is not None
            _dm, calls_left, sent_ids = by_dm[run.dm_id][:3]
            if sent_ids:
                sent = set(sent_ids)
                notify.sent(session, run.dm, [], now,
                            contacts=_contacts_of([send for send in run.batch or [] if send.id in sent]))
            run.done = not calls_left
            if run.done:  # deleted in the statement, as complete_in deletes it
                run.context.completed_by_caller()
            run.batch = [] if run.done else claim(session, run.dm_id, BATCH, utcnow())
    return one_by_one


def _submit_calls(run: _Run, calls: dict[Future[Outcome], tuple[_Run, int]]) -> None:
    """Make the LINE calls of ``run``'s batch on the calls' pool (``calls``: future -> its run
    and the call's index in the batch)."""
    batch = run.batch or []
    run.outcomes = [Outcome("error")] * len(batch)
    run.unanswered = len(batch)
    client = run.line.client() if run.line is not None else None
    for index, send in enumerate(batch):
        calls[_calls_pool().submit(_call_one, client, send)] = (run, index)


def _call_one(client: LineClient | None, send: Claimed) -> Outcome:
    if client is None:
        return Outcome("error")
    return call_line(client, send.method, send.to, send.messages, send.retry_key)


@handler(JOB_KIND, lease_seconds=JOB_LEASE_SECONDS, batch=run_direct_messages)
def run_direct_message(payload: dict[str, Any], context: JobContext) -> None:
    dm_id = int(payload["id"])
    database = get_database()
    job_id = context.job_id
    heartbeat.add(job_id)
    try:
        dm, line, batch, done = start(dm_id, context)
        while batch:
            assert dm is not None
            outcomes = call_all(line, batch)
            with database.write() as session:
                record(session, dm, list(zip(batch, outcomes, strict=True)))
                done = finalize(session, dm_id, sending=True, recipient_rows=dm.recipient_rows)
                if done:  # the job ends with the message marked sent
                    context.complete_in(session)
                batch = [] if done else claim(session, dm_id, BATCH, utcnow())
    finally:
        heartbeat.remove(job_id)
    if not done:
        raise _retry_when_released(dm_id)

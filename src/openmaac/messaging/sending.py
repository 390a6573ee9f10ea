"""Sending direct messages through LINE, effectively once.

Every accepted request is durable before it is answered: the direct message, its recipients
and its job are written in one transaction. Each call to LINE is a ``DirectMessageSend`` row
holding its ``X-Line-Retry-Key``, written BEFORE the call; a worker that crashes mid-call
leaves the row pending with an expired lease, and whoever picks it up calls again with the
same key (LINE answers 409 if it had accepted the first call: a success).

- push: recorded (message, recipient, send row and a recovery job due after the send's
  lease), then LINE is called in the request and the outcome answered. Should the process
  die before recording the outcome, the recovery job finishes it with the same key.
- multicast / enhanced multicast: the ``direct_message.send`` job renders each recipient's
  messages (tracking links and images when an event is given), groups recipients whose
  rendered messages are identical into LINE multicast calls (at most 500 ids; single
  recipients go by push, LINE's faster-limited endpoint), writes all the send rows, then
  works through them in small concurrent batches under the channel's shared rate limit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.channels import line_rate
from openmaac.channels.line_client import (
    MULTICAST_MAX_RECIPIENTS,
    LineAPIError,
    LineClient,
    LineTimeout,
    new_retry_key,
)
from openmaac.channels.service import channel_of
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.jobs.models import Job
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, RetryLater, handler
from openmaac.links import service as links
from openmaac.messaging import direct, notify
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, DirectMessageSend
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import render
from openmaac.web.errors import field_errors

JOB_KIND = "direct_message.send"
BATCH = 50  # LINE calls claimed (leased) together
CONCURRENCY = 8  # LINE calls in flight per job


def line_timeout() -> float:
    """Seconds to wait for one LINE answer (``OPENMAAC_LINE_TIMEOUT``, default 10)."""
    return float(os.environ.get("OPENMAAC_LINE_TIMEOUT", "10"))


def line_attempts() -> int:
    """HTTP attempts per LINE call, retries included (``OPENMAAC_LINE_MAX_ATTEMPTS``, default 3)."""
    return max(1, int(os.environ.get("OPENMAAC_LINE_MAX_ATTEMPTS", "3")))


def send_lease() -> timedelta:
    """How long a claimed LINE call is reserved for its caller (all attempts and backoffs)."""
    return timedelta(seconds=line_attempts() * (line_timeout() + 8.0) + 30.0)


@contextmanager
def _client(base_url: str, token: str, channel_id: str) -> Iterator[LineClient]:
    client = LineClient(base_url, token, timeout=line_timeout(), max_attempts=line_attempts(),
                        limiter=line_rate.limiter(get_database(), channel_id))
    try:
        yield client
    finally:
        client.close()


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


# -- recording ------------------------------------------------------------------------------------

def apply_outcome(session: Session, send_id: int, outcome: Outcome) -> bool:
    """Record the outcome of one LINE call (once: a second apply is a no-op)."""
    now = utcnow()
    done = session.execute(
        update(DirectMessageSend).where(DirectMessageSend.id == send_id, DirectMessageSend.status == "pending")
        .values(status="done", outcome=outcome.outcome, status_code=outcome.status_code,
                response_body=outcome.body if outcome.outcome != "success" else None, completed_at=now,
                locked_until=None)
    ).rowcount  # type: ignore[attr-defined]
    if not done:
        return False
    send = session.get(DirectMessageSend, send_id)
    assert send is not None
    recipients = list(session.scalars(select(DirectMessageRecipient).where(
        DirectMessageRecipient.id.in_(list(send.recipient_ids)))).all())
    if send.method == "multicast" and len(recipients) > 1 and _bad_recipient(outcome):
        # LINE rejects a whole multicast when one of its ids is bad (nothing was sent):
        # send to each recipient by push instead, so only the bad ones fail
        session.execute(insert(DirectMessageSend), [
            {"direct_message_id": send.direct_message_id, "organization_id": send.organization_id,
             "method": "push", "retry_key": new_retry_key(), "recipient_ids": [r.id], "to": [r.line_uid],
             "messages": send.messages, "status": "pending", "locked_until": None, "created_at": now}
            for r in sorted(recipients, key=lambda r: r.mark)
        ])
        send.outcome = "split"
        session.flush()
        return True
    if outcome.outcome == "success":
        for recipient in recipients:
            recipient.status, recipient.sent_at, recipient.response = "sent", now, None
        dm = session.get(DirectMessage, send.direct_message_id)
        if dm is not None:
            notify.sent(session, dm, recipients, now)
    else:
        text = outcome.failure_text()
        for recipient in recipients:
            recipient.status, recipient.response = "failed", text
    session.flush()
    return True


def _bad_recipient(outcome: Outcome) -> bool:
    """A 400 that is not about the messages (LINE's "Failed to send messages" for a bad ``to``)."""
    if outcome.outcome != "rejected" or outcome.status_code != 400:
        return False
    details = outcome.body.get("details") if isinstance(outcome.body, dict) else None
    return not any(str((d or {}).get("property", "")).startswith("messages") for d in details or [])


def finalize(session: Session, dm_id: int) -> bool:
    """Mark the message sent once no LINE call is left. Returns True when it is (now) sent."""
    dm = session.get(DirectMessage, dm_id, with_for_update=True)
    if dm is None:
        return True
    if dm.status == "sent":
        return True
    pending = session.scalar(select(func.count()).select_from(DirectMessageSend).where(
        DirectMessageSend.direct_message_id == dm_id, DirectMessageSend.status == "pending"))
    if pending or dm.status == "pending":
        return False
    # recipients left pending without a call (should not happen) fail rather than hang
    session.execute(update(DirectMessageRecipient).where(
        DirectMessageRecipient.direct_message_id == dm_id, DirectMessageRecipient.status == "pending",
    ).values(status="failed", response="error"))
    total, failed = direct.counts(session, dm_id)
    now = utcnow()
    dm.status, dm.sent_at, dm.updated_at, dm.total_count, dm.fail_count = "sent", now, now, total, failed
    session.flush()
    return True


def _send_row(dm: DirectMessage, method: str, recipients: list[DirectMessageRecipient],
              messages: list[dict[str, Any]], locked_until: datetime | None) -> dict[str, Any]:
    return {"direct_message_id": dm.id, "organization_id": dm.organization_id, "method": method,
            "retry_key": new_retry_key(), "recipient_ids": [r.id for r in recipients],
            "to": [r.line_uid for r in recipients], "messages": messages, "status": "pending",
            "locked_until": locked_until, "created_at": utcnow()}


# -- push (synchronous) ---------------------------------------------------------------------------

def push(org: OrgContext, template_id: int, event_id: int | None, data: dict[str, Any]) -> dict[str, Any]:
    database = get_database()
    errors: dict[str, Any] = {}
    with database.read() as session:
        template = direct.load_template(session, org.id, template_id)
        event = direct.load_event(session, org.id, event_id)
        line_uid = direct.line_uid_of(data, errors)
        params, param_errors = direct.clean_params(template, data)
        errors.update(param_errors)
        contact = direct.contacts_by_uid(session, org.id, [line_uid]).get(line_uid) if line_uid else None
        if line_uid and contact is None and "line_uid" not in errors:
            errors["line_uid"] = [direct.CONTACT_NOT_FOUND + "."]
        if not errors:
            rendered = render(template.messages, params, direct.contact_fields(contact))
            errors.update(direct.check_images(direct.image_slots(template), rendered))
        if errors:
            raise field_errors({"data": errors})
        channel = channel_of(session, org.id)
        line = (channel.api_base_url, channel.access_token, channel.channel_id) if channel else None
    assert contact is not None and line_uid is not None
    now = utcnow()
    lease = send_lease()
    with database.write() as session:
        dm = DirectMessage(organization_id=org.id, category="push", template_id=template.id,
                           event_id=event.id if event else None, status="sending", tracked=event is not None,
                           total_count=1, fail_count=0, created_at=now, updated_at=now)
        session.add(dm)
        session.flush()
        recipient = DirectMessageRecipient(direct_message_id=dm.id, organization_id=org.id, mark=0,
                                           line_uid=line_uid, contact_id=contact.id, params=params, status="pending")
        session.add(recipient)
        session.flush()
        messages = rendered
        if dm.tracked:
            tracker = links.Tracker(session, dm, links.get_setting(session, org.id))
            messages = tracker.track(rendered, recipient.id)
            tracker.save()
        row = _send_row(dm, "push", [recipient], messages, now + lease)
        send_id = session.execute(insert(DirectMessageSend).values(**row).returning(DirectMessageSend.id)).scalar_one()
        # finishes the push should this process die before recording LINE's answer
        enqueue(session, JOB_KIND, {"id": dm.id}, organization_id=org.id,
                run_at=now + lease + timedelta(seconds=1), unique_key=f"{JOB_KIND}:{dm.id}")
        dm_id = dm.id
    if line is None:
        outcome = Outcome("error")
    else:
        with _client(*line) as client:
            outcome = call_line(client, "push", [line_uid], messages, row["retry_key"])
    with database.write() as session:
        apply_outcome(session, int(send_id), outcome)
        if finalize(session, dm_id):
            # recorded: the recovery job has nothing left to do (unless a worker already holds it)
            session.execute(delete(Job).where(Job.unique_key == f"{JOB_KIND}:{dm_id}", Job.status == "ready"))
    return {"id": dm_id, "event_id": event.id if event else None, "event": event.name if event else None,
            "result": outcome.push_result()}


# -- multicast and enhanced multicast (asynchronous) ---------------------------------------------

def _accept(org: OrgContext, category: str, template: MessageTemplate, event_id: int | None,
            entries: Sequence[tuple[str, dict[str, str] | None, int | None]], shared: dict[str, str] | None) -> dict[str, Any]:
    now = utcnow()
    with get_database().write() as session:
        dm = DirectMessage(organization_id=org.id, category=category, template_id=template.id, event_id=event_id,
                           status="pending", tracked=event_id is not None, params=shared,
                           total_count=len(entries), fail_count=0, created_at=now, updated_at=now)
        session.add(dm)
        session.flush()
        rows = [{"direct_message_id": dm.id, "organization_id": org.id, "mark": mark, "line_uid": uid,
                 "contact_id": contact_id, "params": params,
                 "status": "pending" if contact_id is not None else "failed",
                 "response": None if contact_id is not None else direct.CONTACT_NOT_FOUND}
                for mark, (uid, params, contact_id) in enumerate(entries)]
        session.execute(insert(DirectMessageRecipient), rows)
        enqueue(session, JOB_KIND, {"id": dm.id}, organization_id=org.id, unique_key=f"{JOB_KIND}:{dm.id}")
        return {"id": dm.id, "result": "pending"}


def multicast(org: OrgContext, template_id: int, event_id: int | None, data: list[dict[str, Any]]) -> dict[str, Any]:
    with get_database().read() as session:
        template = direct.load_template(session, org.id, template_id)
        event = direct.load_event(session, org.id, event_id)
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
    return _accept(org, "multicast", template, event.id if event else None, entries, None)


def enhanced_multicast(org: OrgContext, template_id: int, event_id: int | None, line_uids: list[str],
                       data: dict[str, Any]) -> dict[str, Any]:
    with get_database().read() as session:
        template = direct.load_template(session, org.id, template_id)
        event = direct.load_event(session, org.id, event_id)
        params, errors = direct.clean_params(template, data)
        if not errors:
            errors.update(direct.check_images(direct.image_slots(template), render(template.messages, params, None)))
        if errors:
            raise field_errors({"data": errors})
        uids = [uid.strip() for uid in line_uids]
        blank = {str(i): ["This field may not be blank."] for i, uid in enumerate(uids) if not uid}
        if blank:
            raise field_errors({"line_uids": blank})
        contacts = direct.contacts_by_uid(session, org.id, uids)
    entries = [(uid, None, contacts[uid].id if uid in contacts else None) for uid in uids]
    return _accept(org, "enhanced_multicast", template, event.id if event else None, entries, params)


# -- the job --------------------------------------------------------------------------------------

def plan(dm_id: int) -> None:
    """Render, track and group a pending multicast into LINE calls (once)."""
    from openmaac.contacts.models import Contact

    with get_database().write() as session:
        dm = session.get(DirectMessage, dm_id, with_for_update=True)
        if dm is None or dm.status != "pending":
            return
        recipients = list(session.scalars(select(DirectMessageRecipient).where(
            DirectMessageRecipient.direct_message_id == dm_id, DirectMessageRecipient.status == "pending",
        ).order_by(DirectMessageRecipient.mark)))
        template = session.get(MessageTemplate, dm.template_id) if dm.template_id else None
        dm.status, dm.updated_at = "sending", utcnow()
        if template is None:
            for recipient in recipients:
                recipient.status, recipient.response = "failed", "error"
            session.flush()
            return
        tracker = links.Tracker(session, dm, links.get_setting(session, dm.organization_id)) if dm.tracked else None
        groups: dict[str, tuple[list[dict[str, Any]], list[DirectMessageRecipient]]] = {}
        if dm.category == "enhanced_multicast":
            # one shared parameter set, contact placeholders empty, per-message links only
            messages = render(template.messages, dm.params or {}, None)
            if tracker is not None:
                messages = tracker.track(messages, None)
            groups[""] = (messages, recipients)
        else:
            contact_ids = [r.contact_id for r in recipients if r.contact_id is not None]
            contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(contact_ids)))}
            for recipient in recipients:
                contact = contacts.get(recipient.contact_id) if recipient.contact_id else None
                messages = render(template.messages, recipient.params or {}, direct.contact_fields(contact))
                if tracker is not None:
                    messages = tracker.track(messages, recipient.id)
                key = json.dumps(messages, sort_keys=True, separators=(",", ":"))
                groups.setdefault(key, (messages, []))[1].append(recipient)
        if tracker is not None:
            tracker.save()
        rows = []
        for messages, members in groups.values():
            if len(members) == 1:
                rows.append(_send_row(dm, "push", members, messages, None))
                continue
            for chunk in range(0, len(members), MULTICAST_MAX_RECIPIENTS):
                rows.append(_send_row(dm, "multicast", members[chunk:chunk + MULTICAST_MAX_RECIPIENTS], messages, None))
        if rows:
            session.execute(insert(DirectMessageSend), rows)
        session.flush()


@dataclass(frozen=True)
class _Claimed:
    id: int
    method: str
    to: list[str]
    messages: list[dict[str, Any]]
    retry_key: str


def claim(dm_id: int, limit: int) -> list[_Claimed]:
    now = utcnow()
    with get_database().write() as session:
        stmt = (select(DirectMessageSend).where(
            DirectMessageSend.direct_message_id == dm_id, DirectMessageSend.status == "pending",
            or_(DirectMessageSend.locked_until.is_(None), DirectMessageSend.locked_until < now),
        ).order_by(DirectMessageSend.id).limit(limit))
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        sends = list(session.scalars(stmt))
        until = now + send_lease()
        for send in sends:
            send.locked_until = until
        session.flush()
        return [_Claimed(s.id, s.method, list(s.to), list(s.messages), s.retry_key) for s in sends]


@handler(JOB_KIND)
def run_direct_message(payload: dict[str, Any], _context: JobContext) -> None:
    dm_id = int(payload["id"])
    database = get_database()
    plan(dm_id)
    with database.read() as session:
        dm = session.get(DirectMessage, dm_id)
        if dm is None:
            return
        channel = channel_of(session, dm.organization_id)
        line = (channel.api_base_url, channel.access_token, channel.channel_id) if channel else None
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="openmaac-line") as pool:
        while True:
            batch = claim(dm_id, BATCH)
            if not batch:
                break
            if line is None:
                outcomes = [Outcome("error") for _ in batch]
            else:
                with _client(*line) as client:
                    outcomes = list(pool.map(
                        lambda s: call_line(client, s.method, s.to, s.messages, s.retry_key), batch))
            with database.write() as session:
                for send, outcome in zip(batch, outcomes, strict=True):
                    apply_outcome(session, send.id, outcome)
    with database.write() as session:
        if finalize(session, dm_id):
            return
        # some call is still leased by another runner (e.g. a push answering its request)
        until = session.scalar(select(func.min(DirectMessageSend.locked_until)).where(
            DirectMessageSend.direct_message_id == dm_id, DirectMessageSend.status == "pending"))
    wait = (until - utcnow()).total_seconds() if until else 1.0
    raise RetryLater(max(1.0, wait + 0.5), "LINE calls still leased")

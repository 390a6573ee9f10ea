"""Webhook endpoints, the outbox (``emit``) and the delivery log.

``emit`` is the one entry point every feature uses to announce an event. It runs inside
the caller's write transaction: the delivery rows (one per subscribed endpoint, body and
``CrescLab-Idempotency-Key`` fixed now) and the endpoint's dispatcher job commit together
with the change that caused them, or not at all. ``openmaac.webhooks.delivery`` sends them.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from openmaac.auth.models import Organization
from openmaac.auth.service import OrgContext
from openmaac.channels import destinations
from openmaac.db.base import utcnow
from openmaac.db.driver import DriverStatement
from openmaac.jobs.models import Job
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.pagination import paginate_by_id
from openmaac.web.times import render, zone
from openmaac.webhooks.models import SIGNATURE_SCHEMES, STYLES, WebhookDelivery, WebhookEndpoint
from openmaac.webhooks.schedule import MAX_ATTEMPTS
from openmaac.webhooks.signing import STANDARD_SECRET_PREFIX, render_body
from openmaac.webhooks.topics import TOPICS

DISPATCH_KIND = "webhook.dispatch"
MAX_HEADERS = 20
RESERVED_HEADERS = {"content-type", "content-length", "host", "user-agent", "crescLab-idempotency-key".lower(),
                    "cresclab-signature", "transfer-encoding", "connection",
                    "webhook-id", "webhook-timestamp", "webhook-signature"}
STANDARD_SCHEME = "maac+standard"
STANDARD_SECRET_BYTES = 32  # Standard Webhooks: a key of 24 to 64 random bytes
# After a rotation the previous whsec_ key signs as well for this long (as Svix does), so a
# receiver can switch to the new key without refusing deliveries signed in between.
STANDARD_ROTATION_OVERLAP = timedelta(hours=24)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")


def _deliveries() -> Table:
    return cast(Table, WebhookDelivery.__table__)


def new_secret() -> str:
    return secrets.token_hex(32)


def new_standard_secret() -> str:
    """``whsec_`` and the base64 of a random key (the Standard Webhooks secret format)."""
    return STANDARD_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(STANDARD_SECRET_BYTES)).decode("ascii")


def standard_signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    """The whsec_ secrets a delivery is signed with now: none under the "maac" scheme; the
    current one, and the previous one during the day after a rotation."""
    if endpoint.signature_scheme != STANDARD_SCHEME or not endpoint.standard_secret:
        return ()
    previous = endpoint.standard_previous_secret
    until = endpoint.standard_previous_until
    if previous and until is not None and now < until:
        return (endpoint.standard_secret, previous)
    return (endpoint.standard_secret,)


def dispatch_key(endpoint_id: int) -> str:
    return f"{DISPATCH_KIND}:{endpoint_id}"


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- validation -------------------------------------------------------------------------

def validate_url(url: str) -> str:
    """400 unless ``url`` is http(s) and resolves only to addresses tenants may reach.

    Does DNS: call it before opening the write transaction.
    """
    url = url.strip()
    refusal = destinations.url_refusal(url)
    if refusal is not None:
        raise field_errors({"url": [refusal]})
    return url


def clean_signature_scheme(scheme: str) -> str:
    if scheme not in SIGNATURE_SCHEMES:
        raise field_errors({"signature_scheme": [f'"{scheme}" is not a valid choice.']})
    return scheme


def clean_topics(topics: list[str]) -> list[str]:
    errors: dict[str, list[str]] = {}
    cleaned: list[str] = []
    for index, topic in enumerate(topics):
        if topic not in TOPICS:
            errors[str(index)] = [f'"{topic}" is not a valid choice.']
        elif topic not in cleaned:
            cleaned.append(topic)
    if errors:
        raise field_errors({"topics": errors})
    if not cleaned:
        raise field_errors({"topics": ["This list may not be empty."]})
    return cleaned


def clean_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    if not headers:
        return {}
    if len(headers) > MAX_HEADERS:
        raise field_errors({"headers": [f"Ensure this field has no more than {MAX_HEADERS} elements."]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, str] = {}
    for name, value in headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            errors[name] = ["Not a valid header name (or one openmaac sets itself)."]
        elif not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\x00"):
            errors[name] = ["Not a valid header value."]
        else:
            cleaned[name] = value
    if errors:
        raise field_errors({"headers": errors})
    return cleaned


# -- endpoints ----------------------------------------------------------------------------

def serialize_endpoint(endpoint: WebhookEndpoint, org: OrgContext, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "topics": list(endpoint.topics),
        "style": endpoint.style,
        "signature_scheme": endpoint.signature_scheme,
        "headers": dict(endpoint.headers or {}),
        "is_active": endpoint.is_active,
        "created_at": render(endpoint.created_at, org.tz),
        "updated_at": render(endpoint.updated_at, org.tz),
        "failing_since": render(endpoint.failing_since, org.tz),
        "disabled_at": render(endpoint.disabled_at, org.tz) if not endpoint.is_active else None,
        "disabled_reason": endpoint.disabled_reason if not endpoint.is_active else None,
    }
    if with_secret:
        out["secret"] = endpoint.secret
        out["standard_secret"] = endpoint.standard_secret
    return out


def create_endpoint(session: Session, org: OrgContext, *, url: str, topics: list[str], style: str = "maac",
                    headers: dict[str, Any] | None = None, signature_scheme: str = "maac") -> dict[str, Any]:
    """``url`` must already have passed ``validate_url`` (outside the transaction)."""
    if style not in STYLES:
        raise field_errors({"style": [f'"{style}" is not a valid choice.']})
    scheme = clean_signature_scheme(signature_scheme)
    now = utcnow()
    endpoint = WebhookEndpoint(
        organization_id=org.id, url=url.strip(), topics=clean_topics(topics), style=style,
        headers=clean_headers(headers), secret=new_secret(), is_active=True, created_at=now, updated_at=now,
        signature_scheme=scheme, standard_secret=new_standard_secret() if scheme == STANDARD_SCHEME else None,
    )
    session.add(endpoint)
    session.flush()
    return serialize_endpoint(endpoint, org, with_secret=True)


def get_endpoint(session: Session, org_id: int, endpoint_id: int, *, for_update: bool = False) -> WebhookEndpoint:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.organization_id == org_id, WebhookEndpoint.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    endpoint = session.scalar(stmt)
    if endpoint is None:
        raise not_found()
    return endpoint


def list_endpoints(session: Session, org: OrgContext, start: str | None) -> dict[str, Any]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.organization_id == org.id)
    page = paginate_by_id(session, stmt, WebhookEndpoint.id, scope=f"webhook:{org.id}", start=start)
    return {"results": [serialize_endpoint(e, org) for e in page.rows], "next": page.next}


def update_endpoint(session: Session, org: OrgContext, endpoint_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Only the fields given change. Bodies already queued keep the style they were rendered in.

    Turning the "maac+standard" signature scheme on makes a new whsec_ secret, answered as
    ``standard_secret``; turning it off forgets it. Queued deliveries are signed by the
    scheme in force when they are sent.
    """
    endpoint = get_endpoint(session, org.id, endpoint_id, for_update=True)
    standard_enabled = False
    if changes.get("signature_scheme") is not None:
        scheme = clean_signature_scheme(changes["signature_scheme"])
        if scheme != endpoint.signature_scheme:
            standard_enabled = scheme == STANDARD_SCHEME
            endpoint.signature_scheme = scheme
            endpoint.standard_secret = new_standard_secret() if standard_enabled else None
            endpoint.standard_previous_secret = endpoint.standard_previous_until = None
    if "url" in changes and changes["url"] is not None:
        endpoint.url = str(changes["url"]).strip()
    if "topics" in changes and changes["topics"] is not None:
        endpoint.topics = clean_topics(list(changes["topics"]))
    if "style" in changes and changes["style"] is not None:
        if changes["style"] not in STYLES:
            raise field_errors({"style": [f'"{changes["style"]}" is not a valid choice.']})
        endpoint.style = changes["style"]
    if "headers" in changes:
        endpoint.headers = clean_headers(changes["headers"])
    if "is_active" in changes and changes["is_active"] is not None:
        if changes["is_active"] and not endpoint.is_active:
            resume(session, endpoint)
        elif not changes["is_active"] and endpoint.is_active:
            endpoint.is_active = False
            endpoint.disabled_at, endpoint.disabled_reason = utcnow(), None  # paused on request
    endpoint.updated_at = utcnow()
    session.flush()
    if endpoint.is_active:
        kick(session, endpoint.id, endpoint.organization_id)  # e.g. re-activated with events waiting
    out = serialize_endpoint(endpoint, org)
    if standard_enabled:
        out["standard_secret"] = endpoint.standard_secret
    return out


def resume(session: Session, endpoint: WebhookEndpoint) -> None:
    """Activate a paused or deactivated endpoint: a fresh health record, and the deliveries
    waiting in the long retry schedule are due now (someone says the receiver works again)."""
    now = utcnow()
    endpoint.is_active = True
    endpoint.failing_since = endpoint.disabled_at = endpoint.disabled_reason = None
    endpoint.updated_at = now
    session.execute(
        update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "waiting")
        .values(next_attempt_at=now).execution_options(synchronize_session=False)
    )
    session.flush()
    kick(session, endpoint.id, endpoint.organization_id)


def delete_endpoint(session: Session, org: OrgContext, endpoint_id: int) -> None:
    """Deletes the endpoint and its delivery log (the caller asked for it)."""
    endpoint = get_endpoint(session, org.id, endpoint_id, for_update=True)
    session.execute(_deliveries().delete().where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def _secrets(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "secret": endpoint.secret, "standard_secret": endpoint.standard_secret}


def reveal_secret(session: Session, org: OrgContext, endpoint_id: int) -> dict[str, Any]:
    return _secrets(get_endpoint(session, org.id, endpoint_id))


def rotate_secret(session: Session, org: OrgContext, endpoint_id: int, scheme: str = "maac") -> dict[str, Any]:
    """A new secret for ``scheme``: "maac" replaces the share secret (CrescLab-Signature), at
    once for every attempt from now on, retries of queued events too; "standard" replaces the
    whsec_ secret, the previous one signing as well for STANDARD_ROTATION_OVERLAP."""
    if scheme not in ("maac", "standard"):
        raise field_errors({"scheme": [f'"{scheme}" is not a valid choice.']})
    endpoint = get_endpoint(session, org.id, endpoint_id, for_update=True)
    now = utcnow()
    if scheme == "standard":
        if endpoint.signature_scheme != STANDARD_SCHEME or not endpoint.standard_secret:
            raise field_errors({"scheme": [f'This webhook\'s signature_scheme is not "{STANDARD_SCHEME}".']})
        endpoint.standard_previous_secret = endpoint.standard_secret
        endpoint.standard_previous_until = now + STANDARD_ROTATION_OVERLAP
        endpoint.standard_secret = new_standard_secret()
    else:
        endpoint.secret = new_secret()
    endpoint.updated_at = now
    session.flush()
    return _secrets(endpoint)


# -- the outbox -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    topic: str
    data: Any
    ordering_key: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class _Target:
    id: int
    style: str
    topics: frozenset[str]


def _targets_statement(postgres: bool) -> Any:
    endpoints = WebhookEndpoint.__table__
    stmt = select(endpoints.c.id, endpoints.c.style, endpoints.c.topics).where(
        endpoints.c.organization_id == bindparam("org"), endpoints.c.is_active.is_(True))
    return stmt.with_for_update(read=True) if postgres else stmt


# prebuilt: every recorded send asks this, usually to learn there is nothing to announce
# (on the driver's cursor, db/driver.py: no SQLAlchemy execution machinery per send)
_TARGETS = {postgres: DriverStatement(_targets_statement(postgres)) for postgres in (False, True)}
_TIMEZONE = DriverStatement(select(Organization.__table__.c.timezone)
                            .where(Organization.__table__.c.id == bindparam("org")))


# The same read for a caller's own PostgreSQL statement, so a hot path that will announce
# something learns the targets in a round trip it makes anyway: two columns, a JSON array of
# ``[id, style, topics]`` (NULL when none; share-locked as ``_targets``' rows are) and the
# organisation's time zone. ``:org`` is the organisation; ``condition`` (SQL) whether to read
# them at all. Hand both columns to ``remember_targets``.
def pg_targets_columns(condition: str = "TRUE", organization: str = ":org") -> str:
    return f"""(SELECT json_agg(json_build_array(e.id, e.style, e.topics) ORDER BY e.id) FROM (
    SELECT id, style, topics FROM webhook_endpoints
    WHERE organization_id = {organization} AND is_active AND ({condition}) FOR SHARE) e),
  (SELECT timezone FROM organizations WHERE id = {organization})"""


def pg_targets_rows(organizations: str) -> str:
    """``pg_targets_columns`` for many organisations: a query of one row each, ``(organisation,
    targets, time zone)``, for the ids in the bigint array ``organizations`` (SQL, e.g. a bound
    parameter's name)."""
    return (f"SELECT t.org, {pg_targets_columns(organization='t.org')} "
            f"FROM (SELECT DISTINCT unnest(CAST({organizations} AS bigint[])) AS org) t")


def remember_targets(session: Session, organization_id: int, targets: list[list[Any]] | None,
                     tz_name: str | None) -> None:
    """Keep what ``pg_targets_columns`` read as the transaction's targets (``_targets``' cache)."""
    found = [_Target(int(i), str(s), frozenset(t or ())) for i, s, t in targets or ()]
    cache: dict[int, tuple[str, list[_Target]]] = session.info.setdefault("webhook_targets", {})
    cache[organization_id] = ((tz_name or "UTC") if found else "UTC", found)


def _targets(session: Session, organization_id: int) -> tuple[str, list[_Target]]:
    """The organisation's active endpoints (cached for the transaction) and its time zone.

    On PostgreSQL the rows are share-locked until commit, so a dispatcher deciding "nothing
    left to send" (which locks its endpoint for update) cannot miss these deliveries.
    """
    cache: dict[int, tuple[str, list[_Target]]] = session.info.setdefault("webhook_targets", {})
    cached = cache.get(organization_id)
    if cached is not None:
        return cached
    conn = session.connection()
    targets = [_Target(int(i), str(s), frozenset(t or ()))
               for i, s, t in _TARGETS[conn.dialect.name == "postgresql"].execute(conn, {"org": organization_id}).rows]
    tz_name = "UTC"
    if targets:
        tz_name = _TIMEZONE.execute(conn, {"org": organization_id}).scalar() or "UTC"
    cache[organization_id] = (tz_name, targets)
    return tz_name, targets


def timestamp_for(style: str, at: datetime, tz_name: str) -> str:
    """MAAC samples carry the organisation's offset; CDH samples are UTC. Always microseconds."""
    if style == "cdh":
        return at.astimezone(UTC).isoformat(timespec="microseconds")
    return at.astimezone(zone(tz_name)).isoformat(timespec="microseconds")


def emit_many(session: Session, organization_id: int, events: Iterable[Event], *,
              occurred_at: datetime | None = None) -> int:
    """Queue many events in the caller's transaction (one multi-row insert). Returns rows queued."""
    tz_name, targets = _targets(session, organization_id)
    if not targets:
        return 0
    now = utcnow()
    at = occurred_at or now
    rows: list[dict[str, Any]] = []
    touched: set[int] = set()
    for event in events:
        matching = [t for t in targets if event.topic in t.topics]
        if not matching:
            continue
        key = uuid.uuid4().hex
        rendered: dict[str, str] = {}
        for target in matching:
            body = rendered.get(target.style)
            if body is None:
                body = rendered[target.style] = render_body(
                    target.style, event.topic, timestamp_for(target.style, at, tz_name), event.data,
                    event_id=event.event_id,
                )
            rows.append({
                "organization_id": organization_id, "endpoint_id": target.id, "topic": event.topic,
                "idempotency_key": key, "ordering_key": event.ordering_key, "body": body,
                "status": "pending", "attempts": 0, "max_attempts": MAX_ATTEMPTS, "next_attempt_at": now,
                "locked_until": None, "created_at": now,
            })
            touched.add(target.id)
    if not rows:
        return 0
    for chunk in range(0, len(rows), 2000):
        session.execute(_deliveries().insert(), rows[chunk:chunk + 2000])
    kicked: set[int] = session.info.setdefault("webhook_kicked", set())
    for endpoint_id in sorted(touched - kicked):
        kick(session, endpoint_id, organization_id)
        kicked.add(endpoint_id)
    return len(rows)


def emit(session: Session, organization_id: int, topic: str, data: Any, *, ordering_key: str | None = None,
         event_id: str | None = None, occurred_at: datetime | None = None) -> int:
    """Announce one event to every active endpoint of the organisation subscribed to ``topic``.

    Call inside the write transaction of the change that caused it. ``data`` is the topic's
    ``data`` object (JSON-ready; dates are ISO-formatted). ``ordering_key`` (the contact's
    line_uid) keeps deliveries of one contact to one endpoint in order. ``event_id`` is added
    to CDH bodies (the ``*.sync`` topics). Returns the number of deliveries queued.
    """
    return emit_many(session, organization_id, [Event(topic, data, ordering_key, event_id)],
                     occurred_at=occurred_at)


def kick(session: Session, endpoint_id: int, organization_id: int, run_at: datetime | None = None) -> None:
    """Make sure the endpoint's dispatcher job exists and is due now (one per endpoint).

    An ``INSERT ... ON CONFLICT (unique_key) DO UPDATE``: a waiting dispatcher (sleeping
    until a retry is due) is pulled forward, a failed one revived; a running one is left
    alone (it looks again before it stops).
    """
    now = utcnow()
    values = {
        "kind": DISPATCH_KIND, "payload": {"endpoint_id": endpoint_id}, "organization_id": organization_id,
        "priority": 50, "run_at": max(run_at, now) if run_at is not None else now, "status": "ready", "attempts": 0, "max_attempts": 1000,
        "unique_key": dispatch_key(endpoint_id), "created_at": now,
    }
    if _is_postgres(session):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(Job)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(Job)
    statement = statement.values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["unique_key"],
        set_={"run_at": statement.excluded.run_at, "status": "ready", "locked_by": None, "locked_until": None},
        where=or_(Job.status == "failed", and_(Job.status == "ready", Job.run_at > statement.excluded.run_at)),
    )
    session.execute(statement)
    session.info["jobs_enqueued"] = True


# -- the delivery log -----------------------------------------------------------------------

PUBLIC_STATUS = {"waiting": "pending"}  # a waiting delivery is pending to the API


def _status_condition(status: str) -> Any:
    if status == "pending":
        return WebhookDelivery.status.in_(("pending", "waiting"))
    return WebhookDelivery.status == status


def serialize_delivery(delivery: WebhookDelivery, org: OrgContext) -> dict[str, Any]:
    pending = delivery.status in ("pending", "waiting")
    return {
        "id": delivery.id,
        "webhook_id": delivery.endpoint_id,
        "topic": delivery.topic,
        "idempotency_key": delivery.idempotency_key,
        "status": PUBLIC_STATUS.get(delivery.status, delivery.status),
        "attempts": delivery.attempts,
        "max_attempts": delivery.max_attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": render(delivery.created_at, org.tz),
        "last_attempt_at": render(delivery.last_attempt_at, org.tz),
        "next_attempt_at": render(delivery.next_attempt_at, org.tz) if pending else None,
        "completed_at": render(delivery.completed_at, org.tz),
        "body": delivery.body,
    }


def list_deliveries(session: Session, org: OrgContext, endpoint_id: int, *, status: str | None,
                    start: str | None) -> dict[str, Any]:
    get_endpoint(session, org.id, endpoint_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id,
                                         WebhookDelivery.organization_id == org.id)
    if status:
        stmt = stmt.where(_status_condition(status))
    page = paginate_by_id(session, stmt, WebhookDelivery.id,
                          scope=f"webhook-delivery:{org.id}:{endpoint_id}:{status or ''}", start=start)
    return {"results": [serialize_delivery(d, org) for d in page.rows], "next": page.next}


def get_delivery(session: Session, org: OrgContext, endpoint_id: int, delivery_id: int) -> dict[str, Any]:
    delivery = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id,
        WebhookDelivery.organization_id == org.id,
    ))
    if delivery is None:
        raise not_found()
    return serialize_delivery(delivery, org)


def delivery_counts(session: Session, endpoint_id: int) -> dict[str, int]:
    rows = session.execute(
        select(WebhookDelivery.status, func.count()).where(WebhookDelivery.endpoint_id == endpoint_id)
        .group_by(WebhookDelivery.status)
    ).all()
    counts = {"pending": 0, "succeeded": 0, "failed": 0}
    for status, count in rows:
        counts[PUBLIC_STATUS.get(str(status), str(status))] += int(count)
    return counts


def replay(session: Session, org: OrgContext, endpoint_id: int, delivery_ids: list[int] | None) -> dict[str, Any]:
    """Send deliveries again, now: same body, same idempotency key, a fresh retry budget.

    Without ids, every failed delivery of the endpoint and every one waiting in the long part
    of the retry schedule. Named ones may also have succeeded. Deliveries being sent or in
    MAAC's fast retries (1 s, 2 s, 4 s) are left alone.
    """
    endpoint = get_endpoint(session, org.id, endpoint_id, for_update=True)
    condition = [WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.organization_id == org.id]
    if delivery_ids is None:
        condition.append(WebhookDelivery.status.in_(("failed", "waiting")))
    else:
        if len(delivery_ids) > 10_000:
            raise field_errors({"delivery_ids": ["Ensure this field has no more than 10000 elements."]})
        condition += [WebhookDelivery.id.in_(delivery_ids),
                      WebhookDelivery.status.in_(("failed", "waiting", "succeeded"))]
    now = utcnow()
    result = session.execute(
        update(WebhookDelivery).where(*condition).values(
            status="pending", attempts=0, max_attempts=MAX_ATTEMPTS, next_attempt_at=now, locked_until=None,
            completed_at=None,
        ).execution_options(synchronize_session=False)
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        kick(session, endpoint.id, endpoint.organization_id)
    return {"replayed": count}


def record_test_delivery(session: Session, org: OrgContext, endpoint_id: int, *, key: str, body: str,
                         outcome: Any) -> dict[str, Any]:
    """Log a "Send test" attempt (already made) as a finished delivery. A success resumes an
    endpoint that openmaac deactivated (not one paused on request) and clears its failures."""
    endpoint = get_endpoint(session, org.id, endpoint_id, for_update=True)
    if outcome.success:
        if not endpoint.is_active and endpoint.disabled_reason is not None:
            resume(session, endpoint)
        else:
            endpoint.failing_since = None
    now = utcnow()
    delivery = WebhookDelivery(
        organization_id=org.id, endpoint_id=endpoint.id, topic="webhook.test", idempotency_key=key,
        ordering_key=None, body=body, status="succeeded" if outcome.success else "failed", attempts=1,
        max_attempts=1, next_attempt_at=now, locked_until=None, last_status_code=outcome.status_code,
        last_error=outcome.error, last_attempt_at=now, created_at=now, completed_at=now,
    )
    session.add(delivery)
    session.flush()
    return serialize_delivery(delivery, org)


def ensure_style(style: str) -> str:
    if style not in STYLES:
        raise APIError(400, {"style": [f'"{style}" is not a valid choice.']})
    return style


def subscribed(session: Session, organization_id: int, topic: str) -> bool:
    """Whether any active endpoint of the organisation takes ``topic`` (cached per transaction),
    so callers can skip preparing an event nobody receives."""
    _tz, targets = _targets(session, organization_id)
    return any(topic in target.topics for target in targets)

"""Sending webhook deliveries: one dispatcher job per endpoint.

The dispatcher (job ``webhook.dispatch``, unique per endpoint) claims due deliveries in
batches, sends them concurrently over one keep-alive HTTP client with at most
``MAX_IN_FLIGHT`` requests to that endpoint, and records results in batched transactions
as they arrive. Deliveries sharing an ordering key (a contact's line_uid) form a chain sent
one after the other; a failure stops the chain, so later events of that contact wait for
the earlier one's retries (order per contact is kept) while those are MAAC's fast ones
(1 s, 2 s, 4 s). A delivery whose next retry is in the long part of the schedule
(``schedule.LONG_RETRY_DELAYS``: minutes to hours) becomes ``waiting``: it no longer holds
back its contact's later events, and the scan of pending rows never reads it; when it is
due it turns ``pending`` again and takes its place by id.

Endpoint health: the first failed attempt after a success sets the endpoint's
``failing_since``, a success clears it; an endpoint failing for ``schedule.DISABLE_AFTER``
is deactivated (``is_active`` false, ``disabled_at``, ``disabled_reason``); its queue stays.

Crash safety: a claimed delivery carries a lease (``locked_until``); the dispatcher also
shortens its own job's lease to ``JOB_LEASE`` and renews it while it runs, so after a crash
another worker (or the restarted process) takes over within that time and sends whatever
was claimed but not recorded. The idempotency key and body never change, so a receiver
that de-duplicates on ``CrescLab-Idempotency-Key`` sees each event once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from openmaac import __version__
from openmaac.channels import destinations
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.jobs.models import Job
from openmaac.jobs.registry import JobContext, handler
from openmaac.telemetry import context as log_context
from openmaac.telemetry.metrics import count_webhook_deliveries
from openmaac.webhooks.models import WebhookDelivery, WebhookEndpoint
from openmaac.webhooks.schedule import DISABLE_AFTER, RETRY_DELAYS, retry_delay, waits_long
from openmaac.webhooks.service import DISPATCH_KIND, kick, standard_signing_secrets
from openmaac.webhooks.signing import sign, standard_headers

__all__ = ["RETRY_DELAYS", "Dispatcher", "dispatch", "new_idempotency_key", "send_once"]  # RETRY_DELAYS: see schedule

log = logging.getLogger("openmaac.webhooks")

USER_AGENT = f"openmaac-webhook/{__version__}"
TIMEOUT_SECONDS = 5.0
MAX_IN_FLIGHT = 16          # concurrent requests to one endpoint
CHAIN_MAX = 50              # deliveries of one ordering key claimed at once
SCAN_LIMIT = 2000           # pending rows looked at per claim
RUN_BUDGET_SECONDS = 10.0   # then the dispatcher yields its worker slot
DELIVERY_LEASE_SECONDS = 30.0
JOB_LEASE_SECONDS = 20.0
RESPONSE_CAP_BYTES = 4096
CLAIM_BATCH = 500           # deliveries claimed at once (sent MAX_IN_FLIGHT at a time)
FLUSH_ROWS = 200            # results are committed in groups of this many ...
FLUSH_SECONDS = 0.02        # ... or this often
RECLAIM_SECONDS = 0.1       # look for new arrivals this often while sending


@dataclass(frozen=True)
class Outcome:
    success: bool
    retryable: bool
    status_code: int | None = None
    error: str | None = None


@dataclass
class Claimed:
    id: int
    key: str
    attempts: int
    max_attempts: int
    body: bytes = b""


@dataclass
class EndpointConfig:
    id: int
    url: str
    secret: str
    headers: dict[str, str]
    standard_secrets: tuple[str, ...] = ()  # empty: the endpoint's scheme is "maac" alone


@dataclass
class Claim:
    endpoint: EndpointConfig | None
    chains: list[list[Claimed]] = field(default_factory=list)


# -- one HTTP attempt -------------------------------------------------------------------------

def new_client() -> aiohttp.ClientSession:
    """One keep-alive client per dispatcher run (aiohttp: several times faster than httpx's
    async client on loopback, see docs/decisions.md)."""
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, limit_per_host=MAX_IN_FLIGHT, keepalive_timeout=30.0,
                                     use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))


async def post(client: aiohttp.ClientSession, target: destinations.Target, *, secret: str, headers: dict[str, str],
               key: str, body: bytes, standard_secrets: Sequence[str] = ()) -> Outcome:
    """POST ``body`` once to the checked address; classify the answer per the spec's retry rules.

    With ``standard_secrets``, the Standard Webhooks headers too: ``webhook-id`` is the
    idempotency key (the same on every attempt), ``webhook-timestamp`` this attempt's time.
    """
    request_headers = dict(headers)
    request_headers.update({
        "Host": target.host_header,
        "Content-Type": "application/json; charset=utf-8",
        "CrescLab-Idempotency-Key": key,
        "CrescLab-Signature": sign(secret, body),
        "User-Agent": USER_AGENT,
    })
    if standard_secrets:
        request_headers.update(standard_headers(standard_secrets, key, int(time.time()), body))
    extra: dict[str, Any] = {"server_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            async with client.post(target.connect_url, data=body, headers=request_headers, allow_redirects=False,
                                   **extra) as response:
                status = response.status
                text = await response.content.read(RESPONSE_CAP_BYTES)
    except TimeoutError:
        return Outcome(False, True, None, f"timeout: no answer within {TIMEOUT_SECONDS:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(False, True, None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= status < 300:
        return Outcome(True, False, status, None)
    retryable = status in (408, 429) or status >= 500
    snippet = text[:300].decode("utf-8", "replace")
    return Outcome(False, retryable, status, f"HTTP {status}: {snippet}".strip())


def resolve_target(url: str) -> destinations.Target | Outcome:
    try:
        return destinations.target_for(url)
    except destinations.UnsafeDestination as exc:
        return Outcome(False, False, None, f"refused: {exc}")
    except destinations.Unresolvable as exc:
        return Outcome(False, True, None, str(exc))
    except ValueError:
        return Outcome(False, False, None, "refused: not a valid http(s) URL")


def send_once(url: str, *, secret: str, headers: dict[str, str], key: str, body: bytes,
              standard_secrets: Sequence[str] = ()) -> Outcome:
    """One attempt, synchronously (``Send test``). Checks the destination like a delivery."""
    target = resolve_target(url)
    if isinstance(target, Outcome):
        return target

    async def run() -> Outcome:
        async with new_client() as client:
            return await post(client, target, secret=secret, headers=headers, key=key, body=body,
                              standard_secrets=standard_secrets)

    return run_async(run())


def run_async(coroutine: Any) -> Any:
    """Run a coroutine on a fresh event loop in this (worker) thread, uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _log_attempt(item: Claimed, outcome: Outcome) -> None:
    """One line per attempt (in the chain's own task, so ``attempt`` is this delivery's): a
    success at DEBUG, a failure at INFO with the status or the connection error only (the
    receiver's answer stays in the delivery log)."""
    log_context.attempt.set(item.attempts + 1)
    if outcome.success:
        log.debug("webhook delivery %s sent: HTTP %s", item.id, outcome.status_code)
    else:
        why = f"HTTP {outcome.status_code}" if outcome.status_code is not None else outcome.error
        log.info("webhook delivery %s failed: %s", item.id, why)


# -- the dispatcher ---------------------------------------------------------------------------

def _scan(session: Session, endpoint_id: int, now: datetime, room: int
          ) -> tuple[list[list[Claimed]], datetime | None, bool]:
    """Pick chains of claimable deliveries, oldest first, keeping each ordering key in order.

    Returns (chains, when something next becomes claimable, whether anything is pending).
    """
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.ordering_key, WebhookDelivery.next_attempt_at,
               WebhookDelivery.locked_until, WebhookDelivery.idempotency_key, WebhookDelivery.attempts,
               WebhookDelivery.max_attempts)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id)
        .limit(SCAN_LIMIT)
    ).all()
    chains: list[list[Claimed]] = []
    by_key: dict[str, list[Claimed]] = {}
    blocked: set[str] = set()
    wake: datetime | None = None
    taken = 0
    for row_id, ordering_key, next_at, locked_until, key, attempts, max_attempts in rows:
        if ordering_key is not None and ordering_key in blocked:
            continue
        free_at = next_at if locked_until is None or locked_until <= now else max(next_at, locked_until)
        if free_at > now:
            wake = free_at if wake is None else min(wake, free_at)
            if ordering_key is not None:
                blocked.add(ordering_key)
            continue
        item = Claimed(int(row_id), str(key), int(attempts), int(max_attempts))
        chain = by_key.get(ordering_key) if ordering_key is not None else None
        if taken < room:
            if chain is not None:
                if len(chain) < CHAIN_MAX:
                    chain.append(item)
                    taken += 1
                    continue
            else:
                chains.append([item])
                taken += 1
                if ordering_key is not None:
                    by_key[ordering_key] = chains[-1]
                continue
        # Claimable but no room now: come back at once.
        wake = now
        if ordering_key is not None:
            blocked.add(ordering_key)
    return chains, wake, bool(rows)


def _promote_due(session: Session, endpoint_id: int, now: datetime) -> None:
    """Waiting deliveries whose retry is due become pending again (oldest due first)."""
    due = (select(WebhookDelivery.id)
           .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "waiting",
                  WebhookDelivery.next_attempt_at <= now)
           .order_by(WebhookDelivery.next_attempt_at).limit(CLAIM_BATCH))
    ids = list(session.scalars(due))
    if ids:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == "waiting")
                        .values(status="pending").execution_options(synchronize_session=False))


def _next_waiting(session: Session, endpoint_id: int) -> datetime | None:
    """When the endpoint's earliest waiting delivery is due (None: none is waiting)."""
    return session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                          .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "waiting"))


def _disabled_reason(failing_since: datetime, error: str | None) -> str:
    days = DISABLE_AFTER.total_seconds() / 86400
    reason = (f"deactivated by openmaac: every delivery attempt failed for {days:g} days "
              f"(failing since {failing_since.astimezone(UTC).isoformat(timespec='seconds')})")
    if error:
        reason += f"; last error: {error}"
    return reason[:600]


class Dispatcher:
    def __init__(self, endpoint_id: int, job_id: int) -> None:
        self.endpoint_id = endpoint_id
        self.job_id = job_id
        self.database = get_database()
        self.results: list[tuple[Claimed, Outcome | None, datetime]] = []  # None: release unsent
        self.results_since = 0.0
        self._target_url: str | None = None
        self._target: destinations.Target | Outcome | None = None
        self.failing_since: datetime | None = None  # the endpoint's, as last read or written

    # -- database steps (run in a thread) --
    def _renew_job(self, session: Session, now: datetime) -> None:
        session.execute(update(Job).where(Job.id == self.job_id, Job.status == "running")
                        .values(locked_until=now + timedelta(seconds=JOB_LEASE_SECONDS)))

    def claim(self, room: int) -> Claim:
        with self.database.write() as session:
            now = utcnow()
            stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == self.endpoint_id)
            if session.get_bind().dialect.name == "postgresql":
                # Claims of one endpoint take turns, so even two dispatchers (a lease that
                # lapsed under a live one) never claim the same delivery.
                stmt = stmt.with_for_update()
            row = session.scalar(stmt)
            # Lock order everywhere: endpoint row, then job row (emit share-locks the endpoint
            # and then upserts the job; the reverse order here would deadlock with it).
            self._renew_job(session, now)
            if row is None or not row.is_active:
                return Claim(endpoint=None)
            config = EndpointConfig(int(row.id), str(row.url), str(row.secret), dict(row.headers or {}),
                                    standard_signing_secrets(row, now))
            self.failing_since = row.failing_since
            _promote_due(session, self.endpoint_id, now)
            chains, _wake, _any = _scan(session, self.endpoint_id, now, room)
            ids = [item.id for chain in chains for item in chain]
            if ids:
                session.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                    .values(locked_until=now + timedelta(seconds=DELIVERY_LEASE_SECONDS))
                    .execution_options(synchronize_session=False)
                )
                bodies = dict(session.execute(
                    select(WebhookDelivery.id, WebhookDelivery.body).where(WebhookDelivery.id.in_(ids))
                ).all())
                for chain in chains:
                    for item in chain:
                        item.body = str(bodies[item.id]).encode("utf-8")
            return Claim(endpoint=config, chains=chains)

    def record(self, results: list[tuple[Claimed, Outcome | None, datetime]]) -> None:
        finished: list[dict[str, Any]] = []
        released: list[dict[str, Any]] = []
        for item, outcome, at in results:
            if outcome is None:
                released.append({"_id": item.id})
                continue
            attempts = item.attempts + 1
            status, next_at = "succeeded", at
            completed: datetime | None = at
            if not outcome.success:
                if outcome.retryable and attempts < item.max_attempts:
                    status = "waiting" if waits_long(attempts) else "pending"
                    next_at, completed = at + timedelta(seconds=retry_delay(attempts)), None
                else:
                    status = "failed"
            finished.append({"_id": item.id, "_status": status, "_attempts": attempts, "_next": next_at,
                             "_code": outcome.status_code, "_error": outcome.error, "_at": at,
                             "_completed": completed})
        table = cast(Table, WebhookDelivery.__table__)
        with self.database.write() as session:
            # The endpoint row before the job row: the lock order of claim() and emit().
            self._record_health(session, results)
            self._renew_job(session, utcnow())
            if finished:
                session.execute(
                    update(table).where(table.c.id == bindparam("_id")).values(
                        status=bindparam("_status"), attempts=bindparam("_attempts"),
                        next_attempt_at=bindparam("_next"), last_status_code=bindparam("_code"),
                        last_error=bindparam("_error"), last_attempt_at=bindparam("_at"),
                        completed_at=bindparam("_completed"), locked_until=None,
                    ),
                    finished,
                )
            if released:
                session.execute(update(table).where(table.c.id == bindparam("_id")).values(locked_until=None),
                                released)
        count_webhook_deliveries(row["_status"] for row in finished)

    def _record_health(self, session: Session, results: list[tuple[Claimed, Outcome | None, datetime]]) -> None:
        """A success clears ``failing_since``; a batch of only failures sets it, or, when it
        is DISABLE_AFTER old, deactivates the endpoint. Writes only on a change of state."""
        attempted = [(outcome, at) for _item, outcome, at in results if outcome is not None]
        if not attempted:
            return
        endpoint = WebhookEndpoint.__table__.c
        if any(outcome.success for outcome, _at in attempted):
            if self.failing_since is not None:
                session.execute(update(WebhookEndpoint.__table__).where(
                    endpoint.id == self.endpoint_id, endpoint.failing_since.is_not(None)).values(failing_since=None))
                self.failing_since = None
            return
        first_failure = min(at for _outcome, at in attempted)
        if self.failing_since is None:
            session.execute(update(WebhookEndpoint.__table__).where(
                endpoint.id == self.endpoint_id, endpoint.failing_since.is_(None)).values(failing_since=first_failure))
            self.failing_since = first_failure
            return
        now = utcnow()
        if self.failing_since <= now - DISABLE_AFTER:
            last_error = attempted[-1][0].error
            result = session.execute(update(WebhookEndpoint.__table__).where(
                endpoint.id == self.endpoint_id, endpoint.is_active.is_(True), endpoint.failing_since.is_not(None),
                endpoint.failing_since <= now - DISABLE_AFTER,
            ).values(is_active=False, disabled_at=now, updated_at=now,
                     disabled_reason=_disabled_reason(self.failing_since, last_error)))
            if result.rowcount:  # type: ignore[attr-defined]
                log.warning("webhook endpoint %s deactivated: failing since %s", self.endpoint_id,
                            self.failing_since.isoformat())

    def finish(self, over_budget: bool) -> bool:
        """Nothing in flight: stop (delete or re-time our job) unless work is due now.

        Runs with the endpoint row locked (PostgreSQL), so an ``emit`` either committed before
        this look (and is seen) or commits after it and finds no job, so inserts a new one.
        """
        with self.database.write() as session:
            now = utcnow()
            stmt = select(WebhookEndpoint.is_active, WebhookEndpoint.organization_id).where(
                WebhookEndpoint.id == self.endpoint_id)
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            endpoint = session.execute(stmt).first()
            active = bool(endpoint and endpoint.is_active)
            if active:
                chains, wake, anything = _scan(session, self.endpoint_id, now, 1)
                waiting = _next_waiting(session, self.endpoint_id)
                if waiting is not None:
                    anything = True
                    if waiting <= now:
                        chains = chains or [[]]  # due: the next claim turns it pending
                    wake = waiting if wake is None else min(wake, waiting)
                if chains and not over_budget:
                    return False
                if chains:
                    wake = now
            else:
                wake, anything = None, False
            # Our job row goes; a new one (new id) is due when the next delivery is. Re-timing
            # this row instead would race the worker: it may claim it again before this run's
            # complete(), which deletes by job id and worker id and would then delete the new run.
            session.execute(delete(Job).where(Job.id == self.job_id))
            if anything and wake is not None and endpoint is not None:
                kick(session, self.endpoint_id, int(endpoint.organization_id), run_at=wake)
            return True

    # -- the loop --
    def _target_for(self, url: str) -> destinations.Target | Outcome:
        if url != self._target_url or self._target is None:
            self._target = resolve_target(url)
            self._target_url = url
        return self._target

    async def _run_chain(self, client: aiohttp.ClientSession, config: EndpointConfig, target: Any,
                         chain: list[Claimed], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        for index, item in enumerate(chain):
            async with self.slots:
                if loop.time() >= deadline:
                    outcome: Outcome | None = None
                elif isinstance(target, Outcome):
                    outcome = target
                else:
                    outcome = await post(client, target, secret=config.secret, headers=config.headers,
                                         key=item.key, body=item.body, standard_secrets=config.standard_secrets)
                    _log_attempt(item, outcome)
            self.queued -= 1
            if not self.results:
                self.results_since = loop.time()
            self.results.append((item, outcome, utcnow()))
            if outcome is None or not outcome.success:
                for rest in chain[index + 1:]:
                    self.results.append((rest, None, utcnow()))
                    self.queued -= 1
                return

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_BUDGET_SECONDS
        active: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.queued = 0  # claimed, not yet sent or released
        last_claim, last_found = 0.0, True
        async with new_client() as client:
            try:
                while True:
                    now = loop.time()
                    if self.results and (not active or len(self.results) >= FLUSH_ROWS
                                         or now - self.results_since >= FLUSH_SECONDS):
                        batch, self.results = self.results, []
                        await asyncio.to_thread(self.record, batch)
                    low = self.queued < 2 * MAX_IN_FLIGHT
                    if now < deadline and low and (last_found or now - last_claim >= RECLAIM_SECONDS):
                        claim = await asyncio.to_thread(self.claim, CLAIM_BATCH - self.queued)
                        last_claim, last_found = loop.time(), bool(claim.chains)
                        if claim.endpoint is None:
                            deadline = now  # deactivated or deleted: finish what is in flight
                        elif claim.chains:
                            target = await asyncio.to_thread(self._target_for, claim.endpoint.url)
                            for chain in claim.chains:
                                self.queued += len(chain)
                                active.add(asyncio.create_task(
                                    self._run_chain(client, claim.endpoint, target, chain, deadline)))
                    if not active:
                        if self.results:
                            continue
                        over = loop.time() >= deadline
                        if await asyncio.to_thread(self.finish, over):
                            return
                        last_found = True
                        continue
                    done, _ = await asyncio.wait(active, timeout=FLUSH_SECONDS,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        active.discard(task)
                        task.result()
            finally:
                for task in active:
                    task.cancel()
                if self.results:
                    batch, self.results = self.results, []
                    await asyncio.to_thread(self.record, batch)


@handler(DISPATCH_KIND)
def dispatch(payload: dict[str, Any], context: JobContext) -> None:
    """Send what is due for one endpoint, then stop or re-time this job (see ``Dispatcher``)."""
    started = time.monotonic()
    with log_context.webhook_delivery_context(int(payload["endpoint_id"])):
        run_async(Dispatcher(int(payload["endpoint_id"]), context.job_id).run())
        log.debug("webhook dispatcher for endpoint %s ran %.3f s", payload.get("endpoint_id"),
                  time.monotonic() - started)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex

"""Fault injection, rate limits and the monthly quota of the simulated LINE.

Faults (``POST /_admin/faults``) apply to the next ``count`` requests that match their
``endpoint`` ("push", "multicast", "pnp" or "*") and ``channel_id`` (any when omitted);
each request takes at most one fault, the oldest that matches:

=======================  ==========================================================================
kind                     what the request gets
=======================  ==========================================================================
``latency``              waits ``seconds``, then is handled normally
``500``                  500 ``{"message": "Internal server error"}``, nothing sent
``500_after_accept``     handled and ACCEPTED (messages delivered, retry key taken), then 500:
                         LINE did the work but the answer was lost; a retry with the key gets 409
``timeout``              hangs ``seconds`` (default 30) and then answers 500; nothing sent
``timeout_after_accept`` accepted at once, then hangs ``seconds`` before answering 200
``rate_limit``           429 "The API rate limit has been exceeded. Try again later."
``quota``                429 "You have reached your monthly limit." (the transient kind)
``pnp_unreachable``      PNP only: 422, the number cannot receive; no delivery webhook
=======================  ==========================================================================

Rate limits: a token bucket per channel and endpoint (push 2,000/s, multicast 200/s, PNP
2,000/s, bursts of one second's worth), settable per channel with
``POST /_admin/channels/{channel_id}/limits``, which also sets ``monthly_quota`` (messages a
month, counted per recipient actually delivered, as LINE counts), ``quota_used`` and
``pnp_delivery_delay``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from openmaac.simulators.line.common import LineError, channel_or_404, state_of
from openmaac.simulators.line.state import Channel, Fault, SimulatorState, TokenBucket, current_month

RATE_LIMITED = "The API rate limit has been exceeded. Try again later."
MONTHLY_LIMIT = "You have reached your monthly limit."
INTERNAL_ERROR = "Internal server error"

KINDS = ("latency", "500", "500_after_accept", "timeout", "timeout_after_accept", "rate_limit", "quota",
         "pnp_unreachable")


def take_fault(sim: SimulatorState, channel: Channel, endpoint: str) -> Fault | None:
    """The oldest fault matching this request (its count decreased), or None."""
    with sim.lock:
        for index, fault in enumerate(sim.faults):
            if fault.endpoint not in ("*", endpoint):
                continue
            if fault.channel_id not in (None, channel.channel_id):
                continue
            if fault.kind == "pnp_unreachable" and endpoint != "pnp":
                continue
            fault.count -= 1
            if fault.count <= 0:
                del sim.faults[index]
            return Fault(fault.kind, fault.endpoint, fault.channel_id, 1, fault.seconds)
    return None


def check_rate(sim: SimulatorState, channel: Channel, endpoint: str) -> None:
    with sim.lock:
        bucket = channel.buckets.get(endpoint)
        allowed = bucket is None or bucket.take()
    if not allowed:
        raise LineError(429, RATE_LIMITED)


def this_month(channel: Channel) -> Channel:
    """The channel with its usage counted from the start of this month (call under the lock)."""
    month = current_month()
    if channel.quota_month != month:
        channel.quota_month, channel.quota_used = month, 0
    return channel


def reserve_quota(channel: Channel, recipients: int) -> None:
    """Count ``recipients`` delivered messages against the monthly quota (call under the lock)."""
    this_month(channel)
    if channel.monthly_quota is not None and channel.quota_used + recipients > channel.monthly_quota:
        raise LineError(429, MONTHLY_LIMIT)
    channel.quota_used += recipients


# ----------------------------------------------------------------------------------------------
# admin
# ----------------------------------------------------------------------------------------------

router = APIRouter(prefix="/_admin")


class FaultIn(BaseModel):
    kind: Literal["latency", "500", "500_after_accept", "timeout", "timeout_after_accept", "rate_limit",
                  "quota", "pnp_unreachable"]
    endpoint: Literal["push", "multicast", "pnp", "*"] = "*"
    channel_id: str | None = None
    count: int = Field(default=1, ge=1)
    seconds: float | None = Field(default=None, ge=0)


class BucketIn(BaseModel):
    rate: float = Field(gt=0)
    burst: float | None = Field(default=None, ge=1)


class LimitsIn(BaseModel):
    push: BucketIn | None = None
    multicast: BucketIn | None = None
    pnp: BucketIn | None = None
    monthly_quota: int | None = Field(default=None, ge=0)
    quota_used: int | None = Field(default=None, ge=0)
    pnp_delivery_delay: float | None = Field(default=None, ge=0)


@router.post("/faults", status_code=201)
def add_fault(body: FaultIn, request: Request) -> Any:
    sim = state_of(request)
    seconds = body.seconds if body.seconds is not None else (30.0 if body.kind.startswith("timeout") else 0.0)
    fault = Fault(body.kind, body.endpoint, body.channel_id, body.count, seconds)
    with sim.lock:
        sim.faults.append(fault)
    return fault.public()


@router.get("/faults")
def list_faults(request: Request) -> Any:
    sim = state_of(request)
    with sim.lock:
        return [fault.public() for fault in sim.faults]


@router.delete("/faults")
def clear_faults(request: Request, channel_id: str | None = None) -> Any:
    sim = state_of(request)
    with sim.lock:
        sim.faults[:] = [f for f in sim.faults if channel_id is not None and f.channel_id != channel_id]
    return {}


def _limits(channel: Channel) -> dict[str, Any]:
    this_month(channel)
    return {
        **{endpoint: bucket.public() for endpoint, bucket in channel.buckets.items()},
        "monthly_quota": channel.monthly_quota,
        "quota_used": channel.quota_used,
        "pnp_delivery_delay": channel.pnp_delivery_delay,
    }


@router.post("/channels/{channel_id}/limits")
def set_limits(channel_id: str, body: LimitsIn, request: Request) -> Any:
    """Change a channel's rate limits, monthly quota or PNP delivery delay (fields given only)."""
    sim = state_of(request)
    channel = channel_or_404(sim, channel_id)
    with sim.lock:
        for endpoint in ("push", "multicast", "pnp"):
            bucket = getattr(body, endpoint)
            if bucket is not None:
                channel.buckets[endpoint] = TokenBucket(bucket.rate, bucket.burst)
        if "monthly_quota" in body.model_fields_set:
            channel.monthly_quota = body.monthly_quota
        if body.quota_used is not None:
            this_month(channel).quota_used = body.quota_used
        if body.pnp_delivery_delay is not None:
            channel.pnp_delivery_delay = body.pnp_delivery_delay
        return _limits(channel)


@router.get("/channels/{channel_id}/limits")
def get_limits(channel_id: str, request: Request) -> Any:
    sim = state_of(request)
    channel = channel_or_404(sim, channel_id)
    with sim.lock:
        return _limits(channel)

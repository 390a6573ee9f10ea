"""``/openapi/v1/webhook/``: webhook endpoints, their secret, test sends, deliveries, replay.

All openmaac extensions: MAAC manages webhooks in its console ("Webhooks" page) and CDH
through its support team; these REST methods do the same for integrations and the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from openmaac.auth.deps import Org
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.web.input import InputRoute
from openmaac.web.params import BodyId, PathId
from openmaac.webhooks import service
from openmaac.webhooks.delivery import new_idempotency_key, send_once
from openmaac.webhooks.signing import render_body
from openmaac.webhooks.topics import TEST_TOPIC

router = APIRouter(prefix="/openapi/v1", tags=["Webhook (openmaac extension)"], route_class=InputRoute)

EXTENSION = {"x-openmaac-extension": True}
Style = Literal["maac", "cdh", "raw"]
SignatureScheme = Literal["maac", "maac+standard"]
SCHEME_DESCRIPTION = ('"maac": the CrescLab-Signature header (MAAC OpenAPI v1.1.48); "maac+standard": the '
                      'Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) as well, '
                      'signed with the endpoint\'s whsec_ secret')
STANDARD_SECRET_DESCRIPTION = ('The Standard Webhooks secret ("whsec_" and base64) signing webhook-signature; '
                               'null under the "maac" scheme')


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(min_length=1, max_length=2048, description="http(s) URL receiving POSTed events")
    topics: list[str] = Field(min_length=1, description="Topics to receive, e.g. contact.tag.add")
    style: Style = Field(default="maac", description='"maac": {timestamp, topic, data}; "cdh": {event, timestamp, '
                                                     'source, [event_id], data}; "raw": data alone')
    headers: dict[str, str] | None = Field(default=None, description="Extra request headers, e.g. x-api-key")
    signature_scheme: SignatureScheme = Field(default="maac", description=SCHEME_DESCRIPTION)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    topics: list[str] | None = Field(default=None, min_length=1)
    style: Style | None = None
    headers: dict[str, str] | None = None
    is_active: bool | None = None
    signature_scheme: SignatureScheme | None = Field(default=None, description=SCHEME_DESCRIPTION + ". Turning "
                                                     '"maac+standard" on answers a new `standard_secret`; turning '
                                                     "it off forgets the secret")


class WebhookOut(BaseModel):
    id: int
    url: str
    topics: list[str]
    style: str
    signature_scheme: SignatureScheme = Field(description=SCHEME_DESCRIPTION)
    headers: dict[str, str]
    is_active: bool
    created_at: str
    updated_at: str
    failing_since: str | None = Field(description="The first failed attempt since the last successful one "
                                                  "(null: the last attempt succeeded)")
    disabled_at: str | None = Field(description="When the endpoint was paused or deactivated (null while active)")
    disabled_reason: str | None = Field(description="Set when openmaac deactivated the endpoint because every "
                                                    "attempt failed for 5 days (null when paused on request)")


class WebhookCreated(WebhookOut):
    secret: str
    standard_secret: str | None = Field(description=STANDARD_SECRET_DESCRIPTION)


class WebhookPatched(WebhookOut):
    standard_secret: str | None = Field(default=None, description="Only when this request turned the "
                                                                  '"maac+standard" scheme on: its new whsec_ secret')


class WebhookPage(BaseModel):
    results: list[WebhookOut]
    next: str | None


class SecretOut(BaseModel):
    id: int
    secret: str = Field(description="The share secret signing CrescLab-Signature")
    standard_secret: str | None = Field(description=STANDARD_SECRET_DESCRIPTION)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scheme: Literal["maac", "standard"] = Field(default="maac", description='"maac" (the default): a new share '
                                                'secret, signing every attempt from now on; "standard": a new '
                                                "whsec_ secret, the previous one signing too for 24 hours")


class DeliveryOut(BaseModel):
    id: int
    webhook_id: PathId
    topic: str
    idempotency_key: str
    status: str
    attempts: int = Field(description="Attempts made so far")
    max_attempts: int = Field(description="Attempts made at most before the delivery fails")
    last_status_code: int | None
    last_error: str | None
    created_at: str
    last_attempt_at: str | None
    next_attempt_at: str | None = Field(description="When a pending delivery is tried next (null once finished)")
    completed_at: str | None
    body: str


class DeliveryPage(BaseModel):
    results: list[DeliveryOut]
    next: str | None


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    delivery_ids: list[BodyId] | None = Field(default=None, description="Omit to replay every failed delivery and "
                                                                      "every one waiting for a retry minutes or "
                                                                      "hours away")


class ReplayOut(BaseModel):
    replayed: int


@router.post("/webhook/", response_model=WebhookCreated, status_code=201, openapi_extra=EXTENSION,
             summary="Create webhook (openmaac extension)",
             description="Answers the endpoint with its generated share `secret` (and, with `signature_scheme` "
                         "\"maac+standard\", its generated whsec_ `standard_secret`). The URL must not point at a "
                         "private, loopback or link-local address unless OPENMAAC_OUTBOUND_ALLOW_HOSTS allows it.")
def create_webhook(org: Org, body: WebhookCreate) -> Any:
    url = service.validate_url(body.url)  # DNS: before the transaction
    with get_database().write() as session:
        return service.create_endpoint(session, org, url=url, topics=body.topics, style=body.style,
                                       headers=body.headers, signature_scheme=body.signature_scheme)


@router.get("/webhook/", response_model=WebhookPage, openapi_extra=EXTENSION,
            summary="Get webhook list (openmaac extension)")
def list_webhooks(org: Org, start: str | None = None) -> Any:
    with get_database().read() as session:
        return service.list_endpoints(session, org, start)


@router.get("/webhook/{webhook_id}/", response_model=WebhookOut, openapi_extra=EXTENSION,
            summary="Get webhook (openmaac extension)")
def get_webhook(org: Org, webhook_id: PathId) -> Any:
    with get_database().read() as session:
        return service.serialize_endpoint(service.get_endpoint(session, org.id, webhook_id), org)


@router.patch("/webhook/{webhook_id}/", response_model=WebhookPatched, response_model_exclude_unset=True,
              openapi_extra=EXTENSION, summary="Update webhook (openmaac extension)")
def patch_webhook(org: Org, webhook_id: PathId, body: WebhookPatch) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    if changes.get("url") is not None:
        changes["url"] = service.validate_url(changes["url"])
    with get_database().write() as session:
        return service.update_endpoint(session, org, webhook_id, changes)


@router.delete("/webhook/{webhook_id}/", status_code=204, response_class=Response, openapi_extra=EXTENSION,
               summary="Delete webhook (openmaac extension)")
def delete_webhook(org: Org, webhook_id: PathId) -> Response:
    with get_database().write() as session:
        service.delete_endpoint(session, org, webhook_id)
    return Response(status_code=204)


@router.get("/webhook/{webhook_id}/secret/", response_model=SecretOut, openapi_extra=EXTENSION,
            summary="Reveal webhook secrets (openmaac extension)")
def reveal_secret(org: Org, webhook_id: PathId) -> Any:
    with get_database().read() as session:
        return service.reveal_secret(session, org, webhook_id)


@router.post("/webhook/{webhook_id}/secret/", response_model=SecretOut, openapi_extra=EXTENSION,
             summary="Rotate webhook secret (openmaac extension)",
             description="Without a body (or `scheme` \"maac\"), a new share secret signs every attempt from now "
                         "on, retries of queued events included. With `scheme` \"standard\" (endpoints whose "
                         "`signature_scheme` is \"maac+standard\"), a new whsec_ secret: for 24 hours "
                         "webhook-signature carries a signature with the previous one as well.")
def rotate_secret(org: Org, webhook_id: PathId, body: RotateIn | None = None) -> Any:
    with get_database().write() as session:
        return service.rotate_secret(session, org, webhook_id, body.scheme if body else "maac")


@router.post("/webhook/{webhook_id}/test/", response_model=DeliveryOut, openapi_extra=EXTENSION,
             summary="Send a test event (openmaac extension)",
             description="POSTs a signed `webhook.test` event now, once (no retries), and answers the "
                         "attempt as a delivery: `status` succeeded or failed, `last_status_code`, `last_error`. "
                         "A success re-activates an endpoint that openmaac deactivated after 5 days of failures.")
def test_webhook(org: Org, webhook_id: PathId) -> Any:
    with get_database().read() as session:
        endpoint = service.get_endpoint(session, org.id, webhook_id)
    key = new_idempotency_key()
    timestamp = service.timestamp_for(endpoint.style, utcnow(), org.timezone)
    data = {"webhook_id": endpoint.id, "message": "This is a test event from openmaac."}
    body = render_body(endpoint.style, TEST_TOPIC, timestamp, data)
    outcome = send_once(endpoint.url, secret=endpoint.secret, headers=dict(endpoint.headers or {}), key=key,
                        body=body.encode("utf-8"), standard_secrets=service.standard_signing_secrets(endpoint, utcnow()))
    with get_database().write() as session:
        return service.record_test_delivery(session, org, webhook_id, key=key, body=body, outcome=outcome)


@router.get("/webhook/{webhook_id}/deliveries/", response_model=DeliveryPage, openapi_extra=EXTENSION,
            summary="Get webhook deliveries (openmaac extension)",
            description="Newest first, 300 a page. A pending delivery shows `attempts` and `next_attempt_at`; "
                        "failed deliveries stay here until replayed.")
def list_deliveries(
    org: Org,
    webhook_id: PathId,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    start: str | None = None,
) -> Any:
    with get_database().read() as session:
        return service.list_deliveries(session, org, webhook_id, status=status, start=start)


@router.get("/webhook/{webhook_id}/deliveries/{delivery_id}/", response_model=DeliveryOut, openapi_extra=EXTENSION,
            summary="Get webhook delivery (openmaac extension)")
def get_delivery(org: Org, webhook_id: PathId, delivery_id: PathId) -> Any:
    with get_database().read() as session:
        return service.get_delivery(session, org, webhook_id, delivery_id)


@router.post("/webhook/{webhook_id}/replay/", response_model=ReplayOut, openapi_extra=EXTENSION,
             summary="Replay webhook deliveries (openmaac extension)",
             description="Sends deliveries again, now, with the same body and idempotency key and a fresh "
                         "retry budget. Without `delivery_ids`, every failed delivery of the webhook and every one "
                         "waiting for a retry minutes or hours away.")
def replay(org: Org, webhook_id: PathId, body: ReplayIn | None = None) -> Any:
    with get_database().write() as session:
        return service.replay(session, org, webhook_id, body.delivery_ids if body else None)

"""SMS+ endpoints: ``/openapi/v1/pnp/...`` (MAAC OpenAPI v1.1.48 plus openmaac extensions), the SMS
providers' delivery-report callbacks and the join-link redirect."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from openmaac.auth.deps import _resolve_on_loop, bearer, cached_org, current_org_plain_text
from openmaac.auth.service import OrgContext
from openmaac.channels.line_client import LineAPIError, LineClient
from openmaac.channels.service import channel_of, line_api_base_url
from openmaac.channels.sms.base import CallbackRejected, InboundRequest
from openmaac.channels.whatsapp import status_webhook_statuses
from openmaac.common.validation import DB_ID_MAX, char_field, integer_field
from openmaac.config import get_settings
from openmaac.db.engine import get_database
from openmaac.sms_plus import engine, join_links, points, providers, uploads
from openmaac.sms_plus import push as sms_push
from openmaac.sms_plus import service as svc
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.input import InputRoute, fast_lane
from openmaac.web.params import PathId
from openmaac.web.ratelimit import limiter
from openmaac.web.responses import OrjsonResponse

router = APIRouter(tags=["SMS+"], route_class=InputRoute)
EXTENSION = {"x-openmaac-extension": True}
API = "/openapi/v1"


async def current_org_json_403(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> OrgContext:
    """The status query answers a bad token with 403 JSON (MAAC OpenAPI v1.1.48). Answered from
    the token cache on the event loop, as every bearer dependency (``auth.deps``)."""
    org = await _resolve_on_loop(credentials)
    if org is None:
        raise APIError(403, {"detail": "You do not have permission to perform this action."})
    request.state.org = org
    return org


PlainOrg = Annotated[OrgContext, Depends(current_org_plain_text)]
JsonOrg = Annotated[OrgContext, Depends(current_org_json_403)]


async def _json_body(request: Request, *, plain: bool) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        if plain:
            raise APIError(400, text=f"JSON parse error - {exc}") from exc
        raise APIError(400, {"detail": f"JSON parse error - {exc}"}) from exc


# --- scenarios ------------------------------------------------------------------------------------

@router.get(f"{API}/pnp/setting/", summary="Get SMS+ scenario list")
def list_settings(org: PlainOrg, start: str | None = None) -> Any:
    with get_database().read() as session:
        return svc.list_settings(session, org, start)


@router.get(f"{API}/pnp/setting/{{pnp_setting_id}}/", summary="Get SMS+ scenario (with metric)")
def get_setting(org: PlainOrg, pnp_setting_id: PathId) -> Any:
    with get_database().read() as session:
        setting = svc.get_setting(session, org.id, pnp_setting_id)
        if setting is None:
            raise not_found()
        return svc.serialize_setting(setting, metric=svc.metric_of(session, setting))


@router.get(f"{API}/pnp/setting/{{pnp_setting_id}}/content/", openapi_extra=EXTENSION,
            summary="Get an SMS+ scenario's content (openmaac extension)")
def get_setting_content(org: PlainOrg, pnp_setting_id: PathId) -> Any:
    with get_database().read() as session:
        setting = svc.get_setting(session, org.id, pnp_setting_id)
        if setting is None:
            raise not_found()
        return svc.serialize_setting(setting, metric=svc.metric_of(session, setting), content=True)


@router.post(f"{API}/pnp/setting/", status_code=201, openapi_extra=EXTENSION,
             summary="Create an SMS+ scenario (openmaac extension)",
             description="name, status enable/disable, line_push_enabled + line_push_template_id, pnp_enabled + "
                         "pnp_messages (1-5 LINE message objects with {{param}}; needs pnp_approval_status "
                         "approved to send), fallback_enabled + sms_text, fallback_period (minutes), "
                         "whatsapp_enabled + whatsapp_template_name/whatsapp_language.")
async def create_setting(org: PlainOrg, request: Request) -> Any:
    changes = svc.clean_setting_changes(await _json_body(request, plain=False), creating=True)

    def run() -> Any:
        with get_database().write() as session:
            return svc.save_setting(session, org, changes)

    return await run_in_threadpool(run)


@router.patch(f"{API}/pnp/setting/{{pnp_setting_id}}/", openapi_extra=EXTENSION,
              summary="Edit an SMS+ scenario (openmaac extension)")
async def update_setting(org: PlainOrg, pnp_setting_id: PathId, request: Request) -> Any:
    changes = svc.clean_setting_changes(await _json_body(request, plain=False), creating=False)

    def run() -> Any:
        with get_database().write() as session:
            setting = svc.get_setting(session, org.id, pnp_setting_id, lock=True)
            if setting is None:
                raise not_found()
            return svc.save_setting(session, org, changes, setting)

    return await run_in_threadpool(run)


# --- sending ----------------------------------------------------------------------------------

def _check_approval(setting: Any) -> None:
    if setting.pnp_enabled and setting.pnp_approval_status != "approved":
        raise svc.text_error(svc.NOT_APPROVED)


@router.post(f"{API}/pnp/message/push/", summary="Send an SMS+ message to one phone number",
             responses={400: {"content": {"text/plain": {}}}, 403: {"content": {"text/plain": {}}},
                        503: {"content": {"text/plain": {}}}})
@fast_lane(cached_org)
async def push(org: PlainOrg, request: Request) -> Any:
    limiter.check(org.id, "pnp_push")
    body = await _json_body(request, plain=True)
    # rendered by orjson as it is (no response model to check it against)
    return OrjsonResponse(await run_in_threadpool(sms_push.push_message, org, body))


def multicast_messages(org: OrgContext, body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise svc.required("pnp_setting_id")
    setting_id = svc.parse_setting_id(body.get("pnp_setting_id"))
    try:
        with get_database().write() as session:
            setting = svc.usable_setting(session, org.id, setting_id)
            data = body.get("data")
            if not isinstance(data, list) or not data:
                raise svc.required("data")
            if len(data) > svc.MULTICAST_MAX:
                raise svc.text_error(f"Ensure this field has no more than {svc.MULTICAST_MAX} elements.")
            event_id = svc.parse_event_id(session, org.id, body.get("event_id"))
            templates: dict[int, list[str]] = {}
            recipients = [svc.parse_recipient(session, org.id, setting, entry, allow_line_push=False,
                                              templates=templates) for entry in data]
            _check_approval(setting)
            messages = svc.create_messages(session, org.id, setting, recipients, event_id, line_push=False)
            return [{"id": message.id, "result": "pending"} for message in messages]
    except DBAPIError as exc:
        raise svc.text_error(svc.EMIT_FAILED, 503) from exc


@router.post(f"{API}/pnp/message/multicast/", summary="Send SMS+ messages to up to 150 phone numbers",
             responses={400: {"content": {"text/plain": {}}}, 403: {"content": {"text/plain": {}}}})
async def multicast(org: PlainOrg, request: Request) -> Any:
    limiter.check(org.id, "pnp_multicast")
    body = await _json_body(request, plain=True)
    return await run_in_threadpool(multicast_messages, org, body)


@router.get(f"{API}/pnp/message/", summary="Get SMS+ sending records (newest update first)")
def list_messages(org: JsonOrg, request: Request) -> Any:
    with get_database().read() as session:
        return svc.query_messages(session, org, dict(request.query_params))


# --- points and provider (extensions) -------------------------------------------------------------

@router.get(f"{API}/pnp/points/", openapi_extra=EXTENSION, summary="SMS points balance (openmaac extension)")
def get_points(org: PlainOrg) -> Any:
    with get_database().read() as session:
        return {"balance": points.balance(session, org.id)}


@router.post(f"{API}/pnp/points/", openapi_extra=EXTENSION, summary="Top up SMS points (openmaac extension)")
async def add_points(org: PlainOrg, request: Request) -> Any:
    body = await _json_body(request, plain=False)
    if not isinstance(body, dict) or body.get("amount") is None:
        raise field_errors({"amount": ["This field is required."]})
    amount, problems = integer_field(body["amount"], min_value=1, max_value=points.TOP_UP_MAX)
    errors = {"amount": problems} if problems else {}
    note = None
    if body.get("note") is not None:
        note, problems = char_field(body["note"], max_length=255, allow_blank=True)
        if problems:
            errors["note"] = problems
    if errors or amount is None:
        raise field_errors(errors)

    def run() -> Any:
        with get_database().write() as session:
            try:
                return {"balance": points.top_up(session, org.id, amount, note)}
            except points.BalanceFull as exc:
                raise field_errors({"amount": [f"Ensure this value is less than or equal to {exc.room}."]}) from exc

    return await run_in_threadpool(run)


@router.get(f"{API}/pnp/sms_provider/", openapi_extra=EXTENSION,
            summary="The organisation's SMS provider (openmaac extension)")
def get_provider(org: PlainOrg) -> Any:
    with get_database().read() as session:
        return providers.serialize(providers.config_of(session, org.id))


@router.put(f"{API}/pnp/sms_provider/", openapi_extra=EXTENSION,
            summary="Choose the SMS provider: twilio or mitake (openmaac extension)",
            description="`base_url` and `whatsapp.base_url` must not lead to a private, loopback or link-local "
                        "address unless OPENMAAC_OUTBOUND_ALLOW_HOSTS allows it (400 otherwise); empty means "
                        "this server's built-in simulator.")
async def put_provider(org: PlainOrg, request: Request) -> Any:
    body = await _json_body(request, plain=False)
    if not isinstance(body, dict):
        raise field_errors({"non_field_errors": ["Invalid data. Expected a dictionary."]})

    def run() -> Any:
        cleaned = providers.clean(body)  # resolves the URLs: before the transaction
        with get_database().write() as session:
            return providers.serialize(providers.save(session, org.id, cleaned))

    return await run_in_threadpool(run)


# --- manual upload (extension, the SMS+ help-center tutorial) ----------------------------------------------------------

@router.post(f"{API}/pnp/setting/{{pnp_setting_id}}/upload/", status_code=201, openapi_extra=EXTENSION,
             summary="Upload a recipient list (CSV or XLSX, at most 25 MB) (openmaac extension)")
async def upload_list(org: PlainOrg, pnp_setting_id: PathId, file: Annotated[UploadFile, File()],
                      phone_column: Annotated[str | None, Form()] = None) -> Any:
    return await run_in_threadpool(uploads.receive, org, pnp_setting_id, file.filename, file.file, phone_column)


@router.get(f"{API}/pnp/upload/{{upload_id}}/", openapi_extra=EXTENSION,
            summary="An uploaded recipient list (openmaac extension)")
def get_upload(org: PlainOrg, upload_id: PathId) -> Any:
    with get_database().read() as session:
        return uploads.serialize(uploads.get_upload(session, org.id, upload_id))


@router.post(f"{API}/pnp/upload/{{upload_id}}/send/", openapi_extra=EXTENSION,
             summary="Send an uploaded list with a column -> parameter mapping (openmaac extension)")
async def send_upload(org: PlainOrg, upload_id: PathId, request: Request) -> Any:
    body = await _json_body(request, plain=False)
    return await run_in_threadpool(uploads.send, org, upload_id, body if isinstance(body, dict) else {})


@router.delete(f"{API}/pnp/upload/{{upload_id}}/", status_code=204, openapi_extra=EXTENSION,
               response_class=Response, summary="Delete an uploaded list (openmaac extension)")
def delete_upload(org: PlainOrg, upload_id: PathId) -> Response:
    uploads.delete_upload(org, upload_id)
    return Response(status_code=204)


# --- provider callbacks ------------------------------------------------------------------------

def _inbound(request: Request, body: bytes) -> InboundRequest:
    base = get_settings().public_base_url.rstrip("/")
    url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return InboundRequest(method=request.method, url=url, headers=dict(request.headers), body=body)


def _known_org(organization_id: int) -> bool:
    """False for a number no organisation can have (the path takes any integer; a database
    takes none beyond a BIGINT)."""
    return 0 < organization_id <= DB_ID_MAX


def _apply_callback(provider_name: str, organization_id: int, inbound: InboundRequest) -> Response:
    if not _known_org(organization_id):
        return PlainTextResponse("unknown callback", status_code=404)
    with get_database().lookup() as conn:
        config = providers.config_of(conn, organization_id)
    if config.provider != provider_name:
        return PlainTextResponse("unknown callback", status_code=404)
    providers.remember(config)
    with providers.open_provider(config) as provider:
        try:
            # the signature (or token) first: an unauthenticated caller learns nothing else
            report = provider.parse_status_callback(inbound)
            if not engine.report_is_storable(report):
                raise CallbackRejected("not a delivery report", 400)
        except CallbackRejected as exc:
            ack = provider.callback_ack(None)
            return PlainTextResponse(exc.reason, status_code=exc.status_code or ack.status_code)
        # a report about a message we do not know is acknowledged like any other: the provider
        # has nothing to correct, and would only retry
        engine.apply_sms_report(organization_id, report)
        ack = provider.callback_ack(report)
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)


def _known_to_change_nothing(provider_name: str, organization_id: int, inbound: InboundRequest) -> Response | None:
    """The answer to a report this process knows changes nothing (Twilio's ``sent`` about a
    send of its own, ``engine.send_memo``), verified with the configuration it read moments
    ago: no database read and no hop to a worker thread, on the event loop (a signature and a
    form: microseconds). None: anything else, answered by ``_apply_callback`` as before."""
    config = providers.recent_config(organization_id) if _known_org(organization_id) else None
    if config is None or config.provider != provider_name:
        return None
    with providers.open_provider(config) as provider:
        try:
            report = provider.parse_status_callback(inbound)
        except CallbackRejected:
            return None  # verified (and refused) with a fresh read of the configuration
        if not engine.report_is_storable(report) or not engine.send_memo.sent_changes_nothing(organization_id, report):
            return None
        ack = provider.callback_ack(report)
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)


CALLBACK_PATH = "/sms_plus/callbacks/{provider_name}/{organization_id}"
ProviderName = Annotated[str, Path(description="`twilio` or `mitake` (the organisation's configured SMS "
                                               "provider), or `whatsapp` (its own Meta app)")]
OrganizationId = Annotated[int, Path(description="The organisation the callback URL was issued for")]
_CALLBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Report stored (Mitake: `magicid=sms_gateway_rpack` and the `msgid`; WhatsApp: the "
                         "echoed `hub.challenge` or `OK`)", "content": {"text/plain": {}}},
    400: {"description": "Not a delivery report / status webhook (text/plain reason)"},
    403: {"description": "Bad signature or token, or (WhatsApp `GET`) `hub.verify_token` mismatch"},
    404: {"description": "`provider_name` is not the organisation's configured provider"},
}


@router.get(
    CALLBACK_PATH, openapi_extra=EXTENSION, response_class=Response, responses=_CALLBACK_RESPONSES,
    summary="SMS provider delivery report (GET) or WhatsApp subscription handshake (openmaac extension)",
    description=(
        "Called by providers, not by API clients; the URL is `callback_url` / `whatsapp_webhook_url` of "
        "`GET pnp/sms_provider/`.\n\n"
        "* `mitake`: Mitake's delivery report (`msgid`, `StatusFlag` or `statusstr`/`statuscode` in the "
        "query). It is authenticated by the HMAC token openmaac put in the callback URL (`omref`, `omsig` "
        "query parameters); the answer is Mitake's `magicid=sms_gateway_rpack` acknowledgement.\n"
        "* `twilio`: Twilio posts (see `POST`); a `GET` is checked the same way (`X-Twilio-Signature`).\n"
        "* `whatsapp`: Meta's subscription handshake for an organisation's own app: "
        "`hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` answers the challenge (text/plain) when "
        "`hub.verify_token` equals the organisation's `whatsapp.verify_token`, else 403."),
)
async def sms_callback_get(provider_name: ProviderName, organization_id: OrganizationId,
                           request: Request) -> Response:
    if provider_name == "whatsapp":  # an organisation's own Meta app (see whatsapp_callback)
        return await run_in_threadpool(whatsapp_verify, organization_id, request)
    inbound = _inbound(request, await request.body())
    return await run_in_threadpool(_apply_callback, provider_name, organization_id, inbound)


@router.post(
    CALLBACK_PATH, openapi_extra=EXTENSION, response_class=Response, responses=_CALLBACK_RESPONSES,
    summary="SMS provider delivery report or WhatsApp status webhook (openmaac extension)",
    description=(
        "Called by providers, not by API clients; the URL is `callback_url` / `whatsapp_webhook_url` of "
        "`GET pnp/sms_provider/`.\n\n"
        "* `twilio`: Twilio's message status callback (form `MessageSid`, `MessageStatus`, `ErrorCode`, …), "
        "authenticated with `X-Twilio-Signature` (HMAC-SHA1 of the public URL and the form with the "
        "account's auth token); a bad signature answers 403.\n"
        "* `mitake`: Mitake's delivery report (query and/or form), authenticated by the HMAC token in the "
        "callback URL (`omref`, `omsig`); answers `magicid=sms_gateway_rpack`.\n"
        "* `whatsapp`: WhatsApp Cloud API status webhooks from the organisation's own Meta app, "
        "authenticated with `X-Hub-Signature-256` (HMAC-SHA256 of the body with its `app_secret`); only "
        "statuses of this organisation's messages are applied."),
)
async def sms_callback_post(provider_name: ProviderName, organization_id: OrganizationId,
                            request: Request) -> Response:
    if provider_name == "whatsapp":  # an organisation's own Meta app (see whatsapp_callback)
        return await _whatsapp_webhook(request, organization_id)
    inbound = _inbound(request, await request.body())
    known = _known_to_change_nothing(provider_name, organization_id, inbound)
    if known is not None:
        return known
    return await run_in_threadpool(_apply_callback, provider_name, organization_id, inbound)


WHATSAPP_REJECTED = "invalid X-Hub-Signature-256"


def _verified_whatsapp(org: int, inbound: InboundRequest) -> list[Any] | None:
    """The statuses of ``inbound`` for ``org``'s WhatsApp number, or None when ``org``'s app
    secret did not sign it (or it has none)."""
    with get_database().read() as session:
        config = providers.config_of(session, org)
    with providers.open_whatsapp(config) as client:
        try:
            return client.parse_status_webhook(inbound)
        except CallbackRejected as exc:
            if exc.status_code == 400:
                raise
            return None
        except ValueError:  # no app secret configured: nothing can be verified
            return None


def _apply_whatsapp_webhook(route_org: int | None, inbound: InboundRequest) -> Response:
    """Meta's status webhook: each status names its message by our reference; the organisation
    owning it must have signed the request (``X-Hub-Signature-256`` with its app secret).

    An unauthenticated caller must not learn whether a message exists: a status naming no
    message is answered as a bad signature is (403, the same text), since no secret can vouch
    for it. On an organisation's own URL the signature is checked first, with its secret, and
    statuses of other messages are then ignored."""
    try:
        if route_org is not None:
            if not _known_org(route_org):
                return PlainTextResponse(WHATSAPP_REJECTED, status_code=403)
            reports = _verified_whatsapp(route_org, inbound)
            if reports is None:
                return PlainTextResponse(WHATSAPP_REJECTED, status_code=403)
            for report in reports:  # only its own messages are found (by organisation)
                engine.apply_whatsapp_report(route_org, report)
            return PlainTextResponse("OK")
        orgs: set[int] = set()
        for _phone_number_id, status in status_webhook_statuses(inbound.body):
            org = engine.whatsapp_message_org(status.get("biz_opaque_callback_data"), status.get("id"))
            if org is None:
                return PlainTextResponse(WHATSAPP_REJECTED, status_code=403)
            orgs.add(org)
        verified: list[tuple[int, list[Any]]] = []
        for org in sorted(orgs):
            org_reports = _verified_whatsapp(org, inbound)
            if org_reports is None:
                return PlainTextResponse(WHATSAPP_REJECTED, status_code=403)
            verified.append((org, org_reports))
    except CallbackRejected as exc:  # a malformed body (400)
        return PlainTextResponse(exc.reason, status_code=exc.status_code or 400)
    for org, org_reports in verified:
        for report in org_reports:
            engine.apply_whatsapp_report(org, report)
    return PlainTextResponse("OK")


@router.post(
    "/sms_plus/callbacks/whatsapp", openapi_extra=EXTENSION, response_class=Response,
    summary="WhatsApp status webhook (openmaac extension)",
    description=(
        "Called by the WhatsApp Cloud API (the built-in simulator posts here), not by API clients. Each "
        "status names its message by `biz_opaque_callback_data`; the organisation owning it must have "
        "signed the body: `X-Hub-Signature-256` = `sha256=` HMAC-SHA256 of the raw body with the "
        "organisation's `whatsapp.app_secret`. One bad signature rejects the whole delivery (403, nothing "
        "applied); so does a status naming no message, with the same answer, since no secret can vouch "
        "for it. An organisation's own Meta app uses `/sms_plus/callbacks/whatsapp/{organization_id}`: "
        "there the signature is checked first with that organisation's secret, and statuses of other "
        "messages are ignored."),
    responses={200: {"description": "Statuses applied (`OK`)", "content": {"text/plain": {}}},
               400: {"description": "Not a status webhook (text/plain reason)"},
               403: {"description": "Bad or missing `X-Hub-Signature-256`, no app secret configured, or a "
                                    "status naming no message (answered alike)"}},
)
async def whatsapp_callback(request: Request) -> Response:
    return await _whatsapp_webhook(request, None)


async def _whatsapp_webhook(request: Request, organization_id: int | None) -> Response:
    inbound = _inbound(request, await request.body())
    return await run_in_threadpool(_apply_whatsapp_webhook, organization_id, inbound)


def whatsapp_verify(organization_id: int, request: Request) -> Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when ``hub.verify_token`` is the
    organisation's ``whatsapp.verify_token``."""
    from openmaac.channels.whatsapp import verify_subscription

    if not _known_org(organization_id):
        return PlainTextResponse("verify token mismatch", status_code=403)
    with get_database().read() as session:
        config = providers.config_of(session, organization_id)
    token = config.whatsapp.get("verify_token")
    challenge = verify_subscription(dict(request.query_params), token) if token else None
    if challenge is None:
        return PlainTextResponse("verify token mismatch", status_code=403)
    return PlainTextResponse(challenge)


# --- join links ----------------------------------------------------------------------------------

def _follow_link(code: str) -> Response:
    with get_database().write() as session:
        link = join_links.click(session, code)
        if link is None:
            raise not_found()
        channel = channel_of(session, link.organization_id)
        base_url, token = (line_api_base_url(channel.api_base_url), channel.access_token) if channel else ("", "")
    basic_id = "@"
    if base_url:
        # the shared pooled client (a new httpx.Client costs ~60 ms of CPU here: its TLS context)
        try:
            with LineClient(base_url, token, timeout=5.0, max_attempts=1) as client:
                basic_id = str(client.get_bot_info().get("basicId") or "@")
        except (httpx.HTTPError, LineAPIError, ValueError):
            pass
    return RedirectResponse(join_links.oa_message_url(basic_id, code), status_code=302)


@router.get(
    "/sms_plus/j/{code}", openapi_extra=EXTENSION, response_class=Response,
    summary="Follow an SMS+ join link (recipients' phones; openmaac extension)",
    description=(
        "The `{{join_link}}` of an SMS+ message. Counts a click and answers 302 to LINE's "
        "`https://line.me/R/oaMessage/{basicId}/?%23join%20{code}`, which opens a chat with the Official "
        "Account with `#join {code}` prefilled. When the person sends that text, the LINE webhook binds the "
        "message's phone number to the sender's contact (`mobile`) and emits `pnp.profile_updated`. No "
        "authentication (the code is the capability); unknown codes answer 404."),
    responses={302: {"description": "Redirect to the LINE Official Account chat"},
               404: {"description": "Unknown code"}},
)
async def follow_join_link(code: str) -> Response:
    return await run_in_threadpool(_follow_link, code)

"""The ASGI application: routers, error handlers, the embedded worker. Wiring only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from openmaac import __version__
from openmaac.config import Settings, get_settings
from openmaac.contacts.import_router import router as contact_import_router
from openmaac.contacts.router import router as contacts_router
from openmaac.db.engine import get_database
from openmaac.jobs.worker import Worker
from openmaac.line_inbound.router import router as line_inbound_router
from openmaac.links.router import router as links_router
from openmaac.links.router import settings_router as tracking_setting_router
from openmaac.messaging.direct_router import router as direct_message_router
from openmaac.messaging.router import router as events_router
from openmaac.reports.router import router as reports_router
from openmaac.segments.router import router as segments_router
from openmaac.sms_plus.router import router as sms_plus_router
from openmaac.tags.router import router as tags_router
from openmaac.telemetry import metrics
from openmaac.telemetry.request_id import RequestIdMiddleware
from openmaac.templates.router import router as templates_router
from openmaac.web.api_docs import install as install_api_docs
from openmaac.web.api_docs import local_pages
from openmaac.web.append_slash import install as install_append_slash
from openmaac.web.body_limit import BodyLimitMiddleware
from openmaac.web.errors import APIError, api_error_handler, http_error_handler, validation_error_handler
from openmaac.web.health import health_router
from openmaac.web.landing import landing_router
from openmaac.web.openapi import install as install_openapi_document
from openmaac.web.responses import OrjsonResponse
from openmaac.web.simulator_access import SimulatorAccess, is_admin_path, whole_simulator
from openmaac.webhooks.router import router as webhooks_router
from openmaac.wiring import load_domains

log = logging.getLogger("openmaac")

DESCRIPTION = """
openmaac speaks the MAAC OpenAPI (Crescendo Lab) and the CDH OpenAPI: point an existing
integration at this server by changing only the base URL and the token.

Authenticate with `Authorization: Bearer {access token}` (`openmaac token create`).
Operations marked **openmaac extension** (`x-openmaac-extension: true`) add REST methods
for actions the real system offers only in its console.
"""


def create_app(settings: Settings | None = None, *, embedded_worker: bool | None = None,
               simulators: bool | None = None) -> FastAPI:
    settings = settings or get_settings()
    load_domains()
    run_worker = settings.embedded_worker if embedded_worker is None else embedded_worker
    mount_simulators = settings.simulators_enabled if simulators is None else simulators

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker: Worker | None = None
        line_simulator = getattr(app.state, "line_simulator", None)
        if line_simulator is not None:
            # before the first request: the simulator knows every built-in channel from the start
            line_simulator.sync_directory()
        if run_worker:
            worker = Worker(get_database())
            worker.start()
            app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(
        title="openmaac",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
        docs_url=None,  # served from vendored assets by web/api_docs.py
        redoc_url=None,
    )
    # the body limit of each route class, checked before routing, authentication or a signature
    app.add_middleware(BodyLimitMiddleware)
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]
    # The sending endpoints first: routing tries the routers in order, and these take the
    # volume (their paths share no prefix with any other router's, so the order changes no match).
    app.include_router(direct_message_router)  # LINE messaging: direct messages
    app.include_router(sms_plus_router)
    for router in (contacts_router, tags_router, templates_router, events_router, line_inbound_router):
        app.include_router(router)
    app.include_router(webhooks_router)
    # event reports, tracked links and open images
    app.include_router(reports_router)
    app.include_router(tracking_setting_router)
    app.include_router(links_router)
    app.include_router(contact_import_router)
    app.include_router(segments_router)
    app.include_router(__import__("openmaac.cdh.router", fromlist=["router"]).router)  # /cdh/v1
    app.include_router(__import__("openmaac.cdh.behavior_router", fromlist=["router"]).router)  # behavior/download
    install_openapi_document(app)
    install_api_docs(app)
    install_append_slash(app)  # Django's APPEND_SLASH (301) instead of Starlette's 307

    app.include_router(landing_router(simulators=mount_simulators))
    __import__("openmaac.console", fromlist=["mount_console"]).mount_console(app, settings)  # /console/
    app.include_router(health_router(settings))  # /healthz, /readyz

    metrics.install(app, settings)  # GET /metrics and its timing middleware (docs/metrics.md)
    # added last, so outermost: every answer (413s, 404s, mounted simulators) has its request id
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)

    if mount_simulators:
        _mount_simulators(app, settings)
    return app


def _mount_simulators(app: FastAPI, settings: Settings) -> None:
    """The built-in upstreams under ``/_simulators/``: LINE's admin API and the whole SMS and
    WhatsApp simulators only for loopback clients or the admin key (web/simulator_access.py)."""
    from openmaac.bootstrap import BuiltinLineChannels
    from openmaac.simulators.line.app import create_app as create_line_simulator
    from openmaac.simulators.mitake import create_app as create_mitake_simulator
    from openmaac.simulators.twilio import create_app as create_twilio_simulator
    from openmaac.simulators.whatsapp.app import create_app as create_whatsapp_simulator
    from openmaac.sms_plus.providers import simulator_accounts

    key = settings.simulator_admin_key
    line = create_line_simulator(directory=BuiltinLineChannels(settings))
    app.state.line_simulator = line.state.sim
    app.mount("/_simulators/line", SimulatorAccess(local_pages(line), key, is_admin_path))
    # SMS+ upstreams: Twilio, Mitake and WhatsApp simulators (the default SMS+ provider), their
    # demo accounts' secrets this server's own (their callbacks are trusted)
    demo = simulator_accounts(settings)
    twilio, mitake, whatsapp = demo["twilio"], demo["mitake"], demo["whatsapp"]
    app.mount("/_simulators/twilio", SimulatorAccess(local_pages(create_twilio_simulator(
        accounts={twilio["account_sid"]: twilio["auth_token"]})), key, whole_simulator))
    app.mount("/_simulators/mitake", SimulatorAccess(local_pages(create_mitake_simulator(
        accounts={mitake["username"]: mitake["password"]})), key, whole_simulator))
    app.mount("/_simulators/whatsapp", SimulatorAccess(local_pages(create_whatsapp_simulator(
        access_tokens={whatsapp["access_token"]}, app_secret=whatsapp["app_secret"],
        webhook_url=settings.public_base_url.rstrip("/") + "/sms_plus/callbacks/whatsapp")), key, whole_simulator))

"""The ``openmaac`` command line."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from openmaac.cli_errors import CommandLine

# CommandLine: an error no command caught is one sentence and exit code 1 (cli_errors.py)
app = CommandLine(help="openmaac: MAAC-compatible marketing automation for LINE and SMS.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens of the OpenAPI.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations (tenants).", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(org_app, name="org")
app.add_typer(__import__("openmaac.webhooks.cli", fromlist=["app"]).app, name="webhook")
app.add_typer(__import__("openmaac.sms_plus.cli", fromlist=["app"]).app, name="points")
app.add_typer(__import__("openmaac.contacts.cli", fromlist=["app"]).app, name="contacts")
app.add_typer(__import__("openmaac.sms_plus.upload_cli", fromlist=["app"]).app, name="sms-plus")
app.add_typer(__import__("openmaac.console.cli", fromlist=["app"]).app, name="user")
app.add_typer(__import__("openmaac.cdh.cli", fromlist=["app"]).app, name="cdh-key")

err = Console(stderr=True, soft_wrap=True)  # tokens and URLs must never be wrapped
SWITCH_INTERVAL_SECONDS = 0.001
out = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./data, env OPENMAAC_DATA_DIR)")]


def _settings(data_dir: Path | None = None):  # type: ignore[no-untyped-def]
    from openmaac.config import get_settings, reset_settings_cache

    if data_dir is not None:
        os.environ["OPENMAAC_DATA_DIR"] = str(data_dir)
        reset_settings_cache()
    return get_settings()


def _migrate(settings) -> None:  # type: ignore[no-untyped-def]
    from openmaac.migrations import upgrade

    upgrade(settings.database_url)


def _announce(settings, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The start banner: for a person in text, as log lines (one JSON object each) in json."""
    if settings.log_format != "json":
        for line in lines:
            err.print(line)
        return
    import logging

    from rich.text import Text

    for line in lines:
        logging.getLogger("openmaac.cli").info(" ".join(Text.from_markup(line).plain.split()))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    data_dir: DataDir = None,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run the embedded job worker")] = True,
) -> None:
    """Run the API server (with the embedded worker and, by default, the simulators)."""

    # bound before anything is printed: a busy port fails in one line, not after the banner
    listener = _listen_socket(host, port)
    if "OPENMAAC_PUBLIC_BASE_URL" not in os.environ:
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        os.environ["OPENMAAC_PUBLIC_BASE_URL"] = f"http://{shown_host}:{port}"
    if not worker:
        os.environ["OPENMAAC_EMBEDDED_WORKER"] = "0"
    from openmaac.config import reset_settings_cache

    reset_settings_cache()
    settings = _settings(data_dir)
    from openmaac.telemetry.logs import configure_logging

    configure_logging(settings)
    _migrate(settings)
    from openmaac.app import create_app
    from openmaac.bootstrap import ensure_default_organization, token_file
    from openmaac.web.health import serve as serve_draining

    token = ensure_default_organization(settings)
    base = settings.public_base_url.rstrip("/")
    banner = [f"[bold green]openmaac[/] serving on [bold]{base}[/]  (data: {settings.data_dir})",
              f"  Start page       : {base}/",
              f"  OpenAPI base URL : {base}/openapi/v1/",
              f"  API docs         : {base}/docs"]
    if token:
        # shown only to a person at a terminal: a supervisor's log keeps it otherwise
        shown = sys.stderr.isatty() and settings.log_format == "text"
        where = token_file(settings)
        banner.append(f"  Access token     : [bold]{token}[/]  (organisation 'default', kept in {where})" if shown else
                      f"  Access token     : in {where}  (organisation 'default')")
        banner.append(f"  Try it           : curl -H 'Authorization: Bearer {token if shown else f'$(cat {where})'}'"
                      f" {base}/openapi/v1/member/")
    banner += __import__("openmaac.console.bootstrap", fromlist=["banner_lines"]).banner_lines(
        settings, base, sys.stderr.isatty() and settings.log_format == "text")
    if settings.simulators_enabled:
        banner.append(f"  LINE simulator   : {settings.simulator_base_url}/_admin/docs  (from this machine)")
    _announce(settings, banner)
    # uvicorn shuts down gracefully on SIGTERM (draining requests, stopping the embedded
    # worker) and then re-raises the signal to the handler it found; make that handler exit 0
    # so a supervisor sees a clean stop rather than death by signal.
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(0))
    # A thread busy in Python (an uploaded file being read) hands the interpreter lock to a
    # waiting request after this long; at the default 5 ms, a request needing a dozen hand-offs
    # waited tens of milliseconds behind one upload (docs/benchmarks.md, write_latency).
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    serve_draining(  # uvicorn.run, and SIGTERM stops the embedded worker claiming jobs at once
        [listener],
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,  # logging is configure_logging's; the access log is openmaac.access
        log_level=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _listen_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound as uvicorn binds it; a refusal is one line and exit code 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            err.print(f"port {port} is in use: stop the other server or pass --port")
        else:
            err.print(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    listener.set_inheritable(True)
    return listener


@app.command()
def worker(
    data_dir: DataDir = None,
    concurrency: Annotated[int, typer.Option(help="Jobs run at once", min=1)] = 8,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus /metrics on this port (0: off; "
                                                   "see docs/metrics.md)")] = 0,
    metrics_host: Annotated[str, typer.Option(help="Interface of --metrics-port")] = "127.0.0.1",
) -> None:
    """Run a job worker in the foreground (any number may share a PostgreSQL database)."""
    settings = _settings(data_dir)
    from openmaac.telemetry.logs import configure_logging

    configure_logging(settings)
    _migrate(settings)
    from openmaac.db.engine import get_database
    from openmaac.jobs.worker import Worker
    from openmaac.wiring import load_domains

    load_domains()
    job_worker = Worker(get_database(settings.database_url), concurrency=concurrency, kind="standalone")
    from openmaac.common.collector import settle_after_start

    settle_after_start()  # as serve does
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        job_worker.stop_claiming()  # at once; stop() below drains (docs/health.md)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from openmaac.telemetry import metrics

    try:
        serving_metrics = metrics.start_server(settings, metrics_host, metrics_port)
    except RuntimeError as exc:  # the port is taken: stop before claiming any job
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    job_worker.start()
    _announce(settings, [f"[bold green]openmaac worker[/] {job_worker.worker_id} running (concurrency {concurrency})"])
    if serving_metrics is not None:
        _announce(settings, [f"  Metrics          : http://{metrics_host}:{metrics_port}/metrics"])
    if not os.environ.get("OPENMAAC_PUBLIC_BASE_URL"):
        # serve fills it from its own address; a worker cannot know where clients reach the API,
        # and builds SMS status callbacks and tracked links from it
        _announce(settings, [f"[yellow]OPENMAAC_PUBLIC_BASE_URL is not set: links and SMS status reports "
                             f"will point at {settings.public_base_url}[/]"])
    while not stopping:
        time.sleep(0.2)
    job_worker.stop()
    if serving_metrics is not None:
        # its uvicorn loop runs in a daemon thread: left running, a timer of that loop firing
        # while the interpreter exits takes the GIL of a finalized interpreter (SIGSEGV)
        serving_metrics.stop()


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply pending database migrations."""
    settings = _settings(data_dir)
    _migrate(settings)
    err.print("database is up to date")


@app.command()
def simulate(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8100,
) -> None:
    """Run the LINE simulator alone as its own HTTP server."""
    import uvicorn

    from openmaac.simulators.line.app import create_app as create_line_simulator

    listener = _listen_socket(host, port)  # a busy port: one line, exit code 1, as serve
    shown = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    err.print(f"[bold green]LINE simulator[/] serving on [bold]{shown}[/]  (LINE's Messaging API base URL)")
    err.print(f"  Admin API docs   : {shown}/_admin/docs")
    uvicorn.Server(uvicorn.Config(create_line_simulator(), host=host, port=port, log_level="warning")).run(
        sockets=[listener])


@token_app.command("create")
def token_create(
    org: Annotated[str, typer.Option("--org", help="Organisation name (created when missing)")] = "default",
    label: Annotated[str | None, typer.Option(help="A note to recognise the token by")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an access token and print it (only it) on stdout. It is shown once."""
    org = org.strip()
    if not 1 <= len(org) <= 255:
        raise typer.BadParameter("an organisation name has 1 to 255 characters", param_hint="'--org'")
    settings = _settings(data_dir)
    _migrate(settings)
    from openmaac.auth.service import create_token, get_or_create_organization
    from openmaac.db.engine import get_database

    with get_database(settings.database_url).write() as session:
        organization, created = get_or_create_organization(session, org)
        token = create_token(session, organization.id, label=label)
    if created:
        err.print(f"created organisation {org!r}")
    sys.stdout.write(token + "\n")


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token, or its 10-character prefix")],
                 data_dir: DataDir = None) -> None:
    """Revoke a token: it stops working at once (within 2 s on running servers)."""
    settings = _settings(data_dir)
    _migrate(settings)
    from openmaac.auth.service import revoke_token
    from openmaac.db.engine import get_database

    with get_database(settings.database_url).write() as session:
        count = revoke_token(session, token)
    if count == 0:
        err.print("no active token matched")
        raise typer.Exit(1)
    err.print(f"revoked {count} token(s)")


@org_app.command("list")
def org_list(data_dir: DataDir = None) -> None:
    """List organisations with their LINE channel and active token count."""
    settings = _settings(data_dir)
    _migrate(settings)
    from openmaac.auth.service import list_organizations
    from openmaac.channels.service import channel_of
    from openmaac.db.engine import get_database

    table = Table("id", "name", "time zone", "region", "LINE channel id", "active tokens")
    with get_database(settings.database_url).read() as session:
        for organization, tokens in list_organizations(session):
            channel = channel_of(session, organization.id)
            table.add_row(str(organization.id), organization.name, organization.timezone, organization.region,
                          channel.channel_id if channel else "-", str(tokens))
    out.print(table)


if __name__ == "__main__":
    app()

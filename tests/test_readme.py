"""The README stays complete: every path the server answers, every command and every setting
appears in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from starlette.routing import Mount, Route

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_path_of_the_route_table_is_in_the_api_overview(server) -> None:  # type: ignore[no-untyped-def]
    from openmaac.web.openapi import api_routes

    overview = README.split("## API overview", 1)[1].split("\n## ", 1)[0]
    missing: list[str] = []
    paths: dict[str, set[str]] = {}
    for route in api_routes(server.app.routes):
        paths.setdefault(route.path_format, set()).update(route.methods or ())
    for route in server.app.routes:
        if isinstance(route, Route) and not hasattr(route, "dependant"):  # /openapi.json
            paths.setdefault(route.path, set()).update(route.methods or ())
        elif isinstance(route, Mount):
            paths.setdefault(route.path + "/", set())
    assert any(path.startswith("/openapi/v1/") for path in paths)
    # the console's pages are for people, not integrations: one row names them all (/console/)
    console = [path for path in paths if path.startswith("/console/")]
    assert "/console/" in console
    for path in console:
        paths.pop(path)
    paths["/console/"] = set()
    for path, methods in sorted(paths.items()):
        lines = [line for line in overview.splitlines() if f"`{path}`" in line]
        if not lines:
            missing.append(path)
            continue
        documented = set(re.findall(r"`([A-Z]+)`", " ".join(lines)))
        missing += [f"{method} {path}" for method in sorted(methods - {"HEAD"} - documented)]
    assert missing == []


def _commands(app: typer.Typer, prefix: str) -> list[str]:
    names = [f"{prefix} {command.name or command.callback.__name__.replace('_', '-')}"  # type: ignore[union-attr]
             for command in app.registered_commands]
    for group in app.registered_groups:
        names += _commands(group.typer_instance, f"{prefix} {group.name}")  # type: ignore[arg-type]
    return names


def test_every_command_is_in_the_command_line_section() -> None:
    from openmaac.cli import app

    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    commands = _commands(app, "openmaac")
    assert {"openmaac serve", "openmaac contacts import", "openmaac sms-plus upload-send"} <= set(commands)
    assert [name for name in commands if not re.search(rf"^{re.escape(name)}( |$)", section, re.M)] == []


def test_every_setting_is_in_the_configuration_table() -> None:
    names: set[str] = set()
    for source in (ROOT / "src" / "openmaac").rglob("*.py"):
        names.update(re.findall(r"OPENMAAC_[A-Z][A-Z0-9_]+", source.read_text(encoding="utf-8")))
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "OPENMAAC_DATA_DIR" in names
    assert sorted(name for name in names if f"`{name}`" not in table) == []

"""docs/simulators.md documents every admin call of every simulator, each in its table
(``METHOD /_admin/...``) and with a curl example on that simulator's base URL."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from openmaac.simulators.line.app import create_app as line
from openmaac.simulators.mitake import create_app as mitake
from openmaac.simulators.twilio import create_app as twilio
from openmaac.simulators.whatsapp.app import create_app as whatsapp

DOC = (Path(__file__).resolve().parents[2] / "docs" / "simulators.md").read_text(encoding="utf-8")
SIMULATORS = {"SIM": line, "TWILIO": twilio, "MITAKE": mitake, "WHATSAPP": whatsapp}


def _admin_calls(create: Any) -> list[tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate operation ids of routes served on two paths
        paths = create().openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() if path.startswith("/_admin/")
            for method in operations]


CALLS = [(variable, method, path) for variable, create in SIMULATORS.items()
         for method, path in _admin_calls(create)]


def test_every_simulator_has_admin_calls() -> None:
    assert {variable for variable, _m, _p in CALLS} == set(SIMULATORS)
    assert len(CALLS) > 30


@pytest.mark.parametrize(("variable", "method", "path"), CALLS, ids=[f"{v} {m} {p}" for v, m, p in CALLS])
def test_admin_call_is_documented_with_a_curl_example(variable: str, method: str, path: str) -> None:
    assert f"`{method} {path}" in DOC, f"{method} {path} is missing from a table of docs/simulators.md"
    url = re.escape(f"${variable}") + re.sub(r"\\\{[a-z_]+\\\}", r"[^\\s/?\"']+", re.escape(path)) + r"(?=[\s?\"']|$)"
    verb = "" if method == "GET" else re.escape(f"-X {method} ")
    example = re.compile(rf"^curl .*{verb}\"?{url}", re.MULTILINE)
    if method == "GET":
        example = re.compile(rf"^curl (?!.*-X )[^\n]*?\"?{url}", re.MULTILINE)
    assert example.search(DOC) or re.search(rf"\$\(curl .*{verb}{url}", DOC), \
        f"no curl example of {method} {path} on ${variable} in docs/simulators.md"

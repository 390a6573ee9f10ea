"""Property-based conformance of the served OpenAPI document (schemathesis).

Every operation of ``/openapi.json`` is called with generated requests (valid ones, then
invalid ones) as a fresh organisation, and every answer must be: no server error, a
documented status, a documented content type, a body matching the documented schema and the
documented required headers. Generation is bounded per operation (``POSITIVE_EXAMPLES``,
``NEGATIVE_EXAMPLES``; no shrinking): 60-110 s per database on a busy 2-core machine.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
POSITIVE_EXAMPLES = 15
NEGATIVE_EXAMPLES = 8

# Operations not fuzzed, and why. (The simulators' mounted apps are not in the document.)
EXCLUDED: dict[tuple[str, str], str] = {
    ("POST", "/openapi/v1/webhook/"):
        "resolves the generated URL's host name (DNS queries for random names leave the machine)",
    ("PATCH", "/openapi/v1/webhook/{webhook_id}/"):
        "resolves the generated URL's host name before looking the webhook up",
}


def _run_operation(operation: Any, mode: Any, examples: int, base_url: str, headers: dict[str, str]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    run()


def test_served_document_conformance(base_url, tenant):
    from schemathesis import GenerationMode

    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    from helpers import org_of
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.db.engine import get_database

    with get_database().write() as session:  # the CDH API's own key (header apikey)
        cdh_key = create_cdh_key(session, org_of(tenant))
    headers = {"Authorization": f"Bearer {tenant.token}", "apikey": cdh_key}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        operations += 1
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                               (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
            try:
                _run_operation(operation, mode, examples, base_url, headers)
            except Unsatisfiable:  # nothing negative to generate (e.g. no parameters)
                continue
            except (AssertionError, FailureGroup) as exc:  # every operation's failures, then fail once
                failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]\n{exc}")
    elapsed = time.monotonic() - started
    print(f"schemathesis: {operations} operations in {elapsed:.1f} s")
    assert operations > 50
    assert not failures, f"{len(failures)} operations fail:\n\n" + "\n\n".join(failures)

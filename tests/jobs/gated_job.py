"""A job kind for tests of stopping processes, imported into an ``openmaac`` process started by
``tests/processes.py`` (never by the server itself): ``test.gated`` writes ``<marker>.started``,
waits until the file ``<marker>.go`` exists (at most ``wait_seconds``), then writes
``<marker>.done``. The test decides when the job ends, so nothing depends on timing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from openmaac.jobs.registry import JobContext, handler


@handler("test.gated")
def _gated(payload: dict[str, Any], context: JobContext) -> None:
    marker = Path(payload["marker"])
    Path(f"{marker}.started").write_text(str(context.attempt))
    deadline = time.monotonic() + float(payload.get("wait_seconds", 120))
    while not Path(f"{marker}.go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("never told to go")
        time.sleep(0.02)
    Path(f"{marker}.done").write_text(str(context.attempt))

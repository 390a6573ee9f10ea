"""The "bare FastAPI ceiling" for bench_cdh: ``POST /cdh/v1/engagement/event`` validated by the
same pydantic model openmaac uses (``openmaac.cdh.schemas.EngagementEventIn``, pure pydantic)
and answered ``{"event_id": uuid4}``, with the settings ``openmaac serve`` uses (uvicorn,
uvloop, httptools, one process). No database, no API key: whatever openmaac spends beyond
this is its own work.

``python -m benchmarks.bare_cdh PORT``
"""

from __future__ import annotations

import sys
import uuid

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from openmaac.cdh.schemas import EngagementEventIn

app = FastAPI()


@app.post("/cdh/v1/engagement/event")
async def submit_event(body: EngagementEventIn) -> Response:
    return Response(orjson.dumps({"event_id": str(uuid.uuid4())}), media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning")

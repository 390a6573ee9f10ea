"""The "bare FastAPI ceiling" for bench_sms_plus: the least a FastAPI app can do for an SMS+ push.

``python -m benchmarks.bare_sms_plus PORT`` serves, with the settings ``openmaac serve`` uses
(uvicorn, uvloop, httptools, one process), ``POST /openapi/v1/pnp/message/push/``: the body
read and parsed with orjson as openmaac does, ``phone_number`` checked against the same E.164
pattern, answered ``{"id", "result": "success"}``. No database, no authentication, no LINE
call: whatever openmaac spends beyond this is its own work. Imports nothing from openmaac.
"""

from __future__ import annotations

import re
import sys

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
app = FastAPI()
_ids = iter(range(1, 10**12))


@app.post("/openapi/v1/pnp/message/push/")
async def push(request: Request) -> Response:
    body = orjson.loads(await request.body())
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not E164.match(str(data.get("phone_number", ""))):
        return PlainTextResponse("this value does not match the required pattern", status_code=400)
    return Response(orjson.dumps({"id": next(_ids), "result": "success"}), media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning")

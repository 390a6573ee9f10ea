"""The "bare FastAPI ceiling" for bench_api: the least a FastAPI app can do for the same requests.

``python -m benchmarks.bare_app PORT`` serves, with the settings ``openmaac serve`` uses
(uvicorn, uvloop, httptools, one process):

- ``GET /openapi/v1/member/?start=``: a page of 300 contacts shaped like openmaac's (same keys,
  values of the same lengths, a ``next`` token of the same length), built in memory and
  rendered with orjson; the ``next`` chain walks ``PAGES`` pages like a real listing;
- ``POST /openapi/v1/taglinemember/``: the same body parsed by a pydantic model, answered
  201 with the same four fields rendered with orjson;
- ``POST /openapi/v1/direct_message/push/`` (for bench_messaging): the push body parsed by a
  pydantic model, answered with the push answer's four fields (no LINE call).

No database, no authentication: whatever openmaac spends beyond this is its own work.
Imports nothing from openmaac.
"""

from __future__ import annotations

import base64
import os
import sys
from datetime import UTC, datetime, timedelta, timezone

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel

PAGE_SIZE = 300
PAGES = int(os.environ.get("BARE_APP_PAGES", "334"))
TZ = timezone(timedelta(hours=8))


def _contact(i: int) -> dict[str, object]:
    at = (datetime(2024, 5, 1, tzinfo=UTC) - timedelta(seconds=i * 7, microseconds=i)).astimezone(TZ).isoformat()
    tags = [f"bench-tag-{(i + k) % 10}" for k in range(i % 3)]
    return {
        "line_uid": "U" + f"{i:032x}",
        "line_display_name": f"LINE name {i}",
        "display_name": f"Contact {i}",
        "email": f"contact{i}@example.com",
        "mobile": f"+8869{i % 100_000_000:08d}",
        "customer_id": f"C{i:08d}",
        "gender": ("male", "female", "unknown")[i % 3],
        "birthday": None,
        "tags": tags,
        "tags_detail": [{"name": name, "tagged_at": at} for name in tags],
        "status": "follow",
        "updated_at": at,
        "created_at": at,
        "blocked_at": None,
    }


CONTACTS = [_contact(i) for i in range(PAGE_SIZE)]


def _token(page: int) -> str:
    # The same length as openmaac's signed, percent-encoded token for a 6-digit id.
    raw = base64.b64encode(b"\x00" * 18 + f'{{"id":"{page:06d}"}}'.encode()).decode()
    return raw.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


def _page_of(token: str | None) -> int:
    if not token:
        return 0
    raw = base64.b64decode(token.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
    return int(orjson.loads(raw[18:])["id"])


class TagMemberIn(BaseModel):
    tag_id: int
    line_uid: str


app = FastAPI()


@app.get("/openapi/v1/member/")
async def members(start: str | None = None) -> Response:
    page = _page_of(start)
    next_token = _token(page + 1) if page + 1 < PAGES else None
    return Response(orjson.dumps({"results": CONTACTS, "next": next_token}), media_type="application/json")


@app.post("/openapi/v1/taglinemember/", status_code=201)
async def tag_member(body: TagMemberIn) -> Response:
    now = datetime.now(UTC).astimezone(TZ).isoformat()
    content = {"tag_id": body.tag_id, "line_uid": body.line_uid, "created_at": now,
               "expired_at": "9999-12-31T23:59:59+08:00"}
    return Response(orjson.dumps(content), status_code=201, media_type="application/json")


class PushIn(BaseModel):
    template_id: int
    event_id: int | None = None
    data: dict[str, object]


_pushes = iter(range(1, 10**12))


@app.post("/openapi/v1/direct_message/push/")
async def push(body: PushIn) -> Response:
    # bench_messaging's ceiling: the same body parsed, the same answer's shape, nothing else
    content = {"id": next(_pushes), "event_id": body.event_id, "event": None, "result": "success"}
    return Response(orjson.dumps(content), media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning")

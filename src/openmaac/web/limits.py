"""Request bounds, in one table that docs/api.md ("Limits") cites.

Every request belongs to one route class, found by its path (first match wins). The class
fixes the largest body the server reads (``web/body_limit.py`` enforces it while reading,
before routing, authentication or a signature check costs anything) and whether the
shared input checks of ``web/input.py`` apply (the provider and LINE receivers verify a
signature over the raw bytes and answer in their upstream's terms, so they are left alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024

# The largest id any table can hold (BIGINT / SQLite INTEGER): 2**63 - 1.
MAX_ID = 2**63 - 1
# The largest count or amount a 32-bit INTEGER column holds (points, days, minutes).
MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class RouteClass:
    name: str
    pattern: re.Pattern[str]
    max_body_bytes: int
    # SMS+ message endpoints answer their errors as text/plain (MAAC OpenAPI, SMS+ section)
    plain_text: bool = False
    # the shared input checks (null characters) of web/input.py
    checks_input: bool = True

    def too_large_message(self) -> str:
        return f"Request body is too large: at most {human_size(self.max_body_bytes)}."


def human_size(size: int) -> str:
    """1 MB is 1,048,576 bytes here, as in the import limit's "10 MB"."""
    if size % MIB == 0:
        return f"{size // MIB} MB"
    if size % KIB == 0:
        return f"{size // KIB} KB"
    return f"{size} bytes"


# A file upload may be 25 MB; the multipart envelope (boundaries, the other fields) gets 1 MB more.
UPLOAD_FILE_BYTES = 25 * MIB
MULTIPART_ENVELOPE_BYTES = 1 * MIB

ROUTE_CLASSES: tuple[RouteClass, ...] = (
    # LINE's own webhook bodies are a few KB (at most a few hundred events of ~1 KB).
    RouteClass("LINE webhook receiver", re.compile(r"^/line/webhook/"), 1 * MIB, checks_input=False),
    # Twilio / Mitake delivery reports and WhatsApp status webhooks are a few KB.
    RouteClass("SMS and WhatsApp provider callbacks", re.compile(r"^/sms_plus/callbacks/"), 64 * KIB,
               checks_input=False),
    # "Maximum 10 MB request body size" (MAAC OpenAPI, Import member with tag).
    RouteClass("Contact import", re.compile(r"^/openapi/v1/member/import/$"), 10 * MIB),
    # CDH member import: 10,000 rows of up to 14 profile fields and custom fields (CDH OpenAPI
    # 2.0.1 states no size); the MAAC import's 10 MB
    RouteClass("CDH member import", re.compile(r"^/cdh/v1/member/import$"), 10 * MIB),
    # custom segment CSV: at most 25 MB (MAAC OpenAPI, Segment)
    RouteClass("Custom segment upload", re.compile(r"^/openapi/v1/custom_segment/"),
               UPLOAD_FILE_BYTES + MULTIPART_ENVELOPE_BYTES),
    RouteClass("SMS+ recipient list upload", re.compile(r"^/openapi/v1/pnp/setting/[^/]+/upload/$"),
               UPLOAD_FILE_BYTES + MULTIPART_ENVELOPE_BYTES),
    RouteClass("Console SMS+ recipient list upload", re.compile(r"^/console/sms-plus/[^/]+/uploads$"),
               UPLOAD_FILE_BYTES + MULTIPART_ENVELOPE_BYTES),
    RouteClass("SMS+ message sending", re.compile(r"^/openapi/v1/pnp/message/(push|multicast)/"), 4 * MIB,
               plain_text=True),
    # The built-in upstream simulators (development and tests only; off in production):
    # bulk user registration for benchmarks.
    RouteClass("Upstream simulators", re.compile(r"^/_simulators/"), 64 * MIB, checks_input=False),
    # Every other request: JSON API bodies. The largest legitimate ones are a 150-recipient
    # multicast with per-recipient parameters and a five-message Flex template (LINE caps a
    # bubble at 30 KB, a carousel at 50 KB): a few hundred KB; 4 MB leaves room for long
    # per-recipient texts (150 recipients x 5,000 characters of UTF-8 CJK is 2.2 MB).
    RouteClass("JSON API", re.compile(r""), 4 * MIB),
)


def route_class(path: str) -> RouteClass:
    for candidate in ROUTE_CLASSES:
        if candidate.pattern.match(path):
            return candidate
    return ROUTE_CLASSES[-1]


# Free-text query filters are bounded by the column they are compared with.
MAX_QUERY_TEXT = 255

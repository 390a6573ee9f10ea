"""Request body limits per route class, enforced while the body is read (real sockets)."""

from __future__ import annotations

import json
import select
import socket

import psutil
import pytest

from conftest import PORT
from openmaac.web.limits import MIB, ROUTE_CLASSES, route_class

# A path in each route class of the table (the simulators' class is development-only).
SAMPLE_PATHS = {
    "LINE webhook receiver": "/line/webhook/{channel_id}",
    "SMS and WhatsApp provider callbacks": "/sms_plus/callbacks/twilio/{org_id}",
    "Contact import": "/openapi/v1/member/import/",
    "CDH member import": "/cdh/v1/member/import",
    "Custom segment upload": "/openapi/v1/custom_segment/",
    "SMS+ recipient list upload": "/openapi/v1/pnp/setting/1/upload/",
    "Console SMS+ recipient list upload": "/console/sms-plus/1/uploads",
    "SMS+ message sending": "/openapi/v1/pnp/message/push/",
    "Upstream simulators": "/_simulators/line/_admin/users/bulk",
    "JSON API": "/openapi/v1/tag/",
}


def _connect() -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _headers(method: str, path: str, extra: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{PORT}", *(f"{k}: {v}" for k, v in extra.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _declared_too_large(path: str, size: int, content_type: str = "application/json",
                        token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Declare ``size`` bytes and send none: the answer must come without the body."""
    headers = {"Content-Type": content_type, "Content-Length": str(size), "X-Line-Signature": "junk"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with _connect() as sock:
        sock.sendall(_headers("POST", path, headers))
        return _read_response(sock)


def _chunked_until_answered(path: str, total: int, token: str | None = None,
                            chunk_size: int = 64 * 1024) -> tuple[int, int, dict[str, str], bytes]:
    """Send ``total`` bytes chunked, looking for an answer between chunks; returns the status
    and how many bytes were sent when it arrived."""
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", "X-Line-Signature": "junk"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = b"[" + b"1," * (chunk_size // 2 - 1) + b"1"
    sent = 0
    with _connect() as sock:
        sock.sendall(_headers("POST", path, headers))
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            piece = payload[: min(chunk_size, total - sent)]
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
        status, response_headers, body = _read_response(sock)
    return status, sent, response_headers, body


@pytest.mark.parametrize("limit", ROUTE_CLASSES, ids=lambda c: c.name)
def test_declared_length_over_the_limit_is_refused_before_the_body(tenant, limit):
    path = SAMPLE_PATHS[limit.name].format(channel_id=tenant.channel_id, org_id=tenant.id)
    assert route_class(path) is limit
    status, headers, body = _declared_too_large(path, limit.max_body_bytes + 1, token=tenant.token)
    assert status == 413
    assert headers["connection"] == "close"
    text = body.decode()
    if limit.plain_text:
        assert headers["content-type"].startswith("text/plain")
    else:
        text = json.loads(body)["detail"]
    assert text == limit.too_large_message()
    size = limit.max_body_bytes
    assert text.endswith(f"at most {size // MIB} MB." if size >= MIB else f"at most {size // 1024} KB.")


def test_line_webhook_500_mb_declared_with_a_junk_signature_answers_413_not_401(tenant):
    status, _, body = _declared_too_large(f"/line/webhook/{tenant.channel_id}", 500 * MIB)
    assert status == 413
    assert json.loads(body) == {"detail": "Request body is too large: at most 1 MB."}


def test_chunked_line_webhook_body_is_cut_off_at_the_limit(tenant):
    process = psutil.Process()
    before = process.memory_info().rss
    status, sent, _, body = _chunked_until_answered(f"/line/webhook/{tenant.channel_id}", 50 * MIB)
    grown = process.memory_info().rss - before
    assert status == 413, body
    assert json.loads(body)["detail"].startswith("Request body is too large: at most 1 MB")
    # answered while the upload was still going (the server never held the 50 MB) ...
    assert sent < 50 * MIB
    # ... and the server process (this one) did not grow by the size of the body
    assert grown < 40 * MIB


def test_chunked_json_api_body_over_the_limit_is_refused(tenant):
    status, sent, _, body = _chunked_until_answered("/openapi/v1/tag/", 50 * MIB, token=tenant.token)
    assert status == 413
    assert json.loads(body) == {"detail": "Request body is too large: at most 4 MB."}
    assert sent < 50 * MIB


def test_chunked_sms_plus_push_over_the_limit_answers_text(tenant):
    status, sent, headers, body = _chunked_until_answered("/openapi/v1/pnp/message/push/", 50 * MIB,
                                                          token=tenant.token)
    assert status == 413 and headers["content-type"].startswith("text/plain")
    assert body.decode() == "Request body is too large: at most 4 MB."


def test_chunked_body_under_the_limit_reaches_the_route(tenant):
    status, sent, _, body = _chunked_until_answered("/openapi/v1/tag/", 512 * 1024, token=tenant.token)
    assert sent == 512 * 1024
    assert status == 400  # a JSON list, not a tag: the route's own validation answered


def test_largest_legitimate_bodies_fit(tenant):
    """A 150-recipient multicast where every recipient gets a 5,000-character CJK text, sent
    with non-ASCII characters as they are (UTF-8), and a 500-recipient enhanced multicast."""
    text = "漸強實驗室" * 1000
    multicast = {"template_id": 987654321, "event_id": None,
                 "data": [{"line_uid": "U" + "0" * 32, "body": text} for _ in range(150)]}
    body = json.dumps(multicast, ensure_ascii=False).encode()
    assert 2 * MIB < len(body) < 4 * MIB
    response = tenant.client.post("/openapi/v1/direct_message/multicast/", content=body,
                                  headers={"Content-Type": "application/json"})
    # past the limit: the unknown template answered
    assert response.json() == {"template_id": ['Invalid pk "987654321" - object does not exist.']}
    enhanced = {"template_id": 987654321, "line_uids": ["U" + "0" * 32] * 500,
                "data": {f"p{i}": "x" * 5000 for i in range(20)}}
    response = tenant.client.post("/openapi/v1/direct_message/enhanced_multicast/", json=enhanced)
    assert response.status_code in (400, 404) and "template_id" in response.text


def test_limit_applies_before_authentication(anon):
    response = anon.post("/openapi/v1/tag/", content=b"x" * (4 * MIB + 1),
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 413

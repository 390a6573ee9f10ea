"""Access tokens: shown once, stored hashed, revocable."""

from __future__ import annotations

import time

from sqlalchemy import select


def test_token_is_stored_hashed(tenant, database):
    from openmaac.auth.models import AccessToken

    with database.read() as session:
        rows = session.scalars(select(AccessToken).where(AccessToken.organization_id == tenant.id)).all()
    assert len(rows) == 1
    assert tenant.token not in (rows[0].token_hash, rows[0].prefix)
    assert len(rows[0].token_hash) == 64
    assert tenant.token.startswith(rows[0].prefix)


def test_revoked_token_stops_working(tenant, database, anon):
    from openmaac.auth.service import revoke_token

    assert tenant.client.get("/openapi/v1/tag/").status_code == 200
    with database.write() as session:
        assert revoke_token(session, tenant.token) == 1
    # The server's look-up cache is per process and keeps a token at most 2 s.
    deadline = time.monotonic() + 5
    while tenant.client.get("/openapi/v1/tag/").status_code == 200:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.2)
    response = tenant.client.get("/openapi/v1/tag/")
    assert response.status_code == 401 and response.json() == {"detail": "Invalid token."}


def test_wrong_scheme_is_not_a_credential(tenant, anon):
    response = anon.get("/openapi/v1/tag/", headers={"Authorization": f"Token {tenant.token}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def _last_used(database, token: str):
    from openmaac.auth.models import AccessToken
    from openmaac.auth.service import hash_token

    with database.read() as session:
        return session.scalar(select(AccessToken.last_used_at).where(AccessToken.token_hash == hash_token(token)))


def test_use_is_recorded_off_the_request_path(tenant, database):
    from helpers import wait_for

    assert _last_used(database, tenant.token) is None
    assert tenant.client.get("/openapi/v1/tag/").status_code == 200
    wait_for(lambda: _last_used(database, tenant.token) is not None, timeout=10)


def test_last_use_is_written_at_most_once_a_minute_per_token(tenant, database, monkeypatch):
    from openmaac.auth import service

    tracker = service._LastUse()
    submitted: list[object] = []

    class Inline:
        def submit(self, function):
            submitted.append(function)

    tracker._executor = Inline()  # type: ignore[assignment]
    clock = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    digest = service.hash_token(tenant.token)
    for _ in range(50):
        tracker.note(digest)
    assert len(submitted) == 1
    tracker.flush()
    first = _last_used(database, tenant.token)
    assert first is not None
    clock[0] += 59
    tracker.note(digest)
    assert len(submitted) == 1  # within the minute: nothing queued, nothing written
    clock[0] += 2
    tracker.note(digest)
    assert len(submitted) == 2

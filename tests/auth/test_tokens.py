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

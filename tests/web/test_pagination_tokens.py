"""Pagination tokens survive every way a client may put them in a query string."""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmaac.web.errors import APIError
from openmaac.web.pagination import decode_token, encode_token


def _as_server_reads_it(raw: str) -> str:
    url = httpx.URL(f"http://example.test/openapi/v1/member/?start={raw}")
    return unquote_plus(url.query.decode().split("=", 1)[1])


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=1, max_value=2**53))
def test_token_round_trips_encoded_or_raw(position: int) -> None:
    token = encode_token("member:7", {"id": position})
    for sent in (token, unquote(token)):  # as received, or decoded with raw "+" and "/"
        assert decode_token("member:7", _as_server_reads_it(sent)) == {"id": position}
    assert decode_token("member:7", unquote(token)) == {"id": position}


def test_token_starting_with_plus() -> None:
    # id 64 encodes to a token that starts with "+": it arrives as a leading space
    token = next(t for i in range(1, 10_000) if (t := encode_token("member:1", {"id": i})).startswith("%2B"))
    assert decode_token("member:1", _as_server_reads_it(unquote(token)))


def test_token_of_another_scope_or_tampered_is_rejected() -> None:
    token = unquote(encode_token("member:1", {"id": 5}))
    with pytest.raises(APIError):
        decode_token("member:2", token)
    with pytest.raises(APIError):
        decode_token("member:1", token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))

"""The exact bytes of a ``GET /openapi/v1/member/`` page: field order, time format (with and
without microseconds, in the organisation's zone), tags and their order, nulls, non-ASCII text,
and the ``next`` link. A faster rendering must not change a byte of them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from helpers import new_line_uid, seed_contacts

CREATED = datetime(2024, 3, 9, 23, 30, 5, 123456, tzinfo=UTC)  # 2024-03-10 07:30:05.123456 in Taipei
UPDATED = datetime(2024, 5, 1, 16, 0, 0, tzinfo=UTC)  # no microseconds: isoformat leaves them out
BLOCKED = datetime(2024, 6, 2, 1, 2, 3, 400, tzinfo=UTC)
TAGGED_FIRST = datetime(2024, 4, 1, 0, 0, 0, 1, tzinfo=UTC)
TAGGED_LATER = datetime(2024, 4, 2, 12, 0, 0, tzinfo=UTC)


def _seed_page(tenant, database) -> tuple[str, str, str]:
    """Three contacts: one bare, one with every field and three tags (one of them expired), one
    that unfollowed. Returns their line_uids, oldest first."""
    from sqlalchemy import insert, select

    from openmaac.contacts.models import Contact
    from openmaac.tags.models import ContactTag, Tag

    bare, full, gone = new_line_uid(), new_line_uid(), new_line_uid()
    rows = [
        {"line_uid": bare, "status": "follow"},
        {"line_uid": full, "status": "auth", "line_display_name": "LINE 名字 \"quoted\"", "display_name": "王小明 😀",
         "email": "full@example.com", "mobile": "+886912345678", "customer_id": "cid/1\\2", "gender": "female",
         "birthday": date(1990, 2, 28)},
        {"line_uid": gone, "status": "unfollow", "gender": "unknown", "blocked_at": BLOCKED},
    ]
    with database.write() as session:
        session.execute(insert(Contact), [{"organization_id": tenant.id, "created_at": CREATED, "updated_at": UPDATED,
                                           **row} for row in rows])
        full_id = session.scalar(select(Contact.id).where(Contact.line_uid == full))
        tag_ids = {}
        for name in ("zeta", "alpha", "expired"):
            session.execute(insert(Tag).values(organization_id=tenant.id, name=name, created_at=CREATED))
            tag_ids[name] = session.scalar(select(Tag.id).where(Tag.organization_id == tenant.id, Tag.name == name))
        links = [("alpha", TAGGED_LATER, None), ("zeta", TAGGED_FIRST, datetime.now(UTC) + timedelta(days=3)),
                 ("expired", TAGGED_FIRST, datetime.now(UTC) - timedelta(seconds=1))]
        session.execute(insert(ContactTag), [
            {"contact_id": full_id, "tag_id": tag_ids[name], "organization_id": tenant.id, "tagged_at": at,
             "created_at": at, "expired_at": expiry} for name, at, expiry in links])
    return bare, full, gone


def test_a_page_is_byte_for_byte_what_it_was(tenant, database):
    bare, full, gone = _seed_page(tenant, database)
    response = tenant.client.get("/openapi/v1/member/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    expected = (
        '{"results":['
        f'{{"line_uid":"{gone}","line_display_name":null,"display_name":null,"email":null,"mobile":null,'
        '"customer_id":null,"gender":"unknown","birthday":null,"tags":[],"tags_detail":[],"status":"unfollow",'
        '"updated_at":"2024-05-02T00:00:00+08:00","created_at":"2024-03-10T07:30:05.123456+08:00",'
        '"blocked_at":"2024-06-02T09:02:03.000400+08:00"},'
        f'{{"line_uid":"{full}","line_display_name":"LINE 名字 \\"quoted\\"","display_name":"王小明 😀",'
        '"email":"full@example.com","mobile":"+886912345678","customer_id":"cid/1\\\\2","gender":"female",'
        '"birthday":"1990-02-28","tags":["zeta","alpha"],"tags_detail":['
        '{"name":"zeta","tagged_at":"2024-04-01T08:00:00.000001+08:00"},'
        '{"name":"alpha","tagged_at":"2024-04-02T20:00:00+08:00"}],"status":"auth",'
        '"updated_at":"2024-05-02T00:00:00+08:00","created_at":"2024-03-10T07:30:05.123456+08:00",'
        '"blocked_at":null},'
        f'{{"line_uid":"{bare}","line_display_name":null,"display_name":null,"email":null,"mobile":null,'
        '"customer_id":null,"gender":null,"birthday":null,"tags":[],"tags_detail":[],"status":"follow",'
        '"updated_at":"2024-05-02T00:00:00+08:00","created_at":"2024-03-10T07:30:05.123456+08:00",'
        '"blocked_at":null}'
        '],"next":null}'
    ).encode()
    assert response.content == expected


def test_the_next_link_is_the_signed_position_percent_encoded(tenant, database):
    from urllib.parse import quote

    from sqlalchemy import select

    from openmaac.contacts.models import Contact
    from openmaac.web.pagination import encode_token

    uids = seed_contacts(tenant, 301)
    with database.read() as session:
        ids = {uid: id_ for uid, id_ in session.execute(
            select(Contact.line_uid, Contact.id).where(Contact.organization_id == tenant.id))}
    first = tenant.client.get("/openapi/v1/member/")
    last_shown = ids[uids[1]]  # newest first: the 300th is the second seeded
    token = encode_token(f"member:{tenant.id}", {"id": last_shown})
    assert first.content.endswith(b'],"next":"' + token.encode() + b'"}')
    assert quote(token, safe="%") == token  # percent-encoded, as MAAC answers
    second = tenant.client.get("/openapi/v1/member/", params={"start": token})
    assert second.content.startswith(b'{"results":[{"line_uid":"' + uids[0].encode() + b'",')
    assert second.content.endswith(b'],"next":null}')


def test_the_served_openapi_document_still_describes_the_page(anon):
    document = anon.get("/openapi.json").json()
    operation = document["paths"]["/openapi/v1/member/"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ContactPage"}
    page = document["components"]["schemas"]["ContactPage"]
    assert list(page["properties"]) == ["results", "next"]
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/ContactOut"}
    contact = document["components"]["schemas"]["ContactOut"]
    assert list(contact["properties"]) == [
        "line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id", "gender", "birthday",
        "tags", "tags_detail", "status", "updated_at", "created_at", "blocked_at"]


def test_text_that_looks_like_json_or_holds_control_characters_comes_back_as_stored(tenant, database):
    # on SQLite the page travels inside SQLite as one JSON document before it is read
    from sqlalchemy import insert

    from openmaac.contacts.models import Contact

    uid = new_line_uid()
    name = 'tab\there, nul-less \x01\x1f, "]}, {"x": 1} \\u0041 \u2028 𝄞'
    with database.write() as session:
        session.execute(insert(Contact).values(organization_id=tenant.id, line_uid=uid, status="follow",
                                               display_name=name, customer_id="12345678901234567890123"))
    contact = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"][0]
    assert contact["display_name"] == name
    assert contact["customer_id"] == "12345678901234567890123"  # text, never a number


def test_a_page_out_of_order_is_put_back_in_the_statements_order():
    import random

    from openmaac.contacts.service import _page_order

    def row(contact_id: int, tagged_at: str | None, tag_id: int | None) -> list[object]:
        return [contact_id, *([None] * 13), tagged_at, tag_id]

    ordered = [row(9, "2026-01-01 00:00:00.000000", 3), row(9, "2026-01-01 00:00:00.000000", 7),
               row(9, "2026-01-02 00:00:00.000000", 1), row(8, None, None), row(2, "2025-01-01 00:00:00.000000", 2)]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=_page_order) == ordered

"""The served OpenAPI document and Swagger UI describe every endpoint."""

from __future__ import annotations

EXPECTED = {
    ("get", "/openapi/v1/member/"),
    ("patch", "/openapi/v1/member/{line_uid}/"),
    ("get", "/openapi/v1/tag/"),
    ("post", "/openapi/v1/tag/"),
    ("get", "/openapi/v1/tag/{tag_id}/"),
    ("post", "/openapi/v1/taglinemember/"),
    ("delete", "/openapi/v1/taglinemember/"),
    ("get", "/openapi/v1/template/"),
    ("post", "/openapi/v1/template/"),
    ("get", "/openapi/v1/event/"),
    ("post", "/openapi/v1/event/"),
    ("get", "/openapi/v1/event/{event_id}/"),
    ("post", "/line/webhook/{channel_id}"),
}


def test_document_lists_every_endpoint(anon):
    document = anon.get("/openapi.json").json()
    present = {(method, path) for path, item in document["paths"].items() for method in item}
    assert EXPECTED <= present
    assert document["paths"]["/openapi/v1/template/"]["post"]["x-openmaac-extension"] is True
    assert "bearer" in str(document["components"]["securitySchemes"]).lower()


def test_swagger_ui(anon):
    response = anon.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()


def test_unknown_path_and_method(tenant):
    assert tenant.client.get("/openapi/v1/nothing-here/").json() == {"detail": "Not found."}
    response = tenant.client.put("/openapi/v1/tag/")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "PUT" not allowed.'}

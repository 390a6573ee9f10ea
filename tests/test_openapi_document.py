"""The served OpenAPI document and Swagger UI describe every endpoint."""

from __future__ import annotations

OPENAPI = {
    ("get", "member/"), ("patch", "member/{line_uid}/"),
    ("post", "member/import/"), ("get", "member/import/{task_id}/"),
    ("get", "tag/"), ("post", "tag/"), ("get", "tag/{tag_id}/"),
    ("post", "taglinemember/"), ("delete", "taglinemember/"),
    ("get", "template/"),
    ("get", "event/"), ("post", "event/"), ("get", "event/{event_id}/"), ("get", "event/{event_id}/report/"),
    ("get", "segment/"), ("post", "segment/"), ("get", "segment/{segment_id}/"), ("delete", "segment/{segment_id}/"),
    ("get", "segment/{segment_id}/members/"),
    ("post", "custom_segment/"), ("patch", "custom_segment/{segment_id}/"),
    ("post", "direct_message/push/"), ("post", "direct_message/multicast/"),
    ("post", "direct_message/enhanced_multicast/"), ("get", "direct_message/{direct_message_id}/"),
    ("get", "pnp/setting/"), ("get", "pnp/setting/{pnp_setting_id}/"),
    ("post", "pnp/message/push/"), ("post", "pnp/message/multicast/"), ("get", "pnp/message/"),
    ("get", "behavior/download/{date}/pageview/"), ("get", "behavior/download/{date}/product/"),
    ("get", "behavior/download/{date}/transaction/"),
}
# openmaac's own additions: each must say so with x-openmaac-extension
EXTENSIONS = {
    ("post", "/openapi/v1/template/"), ("get", "/openapi/v1/template/{template_id}/"),
    ("put", "/openapi/v1/template/{template_id}/"),
    ("get", "/openapi/v1/member/import/{task_id}/mismatch/"),
    ("post", "/openapi/v1/webhook/"), ("get", "/openapi/v1/webhook/"),
    ("get", "/openapi/v1/webhook/{webhook_id}/"), ("patch", "/openapi/v1/webhook/{webhook_id}/"),
    ("delete", "/openapi/v1/webhook/{webhook_id}/"), ("post", "/openapi/v1/webhook/{webhook_id}/test/"),
    ("get", "/openapi/v1/webhook/{webhook_id}/deliveries/"), ("post", "/openapi/v1/webhook/{webhook_id}/replay/"),
    ("get", "/openapi/v1/webhook/{webhook_id}/secret/"), ("post", "/openapi/v1/webhook/{webhook_id}/secret/"),
    ("get", "/openapi/v1/tracking_setting/"), ("patch", "/openapi/v1/tracking_setting/"),
    ("post", "/openapi/v1/pnp/setting/"), ("patch", "/openapi/v1/pnp/setting/{pnp_setting_id}/"),
    ("get", "/openapi/v1/pnp/points/"), ("post", "/openapi/v1/pnp/points/"),
    ("post", "/openapi/v1/pnp/setting/{pnp_setting_id}/upload/"), ("post", "/openapi/v1/pnp/upload/{upload_id}/send/"),
    ("delete", "/openapi/v1/pnp/upload/{upload_id}/"),
    ("get", "/r/{code}"), ("get", "/o/{code}/{rest}"),
    ("get", "/sms_plus/callbacks/{provider_name}/{organization_id}"),
    ("post", "/sms_plus/callbacks/{provider_name}/{organization_id}"),
    ("post", "/sms_plus/callbacks/whatsapp"), ("get", "/sms_plus/j/{code}"),
    ("get", "/openapi/v1/pnp/setting/{pnp_setting_id}/content/"), ("get", "/openapi/v1/pnp/upload/{upload_id}/"),
    ("get", "/openapi/v1/pnp/sms_provider/"), ("put", "/openapi/v1/pnp/sms_provider/"),
    ("get", "/openapi/v1/webhook/{webhook_id}/deliveries/{delivery_id}/"),
}
EXPECTED = {(method, f"/openapi/v1/{path}") for method, path in OPENAPI} | EXTENSIONS | {
    ("post", "/line/webhook/{channel_id}"),
}


def test_document_lists_every_endpoint(anon):
    document = anon.get("/openapi.json").json()
    present = {(method, path) for path, item in document["paths"].items() for method in item}
    assert EXPECTED - present == set()
    for method, path in EXTENSIONS:
        assert document["paths"][path][method].get("x-openmaac-extension") is True, (method, path)
    for method, path in OPENAPI:
        assert "x-openmaac-extension" not in document["paths"][f"/openapi/v1/{path}"][method], (method, path)
    assert "bearer" in str(document["components"]["securitySchemes"]).lower()
    operation_ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_swagger_ui(anon):
    response = anon.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()


def test_unknown_path_and_method(tenant):
    assert tenant.client.get("/openapi/v1/nothing-here/").json() == {"detail": "Not found."}
    response = tenant.client.put("/openapi/v1/tag/")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "PUT" not allowed.'}


# -- the statuses each operation documents are the ones it answers ------------------------------

def _document(anon):
    return anon.get("/openapi.json").json()


def _operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def _matches(document, schema, body):
    import jsonschema_rs

    return jsonschema_rs.validator_for({**schema, "components": document["components"]}).is_valid(body)


def _check_answer(document, method, path, response):
    """The response's status and content type are documented, and its body matches the schema."""
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code, response.text)
    media = response.headers.get("content-type", "").split(";")[0]
    content = documented[str(response.status_code)].get("content", {})
    assert media in content, (method, path, response.status_code, media, list(content))
    body = response.json() if media == "application/json" else response.text
    assert _matches(document, content[media]["schema"], body), (method, path, response.status_code, body)


def test_no_422_anywhere_and_drf_error_schemas(anon):
    document = _document(anon)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    # the CDH API alone answers FastAPI's 422 (CDH OpenAPI 2.0.1)
    assert [(m, p) for m, p, op in _operations(document) if "422" in op["responses"]
            and not p.startswith("/cdh/")] == []
    nested = {"data": {"0": {"line_uid": ["This field is required."]}}, "tags": [{}, {"tag_id": ["Invalid pk"]}]}
    assert _matches(document, {"$ref": "#/components/schemas/ValidationError"}, nested)
    assert not _matches(document, {"$ref": "#/components/schemas/ValidationError"}, {"name": "not a list"})
    assert _matches(document, {"$ref": "#/components/schemas/Detail"}, {"detail": "Not found."})
    assert not _matches(document, {"$ref": "#/components/schemas/Detail"}, {"name": ["x"]})


def test_statuses_follow_from_the_route_table(anon):
    document = _document(anon)
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        where = (method, path)
        if operation.get("security"):
            if "401" in responses:
                assert responses["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Detail"}, where
                assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True, where
            else:  # SMS+ answers a bad token with 403, text/plain (sending records: JSON)
                assert path.startswith("/openapi/v1/pnp/") and "403" in responses, where
        if "{" in path:
            assert "404" in responses and "400" in responses, where
        if "requestBody" in operation or method in ("post", "put", "patch"):
            assert "413" in responses and "400" in responses, where
        for status, response in responses.items():
            assert response.get("description"), (where, status)
            for media in response.get("content", {}).values():
                assert media.get("schema"), (where, status)
    authenticated = [(m, p) for m, p, op in _operations(document) if op.get("security")]
    assert len(authenticated) > 50


def test_rate_limited_operations_document_429_with_retry_after(anon):
    document = _document(anon)
    limited = {(method, path) for method, path, operation in _operations(document) if "429" in operation["responses"]}
    assert limited == {
        ("post", "/openapi/v1/member/import/"), ("post", "/openapi/v1/direct_message/push/"),
        ("post", "/openapi/v1/direct_message/multicast/"), ("post", "/openapi/v1/direct_message/enhanced_multicast/"),
        ("post", "/openapi/v1/pnp/message/push/"), ("post", "/openapi/v1/pnp/message/multicast/"),
    }
    for method, path in limited:
        response = document["paths"][path][method]["responses"]["429"]
        assert response["headers"]["Retry-After"]["required"] is True
        assert "at most" in response["description"]


def test_missing_or_invalid_token_answers_as_documented(anon):
    document = _document(anon)
    checked = 0
    for method, path, operation in _operations(document):
        if not operation.get("security"):
            continue
        url = path.replace("{", "").replace("}", "")
        for name in ("task_id", "tag_id", "template_id", "event_id", "webhook_id", "delivery_id", "segment_id",
                     "direct_message_id", "pnp_setting_id", "upload_id"):
            url = url.replace(name, "1")
        for headers in ({}, {"Authorization": "Bearer om_not-a-token"}):
            response = anon.request(method.upper(), url, headers=headers)
            assert response.status_code in (401, 403), (method, path, response.status_code)
            _check_answer(document, method, path, response)
            checked += 1
    assert checked > 100


def test_error_bodies_match_the_documented_schemas(tenant, anon):
    document = _document(anon)
    api = "/openapi/v1"
    answers = [
        ("post", f"{api}/direct_message/multicast/", tenant.client.post(
            f"{api}/direct_message/multicast/", json={"template_id": "x", "data": [{"line_uid": 1}, 5]}), 400),
        ("post", f"{api}/tag/", tenant.client.post(f"{api}/tag/", content=b"{", headers={
            "Content-Type": "application/json"}), 400),
        ("get", f"{api}/tag/{{tag_id}}/", tenant.client.get(f"{api}/tag/999999999/"), 404),
        ("get", f"{api}/tag/", tenant.client.get(f"{api}/tag/", params={"start": "not-a-cursor"}), 400),
        ("post", f"{api}/pnp/message/push/", tenant.client.post(f"{api}/pnp/message/push/", json={}), 400),
        ("get", f"{api}/pnp/setting/{{pnp_setting_id}}/", tenant.client.get(f"{api}/pnp/setting/999999999/"), 404),
        ("post", f"{api}/custom_segment/", tenant.client.post(f"{api}/custom_segment/", content=b"x", headers={
            "Content-Type": "text/csv"}), 415),
    ]
    for method, path, response, status in answers:
        assert response.status_code == status, (path, response.status_code, response.text)
        _check_answer(document, method, path, response)

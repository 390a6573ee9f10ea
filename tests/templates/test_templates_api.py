"""/openapi/v1/template/ (GET, plus the POST extension) over real HTTP."""

from __future__ import annotations

TEXT = {"type": "text", "text": "Hi {{contact.display_name}}, {{product_name}} is back at {{store_name}}!"}
IMAGE = {"type": "image", "originalContentUrl": "{{image_url}}", "previewImageUrl": "{{image_url}}"}


def test_create_and_list(tenant):
    response = tenant.client.post("/openapi/v1/template/", json={
        "name": "best_sellers_recommendation", "messages": [TEXT, IMAGE,
            {"type": "text", "text": "{{ store_name }} again, {{product_price}}"}],
    })
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["parameters"] == ["product_name", "store_name", "image_url", "product_price"]
    listing = tenant.client.get("/openapi/v1/template/").json()
    assert listing == {"results": [{"id": created["id"], "name": "best_sellers_recommendation",
                                    "parameters": ["product_name", "store_name", "image_url", "product_price"]}],
                       "next": None}
    detail = tenant.client.get(f"/openapi/v1/template/{created['id']}/").json()
    assert detail["messages"][0] == TEXT


def test_template_without_parameters(tenant):
    body = tenant.client.post("/openapi/v1/template/", json={
        "name": "hello", "messages": [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]}).json()
    assert body["parameters"] == []


def test_invalid_line_message_answers_line_error_body(tenant):
    response = tenant.client.post("/openapi/v1/template/", json={
        "name": "broken", "messages": [{"type": "text", "text": "ok"}, {"type": "bogus"}]})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "The request body has 1 error(s)"
    assert body["details"][0]["property"] == "messages[1].type"
    assert body["details"][0]["message"].startswith("Must be one of the following values: [text")
    response = tenant.client.post("/openapi/v1/template/", json={"name": "t", "messages": [{"type": "text"}]})
    assert response.status_code == 400
    assert response.json()["details"] == [{"message": "May not be empty", "property": "messages[0].text"}]


def test_message_count_limits(tenant):
    response = tenant.client.post("/openapi/v1/template/", json={"name": "none", "messages": []})
    assert response.status_code == 400
    six = [{"type": "text", "text": str(i)} for i in range(6)]
    response = tenant.client.post("/openapi/v1/template/", json={"name": "six", "messages": six})
    assert response.status_code == 400
    assert "Size must be between 1 and 5" in response.text


def test_unknown_contact_placeholder(tenant):
    response = tenant.client.post("/openapi/v1/template/", json={
        "name": "x", "messages": [{"type": "text", "text": "{{contact.shoe_size}}"}]})
    assert response.status_code == 400
    assert "messages" in response.json()


def test_required_fields(tenant):
    assert tenant.client.post("/openapi/v1/template/", json={"messages": [TEXT]}).json() == {
        "name": ["This field is required."]
    }
    assert tenant.client.post("/openapi/v1/template/", json={"name": "n"}).json() == {
        "messages": ["This field is required."]
    }


def test_replace_keeps_the_id_and_rederives_parameters(tenant):
    created = tenant.client.post("/openapi/v1/template/", json={"name": "a", "messages": [TEXT]}).json()
    url = f"/openapi/v1/template/{created['id']}/"
    response = tenant.client.put(url, json={"name": "b", "messages": [{"type": "text", "text": "{{coupon}}"}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": created["id"], "name": "b", "parameters": ["coupon"],
                               "messages": [{"type": "text", "text": "{{coupon}}"}]}
    assert tenant.client.get(url).json()["parameters"] == ["coupon"]


def test_replace_refuses_invalid_messages_and_changes_nothing(tenant):
    created = tenant.client.post("/openapi/v1/template/", json={"name": "a", "messages": [TEXT]}).json()
    url = f"/openapi/v1/template/{created['id']}/"
    response = tenant.client.put(url, json={"name": "b", "messages": [{"type": "text"}]})
    assert response.status_code == 400
    assert response.json()["details"] == [{"message": "May not be empty", "property": "messages[0].text"}]
    assert tenant.client.put(url, json={"name": " ", "messages": [TEXT]}).json() == {
        "name": ["This field may not be blank."]}
    assert tenant.client.get(url).json() == {**created}


def test_replace_is_walled_per_organisation(tenant, make_tenant):
    created = tenant.client.post("/openapi/v1/template/", json={"name": "a", "messages": [TEXT]}).json()
    other = make_tenant()
    response = other.client.put(f"/openapi/v1/template/{created['id']}/", json={"name": "x", "messages": [TEXT]})
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    assert tenant.client.get(f"/openapi/v1/template/{created['id']}/").json()["name"] == "a"


def test_absurdly_deep_messages_answer_400_not_500(tenant):
    depth = 250
    deep = '{"type": "box", "layout": "vertical", "contents": [' * depth + '{"type": "text", "text": "x"}' + "]}" * depth
    body = ('{"name": "deep", "messages": [{"type": "flex", "altText": "a", "contents": {"type": "bubble", "body": '
            + deep + "}}]}")
    response = tenant.client.post("/openapi/v1/template/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["details"] == [
        {"message": "Must not be nested more than 64 levels deep", "property": "messages[0]"}]
    assert tenant.client.get("/openapi/v1/template/").json()["results"] == []

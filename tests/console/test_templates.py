"""The templates library in a real browser: list and search, a template's page, the editor with
its live preview, roles, tenant walls and escaping."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from helpers import create_template, inbox, simulated_friend

XSS = "<script>alert(1)</script>"


def csrf_of(page) -> str:
    return str(json.loads(page.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"])


def settled(page) -> None:
    """Wait until htmx has swapped and processed what it fetched (a select changed before htmx
    wired the new editor would fire no request)."""
    page.locator(".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added").first.wait_for(state="detached")


def add_message(page, index: int) -> None:
    page.get_by_role("button", name="Add a message").click()
    page.locator(f"#message-{index}").wait_for()
    settled(page)


def choose_kind(page, index: int, kind: str, field: str) -> None:
    page.locator(f"#field-messages-{index}-kind").select_option(kind)
    page.locator(f"#field-messages-{index}-{field}").wait_for()
    settled(page)


def template_count(tenant) -> int:
    return len(tenant.client.get(tenant.api("template/")).json()["results"])


def test_create_in_the_editor_preview_copy_the_id_and_push_it(signed_in, tenant, screenshot, assert_accessible):
    page = signed_in("marketer")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Templates").click()
    page.wait_for_url("**/console/templates/")
    page.get_by_role("link", name="New template").first.click()
    page.wait_for_url("**/console/templates/new/")

    page.locator("#field-name").fill("Order ready")
    page.locator("#field-messages-0-text").fill("Hi {{name}}, your order {{order_id}} is ready")
    # the live preview: a LINE bubble with the parameters as chips, and the parameter list
    bubble = page.locator("#preview .bubble-text")
    bubble.locator(".chip", has_text="{{order_id}}").wait_for()
    assert bubble.inner_text().startswith("Hi {{name}}, your order")
    assert page.locator("#preview-parameters").inner_text().split() == ["{{name}}", "{{order_id}}"]

    # a second message: a buttons template
    add_message(page, 1)
    choose_kind(page, 1, "buttons", "alt_text")
    page.locator("#field-messages-1-alt_text").fill("Your order")
    page.locator("#field-messages-1-text").fill("Pick it up at {{store}}")
    page.locator("#field-messages-1-actions-0-label").fill("Directions")
    page.locator("#field-messages-1-actions-0-value").fill("https://example.com/map?store={{store}}")
    page.locator("#preview .bubble-card .bubble-action", has_text="Directions").wait_for()
    page.locator("#preview-parameters", has_text="{{store}}").wait_for()
    assert_accessible(page)
    screenshot(page, "templates_editor")

    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r".*/console/templates/\d+/\?saved=1$"))
    template_id = page.locator("#template-id").inner_text().strip()
    assert template_id.isdigit()
    assert page.locator("#template-parameters").inner_text().split() == ["{{name}}", "{{order_id}}", "{{store}}"]
    page.locator("#copy-template-id").click()
    page.get_by_text("Copied").first.wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == template_id
    assert page.locator(".template-preview .chip", has_text="{{name}}").count() == 1
    assert_accessible(page)
    screenshot(page, "templates_detail")

    # what an automation tool does with the copied Template ID
    uid = simulated_friend(tenant)
    response = tenant.client.post(tenant.api("direct_message/push/"), json={
        "template_id": int(copied), "data": {"line_uid": uid, "name": "Mei", "order_id": "A-17", "store": "Taipei 101"}})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "success"
    received = [entry["message"] for entry in inbox(uid, tenant.channel_id)]
    assert received[0] == {"type": "text", "text": "Hi Mei, your order A-17 is ready"}
    assert received[1]["template"]["text"] == "Pick it up at Taipei 101"
    assert received[1]["template"]["actions"][0]["uri"] == "https://example.com/map?store=Taipei 101"


def test_invalid_flex_json_and_empty_text_rerender_with_errors_keeping_the_input(signed_in, tenant, screenshot):
    page = signed_in("marketer")
    page.goto("/console/templates/new/")
    page.locator("#field-name").fill("Broken")
    page.locator("#field-messages-0-text").fill("")
    add_message(page, 1)
    choose_kind(page, 1, "flex", "json")
    page.locator("#field-messages-1-alt_text").fill("Menu")
    page.locator("#field-messages-1-json").fill('{"type": "bubble", "body": ')
    page.get_by_role("button", name="Save").click()
    page.locator(".alert.error").wait_for()
    assert "/console/templates/new/" in page.url
    assert "Enter valid JSON" in page.locator("#field-messages-1-json-errors").inner_text()
    assert "May not be empty" in page.locator("#field-messages-0-text-errors").inner_text()
    assert page.locator("#field-name").input_value() == "Broken"
    assert page.locator("#field-messages-1-json").input_value() == '{"type": "bubble", "body": '
    assert page.locator("#field-messages-1-alt_text").input_value() == "Menu"
    assert page.locator("#preview .bubble-problem").count() == 1
    screenshot(page, "templates_errors")

    # valid JSON that LINE would refuse: the error names the path inside the contents
    page.locator("#field-messages-0-text").fill("ok")
    page.locator("#field-messages-1-json").fill('{"type": "bubble", "body": {"type": "box", "layout": "vertical"}}')
    page.get_by_role("button", name="Save").click()
    page.locator(".alert.error").wait_for()
    assert "contents.body.contents: May not be empty" in page.locator("#field-messages-1-json-errors").inner_text()
    assert template_count(tenant) == 0


def test_more_than_five_messages_are_refused_and_kept(signed_in, tenant, screenshot):
    page = signed_in("marketer")
    page.goto("/console/templates/new/")
    form = {"csrf_token": csrf_of(page), "name": "Six"}
    for index in range(6):
        form[f"messages-{index}-kind"] = "text"
        form[f"messages-{index}-text"] = f"message number {index}"
    response = page.request.post("/console/templates/new/", form=form)
    assert response.status == 400
    html = response.text()
    assert "Size must be between 1 and 5" in html
    for index in range(6):
        assert f">message number {index}</textarea>" in html
    page.set_content(html)  # what the browser would show (no server round trip)
    screenshot(page, "templates_six_messages")
    assert template_count(tenant) == 0


def test_edit_reorders_and_keeps_messages_the_fields_cannot_hold(signed_in, tenant, screenshot):
    sticker = {"type": "sticker", "packageId": "446", "stickerId": "1988"}
    created = create_template(tenant, [{"type": "text", "text": "Hello {{name}}"}, sticker], name="Greeting")
    page = signed_in("marketer")
    page.goto(f"/console/templates/{created['id']}/")
    page.get_by_role("link", name="Edit").click()
    page.wait_for_url(f"**/console/templates/{created['id']}/edit/")
    assert json.loads(page.locator("#field-messages-1-json").input_value()) == sticker
    page.locator("#field-messages-0-text").fill("Welcome {{first_name}}")
    page.locator("#message-1").get_by_role("button", name="Move up").click()
    page.locator("#field-messages-0-json").wait_for()
    settled(page)
    # the preview follows the new order (it is asked for once the moved fields are in place)
    expect(page.locator("#preview .line-chat-row").first).to_contain_text("Sticker 446 / 1988")
    expect(page.locator("#preview .line-chat-row").nth(1)).to_contain_text("Welcome {{first_name}}")
    screenshot(page, "templates_edit")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/console/templates/{created['id']}/?saved=1")
    detail = tenant.client.get(tenant.api(f"template/{created['id']}/")).json()
    assert detail["messages"] == [sticker, {"type": "text", "text": "Welcome {{first_name}}"}]
    assert detail["parameters"] == ["first_name"]


def test_search_swaps_only_the_results_and_pages(signed_in, tenant, screenshot, assert_accessible):
    for index in range(27):
        create_template(tenant, [{"type": "text", "text": f"promo {index}"}], name=f"promo-{index:02d}")
    welcome = create_template(tenant, [{"type": "text", "text": "hi {{name}}"}], name="Welcome_100%")
    page = signed_in("viewer")
    page.goto("/console/templates/")
    assert "Page 1 of 2" in page.locator(".pagination").inner_text()
    assert page.locator("#template-table tbody tr").count() == 25
    page.evaluate("document.querySelector('h1').dataset.kept = 'yes'")  # gone if the page reloads
    page.locator("#template-search").fill("100%")
    page.wait_for_url("**/console/templates/?q=100%25")
    page.locator("#template-table tbody tr").first.wait_for()
    expect(page.locator("#template-table tbody tr")).to_have_count(1)
    assert "Welcome_100%" in page.locator("#template-table").inner_text()
    assert page.evaluate("document.querySelector('h1').dataset.kept") == "yes"
    page.locator("#template-search").fill(str(welcome["id"]))
    expect(page.locator("#template-table tbody tr")).to_have_count(1)
    page.locator("#template-search").fill("nothing-like-this")
    page.get_by_text("No template matches").wait_for()
    page.locator("#template-search").fill("promo")
    page.locator(".pagination").get_by_role("link", name="Next").click()
    page.wait_for_url("**page=2")
    expect(page.locator("#template-table tbody tr")).to_have_count(2)
    assert page.evaluate("document.querySelector('h1').dataset.kept") == "yes"
    assert_accessible(page)
    screenshot(page, "templates_list")
    # viewers read; they are offered no editor
    assert page.get_by_role("link", name="New template").count() == 0


def test_viewer_reads_but_cannot_create_or_edit(signed_in, tenant, screenshot):
    created = create_template(tenant, [{"type": "text", "text": "Hi {{name}}"}], name="Read only")
    page = signed_in("viewer")
    page.goto(f"/console/templates/{created['id']}/")
    assert page.locator("#template-id").inner_text().strip() == str(created["id"])
    assert page.get_by_role("link", name="Edit").count() == 0
    screenshot(page, "templates_viewer")
    for path in ("/console/templates/new/", f"/console/templates/{created['id']}/edit/"):
        response = page.goto(path)
        assert response is not None and response.status == 403
    csrf = csrf_of(page)
    form = {"csrf_token": csrf, "name": "sneaky", "messages-0-kind": "text", "messages-0-text": "x"}
    assert page.request.post("/console/templates/new/", form=form).status == 403
    assert page.request.post(f"/console/templates/{created['id']}/edit/", form=form).status == 403
    assert template_count(tenant) == 1
    assert tenant.client.get(tenant.api(f"template/{created['id']}/")).json()["name"] == "Read only"


def test_another_organisation_gets_404(signed_in, tenant, other_tenant, screenshot):
    created = create_template(tenant, [{"type": "text", "text": "Hi {{name}}"}], name="Ours")
    page = signed_in("admin", tenant=other_tenant)
    for path in (f"/console/templates/{created['id']}/", f"/console/templates/{created['id']}/edit/"):
        response = page.goto(path)
        assert response is not None and response.status == 404
        assert "Ours" not in page.content()
    screenshot(page, "templates_other_organisation")
    form = {"csrf_token": csrf_of(page), "name": "Theirs", "messages-0-kind": "text", "messages-0-text": "x"}
    assert page.request.post(f"/console/templates/{created['id']}/edit/", form=form).status == 404
    page.goto("/console/templates/")
    assert "Ours" not in page.locator("#main").inner_text()
    assert tenant.client.get(tenant.api(f"template/{created['id']}/")).json()["name"] == "Ours"


@pytest.mark.parametrize("where", ["list", "page", "editor"])
def test_script_in_a_template_renders_inert(signed_in, tenant, where, screenshot):
    text = f"{XSS}<img src=x onerror=alert(2)> {{{{name}}}}"
    created = create_template(tenant, [{"type": "text", "text": text},
                                       {"type": "template", "altText": XSS, "template": {
                                           "type": "confirm", "text": XSS, "actions": [
                                               {"type": "message", "label": "<b>yes</b>", "text": XSS},
                                               {"type": "uri", "label": "no", "uri": "https://example.com/?q=<script>"}]}}],
                              name=XSS)
    page = signed_in("marketer")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    path = {"list": "/console/templates/", "page": f"/console/templates/{created['id']}/",
            "editor": f"/console/templates/{created['id']}/edit/"}[where]
    page.goto(path)
    if where == "list":
        page.get_by_role("link", name=XSS).wait_for()
    else:
        page.locator(".bubble-text", has_text=XSS).first.wait_for()
        assert page.locator(".bubble-text .chip", has_text="{{name}}").count() >= 1
        assert page.locator(".bubble-text img").count() == 0
        assert page.locator(".bubble-card b").count() == 0
    if where == "editor":  # the preview fragment is rendered again on input
        page.locator("#field-messages-0-text").fill(text + " again")
        page.locator("#preview .bubble-text", has_text="again").wait_for()
    assert page.locator("script", has_text="alert(1)").count() == 0
    screenshot(page, f"templates_xss_{where}")
    assert dialogs == []


def test_pages_in_traditional_chinese(signed_in, tenant, screenshot):
    created = create_template(tenant, [{"type": "text", "text": "嗨 {{name}}"}], name="歡迎")
    page = signed_in("marketer", locale="zh_TW")
    page.goto("/console/templates/")
    assert page.get_by_role("heading", level=1).inner_text() == "模板"
    page.goto(f"/console/templates/{created['id']}/")
    assert "模板 ID" in page.locator(".template-id-panel").inner_text()
    assert page.get_by_role("button", name="複製").first.is_visible()
    page.goto(f"/console/templates/{created['id']}/edit/")
    page.locator("#field-messages-0-text").fill("")
    page.get_by_role("button", name="儲存").click()
    page.locator(".alert.error").wait_for()
    assert "不可為空" in page.locator("#field-messages-0-text-errors").inner_text()
    screenshot(page, "templates_zh_tw")


def test_odd_addresses_and_forms_never_answer_500(signed_in, tenant, screenshot):
    page = signed_in("marketer")
    page.goto("/console/templates/")
    csrf = csrf_of(page)
    for path, status in (("/console/templates/abc/", 404), ("/console/templates/99999999999999999999/", 404),
                         ("/console/templates/0/edit/", 404), ("/console/templates/?page=abc&q=" + "x" * 5000, 200),
                         ("/console/templates/?page=999999", 200)):
        assert page.request.get(path).status == status, path
    for form in ({}, {"messages-0-kind": "bogus", "messages-0-actions-0-type": "bogus"},
                 {"messages-99-kind": "json", "messages-99-json": "[" * 5000}, {"op": "removeaction-0-9", "template": "x"}):
        for path in ("/console/templates/preview/", "/console/templates/editor/", "/console/templates/new/"):
            response = page.request.post(path, form={"csrf_token": csrf, **form})
            assert response.status in (200, 400, 404), (path, form, response.status)
    page.goto("/console/templates/?page=999999")
    screenshot(page, "templates_page_out_of_range")
    assert template_count(tenant) == 0

"""The editor's form handling (no browser): messages <-> fields, the editor's buttons, errors."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData

from openmaac.console import template_editor as editor
from openmaac.templates.service import validate_template
from openmaac.web.errors import APIError

ROUND_TRIP = [
    {"type": "text", "text": "Hi {{name}}"},
    {"type": "image", "originalContentUrl": "https://x.test/a.png", "previewImageUrl": "https://x.test/b.png"},
    {"type": "template", "altText": "alt", "template": {
        "type": "buttons", "thumbnailImageUrl": "https://x.test/t.png", "title": "T", "text": "body",
        "actions": [{"type": "uri", "label": "Go", "uri": "https://x.test/"},
                    {"type": "postback", "label": "PB", "data": "a=1"},
                    {"type": "message", "label": "Say", "text": "hello"}]}},
    {"type": "template", "altText": "sure?", "template": {"type": "confirm", "text": "Sure?", "actions": [
        {"type": "message", "label": "Yes", "text": "yes"}, {"type": "message", "label": "No", "text": "no"}]}},
    {"type": "flex", "altText": "menu", "contents": {"type": "bubble", "body": {
        "type": "box", "layout": "vertical", "contents": [{"type": "text", "text": "{{name}}"}]}}},
]


def form_of(drafts: list[editor.MessageDraft], name: str = "n") -> FormData:
    fields: list[tuple[str, str]] = [("name", name)]
    for index, draft in enumerate(drafts):
        prefix = f"messages-{index}-"
        fields += [(prefix + "kind", draft.kind), (prefix + "was", draft.kind), (prefix + "text", draft.text),
                   (prefix + "original_url", draft.original_url), (prefix + "preview_url", draft.preview_url),
                   (prefix + "alt_text", draft.alt_text), (prefix + "title", draft.title),
                   (prefix + "thumbnail_url", draft.thumbnail_url), (prefix + "json", draft.json)]
        for number, action in enumerate(draft.actions):
            fields += [(f"{prefix}actions-{number}-type", action.type), (f"{prefix}actions-{number}-label", action.label),
                       (f"{prefix}actions-{number}-value", action.value)]
    return FormData(fields)


@pytest.mark.parametrize("message", ROUND_TRIP, ids=lambda m: m["type"] + "-" + str(m.get("template", {}).get("type", "")))
def test_fields_hold_the_message_exactly(message):
    draft = editor.draft_from_message(message)
    assert draft.kind != "json"
    state = editor.state_from_form(form_of([draft]))
    messages, complete = state.messages()
    assert complete and messages == [message]


@pytest.mark.parametrize("message", [
    {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    {"type": "text", "text": "hi", "quickReply": {"items": []}},
    {"type": "template", "altText": "a", "template": {"type": "buttons", "text": "t", "defaultAction": {}, "actions": []}},
    {"type": "template", "altText": "a", "template": {"type": "buttons", "text": "t", "actions": [
        {"type": "datetimepicker", "label": "d", "data": "x", "mode": "date"}]}},
])
def test_what_the_fields_cannot_hold_is_edited_as_json_and_kept(message):
    draft = editor.draft_from_message(message)
    assert draft.kind == "json"
    messages, complete = editor.state_from_form(form_of([draft])).messages()
    assert complete and messages == [message]


def test_buttons_move_add_and_remove():
    drafts = [editor.new_draft(), editor.new_draft("confirm")]
    drafts[0].text = "first"
    editor.apply_operation(drafts, "down-0")
    assert [d.kind for d in drafts] == ["confirm", "text"]
    editor.apply_operation(drafts, "up-1")
    assert drafts[0].text == "first"
    for _ in range(10):
        editor.apply_operation(drafts, "add")
    assert len(drafts) == 5
    editor.apply_operation(drafts, "remove-4")
    assert len(drafts) == 4
    assert len(drafts[1].actions) == 2  # confirm: exactly two
    editor.apply_operation(drafts, "addaction-1")
    assert len(drafts[1].actions) == 2
    drafts[0].kind = "buttons"
    editor.apply_operation(drafts, "kind-0")
    assert len(drafts[0].actions) == 1 and drafts[0].text == "first"
    for _ in range(6):
        editor.apply_operation(drafts, "addaction-0")
    assert len(drafts[0].actions) == 4
    editor.apply_operation(drafts, "removeaction-0-3")
    assert len(drafts[0].actions) == 3
    for operation in ("remove-99", "up-0", "down-9", "bogus", "removeaction-0-x", ""):
        editor.apply_operation(drafts, operation)  # ignored, never an error


def test_changing_to_and_from_json_keeps_the_content():
    draft = editor.draft_from_message(ROUND_TRIP[3])
    draft.was, draft.kind = "confirm", "json"  # the select changed; the fields are still the confirm's
    drafts = [draft]
    editor.apply_operation(drafts, "kind-0")
    assert editor.message_from_draft(drafts[0])[0] == ROUND_TRIP[3]
    drafts[0].was, drafts[0].kind = "json", "confirm"
    editor.apply_operation(drafts, "kind-0")
    assert drafts[0].kind == "confirm" and drafts[0].actions[0].label == "Yes"


def test_service_errors_land_on_their_fields():
    drafts = [editor.new_draft(), editor.draft_from_message(ROUND_TRIP[2]), editor.new_draft("flex")]
    drafts[1].alt_text = ""
    drafts[2].json = '{"type": "bubble", "body": {"type": "box", "layout": "vertical"}}'
    state = editor.state_from_form(form_of(drafts, name=" "))
    messages, complete = state.messages()
    assert complete
    with pytest.raises(APIError) as refused:
        validate_template(state.name, messages)
    state.add_service_errors(refused.value.body)
    assert state.errors["name"] == ["This field may not be blank."]
    assert state.errors["messages-0-text"] == ["May not be empty"]
    assert state.errors["messages-1-alt_text"] == ["May not be empty"]
    assert state.errors["messages-2-alt_text"] == ["May not be empty"]
    assert state.errors["messages-2-json"] == ["contents.body.contents: May not be empty"]


def test_unreadable_json_is_a_field_error():
    draft = editor.new_draft("json")
    draft.json = "[1, 2]"
    state = editor.state_from_form(form_of([draft]))
    messages, complete = state.messages()
    assert not complete and messages == [None]
    assert "Enter a JSON object" in state.errors["messages-0-json"][0]


@pytest.mark.parametrize("depth", [100, 100_000])
def test_absurdly_deep_json_is_a_field_error(depth):
    draft = editor.new_draft("json")
    draft.json = "[" * depth + "]" * depth
    state = editor.state_from_form(form_of([draft]))
    messages, complete = state.messages()
    assert not complete and messages == [None]
    assert state.errors["messages-0-json"] == ["Enter JSON nested at most 64 levels deep."]

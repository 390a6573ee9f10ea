"""openmaac.channels.line_messages: LINE message objects judged by LINE's OpenAPI schemas."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from openmaac.channels import line_messages as lm
from openmaac.channels.line_messages import ErrorDetail, error_body, validate_message, validate_messages

MESSAGE_TYPES = "[text, textV2, sticker, image, video, audio, location, imagemap, template, flex, coupon]"
ACTION_TYPES = "[camera, cameraRoll, clipboard, datetimepicker, location, message, postback, richmenuswitch, uri]"

TEXT = {"type": "text", "text": "Hello {{name}}, your order {{order_id}} has shipped"}
IMAGE = {
    "type": "image",
    "originalContentUrl": "https://example.com/original.jpg",
    "previewImageUrl": "https://example.com/preview.jpg",
}
STICKER = {"type": "sticker", "packageId": "446", "stickerId": "1988"}
BUTTONS = {
    "type": "template",
    "altText": "Hi {{name}}",
    "template": {
        "type": "buttons",
        "thumbnailImageUrl": "https://example.com/bot/images/image.jpg",
        "imageAspectRatio": "rectangle",
        "title": "Menu",
        "text": "Please select, {{name}}",
        "defaultAction": {"type": "uri", "label": "View detail", "uri": "https://example.com/page/123"},
        "actions": [
            {"type": "postback", "label": "Buy", "data": "action=buy&itemid=123", "displayText": "Buy"},
            {"type": "uri", "label": "View detail", "uri": "https://example.com/page/{{item_id}}"},
            {"type": "message", "label": "Add to cart", "text": "add"},
            {"type": "datetimepicker", "label": "Pick", "data": "d", "mode": "datetime"},
        ],
    },
}
BUBBLE = {
    "type": "bubble",
    "size": "mega",
    "hero": {"type": "image", "url": "https://example.com/hero.png", "size": "full", "aspectMode": "cover"},
    "body": {
        "type": "box",
        "layout": "vertical",
        "contents": [
            {"type": "text", "text": "Brown Cafe", "weight": "bold", "size": "xl"},
            {
                "type": "box",
                "layout": "baseline",
                "contents": [
                    {"type": "icon", "url": "https://example.com/star.png", "size": "sm"},
                    {"type": "text", "text": "4.0", "contents": [{"type": "span", "text": "4.0", "weight": "bold"}]},
                ],
            },
            {"type": "separator"},
        ],
        "background": {"type": "linearGradient", "angle": "90deg", "startColor": "#ff0000", "endColor": "#0000ff"},
    },
    "footer": {
        "type": "box",
        "layout": "vertical",
        "spacing": "sm",
        "contents": [
            {"type": "button", "style": "link", "height": "sm",
             "action": {"type": "uri", "label": "CALL", "uri": "https://example.com/call"}},
            {"type": "filler"},
        ],
    },
}
FLEX_BUBBLE = {"type": "flex", "altText": "This is a Flex Message", "contents": BUBBLE}
QUICK_REPLY_TEXT = {
    "type": "text",
    "text": "Select your favorite food category or send me your location!",
    "quickReply": {
        "items": [
            {"type": "action", "imageUrl": "https://example.com/sushi.png",
             "action": {"type": "message", "label": "Sushi", "text": "Sushi"}},
            {"type": "action", "action": {"type": "location", "label": "Send location"}},
            {"type": "action", "action": {"type": "camera", "label": "Camera"}},
            {"type": "action", "action": {"type": "postback", "label": "Later", "data": "later"}},
        ]
    },
    "sender": {"name": "Cony", "iconUrl": "https://example.com/cony.png"},
}
TEXT_V2 = {
    "type": "textV2",
    "text": "Welcome, {user1}! {laugh}",
    "substitution": {
        "user1": {"type": "mention", "mentionee": {"type": "user", "userId": "U" + "0" * 32}},
        "laugh": {"type": "emoji", "productId": "5a8555cfe6256cc92ea23c1a", "emojiId": "002"},
    },
}
IMAGEMAP = {
    "type": "imagemap",
    "baseUrl": "https://example.com/bot/images/rm001",
    "altText": "This is an imagemap",
    "baseSize": {"width": 1040, "height": 1040},
    "actions": [
        {"type": "uri", "linkUri": "https://example.com/", "area": {"x": 0, "y": 586, "width": 520, "height": 454}},
        {"type": "message", "text": "Hello", "area": {"x": 520, "y": 586, "width": 520, "height": 454}},
    ],
}
CAROUSEL_TEMPLATE = {
    "type": "template",
    "altText": "carousel",
    "template": {
        "type": "carousel",
        "columns": [
            {"text": f"column {i}", "actions": [{"type": "uri", "label": "Go", "uri": "https://example.com"}]}
            for i in range(3)
        ],
    },
}
LOCATION = {"type": "location", "title": "my location", "address": "Tokyo", "latitude": 35.65910807942215,
            "longitude": 139.70372892916203}

VALID_MESSAGES: dict[str, dict[str, Any]] = {
    "text": TEXT,
    "image": IMAGE,
    "sticker": STICKER,
    "buttons": BUTTONS,
    "flex_bubble": FLEX_BUBBLE,
    "quick_reply": QUICK_REPLY_TEXT,
    "text_v2": TEXT_V2,
    "imagemap": IMAGEMAP,
    "carousel_template": CAROUSEL_TEMPLATE,
    "location": LOCATION,
    "flex_carousel": {"type": "flex", "altText": "carousel",
                      "contents": {"type": "carousel", "contents": [BUBBLE] * 12}},
}


def one(detail_message: str, prop: str) -> list[ErrorDetail]:
    return [ErrorDetail(detail_message, prop)]


# --------------------------------------------------------------------------------------------
# Valid messages
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALID_MESSAGES))
def test_valid_message(name: str) -> None:
    assert validate_messages([VALID_MESSAGES[name]]) == []


def test_five_mixed_messages_are_valid() -> None:
    assert validate_messages([TEXT, IMAGE, STICKER, BUTTONS, FLEX_BUBBLE]) == []


def test_validate_message_uses_index_in_paths() -> None:
    assert validate_message(TEXT, 3) == []
    assert validate_message({"type": "text"}, 3) == one("May not be empty", "messages[3].text")


def test_message_types_follow_the_spec_mapping() -> None:
    assert "[" + ", ".join(lm.message_types()) + "]" == MESSAGE_TYPES


# --------------------------------------------------------------------------------------------
# The messages array
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages", [[], [TEXT] * 6, "hello", None, {"type": "text", "text": "x"}, 5])
def test_messages_array_size_or_shape(messages: object) -> None:
    assert validate_messages(messages) == one("Size must be between 1 and 5", "messages")


def test_six_messages_also_reports_bad_items() -> None:
    details = validate_messages([TEXT] * 5 + [{"type": "text"}])
    assert details == [
        ErrorDetail("Size must be between 1 and 5", "messages"),
        ErrorDetail("May not be empty", "messages[5].text"),
    ]


def test_non_object_message() -> None:
    assert validate_messages(["hello"]) == one("Must be of type object", "messages[0]")


# --------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------

def test_unknown_message_type() -> None:
    assert validate_messages([TEXT, {"type": "bogus"}]) == one(
        f"Must be one of the following values: {MESSAGE_TYPES}", "messages[1].type")


@pytest.mark.parametrize("message", [{}, {"text": "hi"}, {"type": None}, {"type": 1}])
def test_missing_or_non_string_message_type(message: dict[str, Any]) -> None:
    assert validate_messages([message]) == one(
        f"Must be one of the following values: {MESSAGE_TYPES}", "messages[0].type")


def test_buttons_template_with_unknown_action_type() -> None:
    message = copy.deepcopy(BUTTONS)
    message["template"]["actions"][1] = {"type": "teleport", "label": "Go"}
    assert validate_messages([message]) == one(
        f"Must be one of the following values: {ACTION_TYPES}", "messages[0].template.actions[1].type")


def test_action_without_type() -> None:
    message = copy.deepcopy(BUTTONS)
    del message["template"]["actions"][0]["type"]
    assert validate_messages([message]) == one(
        f"Must be one of the following values: {ACTION_TYPES}", "messages[0].template.actions[0].type")


def test_subtype_checked_after_dispatch() -> None:
    message = copy.deepcopy(BUTTONS)
    message["template"]["actions"][0]["data"] = "x" * 301  # PostbackAction.data maxLength 300
    message["template"]["actions"][1]["uri"] = 42
    assert validate_messages([message]) == [
        ErrorDetail("Length must be between 0 and 300", "messages[0].template.actions[0].data"),
        ErrorDetail("Must be of type string", "messages[0].template.actions[1].uri"),
    ]


def test_unknown_template_type() -> None:
    message = copy.deepcopy(BUTTONS)
    message["template"]["type"] = "list"
    assert validate_messages([message]) == one(
        "Must be one of the following values: [buttons, confirm, carousel, image_carousel]",
        "messages[0].template.type")


def test_flex_nested_components_are_dispatched() -> None:
    message = copy.deepcopy(FLEX_BUBBLE)
    body = message["contents"]["body"]
    body["contents"][1]["contents"][0] = {"type": "icon"}  # FlexIcon requires url
    body["contents"].append({"type": "spacer"})  # not in the spec's mapping
    body["background"]["type"] = "radialGradient"
    assert validate_messages([message]) == [
        ErrorDetail("May not be empty", "messages[0].contents.body.contents[1].contents[0].url"),
        ErrorDetail("Must be one of the following values: [box, button, image, video, icon, text, span, "
                    "separator, filler]", "messages[0].contents.body.contents[3].type"),
        ErrorDetail("Must be one of the following values: [linearGradient]", "messages[0].contents.body.background.type"),
    ]


def test_flex_carousel_items_must_be_bubbles() -> None:
    message = {"type": "flex", "altText": "a", "contents": {"type": "carousel", "contents": [{"type": "box"}]}}
    assert validate_messages([message]) == one(
        "Must be one of the following values: [bubble]", "messages[0].contents.contents[0].type")


def test_bubble_body_must_be_a_box() -> None:
    message = copy.deepcopy(FLEX_BUBBLE)
    message["contents"]["body"] = {"type": "text", "text": "hi"}
    assert validate_messages([message]) == one(
        "Must be one of the following values: [box]", "messages[0].contents.body.type")


def test_text_v2_substitution_values_are_dispatched() -> None:
    message = copy.deepcopy(TEXT_V2)
    message["substitution"]["user1"]["mentionee"]["type"] = "everyone"
    message["substitution"]["laugh"]["type"] = "sticker"
    assert validate_messages([message]) == [
        ErrorDetail("Must be one of the following values: [user, all]", "messages[0].substitution.user1.mentionee.type"),
        ErrorDetail("Must be one of the following values: [mention, emoji]", "messages[0].substitution.laugh.type"),
    ]


def test_imagemap_action_type() -> None:
    message = copy.deepcopy(IMAGEMAP)
    message["actions"][0]["type"] = "postback"
    assert validate_messages([message]) == one(
        "Must be one of the following values: [message, uri, clipboard]", "messages[0].actions[0].type")


# --------------------------------------------------------------------------------------------
# Required properties, types, enums
# --------------------------------------------------------------------------------------------

def test_text_missing_text() -> None:
    assert validate_messages([{"type": "text"}]) == one("May not be empty", "messages[0].text")


@pytest.mark.parametrize("value", [None, ""])
def test_text_null_or_empty(value: object) -> None:
    assert validate_messages([{"type": "text", "text": value}]) == one("May not be empty", "messages[0].text")


def test_image_missing_preview() -> None:
    message = {"type": "image", "originalContentUrl": "https://example.com/a.jpg"}
    assert validate_messages([message]) == one("May not be empty", "messages[0].previewImageUrl")


def test_template_missing_alt_text_and_template_text() -> None:
    message = copy.deepcopy(BUTTONS)
    del message["altText"]
    del message["template"]["text"]
    assert sorted(validate_messages([message]), key=lambda d: d.property) == [
        ErrorDetail("May not be empty", "messages[0].altText"),
        ErrorDetail("May not be empty", "messages[0].template.text"),
    ]


def test_wrong_json_types() -> None:
    assert validate_messages([{"type": "text", "text": 12}]) == one("Must be of type string", "messages[0].text")
    location = dict(LOCATION, latitude="35.6")
    assert validate_messages([location]) == one("Must be of type number", "messages[0].latitude")
    audio = {"type": "audio", "originalContentUrl": "https://example.com/a.m4a", "duration": 1.5}
    assert validate_messages([audio]) == one("Must be of type integer", "messages[0].duration")
    assert validate_messages([dict(TEXT, quickReply=[])]) == one("Must be of type object", "messages[0].quickReply")


def test_enum_violation() -> None:
    message = copy.deepcopy(FLEX_BUBBLE)
    message["contents"]["size"] = "huge"
    assert validate_messages([message]) == one(
        "Must be one of the following values: [nano, micro, deca, hecto, kilo, mega, giga]", "messages[0].contents.size")


def test_sender_name_limit_from_spec() -> None:
    message = dict(TEXT, sender={"name": "x" * 21})
    assert validate_messages([message]) == one("Length must be between 0 and 20", "messages[0].sender.name")


def test_unknown_properties_are_ignored() -> None:
    assert validate_messages([dict(TEXT, somethingNew=True)]) == []


# --------------------------------------------------------------------------------------------
# Limits the spec lacks
# --------------------------------------------------------------------------------------------

def test_text_5000_passes_5001_fails() -> None:
    assert validate_messages([{"type": "text", "text": "a" * 5000}]) == []
    assert validate_messages([{"type": "text", "text": "a" * 5001}]) == one(
        "Length must be between 0 and 5000", "messages[0].text")


def test_text_counts_utf16_code_units() -> None:
    emoji = "\U0001F600"  # a surrogate pair in UTF-16
    assert validate_messages([{"type": "text", "text": emoji * 2500}]) == []
    assert validate_messages([{"type": "text", "text": emoji * 2501}]) == one(
        "Length must be between 0 and 5000", "messages[0].text")
    assert validate_messages([{"type": "text", "text": "\u3042" * 5000}]) == []  # BMP: one unit each
    assert validate_messages([{"type": "text", "text": "a" * 4999 + emoji}]) == one(
        "Length must be between 0 and 5000", "messages[0].text")


def test_text_v2_limit() -> None:
    assert validate_messages([{"type": "textV2", "text": "a" * 5001}]) == one(
        "Length must be between 0 and 5000", "messages[0].text")


@pytest.mark.parametrize("base", [BUTTONS, FLEX_BUBBLE, IMAGEMAP])
def test_alt_text_limit(base: dict[str, Any]) -> None:
    assert validate_messages([dict(base, altText="a" * 1500)]) == []
    assert validate_messages([dict(base, altText="a" * 1501)]) == one(
        "Length must be between 0 and 1500", "messages[0].altText")


def test_flex_carousel_13_bubbles() -> None:
    message = {"type": "flex", "altText": "a", "contents": {"type": "carousel", "contents": [BUBBLE] * 13}}
    assert validate_messages([message]) == one("Size must be between 1 and 12", "messages[0].contents.contents")


def test_template_carousel_column_limit() -> None:
    message = copy.deepcopy(CAROUSEL_TEMPLATE)
    column = message["template"]["columns"][0]
    message["template"]["columns"] = [column] * 10
    assert validate_messages([message]) == []
    message["template"]["columns"] = [column] * 11
    assert validate_messages([message]) == one("Size must be between 1 and 10", "messages[0].template.columns")


def test_quick_reply_13_items() -> None:
    item = QUICK_REPLY_TEXT["quickReply"]["items"][0]
    assert validate_messages([dict(TEXT, quickReply={"items": [item] * 13})]) == []
    assert validate_messages([dict(TEXT, quickReply={"items": [item] * 14})]) == one(
        "Size must be between 0 and 13", "messages[0].quickReply.items")


# --------------------------------------------------------------------------------------------
# Error body
# --------------------------------------------------------------------------------------------

def test_error_body() -> None:
    details = validate_messages([{"type": "bogus"}, {"type": "text"}])
    assert error_body(details) == {
        "message": "The request body has 2 error(s)",
        "details": [
            {"message": f"Must be one of the following values: {MESSAGE_TYPES}", "property": "messages[0].type"},
            {"message": "May not be empty", "property": "messages[1].text"},
        ],
    }


def test_error_body_without_details() -> None:
    assert error_body([]) == {"message": "The request body has 0 error(s)"}


# --------------------------------------------------------------------------------------------
# The fast pre-check agrees with jsonschema
# --------------------------------------------------------------------------------------------

_WRONG_VALUES: list[object] = [None, "", "x" * 6000, "\U0001F600" * 3000, 0, -1, 1.5, True, [], {}, "bogus"]


def _mutations(node: Any) -> Iterator[Any]:
    """Copies of node with one change each: a key removed or a value replaced."""
    if isinstance(node, dict):
        for key, value in node.items():
            without = dict(node)
            del without[key]
            yield without
            for wrong in _WRONG_VALUES:
                yield {**node, key: wrong}
            for mutated in _mutations(value):
                yield {**node, key: mutated}
    elif isinstance(node, list):
        if node:
            yield node[1:]
            yield node + node[:1] * 13
        for i, value in enumerate(node[:3]):
            for mutated in _mutations(value):
                yield node[:i] + [mutated] + node[i + 1:]


@pytest.mark.parametrize("name", sorted(set(VALID_MESSAGES) - {"flex_carousel"}))
def test_fast_precheck_agrees_with_jsonschema(name: str) -> None:
    compiled = lm._compiled()
    checked = 0
    for mutated in _mutations(VALID_MESSAGES[name]):
        errors = list(compiled.validator.iter_errors(mutated))
        assert compiled.is_valid(mutated) == (not errors), (mutated, [e.message for e in errors])
        checked += 1
    assert checked > 20

"""The template editor's form: LINE message objects <-> the fields a marketer edits.

This is form handling only (like a Django form): it turns the posted fields into LINE message
objects for ``openmaac.templates.service``, which alone decides what is valid, and maps the
service's errors back onto the fields. Text, image, buttons and confirm messages get fields of
their own; a flex message is its alt text plus its ``contents`` as JSON; any other message (or
one with options the fields do not cover, such as quick replies) is edited as raw JSON, so
opening and saving a template never drops anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.datastructures import FormData

from openmaac.channels.line_messages import MAX_MESSAGES, MAX_NESTING, nesting

KINDS = ("text", "image", "buttons", "confirm", "flex", "json")
ACTION_TYPES = ("uri", "message", "postback")
ACTION_VALUE_KEY = {"uri": "uri", "message": "text", "postback": "data"}
MAX_ACTIONS = {"buttons": 4, "confirm": 2}

_MESSAGE_FIELD = re.compile(r"^messages-(\d{1,2})-kind$")
_DETAIL_PATH = re.compile(r"^messages\[(\d+)\](.*)$")
_ACTION_PATH = re.compile(r"^\.template\.actions\[(\d+)\](?:\.(\w+))?")


@dataclass
class ActionDraft:
    type: str = "uri"
    label: str = ""
    value: str = ""  # the uri, the message text or the postback data, by type


@dataclass
class MessageDraft:
    kind: str = "text"
    text: str = ""
    original_url: str = ""
    preview_url: str = ""
    alt_text: str = ""
    title: str = ""
    thumbnail_url: str = ""
    actions: list[ActionDraft] = field(default_factory=list)
    json: str = ""  # flex: the contents; json: the whole message object
    was: str = ""  # the kind the fields were rendered for (the kind select may have changed)

    @property
    def max_actions(self) -> int:
        return MAX_ACTIONS.get(self.kind, 0)


def new_draft(kind: str = "text") -> MessageDraft:
    draft = MessageDraft(kind=kind)
    _fit_actions(draft)
    return draft


def _fit_actions(draft: MessageDraft) -> None:
    """Buttons need at least one action, confirm exactly two: give the fields to fill."""
    if draft.kind == "buttons" and not draft.actions:
        draft.actions = [ActionDraft()]
    elif draft.kind == "confirm":
        draft.actions = (draft.actions + [ActionDraft(type="message"), ActionDraft(type="message")])[:2]


def _only(value: dict[str, Any], allowed: set[str]) -> bool:
    return set(value) <= allowed and all(isinstance(value[key], str) for key in value if key != "actions")


def _action_draft(action: Any) -> ActionDraft | None:
    if not isinstance(action, dict) or action.get("type") not in ACTION_TYPES:
        return None
    key = ACTION_VALUE_KEY[action["type"]]
    if not _only(action, {"type", "label", key}):
        return None
    return ActionDraft(type=action["type"], label=action.get("label", ""), value=action.get(key, ""))


def draft_from_message(message: Any) -> MessageDraft:
    """Fields for one stored message; raw JSON when the fields could not hold all of it."""
    if isinstance(message, dict):
        kind = message.get("type")
        if kind == "text" and _only(message, {"type", "text"}):
            return MessageDraft(kind="text", text=message.get("text", ""))
        if kind == "image" and _only(message, {"type", "originalContentUrl", "previewImageUrl"}):
            return MessageDraft(kind="image", original_url=message.get("originalContentUrl", ""),
                                preview_url=message.get("previewImageUrl", ""))
        template = message.get("template")
        if (kind == "template" and isinstance(template, dict) and set(message) <= {"type", "altText", "template"}
                and isinstance(message.get("altText", ""), str)
                and template.get("type") in ("buttons", "confirm") and isinstance(template.get("actions"), list)):
            allowed = {"type", "text", "actions"} | ({"title", "thumbnailImageUrl"} if template["type"] == "buttons" else set())
            actions = [_action_draft(action) for action in template["actions"]]
            if _only(template, allowed) and all(actions):
                return MessageDraft(kind=template["type"], alt_text=message.get("altText", ""),
                                    text=template.get("text", ""), title=template.get("title", ""),
                                    thumbnail_url=template.get("thumbnailImageUrl", ""),
                                    actions=[a for a in actions if a is not None])
        if kind == "flex" and set(message) <= {"type", "altText", "contents"} and isinstance(message.get("altText", ""), str):
            return MessageDraft(kind="flex", alt_text=message.get("altText", ""),
                                json=json.dumps(message.get("contents", {}), ensure_ascii=False, indent=2))
    return MessageDraft(kind="json", json=json.dumps(message, ensure_ascii=False, indent=2))


def drafts_from_messages(messages: list[Any]) -> list[MessageDraft]:
    return [draft_from_message(message) for message in messages]


# -- the posted form ---------------------------------------------------------------------------

def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def drafts_from_form(form: FormData) -> list[MessageDraft]:
    """The messages as posted, in their form order (``messages-{i}-...`` fields)."""
    indexes = sorted({int(match.group(1)) for key in form.keys() if (match := _MESSAGE_FIELD.match(key))})
    drafts = []
    for index in indexes:
        prefix = f"messages-{index}-"
        kind = _text(form, prefix + "kind")
        draft = MessageDraft(
            kind=kind if kind in KINDS else "text",
            text=_text(form, prefix + "text"),
            original_url=_text(form, prefix + "original_url").strip(),
            preview_url=_text(form, prefix + "preview_url").strip(),
            alt_text=_text(form, prefix + "alt_text"),
            title=_text(form, prefix + "title"),
            thumbnail_url=_text(form, prefix + "thumbnail_url").strip(),
            json=_text(form, prefix + "json"),
            was=_text(form, prefix + "was"),
        )
        action_indexes = sorted({
            int(match.group(1)) for key in form.keys()
            if (match := re.match(rf"^{prefix}actions-(\d{{1,2}})-type$", key))
        })
        for action_index in action_indexes:
            action_prefix = f"{prefix}actions-{action_index}-"
            action_type = _text(form, action_prefix + "type")
            draft.actions.append(ActionDraft(
                type=action_type if action_type in ACTION_TYPES else "uri",
                label=_text(form, action_prefix + "label"),
                value=_text(form, action_prefix + "value").strip() if action_type == "uri"
                else _text(form, action_prefix + "value"),
            ))
        drafts.append(draft)
    return drafts


def apply_operation(drafts: list[MessageDraft], operation: str) -> list[MessageDraft]:
    """The editor's buttons: add/remove/move a message, add/remove an action, change a kind."""
    parts = operation.split("-")
    verb, numbers = parts[0], [int(p) for p in parts[1:] if p.isdigit()]
    index = numbers[0] if numbers else -1
    in_range = 0 <= index < len(drafts)
    if verb == "add" and len(drafts) < MAX_MESSAGES:
        drafts.append(new_draft())
    elif verb == "remove" and in_range and len(drafts) > 1:
        del drafts[index]
    elif verb == "up" and in_range and index > 0:
        drafts[index - 1], drafts[index] = drafts[index], drafts[index - 1]
    elif verb == "down" and in_range and index < len(drafts) - 1:
        drafts[index + 1], drafts[index] = drafts[index], drafts[index + 1]
    elif verb == "kind" and in_range:
        _change_kind(drafts, index)
    elif verb == "addaction" and in_range and len(drafts[index].actions) < drafts[index].max_actions:
        drafts[index].actions.append(ActionDraft())
    elif verb == "removeaction" and in_range and len(numbers) == 2:
        actions = drafts[index].actions
        if 0 <= numbers[1] < len(actions) and len(actions) > 1:
            del actions[numbers[1]]
    return drafts


def _change_kind(drafts: list[MessageDraft], index: int) -> None:
    """A new kind was chosen in the select (already in the draft; ``was`` is the kind its
    fields were filled for): carry over what fits, and everything when going to or from JSON."""
    draft = drafts[index]
    was = draft.was if draft.was in KINDS else draft.kind
    if was != draft.kind and "json" in (was, draft.kind):
        message, _ = message_from_draft(replace(draft, kind=was))
        if draft.kind == "json":
            if message is not None:
                draft.json = json.dumps(message, ensure_ascii=False, indent=2)
        elif message is not None:
            converted = draft_from_message(message)
            if converted.kind == draft.kind:
                drafts[index] = draft = converted
    if draft.kind in MAX_ACTIONS:
        draft.actions = draft.actions[: draft.max_actions]
    _fit_actions(draft)


def message_from_draft(draft: MessageDraft) -> tuple[Any, dict[str, str]]:
    """The LINE message object, or ``None`` and field errors when its JSON cannot be read."""
    if draft.kind == "text":
        return {"type": "text", "text": draft.text}, {}
    if draft.kind == "image":
        return {"type": "image", "originalContentUrl": draft.original_url,
                "previewImageUrl": draft.preview_url or draft.original_url}, {}
    if draft.kind in ("buttons", "confirm"):
        template: dict[str, Any] = {"type": draft.kind}
        if draft.kind == "buttons":
            if draft.thumbnail_url:
                template["thumbnailImageUrl"] = draft.thumbnail_url
            if draft.title:
                template["title"] = draft.title
        template["text"] = draft.text
        template["actions"] = [
            {"type": action.type, "label": action.label, ACTION_VALUE_KEY[action.type]: action.value}
            for action in draft.actions
        ]
        return {"type": "template", "altText": draft.alt_text, "template": template}, {}
    try:
        value = json.loads(draft.json)
    except ValueError as exc:
        return None, {"json": f"Enter valid JSON: {exc}"}
    except RecursionError:
        return None, {"json": f"Enter JSON nested at most {MAX_NESTING} levels deep."}
    if nesting(value) > MAX_NESTING:
        return None, {"json": f"Enter JSON nested at most {MAX_NESTING} levels deep."}
    if draft.kind == "flex":
        return {"type": "flex", "altText": draft.alt_text, "contents": value}, {}
    if not isinstance(value, dict):
        return None, {"json": "Enter a JSON object: one LINE message, such as {\"type\": \"sticker\", ...}."}
    return value, {}


@dataclass
class EditorState:
    """What the editor shows: the fields, their errors and the messages they make."""

    name: str
    drafts: list[MessageDraft]
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def can_add(self) -> bool:
        return len(self.drafts) < MAX_MESSAGES

    def field_errors(self, name: str) -> list[str]:
        return self.errors.get(name, [])

    def messages(self) -> tuple[list[Any], bool]:
        """The LINE messages (``None`` where JSON cannot be read) and whether all could be read;
        reading records its errors on the fields."""
        messages, complete = [], True
        for index, draft in enumerate(self.drafts):
            message, problems = message_from_draft(draft)
            for key, problem in problems.items():
                found = self.errors.setdefault(f"messages-{index}-{key}", [])
                if problem not in found:
                    found.append(problem)
            complete = complete and message is not None
            messages.append(message)
        return messages, complete

    def add_service_errors(self, body: Any) -> None:
        """Put the service's 400 body (DRF field errors and/or LINE's ``details``) on the fields."""
        if not isinstance(body, dict):
            return
        for key in ("name", "messages"):
            for message in body.get(key) or []:
                self.errors.setdefault(key, []).append(str(message))
        for detail in body.get("details") or []:
            name, text = self._field_of(str(detail.get("property", "")), str(detail.get("message", "")))
            self.errors.setdefault(name, []).append(text)
        if body.get("message") and not body.get("details"):
            self.errors.setdefault("messages", []).append(str(body["message"]))

    def _field_of(self, path: str, message: str) -> tuple[str, str]:
        match = _DETAIL_PATH.match(path)
        if not match:
            return "messages", message
        index, rest = int(match.group(1)), match.group(2)
        if index >= len(self.drafts):
            return "messages", f"{path}: {message}"
        prefix = f"messages-{index}-"
        kind = self.drafts[index].kind
        simple = {
            "text": {".text": "text"},
            "image": {".originalContentUrl": "original_url", ".previewImageUrl": "preview_url"},
            "buttons": {".altText": "alt_text", ".template.text": "text", ".template.title": "title",
                        ".template.thumbnailImageUrl": "thumbnail_url", ".template.actions": "actions"},
            "confirm": {".altText": "alt_text", ".template.text": "text", ".template.actions": "actions"},
            "flex": {".altText": "alt_text"},
        }.get(kind, {})
        if rest in simple:
            return prefix + simple[rest], message
        action = _ACTION_PATH.match(rest)
        if kind in MAX_ACTIONS and action:
            part = "label" if action.group(2) == "label" else "value"
            if action.group(2) in (None, "type"):
                return f"{prefix}actions-{action.group(1)}-value", f"{rest.lstrip('.')}: {message}"
            return f"{prefix}actions-{action.group(1)}-{part}", message
        if kind == "flex" and rest.startswith(".contents"):
            return prefix + "json", f"{rest.lstrip('.')}: {message}"
        if kind == "json":
            return prefix + "json", f"{rest.lstrip('.') or 'message'}: {message}"
        return prefix + "message", f"{rest.lstrip('.') or 'message'}: {message}"


def state_from_form(form: FormData) -> EditorState:
    drafts = drafts_from_form(form)
    return EditorState(name=_text(form, "name"), drafts=drafts or [new_draft()])

"""Request-body validation as LINE does it, judged by LINE's own messaging-api.yml.

The simulator's own copy of the schema (openapi/messaging-api.yml) is loaded once.  OpenAPI's
``discriminator`` is not JSON Schema: the spec puts it on base schemas (``Message``,
``Action``, ``FlexComponent``, ...) whose subtypes refer back to the base through ``allOf``.
Here every discriminated base ``X`` gets a twin ``X__base`` without the discriminator; the
subtypes' ``allOf`` point at the twin, and ``X`` itself (used as a property or item type)
gets a ``discriminator`` keyword that validates the value against the subtype its mapping
names: ``{"type": "bogus"}`` is rejected and a text message without ``text`` too.

Limits LINE enforces that the spec lacks are added by hand (the LINE Messaging API reference): text ``text``
1..5,000 UTF-16 code units, ``altText`` 1..1,500.  String lengths count UTF-16 code units.

Errors come back as LINE's 400 ``details``: ``[{"message": ..., "property": "messages[0].text"}]``.
"""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC = Path(__file__).parent / "openapi" / "messaging-api.yml"
DOC_URI = "urn:simulator:line:messaging-api.yml"
TEXT_MAX = 5000
ALT_TEXT_MAX = 1500

_lock = threading.Lock()
_validators: dict[str, Any] = {}
_document: dict[str, Any] | None = None


def utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


def _prepare(doc: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = doc["components"]["schemas"]
    bases = [name for name, schema in schemas.items() if "discriminator" in schema]
    prefix = "#/components/schemas/"
    for name in bases:
        twin = copy.deepcopy(schemas[name])
        twin.pop("discriminator")
        schemas[f"{name}__base"] = twin

    def walk(node: Any, in_all_of: bool = False) -> None:
        if isinstance(node, dict):
            if "nullable" in node:
                if node.pop("nullable") and isinstance(node.get("type"), str):
                    node["type"] = [node["type"], "null"]
            for key, value in node.items():
                if key == "allOf" and isinstance(value, list):
                    for item in value:
                        ref = item.get("$ref") if isinstance(item, dict) else None
                        if ref and ref.startswith(prefix) and ref[len(prefix):] in bases:
                            item["$ref"] = ref + "__base"
                        walk(item, True)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schemas)
    return doc


def document() -> dict[str, Any]:
    global _document
    with _lock:
        if _document is None:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            _document = _prepare(yaml.load(SPEC.read_text(encoding="utf-8"), Loader=loader))
        return _document


def _discriminator(validator: Any, discriminator: dict[str, Any], instance: Any, _schema: Any) -> Any:
    if not isinstance(instance, dict):
        return
    prop = discriminator["propertyName"]
    mapping: dict[str, str] = discriminator.get("mapping", {})
    value = instance.get(prop)
    target = mapping.get(value) if isinstance(value, str) else None
    if target is None:
        yield ValidationError(f"Must be one of the following values: [{', '.join(mapping)}]",
                              validator="discriminator", path=[prop])
        return
    yield from validator.descend(instance, {"$ref": target})


def _length(kind: str) -> Any:
    def check(_validator: Any, limit: int, instance: Any, schema: dict[str, Any]) -> Any:
        if not isinstance(instance, str):
            return
        size = utf16_len(instance)
        if (kind == "max" and size > limit) or (kind == "min" and size < limit):
            yield ValidationError(f"Length must be between {schema.get('minLength', 0)} and "
                                  f"{schema.get('maxLength', 'unlimited')}", validator=f"{kind}Length")
    return check


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"discriminator": _discriminator, "maxLength": _length("max"), "minLength": _length("min")},
)


def _validator(schema_name: str) -> Any:
    with _lock:
        found = _validators.get(schema_name)
    if found is not None:
        return found
    doc = document()
    registry: Registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT4))
    made = _Validator({"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"}, registry=registry)
    with _lock:
        _validators[schema_name] = made
    return made


def _property(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPE_NAMES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
               "array": "array", "object": "object"}


def _detail(error: ValidationError) -> dict[str, str]:
    path = list(error.absolute_path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind == "required":
        match = re.match(r"'(.+)' is a required property", error.message)
        if match:
            path.append(match.group(1))
        message = "May not be empty"
    elif kind == "enum":
        message = f"Must be one of the following values: [{', '.join(str(v) for v in error.validator_value)}]"
    elif kind in ("minItems", "maxItems"):
        message = f"Size must be between {schema.get('minItems', 0)} and {schema.get('maxItems', 'unlimited')}"
    elif kind == "type":
        if error.instance is None:
            message = "May not be empty"
        else:
            wanted = error.validator_value
            wanted = wanted if isinstance(wanted, str) else next(w for w in wanted if w != "null")
            message = f"Must be of type {_TYPE_NAMES.get(wanted, wanted)}"
    elif kind in ("minimum", "maximum"):
        message = f"Must be between {schema.get('minimum', '-infinity')} and {schema.get('maximum', 'infinity')}"
    elif kind == "pattern":
        message = f"Must match the pattern {error.validator_value}"
    else:
        message = error.message
    return {"message": message, "property": _property(path)}


def _hand_limits(messages: Any) -> list[dict[str, str]]:
    details: list[dict[str, str]] = []
    if not isinstance(messages, list):
        return details
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        kind = message.get("type")
        text = message.get("text")
        if kind in ("text", "textV2") and isinstance(text, str):
            if not text:
                details.append({"message": "May not be empty", "property": f"messages[{index}].text"})
            elif utf16_len(text) > TEXT_MAX:
                details.append({"message": f"Length must be between 0 and {TEXT_MAX}",
                                "property": f"messages[{index}].text"})
        alt = message.get("altText")
        if kind in ("template", "flex", "imagemap") and isinstance(alt, str):
            if not alt:
                details.append({"message": "May not be empty", "property": f"messages[{index}].altText"})
            elif utf16_len(alt) > ALT_TEXT_MAX:
                details.append({"message": f"Length must be between 0 and {ALT_TEXT_MAX}",
                                "property": f"messages[{index}].altText"})
    return details


def validate(schema_name: str, body: Any) -> list[dict[str, str]]:
    """LINE's ``details`` for the body against ``components.schemas[schema_name]``; [] if valid."""
    errors = sorted(_validator(schema_name).iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    details: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for error in errors:
        detail = _detail(error)
        key = (detail["message"], detail["property"])
        if key not in seen:
            seen.add(key)
            details.append(detail)
    if isinstance(body, dict):
        for detail in _hand_limits(body.get("messages")):
            key = (detail["message"], detail["property"])
            if key not in seen:
                seen.add(key)
                details.append(detail)
    return details

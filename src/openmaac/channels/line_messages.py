"""Validation of LINE Messaging API message objects, judged by LINE's own OpenAPI schemas.

The schemas come from the vendored ``line_openapi/messaging-api.yml`` (line/line-openapi at
commit 6e4c2a2, Apache-2.0).  That spec puts a ``discriminator`` on base schemas such as
``Message``, ``Action`` or ``FlexComponent`` without any ``oneOf``, and the subtypes refer back
to the base through ``allOf``; a plain JSON-Schema validator therefore never checks the
subtype (``{"type": "bogus"}`` and a text message without ``text`` both pass).  This module
compiles the components once into a JSON-Schema (Draft 2020-12) document in which:

* every ``$ref`` to a discriminated base ``X`` that is *not* inside an ``allOf`` (that is, every
  use of ``X`` as a property or array item type) is rewritten to a synthetic ``X__dispatch``
  schema; its ``x-dispatch`` keyword reads the discriminator property and validates the object
  against ``discriminator.mapping[value]`` (refs inside a subtype's ``allOf`` stay as they are,
  so there is no infinite recursion);
* a ``$ref`` that names a subtype directly (a flex carousel's bubbles, a bubble's
  ``header``/``body``/``footer`` boxes, a text component's spans) gets the same treatment with
  the mapping restricted to that subtype, so ``{"type": "box"}`` is rejected as a bubble;
* OpenAPI 3.0 ``nullable: true`` becomes ``"type": [T, "null"]``; ``format`` is not checked;
* string lengths (``minLength``/``maxLength``) are counted in UTF-16 code units, as LINE does;
* the limits the spec lacks are added by hand: text message ``text`` (``text`` and ``textV2``)
  at most 5,000 UTF-16 code units and not empty; ``altText`` (template, flex and imagemap) at
  most 1,500 and not empty; flex carousel 1..12 bubbles; template ``carousel`` and
  ``image_carousel`` 1..10 columns (LINE's documented maximum for templates is 10, not 12);
  quick reply at most 13 items (already in the spec).

Error texts (``ErrorDetail.message``), modelled on LINE's 400 ``details``:

=====================================  =========================================================
Problem                                Message
=====================================  =========================================================
``messages`` not a list of 1..5 items  ``Size must be between 1 and 5`` (property ``messages``)
nested over ``MAX_NESTING`` (64)       ``Must not be nested more than 64 levels deep`` (property
levels                                 ``messages[i]``; judged first, without recursion)
missing (or ``null``) required field   ``May not be empty``
empty ``text`` / ``altText``           ``May not be empty``
unknown or missing discriminator       ``Must be one of the following values: [text, textV2,
                                       ...]`` (mapping keys in spec order; property ``...type``)
enum violation                         ``Must be one of the following values: [a, b]``
string too long / too short            ``Length must be between {min} and {max}``
array too long / too short             ``Size must be between {min} and {max}``
wrong JSON type                        ``Must be of type {string|integer|number|boolean|array|
                                       object}`` (``... or null`` when nullable)
number below ``minimum``               ``Must be greater than or equal to {minimum}``
number above ``maximum``               ``Must be less than or equal to {maximum}``
pattern mismatch                       ``Must match "{pattern}"``
=====================================  =========================================================

An unset bound is shown as Java bean validation (whose wording LINE's messages follow) would
show it: minimum ``0``, maximum ``2147483647``.  Real LINE answers a wrong JSON type with a top-level ``The property, ..., in the request body is
invalid`` message instead of a detail; here it is reported as a detail so that every problem
has a property path.  At most one detail is reported per property path (``May not be empty``
wins over other problems at the same path).  Property paths look like
``messages[0].template.actions[1].uri``.

A ``messages`` list of the wrong size gets the size detail first and then the details of its
items.  Placeholders such as ``{{name}}`` inside strings are just strings; nothing here needs
the network.

Speed: the document is compiled once, lazily, on first use (about 75 ms including the YAML
parse).  jsonschema is the authority that explains invalid messages, but it builds a validator
object per subschema, so valid messages are first checked by closures compiled from the same
document (see ``_FastCompiler``): about 0.1 ms for five buttons templates, against about 2 ms
when jsonschema has to explain five invalid ones.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "ErrorDetail",
    "MAX_MESSAGES",
    "MAX_NESTING",
    "MIN_MESSAGES",
    "error_body",
    "nesting",
    "message_types",
    "validate_message",
    "validate_messages",
]

MIN_MESSAGES = 1
MAX_MESSAGES = 5
# Objects and arrays inside one message object. A real flex bubble nests about a dozen levels;
# hundreds would only exhaust the validator's stack (a 500) on the way to LINE's refusal.
MAX_NESTING = 64

_INT_MAX = 2147483647  # Java's Integer.MAX_VALUE, the implicit upper bound of LINE's size checks
_SPEC_RESOURCE = "line_openapi/messaging-api.yml"
_SCHEMA_URI = "urn:openmaac:line-messaging-api"
_REF_PREFIX = "#/components/schemas/"

MAY_NOT_BE_EMPTY = "May not be empty"

# Keys that carry no validation meaning; dropped to keep the compiled schema lean.
_DROPPED_KEYS = frozenset({
    "description", "example", "externalDocs", "x-enum-descriptions", "x-enum-varnames",
    "discriminator", "format", "default", "nullable",
})

# Limits LINE enforces but the OpenAPI document does not state (LINE Messaging API reference).
_TEXT_MAX = 5000
_ALT_TEXT_MAX = 1500
_FLEX_CAROUSEL_MAX = 12
_TEMPLATE_CAROUSEL_MAX = 10
_QUICK_REPLY_MAX = 13


@dataclass(frozen=True)
class ErrorDetail:
    message: str
    property: str


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def validate_messages(messages: object) -> list[ErrorDetail]:
    """Validate a request's ``messages`` array as LINE's push/multicast/... endpoints would.

    Returns an empty list when the array is acceptable.
    """
    if not isinstance(messages, list):
        return [_size_detail("messages", MIN_MESSAGES, MAX_MESSAGES)]
    details: list[ErrorDetail] = []
    if not MIN_MESSAGES <= len(messages) <= MAX_MESSAGES:
        details.append(_size_detail("messages", MIN_MESSAGES, MAX_MESSAGES))
    for index, message in enumerate(messages):
        details.extend(validate_message(message, index))
    return details


def validate_message(message: object, index: int = 0) -> list[ErrorDetail]:
    """Validate one message object; property paths are prefixed with ``messages[index]``."""
    if nesting(message) > MAX_NESTING:
        # judged before the (recursive) schema walk, which would exhaust Python's stack
        return [ErrorDetail(f"Must not be nested more than {MAX_NESTING} levels deep", f"messages[{index}]")]
    compiled = _compiled()
    if compiled.is_valid(message):
        return []
    return _collect(compiled.validator.iter_errors(message), f"messages[{index}]")


def nesting(value: object) -> int:
    """How deep objects and arrays nest in ``value`` (iteratively: any depth is safe to measure)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def error_body(details: list[ErrorDetail]) -> dict[str, Any]:
    """LINE's 400 body: ``{"message": "The request body has N error(s)", "details": [...]}``.

    ``details`` is omitted when empty, as in LINE's ``ErrorResponse``.
    """
    body: dict[str, Any] = {"message": f"The request body has {len(details)} error(s)"}
    if details:
        body["details"] = [{"message": d.message, "property": d.property} for d in details]
    return body


def message_types() -> tuple[str, ...]:
    """The message ``type`` values the spec knows, in spec order."""
    return _compiled().message_types


# --------------------------------------------------------------------------------------------
# Error formatting
# --------------------------------------------------------------------------------------------

def _size_detail(prop: str, lo: int, hi: int) -> ErrorDetail:
    return ErrorDetail(f"Size must be between {lo} and {hi}", prop)


def _one_of_message(values: Iterable[object]) -> str:
    return "Must be one of the following values: [" + ", ".join(_fmt(v) for v in values) + "]"


def _fmt(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _format_path(prefix: str, path: Iterable[object]) -> str:
    parts = [prefix]
    for element in path:
        if isinstance(element, int):
            parts.append(f"[{element}]")
        else:
            parts.append(f".{element}")
    return "".join(parts)


def _message_for(error: ValidationError) -> str:
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword in ("minItems", "maxItems"):
        return f"Size must be between {schema.get('minItems', 0)} and {schema.get('maxItems', _INT_MAX)}"
    if keyword == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)  # type: ignore[arg-type]
        return "Must be of type " + " or ".join(str(n) for n in names)
    if keyword == "enum":
        return _one_of_message(error.validator_value)  # type: ignore[arg-type]
    if keyword == "const":
        return _one_of_message([error.validator_value])
    if keyword == "minimum":
        return f"Must be greater than or equal to {_fmt(error.validator_value)}"
    if keyword == "maximum":
        return f"Must be less than or equal to {_fmt(error.validator_value)}"
    if keyword == "pattern":
        return f'Must match "{error.validator_value}"'
    return error.message  # our own keywords already carry LINE-style text


def _collect(errors: Iterator[ValidationError], prefix: str) -> list[ErrorDetail]:
    by_path: dict[str, ErrorDetail] = {}
    for error in errors:
        prop = _format_path(prefix, error.absolute_path)
        message = _message_for(error)
        existing = by_path.get(prop)
        if existing is None or (message == MAY_NOT_BE_EMPTY and existing.message != MAY_NOT_BE_EMPTY):
            by_path[prop] = ErrorDetail(message, prop)
    return list(by_path.values())


# --------------------------------------------------------------------------------------------
# Custom keywords
# --------------------------------------------------------------------------------------------

def _utf16_len(text: str) -> int:
    if text and max(text) > "\uffff":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def _length_keyword(validator: Any, bounds: list[int], instance: Any, schema: dict[str, Any]) -> Iterator[
        ValidationError]:
    if not isinstance(instance, str):
        return
    lo, hi = bounds
    if len(instance) > hi or not lo <= _utf16_len(instance) <= hi:
        yield ValidationError(f"Length must be between {lo} and {hi}")


def _not_empty_keyword(validator: Any, enabled: bool, instance: Any, schema: dict[str, Any]) -> Iterator[
        ValidationError]:
    if enabled and instance == "":
        yield ValidationError(MAY_NOT_BE_EMPTY)


def _required_keyword(validator: Any, required: list[str], instance: Any, schema: dict[str, Any]) -> Iterator[
        ValidationError]:
    if not isinstance(instance, dict):
        return
    for prop in required:
        if instance.get(prop) is None:
            yield ValidationError(MAY_NOT_BE_EMPTY, path=(prop,))


def _additional_properties_keyword(validator: Any, extra: Any, instance: Any, schema: dict[str, Any]) -> Iterator[
        ValidationError]:
    # jsonschema's own version walks a set, so the order of details would change from run to run.
    if not isinstance(instance, dict) or extra is True:
        return
    known = schema.get("properties", {})
    for key, value in instance.items():
        if key in known:
            continue
        if extra is False:
            yield ValidationError("Unknown property", path=(key,))
        else:
            yield from validator.descend(value, extra, path=key)


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Compiled:
    validator: Any  # jsonschema validator: the authority, used to explain invalid messages
    is_valid: Callable[[Any], bool]  # fast pre-check compiled from the same schemas
    message_types: tuple[str, ...]


def _load_spec() -> dict[str, Any]:
    text = resources.files("openmaac.channels").joinpath(_SPEC_RESOURCE).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise ValueError(f"unexpected $ref {ref!r}")
    return ref[len(_REF_PREFIX):]


def _convert(node: Any, dispatch_name: dict[str, str], in_all_of: bool = False) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12 with the rewrites described in the docstring."""
    if isinstance(node, list):
        return [_convert(item, dispatch_name, in_all_of) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        # OpenAPI 3.0 ignores siblings of $ref.
        name = _ref_name(node["$ref"])
        if not in_all_of and name in dispatch_name:
            name = dispatch_name[name]
        return {"$ref": _REF_PREFIX + name}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or key in ("minLength", "maxLength"):
            continue
        if key == "properties":
            out[key] = {prop: _convert(sub, dispatch_name) for prop, sub in value.items()}
        elif key == "allOf":
            out[key] = [_convert(sub, dispatch_name, in_all_of=True) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _convert(value, dispatch_name)
        elif key in ("anyOf", "oneOf"):
            out[key] = [_convert(sub, dispatch_name) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if "minLength" in node or "maxLength" in node:
        out["x-length"] = [int(node.get("minLength", 0)), int(node.get("maxLength", _INT_MAX))]
    return out


def _property(schemas: dict[str, Any], name: str, prop: str) -> dict[str, Any]:
    schema = schemas[name]
    for candidate in [schema, *schema.get("allOf", [])]:
        props = candidate.get("properties", {})
        if prop in props:
            found: dict[str, Any] = props[prop]
            return found
    raise KeyError(f"{name}.{prop} not found in the LINE OpenAPI document")


def _add_hand_limits(schemas: dict[str, Any]) -> None:
    for name in ("TextMessage", "TextMessageV2"):
        text = _property(schemas, name, "text")
        text["x-length"] = [0, _TEXT_MAX]
        text["x-not-empty"] = True
    for name in ("TemplateMessage", "FlexMessage", "ImagemapMessage"):
        alt = _property(schemas, name, "altText")
        alt["x-length"] = [0, _ALT_TEXT_MAX]
        alt["x-not-empty"] = True
    bubbles = _property(schemas, "FlexCarousel", "contents")
    bubbles["minItems"], bubbles["maxItems"] = 1, _FLEX_CAROUSEL_MAX
    for name in ("CarouselTemplate", "ImageCarouselTemplate"):
        columns = _property(schemas, name, "columns")
        columns["minItems"], columns["maxItems"] = 1, _TEMPLATE_CAROUSEL_MAX
    quick = _property(schemas, "QuickReply", "items")
    quick["maxItems"] = min(int(quick.get("maxItems", _QUICK_REPLY_MAX)), _QUICK_REPLY_MAX)


def _build() -> _Compiled:
    spec = _load_spec()
    raw: dict[str, Any] = spec["components"]["schemas"]

    # Discriminated bases and, for each subtype, the discriminator values that select it.
    bases: dict[str, tuple[str, dict[str, str]]] = {}
    subtype_keys: dict[str, list[tuple[str, str]]] = {}
    for name, schema in raw.items():
        disc = schema.get("discriminator")
        if not disc or "mapping" not in disc:
            continue
        mapping = {key: _ref_name(ref) for key, ref in disc["mapping"].items()}
        bases[name] = (disc["propertyName"], mapping)
        for key, target in mapping.items():
            subtype_keys.setdefault(target, []).append((name, key))

    dispatch_name = {name: f"{name}__dispatch" for name in bases}
    for sub, owners in subtype_keys.items():
        if sub not in bases and len({base for base, _ in owners}) == 1:
            dispatch_name[sub] = f"{sub}__dispatch"

    schemas: dict[str, Any] = {name: _convert(schema, dispatch_name) for name, schema in raw.items()}
    _add_hand_limits(schemas)

    for name, synthetic in dispatch_name.items():
        if name in bases:
            prop, mapping = bases[name]
        else:
            base = subtype_keys[name][0][0]
            prop = bases[base][0]
            mapping = {key: name for _, key in subtype_keys[name]}
        if synthetic in schemas:
            raise ValueError(f"name clash: {synthetic}")
        schemas[synthetic] = {
            "type": "object",
            "x-dispatch": {
                "propertyName": prop,
                "mapping": mapping,
                "message": _one_of_message(mapping),
            },
        }

    def dispatch_keyword(validator: Any, spec: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[
            ValidationError]:
        if not isinstance(instance, dict):
            return  # reported by "type": "object"
        prop = spec["propertyName"]
        value = instance.get(prop)
        target = spec["mapping"].get(value) if isinstance(value, str) else None
        if target is None:
            yield ValidationError(spec["message"], path=(prop,))
            return
        yield from validator.descend(instance, schemas[target])

    validator_class = validators.extend(
        Draft202012Validator,
        {
            "required": _required_keyword,
            "additionalProperties": _additional_properties_keyword,
            "x-dispatch": dispatch_keyword,
            "x-length": _length_keyword,
            "x-not-empty": _not_empty_keyword,
        },
    )
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _SCHEMA_URI,
        "$ref": _REF_PREFIX + dispatch_name["Message"],
        "components": {"schemas": schemas},
    }
    registry: Registry[Any] = Registry().with_resource(_SCHEMA_URI, DRAFT202012.create_resource(document))
    validator = validator_class(document, registry=registry)
    fast = _FastCompiler(schemas)
    return _Compiled(
        validator=validator,
        is_valid=fast.entry(dispatch_name["Message"]),
        message_types=tuple(bases["Message"][1]),
    )


# --------------------------------------------------------------------------------------------
# Fast pre-check
# --------------------------------------------------------------------------------------------
#
# jsonschema builds a new validator object for every subschema it descends into, which costs
# a few microseconds each; a five-message template needs hundreds of them (about 2 ms).  Valid
# messages are by far the common case, so the compiled schemas are also turned into plain
# closures that only answer "valid or not".  Only when they say "not valid" does jsonschema run
# to produce the error details.  The closures implement exactly the keywords the compiled
# document uses (an unknown keyword fails the build) with the same meaning; the tests check
# that both engines agree.

_Check = Callable[[Any], bool]


def _always(_instance: Any) -> bool:
    return True


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


_TYPE_CHECKS: dict[str, _Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "integer": _is_integer,
    "number": _is_number,
    "null": lambda x: x is None,
}


class _FastCompiler:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self._compiled: dict[str, _Check] = {}
        for name, schema in schemas.items():
            self._compiled[name] = self._node(schema)

    def entry(self, name: str) -> _Check:
        return self._compiled[name]

    def _ref(self, ref: str) -> _Check:
        name = _ref_name(ref)
        compiled = self._compiled

        def check(x: Any) -> bool:
            return compiled[name](x)

        return check

    def _node(self, node: dict[str, Any]) -> _Check:
        checks: list[_Check] = []
        for key, value in node.items():
            checks.append(self._keyword(key, value, node))
        checks = [c for c in checks if c is not _always]
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        first, *rest = checks

        def check(x: Any) -> bool:
            if not first(x):
                return False
            for c in rest:
                if not c(x):
                    return False
            return True

        return check

    def _keyword(self, key: str, value: Any, node: dict[str, Any]) -> _Check:
        if key == "$ref":
            return self._ref(value)
        if key == "type":
            names = [value] if isinstance(value, str) else list(value)
            type_checks = [_TYPE_CHECKS[n] for n in names]
            if len(type_checks) == 1:
                return type_checks[0]
            return lambda x: any(t(x) for t in type_checks)
        if key == "enum":
            allowed = list(value)
            if all(isinstance(v, str) for v in allowed if v is not None):
                strings = frozenset(v for v in allowed if v is not None)
                if None in allowed:
                    return lambda x: x is None or (isinstance(x, str) and x in strings)
                return lambda x: isinstance(x, str) and x in strings
            return lambda x: any(type(x) is type(v) and x == v for v in allowed)
        if key == "required":
            required = list(value)
            return lambda x: not isinstance(x, dict) or all(x.get(p) is not None for p in required)
        if key == "properties":
            props = {p: self._node(sub) for p, sub in value.items()}
            props = {p: c for p, c in props.items() if c is not _always}
            extra = node.get("additionalProperties", True)
            if extra is not True and not isinstance(extra, dict):
                raise ValueError("unsupported additionalProperties")
            if not props:
                return _always

            def check_properties(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                for k, v in x.items():
                    c = props.get(k)
                    if c is not None and not c(v):
                        return False
                return True

            return check_properties
        if key == "additionalProperties":
            if value is True:
                return _always
            if not isinstance(value, dict):
                raise ValueError("unsupported additionalProperties")
            known = frozenset(node.get("properties", ()))
            sub = self._node(value)
            return lambda x: not isinstance(x, dict) or all(sub(v) for k, v in x.items() if k not in known)
        if key == "items":
            sub = self._node(value)
            if sub is _always:
                return _always
            return lambda x: not isinstance(x, list) or all(sub(v) for v in x)
        if key == "minItems":
            return lambda x: not isinstance(x, list) or len(x) >= value
        if key == "maxItems":
            return lambda x: not isinstance(x, list) or len(x) <= value
        if key == "minimum":
            return lambda x: not _is_number(x) or x >= value
        if key == "maximum":
            return lambda x: not _is_number(x) or x <= value
        if key == "pattern":
            regex = re.compile(value)
            return lambda x: not isinstance(x, str) or regex.search(x) is not None
        if key == "allOf":
            subs = [self._node(sub) for sub in value]
            return lambda x: all(s(x) for s in subs)
        if key == "x-length":
            lo, hi = value
            return lambda x: not isinstance(x, str) or (len(x) <= hi and lo <= _utf16_len(x) <= hi)
        if key == "x-not-empty":
            return (lambda x: x != "") if value else _always
        if key == "x-dispatch":
            prop = value["propertyName"]
            mapping = dict(value["mapping"])
            compiled = self._compiled

            def check_dispatch(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                tag = x.get(prop)
                target = mapping.get(tag) if isinstance(tag, str) else None
                return target is not None and compiled[target](x)

            return check_dispatch
        raise ValueError(f"keyword {key!r} is not supported by the fast pre-check")


@functools.cache
def _compiled() -> _Compiled:
    return _build()

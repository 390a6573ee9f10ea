"""Finding and replacing the URLs, images and actions inside LINE message objects.

Pure functions over the JSON of LINE messages (no database):

- **click targets**: the ``uri`` of every URI action (buttons, flex, quick replies, rich
  templates), the ``linkUri`` of imagemap actions, ``altUri.desktop``, and every http(s) URL
  written in a text message (LINE makes those tappable);
- **images**: every image the LINE client loads to show the message (``previewImageUrl``,
  ``originalContentUrl`` of image messages, ``thumbnailImageUrl``, ``imageUrl``, flex image
  and icon ``url``, flex video ``previewUrl``, imagemap ``baseUrl``);
- **actions**: message actions (the user "says" their text) and postback / datetime-picker
  actions (a postback event with their data) -- the taps the report's ``messages`` counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'{}\\^`|]+", re.IGNORECASE)
_TRAILING = ".,;:!?"

Path = tuple[Any, ...]


@dataclass(frozen=True)
class ImageField:
    path: Path
    imagemap: bool  # LINE appends /{width} to an imagemap baseUrl (it has no extension)


@dataclass(frozen=True)
class Action:
    kind: str  # message | postback
    value: str  # the text the tap sends, or the postback data
    keyword: str  # what the report shows


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _walk(value: Any, path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def image_fields(messages: list[dict[str, Any]], *, templated: bool = False) -> list[ImageField]:
    """Every image URL field, in document order (``templated``: any string, e.g. ``{{img}}``)."""
    found: list[ImageField] = []
    is_url = (lambda v: isinstance(v, str) and bool(v)) if templated else _is_http
    for path, node in _walk(messages):
        kind = node.get("type")
        keys: tuple[str, ...] = ()
        if kind == "image":
            keys = ("previewImageUrl", "originalContentUrl", "url")
        elif kind == "video":
            keys = ("previewImageUrl", "previewUrl")
        elif kind == "icon":
            keys = ("url",)
        elif kind == "imagemap" and is_url(node.get("baseUrl")):
            found.append(ImageField((*path, "baseUrl"), True))
        keys = (*keys, "thumbnailImageUrl", "imageUrl")
        for key in keys:
            if is_url(node.get(key)):
                found.append(ImageField((*path, key), False))
    return found


def uri_fields(messages: list[dict[str, Any]]) -> list[Path]:
    """Every field that is one tappable URL (URI actions), in document order."""
    found: list[Path] = []
    for path, node in _walk(messages):
        if node.get("type") != "uri":
            continue
        for key in ("uri", "linkUri"):
            if _is_http(node.get(key)):
                found.append((*path, key))
        alt = node.get("altUri")
        if isinstance(alt, dict) and _is_http(alt.get("desktop")):
            found.append((*path, "altUri", "desktop"))
    return found


def _text_paths(messages: list[dict[str, Any]]) -> list[Path]:
    paths: list[Path] = []
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("type") == "text":
            if isinstance(message.get("text"), str):
                paths.append((index, "text"))
        if isinstance(message, dict) and message.get("type") == "textV2":
            if isinstance(message.get("text"), str):
                paths.append((index, "text"))
    return paths


def urls_in_text(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of each URL in ``text`` (trailing punctuation left out)."""
    found = []
    for match in URL_IN_TEXT.finditer(text):
        url = match.group(0)
        while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
            url = url[:-1]
        if len(url) > len("https://"):
            found.append((match.start(), match.start() + len(url), url))
    return found


def get(messages: Any, path: Path) -> Any:
    node = messages
    for key in path:
        node = node[key]
    return node


def _set(messages: Any, path: Path, value: Any) -> None:
    node = messages
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def click_urls(messages: list[dict[str, Any]]) -> list[str]:
    """Every distinct click target, in document order."""
    seen: dict[str, None] = {}
    for path in uri_fields(messages):
        seen.setdefault(get(messages, path), None)
    for path in _text_paths(messages):
        for _start, _end, url in urls_in_text(get(messages, path)):
            seen.setdefault(url, None)
    return list(seen)


def actions(messages: list[dict[str, Any]]) -> list[Action]:
    """Every distinct message / postback action, in document order."""
    seen: dict[tuple[str, str], Action] = {}
    for _path, node in _walk(messages):
        kind = node.get("type")
        if kind == "message" and isinstance(node.get("text"), str) and node["text"]:
            action = Action("message", node["text"], node["text"])
        elif kind in ("postback", "datetimepicker") and isinstance(node.get("data"), str) and node["data"]:
            keyword = node.get("displayText") or node.get("text") or node.get("label") or node["data"]
            action = Action("postback", node["data"], str(keyword))
        else:
            continue
        seen.setdefault((action.kind, action.value), action)
    return list(seen.values())


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def rewrite(messages: list[dict[str, Any]], *, click: Callable[[str], str] | None,
            image: Callable[[int, str, bool], str] | None) -> list[dict[str, Any]]:
    """A copy of ``messages`` with click targets and images replaced.

    ``click(url)`` answers the tracked URL of a destination; ``image(index, url, imagemap)``
    the tracked URL of the ``index``-th image field (``image_fields`` order).
    """
    import copy

    out = copy.deepcopy(messages)
    if image is not None:
        for index, field in enumerate(image_fields(out)):
            _set(out, field.path, image(index, get(out, field.path), field.imagemap))
    if click is not None:
        for path in uri_fields(out):
            _set(out, path, click(get(out, path)))
        for path in _text_paths(out):
            message = out[path[0]]
            text = message["text"]
            spans = urls_in_text(text)
            if not spans:
                continue
            pieces: list[str] = []
            shifts: list[tuple[int, int]] = []  # (utf-16 position, delta) of each replacement
            last = 0
            for start, end, url in spans:
                replacement = click(url)
                pieces.append(text[last:start])
                pieces.append(replacement)
                shifts.append((_utf16_len(text[:start]), len(replacement) - (end - start)))
                last = end
            pieces.append(text[last:])
            message["text"] = "".join(pieces)
            for emoji in message.get("emojis") or []:
                if isinstance(emoji, dict) and isinstance(emoji.get("index"), int):
                    emoji["index"] += sum(delta for position, delta in shifts if position < emoji["index"])
    return out


def image_extension(url: str) -> str | None:
    """The image extension the URL's path ends with (``.jpg``/``.jpeg``/``.png``), if any."""
    try:
        path = urlsplit(url).path.lower()
    except ValueError:
        return None
    for extension in IMAGE_EXTENSIONS:
        if path.endswith(extension):
            return extension
    return None

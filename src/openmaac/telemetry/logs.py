"""Operators' logs: one handler on stderr, JSON (one object per line) or human text.

``configure_logging(settings)`` is called once, early, by ``openmaac serve`` and ``openmaac
worker``. Every line carries the context of ``telemetry.context`` (request id, organisation,
job, webhook delivery). openmaac's own loggers (``openmaac.*``) and uvicorn's server lines
follow ``OPENMAAC_LOG_LEVEL``; every other library is held at WARNING whatever the level,
because at INFO or DEBUG some of them write what must not reach a log (SQLAlchemy writes each
statement with its parameters: token hashes, channel secrets, webhook secrets).

Nothing secret is logged on purpose; as a safety net the formatter masks what looks like a
bearer token (``Bearer …``), an openmaac access token (its ``om_`` prefix) and the password
of a URL (``scheme://user:password@``) in every line, traceback included.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Protocol

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

from openmaac.telemetry.context import current_fields

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
# The prefix of openmaac's access tokens (auth/service.py TOKEN_PREFIX; a test keeps them equal:
# telemetry imports no domain).
TOKEN_PREFIX = "om_"
REDACTED = "[REDACTED]"
CONTEXT_FIELDS = ("request_id", "organization_id", "job_kind", "job_id", "webhook_endpoint", "attempt")
OWN_LOGGERS = ("openmaac", "uvicorn.error")

_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(://[^/\s:@\"']*:)[^/\s@\"']+@")


class LogSettings(Protocol):
    log_format: str
    log_level: str


def _token_pattern(prefix: str) -> re.Pattern[str]:
    # the displayed 10-character prefix (``openmaac token revoke``) stays readable; more is masked
    return re.compile(rf"\b{re.escape(prefix)}[A-Za-z0-9_-]{{8,}}")


_TOKEN = _token_pattern(TOKEN_PREFIX)


# What each of the three patterns needs to find anything: a line without any of these (nearly
# every access line) is returned after one search instead of three substitutions
_MAYBE_SECRET = re.compile(rf"(?i)bearer|{re.escape(TOKEN_PREFIX)}|://")


def redact(text: str) -> str:
    """``text`` with bearer tokens, openmaac access tokens and URL passwords masked."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    return _substitute_secrets(text)


def _substitute_secrets(text: str) -> str:
    """The three patterns' substitutions, whatever ``text`` holds."""
    text = _BEARER.sub(lambda match: match.group(1) + REDACTED, text)
    text = _TOKEN.sub(TOKEN_PREFIX + REDACTED, text)
    return _URL_PASSWORD.sub(lambda match: match.group(1) + REDACTED + "@", text)


class ContextFilter(logging.Filter):
    """Puts the current context's fields on every record passing the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_fields().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLineFormatter(OrjsonFormatter):
    """``{"time", "level", "logger", "message", <context>, <extra>}``, one line per record:
    encoded by orjson (UTF-8, no spaces), as openmaac encodes its answers."""

    def __init__(self) -> None:
        super().__init__(["levelname", "name", "message"], rename_fields={"levelname": "level", "name": "logger"},
                         # uvicorn's copy of its message with terminal colours
                         reserved_attrs=[*RESERVED_ATTRS, "color_message"])

    def jsonify_log_record(self, log_data: Any) -> str:
        try:
            return super().jsonify_log_record(log_data)
        except TypeError:
            # what orjson refuses and the standard library escapes: a lone surrogate (a file name
            # undecodable as UTF-8), an integer beyond 64 bits; the line is kept, as ASCII JSON
            return json.dumps(log_data, default=self.json_default)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = _iso_time(record)
        super().add_fields(log_data, record, message_dict)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...`` for a person at a terminal."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name))
        if context:
            line += f"  [{context}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact(line)


def level_of(name: str) -> int:
    upper = (name or "INFO").strip().upper()
    if upper not in LEVELS:
        raise ValueError(f"OPENMAAC_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {name!r}")
    return int(logging.getLevelName(upper))


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLineFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"OPENMAAC_LOG_FORMAT must be json or text, not {log_format!r}")


def configure_logging(settings: LogSettings) -> None:
    """One handler on stderr for the whole process (replacing any other on the root logger).
    A misspelt setting ends the command with one line naming it (no traceback)."""
    try:
        level = level_of(settings.log_level)
        formatter = formatter_for(settings.log_format)
    except ValueError as exc:
        raise SystemExit(f"openmaac: {exc}") from None
    # No formatter of ours prints a record's source line, thread or process, so records need not
    # carry them: the Logging HOWTO's "Optimization" settings (a record costs ~30% less; every
    # request's access line makes one)
    logging._srcfile = None  # type: ignore[attr-defined]  # no sys._getframe walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # the access log is openmaac.access (web request-id middleware); uvicorn's own is off
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers = []
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
    logging.captureWarnings(True)


def uses_json(settings: LogSettings) -> bool:
    return settings.log_format == "json"

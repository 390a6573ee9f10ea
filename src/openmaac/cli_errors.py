"""What the command line says when it refuses: sentences on stderr and exit code 1, never a
traceback or the repr of a dict.

Exit codes: 0 done, 1 refused or failed (bad data, unknown organisation or id, unreachable
database, unreadable file), 2 usage (Typer's: unknown option, missing or malformed argument).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer


def in_words(body: Any) -> list[str]:
    """An error body of the API as lines: ``{"detail": "x"}`` is ``x``; Django REST framework's
    field errors ``{"data": {"0": {"mobile": ["Enter a valid phone number."]}}}`` are
    ``data[0].mobile: Enter a valid phone number.``; whole-body errors carry no field."""
    return [f"{path}: {message}" if path else message for path, message in _walk(body, "")]


def _walk(body: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(body, dict):
        if set(body) == {"detail"}:
            yield from _walk(body["detail"], path)
            return
        for key, value in body.items():
            name = str(key)
            if name == "non_field_errors":
                child = path
            elif name.isdigit():
                child = f"{path}[{name}]"
            else:
                child = f"{path}.{name}" if path else name
            yield from _walk(value, child)
    elif isinstance(body, list | tuple):
        for item in body:
            yield from _walk(item, path)
    elif body is not None:
        yield path, str(body)


def say(*lines: str) -> None:
    """Lines on stderr as they are (no Rich markup, no wrapping)."""
    sys.stderr.write("".join(line + "\n" for line in lines))


def fail(*lines: str) -> NoReturn:
    say(*lines)
    raise typer.Exit(1)


def fail_api(exc: Exception, *, not_found: str | None = None) -> NoReturn:
    """A service's refusal (``APIError``) in words, exit 1; ``not_found`` replaces DRF's bare
    "Not found." with what was not found. Anything else is re-raised."""
    from openmaac.web.errors import APIError

    if not isinstance(exc, APIError):
        raise exc
    if exc.status_code == 404 and not_found and exc.body == {"detail": "Not found."}:
        fail(not_found)
    fail(*(exc.text.splitlines() if exc.text is not None else in_words(exc.body)))


class CommandLine(typer.Typer):
    """The last word on errors no command caught: a refusal, an unreachable database or an
    unreadable file is one sentence and exit code 1."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        from openmaac.common.tabular import TabularError
        from openmaac.web.errors import APIError

        try:
            return super().__call__(*args, **kwargs)
        except APIError as exc:
            lines = exc.text.splitlines() if exc.text is not None else in_words(exc.body)
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            lines = [f"the database refused or could not be reached: {reason}"]
        except TabularError as exc:
            lines = [str(exc)]
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            lines = [f"{where}{exc.strerror or exc}"]
        say(*lines)
        sys.exit(1)

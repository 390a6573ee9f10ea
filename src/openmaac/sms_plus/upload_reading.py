"""Reading an SMS+ manual-upload list in a child process.

Parsing a file (CSV decoding, the pure-Python XLSX cell parser) and normalising each phone
number costs about 100–250 µs of CPU per row. Done in the server process it would hold the
interpreter lock against every other request for minutes on a million-row list, so
``openmaac.sms_plus.uploads`` runs ``read_list`` in a child process started with "spawn"
(the server is multi-threaded: it is never forked) and only inserts the prepared rows.

This module is that child's entry point: it imports only the table reader and the phone
helper, never the web or database layers. It sends over ``out`` (a bounded queue, so a
child reading faster than the database stores waits rather than filling memory):

- ``("header", columns, phone_index)`` once the header and the phone column are accepted;
- ``("rows", [(row_number, phone, values), ...])`` for every ``chunk`` accepted rows;
- ``("done", imported, invalid_count, invalid_rows, preview)`` at the end;
- or, instead of what is left, ``("refused", {"field": ["message"]})`` for a file the API
  answers with 400, or ``("failed", traceback_text)`` for anything unexpected.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

from openmaac.common import tabular
from openmaac.common.phones import to_e164

PHONE_COLUMNS = ("phone_number", "phone", "mobile", "電話", "手機", "手機號碼", "電話號碼")
# the same test as openmaac.sms_plus.service.SHA256_HEX (not imported: it would pull in the service)
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class Refused(Exception):
    """A file the API refuses with 400: ``errors`` is the DRF-style body."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def phone_index(columns: list[str], phone_column: str | None) -> int:
    if phone_column:
        if phone_column not in columns:
            raise Refused({"phone_column": [f'"{phone_column}" is not a column of the file.']})
        return columns.index(phone_column)
    lowered = [column.lower() for column in columns]
    index = next((lowered.index(c) for c in PHONE_COLUMNS if c in lowered), -1)
    if index < 0:
        raise Refused({"file": ["The file has no phone column (phone_number, phone or mobile); "
                                "name it with phone_column."]})
    return index


def read_list(out: Any, path: str, name: str, limits: tabular.Limits, phone_column: str | None,
              sms_on: bool, region: str, chunk: int, invalid_listed: int) -> None:
    """The child's work (see the module's description); ``out`` is a multiprocessing queue."""
    try:
        with tabular.open_path(path, name, limits) as table:
            columns, rows = table.header_and_rows()
            if not any(columns):
                raise Refused({"file": ["The file has no header row."]})
            index = phone_index(columns, phone_column)
            out.put(("header", columns, index))
            phone_name = columns[index]
            batch: list[tuple[int, str, dict[str, str]]] = []
            invalid: list[dict[str, Any]] = []
            invalid_count = imported = 0
            preview: list[dict[str, str]] = []
            for number, row in rows:
                values = {column: tabular.cell_text(row[i]).strip() for i, column in enumerate(columns)}
                raw_phone = values[phone_name]
                phone = None
                if SHA256_HEX.match(raw_phone) and not sms_on:
                    phone = raw_phone
                elif raw_phone:
                    phone = to_e164(raw_phone, region)
                if phone is None:
                    invalid_count += 1
                    if len(invalid) < invalid_listed:
                        invalid.append({"row": number, "phone_number": raw_phone})
                    continue
                imported += 1
                if len(preview) < 2:
                    preview.append(values)
                batch.append((number, phone, values))
                if len(batch) >= chunk:
                    out.put(("rows", batch))
                    batch = []
            if batch:
                out.put(("rows", batch))
            out.put(("done", imported, invalid_count, invalid, preview))
    except tabular.TabularError as exc:
        out.put(("refused", {"file": [str(exc)]}))
    except Refused as exc:
        out.put(("refused", exc.errors))
    except BaseException:
        out.put(("failed", traceback.format_exc()))

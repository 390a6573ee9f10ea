"""Reading uploaded tables (CSV or XLSX) safely: one reader for every file openmaac takes in.

A file is spooled to disk (never held in memory), then read row by row, so memory stays flat
whatever its length. Everything a hostile or merely unusual file could do is bounded before it
costs anything, and every refusal is one plain sentence (``TabularError``) naming the line or
row, for the API to answer as 400 and the CLI to print:

- **Encoding (CSV).** UTF-8 with or without BOM, UTF-16/UTF-32 with BOM; anything else (Excel
  in Taiwan saves Big5, in China GBK, in Japan Shift_JIS) is recognised by charset-normalizer
  from the lines holding non-ASCII bytes, then decoded strictly: a byte that is not valid in
  that encoding refuses the file naming the encoding and the line, rather than turning names
  into replacement characters that would be sent as SMS.
- **CSV syntax.** A quote opened and never closed, text after a closing quote, a NUL, and a
  row with more (non-blank) cells than the header are refused with the line number where the
  record starts. Cells are at most ``max_cell_chars`` (Excel's own limit, 32,767).
- **XLSX.** Before openpyxl opens the archive, the zip's declared member sizes are checked
  (the decompressor stops at the declared size and a lie fails the CRC), the shared-strings
  part is scanned for its entry count and the size of each entry, and every XML part for the
  longest text between two tags. The first worksheet is then parsed here, fed in small chunks
  to a pull parser that keeps only the current row (openpyxl's own loop keeps every element
  it does not recognise), with openpyxl's cell parser turning cells into values (shared
  strings, numbers, dates by their style). Rows are not padded to the sheet's declared
  dimension, so a tiny file declaring 16,384 columns by 1,048,576 rows costs nothing.
- **Rows.** At most ``max_rows`` data rows and ``max_columns`` columns.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

# Excel's own limit on the characters in one cell.
MAX_CELL_CHARS = 32_767
MAX_COLUMNS = 1_000

# XLSX bounds (checked before openpyxl reads anything).
XLSX_MAX_MEMBERS = 10_000
XLSX_MAX_SHEET_BYTES = 512 * 1024 * 1024  # the first worksheet's XML, decompressed
XLSX_MAX_SHARED_STRINGS_BYTES = 128 * 1024 * 1024  # the shared-strings XML, decompressed
XLSX_MAX_SHARED_STRINGS = 2_000_000  # entries in the shared-strings table (openpyxl holds them all)
XLSX_MAX_SHARED_STRING_BYTES = 256 * 1024  # one shared-strings entry's XML
XLSX_MAX_PART_BYTES = 8 * 1024 * 1024  # any other XML part (workbook, styles, relationships)
XML_MAX_TEXT_RUN = 256 * 1024  # bytes between two '<' in any XML part: one text or one tag
XLSX_MAX_ROW_CHARS = 1024 * 1024  # text in one worksheet row's XML
XLSX_MAX_OTHER_ELEMENTS = 2_000_000  # worksheet elements outside rows (merged cells, links, ...)
XML_CHUNK = 64 * 1024  # smaller than XML_MAX_TEXT_RUN, so only runs across chunks need tracking

READ_BLOCK = 1024 * 1024
DETECTION_SAMPLE = 256 * 1024

_SHEET_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_ROW_TAG = f"{{{_SHEET_MAIN}}}row"
_CONTENT_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"
_SHARED_STRINGS_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_WORKSHEET_TYPES = ("application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml",
                    "application/vnd.ms-excel.worksheet")
_SI_OPENER = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?si[\s/>]")

# Python codec -> the name people know it by (and a superset that decodes what Excel writes).
_SUPERSETS = {"big5": "cp950", "big5hkscs": "big5hkscs", "gb2312": "gb18030", "gbk": "gb18030",
              "shift_jis": "cp932", "euc_kr": "cp949", "ascii": "utf-8"}
_LABELS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf_16_le": "UTF-16LE",
           "utf_16_be": "UTF-16BE", "utf-32": "UTF-32", "utf_32_le": "UTF-32LE", "utf_32_be": "UTF-32BE",
           "cp950": "Big5", "big5hkscs": "Big5-HKSCS", "gb18030": "GB18030 (GBK)", "cp932": "Shift_JIS",
           "cp949": "EUC-KR", "euc_jp": "EUC-JP"}
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class TabularError(ValueError):
    """The file cannot be read as a table: one sentence saying why (and where)."""


class TooLarge(TabularError):
    """The file is larger than the byte limit."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_rows: int  # data rows, after the header
    max_columns: int = MAX_COLUMNS
    max_cell_chars: int = MAX_CELL_CHARS
    kinds: tuple[str, ...] = ("csv", "xlsx")


def cell_text(value: Any) -> str:
    """A cell as text: empty for nothing, whole numbers without ``.0`` (XLSX stores numbers as floats)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def encoding_label(encoding: str) -> str:
    return _LABELS.get(encoding, codecs.lookup(encoding).name.upper())


class Table:
    """An opened file: ``records()`` yields ``(line, cells)`` for every non-blank record (the
    header too); ``header_and_rows()`` reads the first as column names and checks the rest."""

    def __init__(self, path: str, kind: str, limits: Limits, encoding: str | None = None) -> None:
        self.path = path
        self.kind = kind
        self.limits = limits
        self.encoding = encoding
        # what a user calls a record's position: a CSV line, a worksheet row
        self.unit = "line" if kind == "csv" else "row"

    def records(self) -> Iterator[tuple[int, list[Any]]]:
        if self.kind == "csv":
            yield from self._csv_records()
        else:
            yield from _xlsx_records(self.path, self.limits)

    def header_and_rows(self) -> tuple[list[str], Iterator[tuple[int, list[Any]]]]:
        """The column names (the first non-blank record, trimmed; blank names at the end
        dropped) and the data rows, each padded to the header's width. A data row with a
        non-blank cell beyond the header, a repeated column name and too many rows are errors."""
        records = self.records()
        first = next(records, None)
        if first is None:
            return [], iter(())
        line, cells = first
        names = [cell_text(cell).strip().lstrip("\ufeff") for cell in cells]
        while names and not names[-1]:
            names.pop()
        if len(names) > self.limits.max_columns:
            raise TabularError(f"The header has {len(names)} columns; at most {self.limits.max_columns} are allowed.")
        seen: set[str] = set()
        for name in names:
            if name and name in seen:
                raise TabularError(f'Column "{name}" appears twice in the header ({self.unit} {line}).')
            seen.add(name)
        return names, self._rows(records, len(names))

    def _rows(self, records: Iterator[tuple[int, list[Any]]], width: int) -> Iterator[tuple[int, list[Any]]]:
        count = 0
        for line, cells in records:
            if len(cells) > width:
                extra = [cell for cell in cells[width:] if not _blank(cell)]
                if extra:
                    last = max(index for index, cell in enumerate(cells) if not _blank(cell)) + 1
                    raise TabularError(f"{self.unit.capitalize()} {line} has {last} cells, more than the {width} "
                                       "columns of the header.")
                cells = cells[:width]
            elif len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            count += 1
            if count > self.limits.max_rows:
                raise TabularError(f"Ensure the file has no more than {self.limits.max_rows} rows.")
            yield line, cells

    def _csv_records(self) -> Iterator[tuple[int, list[Any]]]:
        assert self.encoding is not None
        max_chars = self.limits.max_cell_chars
        label = encoding_label(self.encoding)
        with open(self.path, encoding=self.encoding, errors="strict", newline="") as handle:
            # strict: an unterminated quote at the end and text after a closing quote are errors
            reader = csv.reader(handle, strict=True)
            start = 1
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    raise TabularError(f"The file is not valid {label} text (line {_undecodable_line(self.path, self.encoding)}); "
                                       "save it as CSV UTF-8.") from None
                except csv.Error as exc:
                    raise TabularError(_csv_problem(str(exc), start, max_chars)) from None
                line, start = start, reader.line_num + 1
                if not record or not any(cell.strip() for cell in record):
                    continue
                for cell in record:
                    if len(cell) > max_chars:
                        raise TabularError(f"Line {line}: a cell is longer than {max_chars} characters.")
                yield line, record


def _csv_problem(message: str, line: int, max_chars: int) -> str:
    if "unexpected end of data" in message or "EOF" in message:
        return f"The file is not a valid CSV file: the quoted cell starting on line {line} is never closed."
    if "field larger than field limit" in message:
        return f"Line {line}: a cell is longer than {max_chars} characters."
    if "NUL" in message:
        return f"The file is not a valid CSV file: line {line} contains a NUL character."
    return f"The file is not a valid CSV file: line {line}: {message}."


# -- opening ----------------------------------------------------------------------------------


@contextmanager
def spooled(stream: IO[bytes], limits: Limits) -> Iterator[str]:
    """Spool ``stream`` to a temporary file (refusing more than ``limits.max_bytes``): its path,
    removed afterwards. For a reader in another process to ``open_path``."""
    fd, path = tempfile.mkstemp(prefix="openmaac-upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(READ_BLOCK):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise TooLarge(f"The file is larger than {_size(limits.max_bytes)}.")
                out.write(chunk)
        yield path
    finally:
        with suppress(OSError):
            os.unlink(path)


@contextmanager
def open_upload(stream: IO[bytes], filename: str | None, limits: Limits) -> Iterator[Table]:
    """Spool ``stream`` to a temporary file (refusing more than ``limits.max_bytes``) and open it."""
    with spooled(stream, limits) as path, open_path(path, filename, limits) as table:
        yield table


@contextmanager
def open_path(path: str | Path, filename: str | None, limits: Limits) -> Iterator[Table]:
    """Open a file on disk: XLSX when it is a zip archive, else CSV (its encoding detected)."""
    path = str(path)
    name = (filename or os.path.basename(path)).lower()
    if os.path.getsize(path) > limits.max_bytes:
        raise TooLarge(f"The file is larger than {_size(limits.max_bytes)}.")
    with open(path, "rb") as raw:
        head = raw.read(8)
    if head.startswith(b"PK\x03\x04"):
        if "xlsx" not in limits.kinds:
            raise TabularError("The file is not a CSV file (it is a zip archive, e.g. XLSX); save it as CSV UTF-8.")
        _check_xlsx(path)
        yield Table(path, "xlsx", limits)
        return
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise TabularError("Excel 97-2003 (.xls) files are not supported; save it as XLSX or CSV UTF-8.")
    if name.endswith((".xlsx", ".xlsm")) and "xlsx" in limits.kinds:
        raise TabularError("The file is not a valid XLSX file.")
    yield Table(path, "csv", limits, detect_encoding(path))


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"


def detect_encoding(path: str) -> str:
    """The Python codec to read ``path`` with, or TabularError naming what it is not."""
    with open(path, "rb") as raw:
        head = raw.read(4)
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                return encoding
        raw.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        lines = 0
        try:
            while block := raw.read(READ_BLOCK):
                decoder.decode(block)
                if b"\x00" in block:
                    line = lines + block.count(b"\n", 0, block.index(b"\x00")) + 1
                    raise TabularError(f"The file is not a CSV file: line {line} contains a NUL character.")
                lines += block.count(b"\n")
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        raw.seek(0)
        sample = _detection_sample(raw)
    from charset_normalizer import from_bytes

    # Text without NUL bytes is not UTF-16/32 (their ASCII characters carry a zero byte).
    wide = [] if b"\x00" in sample else ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]
    best = from_bytes(sample, cp_exclusion=wide).best()
    if best is None:
        raise TabularError("The file's text encoding could not be recognised (it is not UTF-8); "
                           "save it as CSV UTF-8.")
    encoding = codecs.lookup(best.encoding).name.replace("-", "_")
    encoding = _SUPERSETS.get(encoding, encoding)
    return {"utf_16": "utf-16", "utf_32": "utf-32", "utf_8": "utf-8"}.get(encoding, encoding)


def _undecodable_line(path: str, encoding: str) -> int:
    """The line holding the first byte ``encoding`` cannot decode (1 if none is found)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    with open(path, "rb") as raw:
        while True:
            block = raw.read(READ_BLOCK)
            state = decoder.getstate()
            try:
                lines += decoder.decode(block, final=not block).count("\n")
            except UnicodeDecodeError as exc:
                decoder.setstate(state)
                with suppress(UnicodeDecodeError):
                    lines += decoder.decode(block[: exc.start]).count("\n")
                return lines + 1
            if not block:
                return 1


def _detection_sample(raw: IO[bytes]) -> bytes:
    """What charset-normalizer looks at: the file's head when it holds NULs (UTF-16/32 without a
    BOM), else its lines holding non-ASCII bytes (a Big5 name deep in an ASCII list decides)."""
    head = raw.read(DETECTION_SAMPLE)
    if b"\x00" in head:
        return head[: len(head) - len(head) % 4]
    raw.seek(0)
    # only those lines: ASCII context made a single short name look like a Western code page
    lines: list[bytes] = []
    size = 0
    tail = b""
    while size < DETECTION_SAMPLE and (block := raw.read(READ_BLOCK)):
        block = tail + block
        cut = block.rfind(b"\n") + 1
        tail = block[cut:]
        for line in re.findall(rb"[^\n]*[\x80-\xff][^\n]*\n", block[:cut]):
            lines.append(line)  # whole lines: a cut character would fit no encoding
            size += len(line)
            if size >= DETECTION_SAMPLE:
                break
    if size < DETECTION_SAMPLE and tail:
        lines.append(tail)
    return b"".join(lines)


# -- XLSX -------------------------------------------------------------------------------------


def _check_xlsx(path: str) -> None:
    """Refuse an archive whose parts would cost openpyxl unbounded memory or time."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > XLSX_MAX_MEMBERS:
                raise TabularError(f"The XLSX file has more than {XLSX_MAX_MEMBERS} parts.")
            sizes = {info.filename: info.file_size for info in members}
            if sizes.get("[Content_Types].xml", XLSX_MAX_PART_BYTES + 1) > XLSX_MAX_PART_BYTES:
                raise TabularError("The file is not a valid XLSX file.")
            shared_strings, worksheets = _xlsx_parts(archive.read("[Content_Types].xml"))
            for info in members:
                name = info.filename
                if name in worksheets:
                    limit = XLSX_MAX_SHEET_BYTES
                elif name in shared_strings:
                    limit = XLSX_MAX_SHARED_STRINGS_BYTES
                elif name.lower().endswith((".xml", ".rels", ".vml")):
                    limit = XLSX_MAX_PART_BYTES
                else:
                    continue  # images and the like: openpyxl does not read them in read-only mode
                if info.file_size > limit:
                    raise TabularError(f"The XLSX file is too large once decompressed ({name} holds "
                                       f"{info.file_size:,} bytes; at most {limit:,}).")
                if name not in worksheets:
                    # worksheets are scanned as they are parsed (_xlsx_records)
                    _scan_part(archive, name, count_strings=name in shared_strings)
    except zipfile.BadZipFile as exc:
        raise TabularError("The file is not a valid XLSX file.") from exc
    except (OSError, EOFError, KeyError, ElementTree.ParseError, NotImplementedError) as exc:
        raise TabularError("The file is not a valid XLSX file.") from exc


def _xlsx_parts(content_types: bytes) -> tuple[set[str], set[str]]:
    root = ElementTree.fromstring(content_types)
    shared: set[str] = set()
    sheets: set[str] = set()
    for override in root.iter(f"{{{_CONTENT_TYPES}}}Override"):
        part = (override.get("PartName") or "").lstrip("/")
        kind = override.get("ContentType") or ""
        if kind == _SHARED_STRINGS_TYPE:
            shared.add(part)
        elif kind.startswith(_WORKSHEET_TYPES):
            sheets.add(part)
    return shared, sheets


def _scan_part(archive: zipfile.ZipFile, name: str, count_strings: bool) -> None:
    """Stream one XML part: no text or tag longer than XML_MAX_TEXT_RUN bytes; for the shared
    strings, at most XLSX_MAX_SHARED_STRINGS entries of at most XLSX_MAX_SHARED_STRING_BYTES."""
    run = strings = offset = last_entry = 0
    pending = b""  # from the last '<' on: a tag is never split between two searches

    def count(data: bytes, base: int) -> None:
        nonlocal strings, last_entry
        for match in _SI_OPENER.finditer(data):
            position = base + match.start()
            if strings and position - last_entry > XLSX_MAX_SHARED_STRING_BYTES:
                raise TabularError("A shared string of the XLSX file is longer than "
                                   f"{XLSX_MAX_SHARED_STRING_BYTES:,} bytes.")
            last_entry = position
            strings += 1
            if strings > XLSX_MAX_SHARED_STRINGS:
                raise TabularError(f"The XLSX file has more than {XLSX_MAX_SHARED_STRINGS:,} shared strings.")

    with archive.open(name) as part:
        while chunk := part.read(XML_CHUNK):
            run = _text_run(run, chunk)
            if count_strings:
                data = pending + chunk
                cut = data.rfind(b"<")
                cut = len(data) if cut < 0 else cut
                count(data[:cut], offset)
                offset += cut
                pending = data[cut:]
    if count_strings:
        count(pending, offset)
        if strings and offset + len(pending) - last_entry > XLSX_MAX_SHARED_STRING_BYTES:
            raise TabularError("A shared string of the XLSX file is longer than "
                               f"{XLSX_MAX_SHARED_STRING_BYTES:,} bytes.")


def _text_run(run: int, chunk: bytes) -> int:
    """The bytes since the last '<' after ``chunk`` (``run`` before it); error past the limit.
    Chunks are smaller than the limit, so only a run crossing chunks can exceed it."""
    first = chunk.find(b"<")
    if first < 0:
        run += len(chunk)
    else:
        if run + first > XML_MAX_TEXT_RUN:
            raise TabularError(f"The XLSX file holds a text or tag longer than {XML_MAX_TEXT_RUN:,} bytes.")
        run = len(chunk) - chunk.rfind(b"<") - 1
    if run > XML_MAX_TEXT_RUN:
        raise TabularError(f"The XLSX file holds a text or tag longer than {XML_MAX_TEXT_RUN:,} bytes.")
    return run


def _xlsx_records(path: str, limits: Limits) -> Iterator[tuple[int, list[Any]]]:
    """The first worksheet's non-blank rows as (row number, values), streaming.

    openpyxl's reader reads the package (relationships, shared strings, workbook, styles: all
    bounded by _check_xlsx) but not the worksheets: its read-only worksheet parses a whole sheet
    that lacks a ``<dimension>`` element just to size it, before the first row.
    """
    try:
        from openpyxl.reader.excel import ExcelReader
        from openpyxl.styles.stylesheet import apply_stylesheet
        from openpyxl.worksheet._reader import WorkSheetParser
    except ImportError as exc:  # pragma: no cover - a dependency
        raise TabularError("XLSX files are not supported here.") from exc
    row = 0
    try:
        with open(path, "rb") as handle:
            reader = ExcelReader(handle, read_only=True, data_only=True)
            try:
                reader.read_manifest()
                reader.read_strings()
                reader.read_workbook()
                apply_stylesheet(reader.archive, reader.wb)
                sheet_path = next((rel.target for _sheet, rel in reader.parser.find_sheets()
                                   if rel.target in reader.valid_files and "chartsheet" not in rel.Type), None)
                if sheet_path is None:
                    return
                workbook = reader.wb
                cells = WorkSheetParser(None, reader.shared_strings, data_only=True, epoch=workbook.epoch,
                                        date_formats=workbook._date_formats,
                                        timedelta_formats=workbook._timedelta_formats)
                with reader.archive.open(sheet_path) as source:
                    seen = 0
                    for element in _row_elements(source, limits):
                        seen += 1
                        if seen > limits.max_rows + 1:
                            raise TabularError(f"Ensure the file has no more than {limits.max_rows} rows.")
                        row, parsed = cells.parse_row(element)
                        cells.row_dimensions.clear()
                        values = _row_values(row, parsed, limits)
                        if values:
                            yield row, values
            finally:
                reader.archive.close()
    except TabularError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything openpyxl or the XML parser trips on is the file's fault
        where = f" (row {row + 1})" if row else ""
        raise TabularError(f"The file is not a valid XLSX file{where}.") from exc


def _row_values(row: int, parsed: list[dict[str, Any]], limits: Limits) -> list[Any]:
    present = [(cell["column"], cell["value"]) for cell in parsed if not _blank(cell["value"])]
    if not present:
        return []
    width = max(column for column, _ in present)
    if width > limits.max_columns:
        raise TabularError(f"Row {row} has a value in column {width}; at most {limits.max_columns} columns "
                           "are allowed.")
    values: list[Any] = [None] * width
    for column, value in present:
        if isinstance(value, str) and len(value) > limits.max_cell_chars:
            raise TabularError(f"Row {row}: a cell is longer than {limits.max_cell_chars} characters.")
        values[column - 1] = value
    return values


def _row_elements(source: IO[bytes], limits: Limits) -> Iterator[ElementTree.Element]:
    """Each ``<row>`` element of a worksheet, complete, as it ends; everything else is dropped
    as soon as it ends. A row holds at most ``8 * max_columns`` elements and
    ``XLSX_MAX_ROW_CHARS`` characters of text, and the part at most XLSX_MAX_SHEET_BYTES."""
    parser: Any = ElementTree.XMLPullParser(events=("start", "end"))
    stack: list[Any] = []
    current: Any = None
    max_elements = 8 * limits.max_columns + 16
    elements = chars = others = 0
    run = total = 0
    while True:
        chunk = source.read(XML_CHUNK)
        total += len(chunk)
        if total > XLSX_MAX_SHEET_BYTES:
            raise TabularError(f"The XLSX file is too large once decompressed (at most {XLSX_MAX_SHEET_BYTES:,} "
                               "bytes of worksheet).")
        run = _text_run(run, chunk)
        if chunk:
            parser.feed(chunk)
        else:
            parser.close()
        event: str
        element: Any
        for event, element in parser.read_events():
            if event == "start":
                stack.append(element)
                if current is not None:
                    elements += 1
                    if elements > max_elements:
                        raise TabularError("A row of the XLSX file has too many cells.")
                elif element.tag == _ROW_TAG:
                    current = element
                    elements = chars = 0
                continue
            stack.pop()
            parent = stack[-1] if stack else None
            if current is None:
                others += 1
                if others > XLSX_MAX_OTHER_ELEMENTS:
                    raise TabularError(f"The XLSX worksheet has more than {XLSX_MAX_OTHER_ELEMENTS:,} elements "
                                       "outside its rows.")
                element.clear()
                if parent is not None:
                    parent.remove(element)
            elif element is current:
                yield current
                current.clear()
                if parent is not None:
                    parent.remove(current)
                current = None
            else:
                chars += len(element.text or "") + len(element.tail or "")
                if chars > XLSX_MAX_ROW_CHARS:
                    raise TabularError(f"A row of the XLSX file holds more than {XLSX_MAX_ROW_CHARS:,} characters.")
        if not chunk:
            return

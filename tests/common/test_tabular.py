"""``openmaac.common.tabular`` directly: what hostile XLSX files cost to refuse (memory traced
while the reader runs), and the exact caps. Through the API: tests/sms_plus/test_sms_plus_upload_files.py."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from openmaac.common import tabular
from sms_plus.test_sms_plus_upload_files import HEADER_ROW, repeated, xlsx

LIMITS = tabular.Limits(max_bytes=25 * 1024 * 1024, max_rows=1_000_000)


def _read_all(path: Path) -> int:
    with tabular.open_path(path, path.name, LIMITS) as table:
        _header, rows = table.header_and_rows()
        return sum(1 for _ in rows)


BOMBS = {
    "sheet": lambda: xlsx(sheet_parts=[HEADER_ROW.encode(), *repeated(b'<row r="2"/>', 600 * 1024 * 1024)],
                          shared=["phone", "name"]),
    "cell": lambda: xlsx(sheet_parts=[HEADER_ROW.encode(), b'<row r="2"><c r="A2" t="inlineStr"><is><t>',
                                      *repeated(b"x", 200 * 1024 * 1024), b"</t></is></c></row>"],
                         shared=["phone", "name"]),
    "shared string": lambda: xlsx(HEADER_ROW, shared_parts=[b"<si><t>phone</t></si><si><t>",
                                                            *repeated(b"y", 100 * 1024 * 1024), b"</t></si>"]),
    "shared strings": lambda: xlsx(HEADER_ROW, shared_parts=repeated(b"<si><t>a</t></si>", 5_000_000 * 17)),
    # a rich-text cell of 100,000 runs: no single text is long, together they are 1 MB+
    "runs": lambda: xlsx(sheet_parts=[HEADER_ROW.encode(), b'<row r="2"><c r="A2" t="inlineStr"><is>',
                                      b"<r><t>0123456789</t></r>" * 200_000, b"</is></c></row>"],
                         shared=["phone", "name"]),
    # 5,000,000 junk elements between rows, which openpyxl's own loop would keep in memory
    "junk": lambda: xlsx(sheet_parts=[HEADER_ROW.encode(), *repeated(b"<x/>", 20 * 1024 * 1024)],
                         shared=["phone", "name"]),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_xlsx_bombs_cost_little_memory(tmp_path: Path, bomb: str) -> None:
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(BOMBS[bomb]())
    assert path.stat().st_size < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        try:
            _read_all(path)
            refused = None
        except tabular.TabularError as exc:
            refused = str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024, (bomb, peak)
    assert refused is not None


def test_caps() -> None:
    assert (tabular.MAX_CELL_CHARS, tabular.MAX_COLUMNS) == (32_767, 1_000)
    assert tabular.XLSX_MAX_SHEET_BYTES == 512 * 1024 * 1024
    assert tabular.XLSX_MAX_SHARED_STRINGS == 2_000_000
    assert tabular.XLSX_MAX_SHARED_STRINGS_BYTES == 128 * 1024 * 1024
    assert tabular.XML_MAX_TEXT_RUN == 256 * 1024
    assert tabular.XLSX_MAX_OTHER_ELEMENTS == 2_000_000

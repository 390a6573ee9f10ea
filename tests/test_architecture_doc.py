"""docs/architecture.md's layout names every folder of the package."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_of_the_package_is_in_the_layout() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"(?<![\w/])([a-z_]+)/", layout))
    folders = {path.name for path in (ROOT / "src" / "openmaac").iterdir()
               if path.is_dir() and not path.name.startswith(("_", "."))}
    assert "contacts" in folders
    assert sorted(folders - named) == []

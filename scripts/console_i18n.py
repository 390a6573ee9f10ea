"""Bring the console's catalogs up to date with its templates and code.

    PYTHONPATH=src .venv/bin/python scripts/console_i18n.py [--check]

extracts every marked string (babel.cfg) and merges them into each language's ``messages.po``
(new ones empty, vanished ones dropped); translate the empty ``msgstr`` entries and commit the
``.po``. ``--check`` changes nothing and fails (exit 1) when a string has no translation. Nothing to compile: the server compiles the ``.po`` files when it first renders a page
(src/openmaac/console/i18n.py).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
LOCALE_DIR = ROOT / "src" / "openmaac" / "console" / "locale"
KEYWORDS = ["-k", "N_", "-k", "gettext:3", "-k", "gettext_for:2"]


def extract(pot: Path) -> None:
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), *KEYWORDS, "--no-location",
                                "--sort-output", "-o", str(pot), str(ROOT)])


def _translated(string: str | tuple[str, ...] | None) -> bool:
    """A plural entry is a tuple of forms: translated when every form is."""
    if isinstance(string, tuple):
        return all(string)
    return bool(string)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    missing = 0
    with tempfile.TemporaryDirectory() as scratch:
        pot = Path(scratch) / "messages.pot"
        extract(pot)
        for po in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/messages.po")):
            language = po.parts[-3]
            if check:
                with open(pot, "rb") as handle:
                    wanted = [m.id for m in read_po(handle) if m.id]
                with open(po, "rb") as handle:
                    have = {m.id: m.string for m in read_po(handle) if m.id}
                untranslated = [message for message in wanted if not _translated(have.get(message))]
            else:
                CommandLineInterface().run(["pybabel", "-q", "update", "-i", str(pot), "-d", str(LOCALE_DIR), "-l",
                                            language, "--no-fuzzy-matching", "--ignore-obsolete", "-w", "100"])
                with open(po, "rb") as handle:
                    untranslated = [m.id for m in read_po(handle) if m.id and not _translated(m.string)]
            missing += len(untranslated)
            print(f"{language}: {len(untranslated)} untranslated")
            for message in untranslated:
                print(f"  {message!r}")
    return 1 if check and missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

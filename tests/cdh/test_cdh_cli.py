"""``openmaac cdh-key create|revoke``, run as real processes on their own data directory."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
    env["OPENMAAC_DATA_DIR"] = str(data_dir)
    return subprocess.run([OPENMAAC, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def key_row(data_dir: Path, key: str) -> tuple[str, str | None] | None:
    with sqlite3.connect(data_dir / "openmaac.sqlite3") as db:
        return db.execute("SELECT prefix, revoked_at FROM cdh_api_keys WHERE key_hash = ?",
                          (hashlib.sha256(key.encode()).hexdigest(),)).fetchone()


def test_create_prints_only_the_key_and_revoke_by_prefix_or_key(tmp_path):
    assert run("token", "create", "--org", "acme", data_dir=tmp_path).returncode == 0
    created = run("cdh-key", "create", "--org", "acme", "--label", "crm", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    [key] = created.stdout.splitlines()
    assert key.startswith("cdh_") and len(key) > 40
    prefix, revoked = key_row(tmp_path, key)  # type: ignore[misc]
    assert prefix == key[:12] and revoked is None
    other = run("cdh-key", "create", "--org", "acme", data_dir=tmp_path).stdout.strip()
    revoked_by_prefix = run("cdh-key", "revoke", key[:12], data_dir=tmp_path)
    assert revoked_by_prefix.returncode == 0 and "revoked 1" in revoked_by_prefix.stderr
    assert key_row(tmp_path, key)[1] is not None  # type: ignore[index]
    assert key_row(tmp_path, other)[1] is None  # type: ignore[index]
    assert run("cdh-key", "revoke", key, data_dir=tmp_path).returncode == 1  # already revoked
    assert run("cdh-key", "revoke", other, data_dir=tmp_path).returncode == 0


def test_unknown_organisation_fails_in_words(tmp_path):
    result = run("cdh-key", "create", "--org", "nobody", data_dir=tmp_path)
    assert result.returncode == 1 and result.stdout == "" and "no organisation named 'nobody'" in result.stderr
    assert run("cdh-key", "create", data_dir=tmp_path).returncode == 2  # --org is required


def test_label_longer_than_255_characters_fails_in_words(tmp_path):
    assert run("token", "create", "--org", "acme", data_dir=tmp_path).returncode == 0
    result = run("cdh-key", "create", "--org", "acme", "--label", "x" * 256, data_dir=tmp_path)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert "no more than 255 characters" in result.stderr
    with sqlite3.connect(tmp_path / "openmaac.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM cdh_api_keys").fetchone() == (0,)

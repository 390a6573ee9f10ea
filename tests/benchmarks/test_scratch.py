"""The benchmarks' scratch directories go when a run ends, however it ends (a million-contact
SQLite database left in /tmp is gigabytes). Each run is a real ``python`` process here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import sys, time
from benchmarks.common import clean_up_on_exit, scratch_dir
clean_up_on_exit()
path = scratch_dir("test")
(path / "openmaac.sqlite3").write_bytes(b"x" * 100_000)
print(path, flush=True)
if sys.argv[1] == "wait":
    time.sleep(60)
"""


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    """A run writing into a scratch directory of its own (under ``tmp_path``), and that directory."""
    process = subprocess.Popen([sys.executable, "-c", RUN, mode], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    assert process.stdout is not None
    path = Path(process.stdout.readline().strip())
    assert path.parent == tmp_path and path.name.startswith("openmaac-bench-test-")
    return process, path


def test_a_run_that_ends_removes_its_scratch_directories(tmp_path: Path) -> None:
    process, path = _run(tmp_path, "end")
    assert process.wait(30) == 0
    assert not path.exists()


def test_a_run_stopped_by_sigterm_removes_its_scratch_directories(tmp_path: Path) -> None:
    """``timeout`` and ``kill`` send SIGTERM, on which Python would otherwise die on the spot."""
    process, path = _run(tmp_path, "wait")
    assert (path / "openmaac.sqlite3").exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM
    assert not path.exists()


def test_the_next_run_removes_what_a_killed_run_left_and_nothing_else(tmp_path: Path) -> None:
    killed, abandoned = _run(tmp_path, "wait")
    killed.kill()  # SIGKILL: no clean-up can run
    killed.wait(30)
    assert abandoned.exists()
    alive, running = _run(tmp_path, "wait")  # another run, still going
    unowned = tmp_path / "openmaac-bench-unowned"  # no owner file: not known to be a run's
    unowned.mkdir()
    try:
        sweep = subprocess.run(
            [sys.executable, "-c", "from benchmarks.common import remove_abandoned_scratch as r; print(r())"],
            cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, check=True)
        assert str(abandoned) in sweep.stdout
        assert not abandoned.exists()
        assert running.exists() and unowned.exists()
    finally:
        alive.kill()
        alive.wait(30)

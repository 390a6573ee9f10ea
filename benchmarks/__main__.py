"""``python -m benchmarks [name ...] [--quick]``: run the benchmarks and print a Markdown table.

Without names every ``bench_*`` module runs. ``--quick`` shrinks the data sizes (for a smoke
run); the figures in docs/benchmarks.md come from full runs.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path

import benchmarks
from benchmarks.common import clean_up_on_exit, remove_abandoned_scratch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help="bench modules to run, e.g. api webhooks")
    parser.add_argument("--quick", action="store_true", help="small data sizes, for a smoke run")
    args = parser.parse_args(argv)
    clean_up_on_exit()
    for path in remove_abandoned_scratch():
        print(f"(removed {path}, left behind by a run that was killed)", file=sys.stderr)
    modules = sorted(m.name for m in pkgutil.iter_modules([str(Path(benchmarks.__file__).parent)])
                     if m.name.startswith("bench_"))
    if args.names:
        modules = [m for m in modules if m.removeprefix("bench_") in args.names or m in args.names]
    print(f"# openmaac benchmarks: {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, "
          f"Python {platform.python_version()}, {platform.platform()}")
    for name in modules:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n## {name.removeprefix('bench_')}: {(module.__doc__ or '').strip().splitlines()[0]}\n")
        print("| measurement | figure | note |\n|---|---|---|", flush=True)
        for result in module.run(args):
            print(result.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.profile_summary FILE [--top N] [--match TEXT]``: where a py-spy
profile's time went.

FILE holds collapsed stacks (``py-spy record --format raw``, as ``BENCH_PYSPY`` writes them):
one line per distinct stack, ``frame;frame;...;frame count``. Idle threads (waiting in
``select``/``epoll``/a lock/a thread pool's queue) are dropped, so the shares are of the
process's CPU. Printed: the top functions by self time and by inclusive time (each counted
once per stack), ``--match`` restricting the stacks to those passing through a frame that
contains TEXT.

Read the shares as a map, not as measurements: ``--gil --nonblocking`` also charges threads
that are only waking from a lock or a socket (the embedded worker's idle look-up showed as
40 µs per push while the worker looped twice a second). The push benchmarks' "on the event
loop / in threads" row is measured per thread from /proc; ``perf record -g -p PID`` shows the
kernel's and the C libraries' share exactly.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = re.compile(r"\b(select|epoll_wait|poll|_wait_for_tstate_lock|wait \(threading\.py|"
                  r"_worker \(concurrent/futures/thread\.py|acquire|sleep|run_forever|_run_once|"
                  r"get \(queue\.py)|\(anyio/_backends/_asyncio\.py:\d+\)$")


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)": lines merged
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{function} ({short})"


def read(path: Path, match: str | None) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames or IDLE.search(frames[-1]):
            continue
        if match and not any(match in f for f in frames):
            continue
        count = int(count_text)
        total += count
        names = [_frame_name(f) for f in frames]
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    return own, inclusive, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary")
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default=None)
    args = parser.parse_args(argv)
    own, inclusive, total = read(args.file, args.match)
    print(f"{total} busy samples{' through ' + args.match if args.match else ''}")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n## by {title} time\n")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / max(total, 1):5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

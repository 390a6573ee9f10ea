#!/usr/bin/env bash
# A/B of two commits on one benchmark, in alternating runs, so that a change is told from the
# drift of a shared machine (docs/benchmarks.md records its figures this way).
#
#   benchmarks/ab.sh NAME BEFORE AFTER ROUNDS BENCHMARK
#   e.g. BENCH_BACKENDS=sqlite BENCH_SMS_PLUS_ONLY=push benchmarks/ab.sh smsq main~1 main 2 sms_plus
#
# Each commit is checked out once in a `git worktree` (/tmp/openmaac-ab-<commit>) and run with
# this checkout's .venv and `PYTHONPATH=<worktree>/src:<worktree>`; each round runs AFTER, then
# BEFORE. Every run waits for /tmp/openmaac-bench.lock (benchmarks share the cores: one at a
# time) and writes /tmp/openmaac-ab-NAME-<commit>-<round>.log. The environment (BENCH_*,
# OPENMAAC_BENCH_DATABASE_URL) passes through to every run.
set -euo pipefail

if [ $# -ne 5 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
name=$1 before=$2 after=$3 rounds=$4 benchmark=$5
root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"

tree_of() {  # the worktree of a commit, made on first use
  local commit
  commit=$(git -C "$root" rev-parse --short "$1")
  local tree="/tmp/openmaac-ab-$commit"
  [ -d "$tree" ] || git -C "$root" worktree add --detach -f "$tree" "$commit" >/dev/null
  echo "$tree"
}

before_tree=$(tree_of "$before")
after_tree=$(tree_of "$after")
for round in $(seq 1 "$rounds"); do
  for tree in "$after_tree" "$before_tree"; do
    log="/tmp/openmaac-ab-$name-${tree##*-}-$round.log"
    echo "$(date -u +%H:%M:%S) round $round: ${tree##*-} -> $log" >&2
    (cd "$root" && PYTHONPATH="$tree/src:$tree" flock /tmp/openmaac-bench.lock \
      "$python" -m benchmarks "$benchmark" >"$log" 2>&1) || echo "  that run failed: see $log" >&2
  done
done
echo "done; remove the worktrees with: git worktree remove --force $before_tree; git worktree remove --force $after_tree" >&2

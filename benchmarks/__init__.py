"""openmaac benchmarks: ``make bench`` runs every ``bench_*.py`` module here.

Each module exposes ``run(args) -> list[Result]``; figures are measured side by side in one
run (the openmaac path beside its ceiling or raw baseline), never asserted in tests.
"""

"""The garbage collector of a long-running process (``serve``, ``worker``)."""

from __future__ import annotations

import gc

# Net allocations of container objects between two collections of the youngest generation
# (CPython's default is 700). Accepting or sending a 500-recipient message holds a few
# thousand small lists and tuples at once: at 700 each request set off several collections,
# and what the requests in flight still held was promoted to the older generations, whose
# collections then walked it again (~0.5 ms of a 6 ms request in the fan-out benchmark).
YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Call once start-up is done. Everything made so far (modules, the app, its routes,
    compiled statements) lives as long as the process: moved out of the collector's
    generations, full collections stop walking it (a full collection cost 0.3-0.5 ms per
    300-row member page before; 0.04 ms after). And the youngest generation is collected
    every ``YOUNG_THRESHOLD`` net allocations: cyclic garbage waits a little longer (at most
    that many objects), the per-request churn no longer triggers collections."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)

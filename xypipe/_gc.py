"""The garbage collector's settings for a long-running ``xypipe run`` process.

CPython's cyclic collector runs a full (generation 2) collection once enough objects have
survived; with thousands of books in memory one took 32-49 ms on a 2-core machine, and the
Trio loop stands still meanwhile: deltas wait on their edges, a 50 ms pause crosses the
default L1 threshold of a 100 ms edge budget, and the level went up with a core only 80 % busy
(``bench/scale.py``; docs/architecture.md, "Garbage collection"). What the hot path allocates
is almost all freed by reference counting, so the collector mostly re-scans objects that live
as long as the process: what is alive once the process has started is moved out of its sight
(``gc.freeze``), and collections are made rarer (``THRESHOLDS``) — far fewer pauses; cyclic
garbage is still collected, only later (a bounded amount waits for it).
"""

from __future__ import annotations

import gc
import os

#: Allocations minus deallocations before a generation 0 collection (CPython: 700), and how
#: many collections of one generation before the next one's (CPython: 10, 10).
THRESHOLDS = (50_000, 50, 1000)


#: ``XYPIPE_GC=default`` keeps CPython's own settings (to compare, or if a plugin makes cycles).
ENV = "XYPIPE_GC"


def tune_for_service() -> None:
    """Freeze what the process holds now and raise the thresholds (see the module docstring),
    unless ``XYPIPE_GC=default``."""
    if os.environ.get(ENV, "").strip().lower() == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


__all__ = ["ENV", "THRESHOLDS", "tune_for_service"]

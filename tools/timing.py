"""Shared timing for the benchmarks in `tools/`: interleaved runs, so a slow spell of a
shared machine hits every candidate alike instead of whichever happened to run then."""

from __future__ import annotations

import statistics
import time


def time_interleaved(functions, runs, warmup):
    """Per function, the list of `runs` timings (seconds); one call of each per round,
    rotating the order.

    Args:
        functions: dict name → zero-argument callable (it should block until done).
        runs: timed rounds.
        warmup: untimed calls of each function first (tracing, caches).
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    names = list(functions)
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ms(fn, runs, warmup=1):
    """Median wall time in milliseconds of `runs` calls of `fn`, after `warmup` untimed calls
    (tracing, allocation)."""
    return 1000 * statistics.median(time_interleaved({"fn": fn}, runs, warmup)["fn"])

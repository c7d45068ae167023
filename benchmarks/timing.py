"""Timing shared by the benchmarks (run as scripts from this folder, so ``from timing import ...`` works)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(call: Callable[[], object], repeats: int, synchronize: Callable[[], None]) -> float:
    """Median wall seconds of ``call`` over ``repeats`` runs after one warm-up run (``synchronize`` waits for
    asynchronous devices, e.g. ``torch.cuda.synchronize``)."""
    call()
    synchronize()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)

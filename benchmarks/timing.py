"""Device set-up and timing shared by the benchmarks (run as scripts from this folder, so
``from timing import ...`` works)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def torch_device(name: str, threads: int) -> tuple[torch.device, Callable[[], None]]:
    """``(device, synchronize)`` for ``--device cpu|cuda`` with ``threads`` CPU threads; exits with one line when
    CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.set_num_threads(threads)
    device = torch.device(name)
    return device, torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


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

"""Throughput and peak memory of the synthetic face renderer.

    python benchmarks/render.py [--batch 256] [--size 112] [--repeats 5] [--naive 64] [--reference GIT_REF]

Measures batched ``render`` (random identities, random controls in [-1, 1]) and, as the baseline in the
same run, the naive per-image loop (one ``render`` call per image), for each torch thread count given
(default: torch's default and 1; the best is the headline ``images_per_s``). With ``--reference``, the
renderer of that git commit is loaded from ``git archive`` under another package name and timed alternately
with the current one on the same batch (``reference_images_per_s``, ``ratio_to_reference``): on a shared,
noisy machine the ratio is what to read. Peak memory is the process's peak resident set size (``VmHWM``
from ``/proc/self/status``), which covers torch's allocations. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fr_invariance.attributes import NUM_ATTRIBUTES
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render


def proc_status_mb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not found in /proc/self/status")


def random_controls(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, NUM_ATTRIBUTES, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


REFERENCE_PACKAGE = "fr_reference"


def reference_render(ref: str) -> Callable[..., torch.Tensor]:
    """``render`` of git commit ``ref``: its ``fr_invariance`` tree, extracted with ``git archive`` into a
    temporary folder and renamed ``fr_reference`` (imports rewritten) so that it loads beside the current one."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", ref, "fr_invariance"], cwd=repo, capture_output=True, check=True).stdout
    root = Path(tempfile.mkdtemp(prefix="render_reference_"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    (root / "fr_invariance").rename(root / REFERENCE_PACKAGE)
    for path in (root / REFERENCE_PACKAGE).rglob("*.py"):
        path.write_text(path.read_text().replace("fr_invariance", REFERENCE_PACKAGE))
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{REFERENCE_PACKAGE}.synth.render").render


def time_alternating(renders: dict[str, Callable[..., torch.Tensor]], batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median images/s of each renderer, timed alternately on the same batch (after one warm-up each)."""
    identities = sample_identities(batch, seed=0)
    controls = random_controls(batch, seed=0)
    seconds: dict[str, list[float]] = {name: [] for name in renders}
    for function in renders.values():
        function(identities, controls, size)
    for _ in range(repeats):
        for name, function in renders.items():
            start = time.perf_counter()
            function(identities, controls, size)
            seconds[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(values) for name, values in seconds.items()}


def time_batched(batch: int, size: int, repeats: int) -> list[float]:
    """Seconds per batch for ``repeats`` batches (after one warm-up batch)."""
    identities = sample_identities(batch, seed=0)
    controls = random_controls(batch, seed=0)
    render(identities, controls, size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        render(identities, controls, size)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_naive(count: int, size: int) -> float:
    """Seconds for ``count`` images rendered one call per image."""
    identities = sample_identities(count, seed=1)
    controls = random_controls(count, seed=1)
    render(identities[:1], controls[:1], size)
    start = time.perf_counter()
    for i in range(count):
        render(identities[i : i + 1], controls[i : i + 1], size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the synthetic face renderer.")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive", type=int, default=64, help="images for the per-image-loop baseline")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads(), 1],
                        help="torch intra-op thread counts to measure (the best one is the headline)")
    parser.add_argument("--reference", default=None,
                        help="git commit whose renderer is timed alternately with this one (e.g. HEAD~1)")
    args = parser.parse_args()
    reference = reference_render(args.reference) if args.reference else None

    load = os.getloadavg()
    rss_before = proc_status_mb("VmRSS")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          " (the machine is shared with other jobs: OpenMP threads contend when it is oversubscribed)")
    results, ratios = {}, {}
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        if reference is not None:
            pair = time_alternating({"current": render, "reference": reference}, args.batch, args.size, args.repeats)
            ratios[threads] = (pair["reference"], pair["current"] / pair["reference"])
            print(f"{threads} thread(s): alternating with the renderer of {args.reference}: current {pair['current']:.1f}, "
                  f"reference {pair['reference']:.1f} images/s -> ratio {ratios[threads][1]:.2f}")
        seconds = time_batched(args.batch, args.size, args.repeats)
        naive_seconds = time_naive(args.naive, args.size)
        results[threads] = (args.batch / statistics.median(seconds), args.naive / naive_seconds)
        print(f"{threads} thread(s): batched render {args.batch} x {args.size}px: median {statistics.median(seconds):.3f} "
              f"s/batch -> {results[threads][0]:.1f} images/s; baseline per-image loop ({args.naive} images): "
              f"{results[threads][1]:.1f} images/s -> batched is {results[threads][0] / results[threads][1]:.1f}x faster")
    peak_mb = proc_status_mb("VmHWM")
    print(f"peak RSS {peak_mb:.0f} MB (+{peak_mb - rss_before:.0f} MB over the {rss_before:.0f} MB before rendering)")
    best = max(results, key=lambda threads: results[threads][0])
    images_per_s, naive_images_per_s = results[best]
    print(json.dumps({
        "images_per_s": round(images_per_s, 1),
        "threads": best,
        "images_per_s_by_threads": {str(k): round(v[0], 1) for k, v in results.items()},
        "peak_mb": round(peak_mb, 1),
        "peak_delta_mb": round(peak_mb - rss_before, 1),
        "baseline": "per_image_loop",
        "baseline_images_per_s": round(naive_images_per_s, 1),
        "speedup_vs_baseline": round(images_per_s / naive_images_per_s, 2),
        "batch": args.batch,
        "size": args.size,
        "load_avg_1min": round(load[0], 2),
        "reference": args.reference,
        "reference_images_per_s_by_threads": {str(k): round(v[0], 1) for k, v in ratios.items()},
        "ratio_to_reference_by_threads": {str(k): round(v[1], 3) for k, v in ratios.items()},
    }))


if __name__ == "__main__":
    main()

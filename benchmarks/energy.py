"""Benchmark: alignment energy of one identity, 8 attributes × 4 ε, against the paper's algorithm.

Data (a documented synthetic stand-in for one identity's embeddings, D = 512): every image has 8
controls ``p ∈ [-1, 1]^8`` and one of 24 discrete modes (think pose/lighting clusters); its embedding is
``normalize(mode_centre + Σ_f cos(⟨ω_f, p⟩ + φ_f) w_f + image noise)`` (unit mode centres, smooth part of
norm ~1 from 48 random Fourier features, noise of norm 0.03), so nearby controls give nearby
embeddings (continuous, clustered distances; mean degree ≈ 1.5 %, 4 %, 11 %, 40 % of C at ε = 0.4..1.0). Attribute ``a`` has its own
sensitivity (the scale of column a of ω), so its field ``v_c = e(p_c + h e_a) − e(p_c − h e_a)`` (h = 0.25)
ranges from coherent (energy ≪ 1) to noise-dominated (≈ 1). Centres ``p_c`` are shared by all
attributes; d̄ is computed on the centres.

Measured in one run:
  1. ours: ``alignment_energy`` (default float32 path, ball, all 4 ε in one pass) for every attribute;
  2. reference: the paper's algorithm re-implemented with scikit-learn on float32 arrays, as the
     authors' script runs (``RadiusNeighborsTransformer`` refit per ε, ``nonzero()``,
     ``paired_cosine_distances`` (in slices of 200k pairs to bound memory), per-point loop, plain mean);
     compared with ours in the same convention (``exact_repro=True``, float64): ``max_abs_diff``.
     The reference runs on ``--reference-attributes`` attributes (default 1) and its time is scaled
     to all attributes (they share the graph, so each costs it the same): ``reference_seconds``;
  3. the bound: before each attribute, the two full bare Gram products of that field (torch.matmul on
     row chunks) are timed, so ``bound = attributes × 2 Grams × 2·C²·D / rate`` with the GEMM rate
     measured under the same machine load as ours; ``ratio_to_bound = ours / bound``. With
     ``--bound-attributes N`` only the first N attributes' Grams are timed and scaled to all (for large C).
Peak memory is the process's peak RSS during step 1 (VmHWM, reset before the step; includes the
~0.5 GB of the imported libraries, printed as "before").

    /work/venv/bin/python benchmarks/energy.py [--curves 10000] [--skip-reference] [--attributes 8]
        [--reference-attributes 1] [--chunk-size 2048] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from fr_invariance.metrics.energy import alignment_energy, mean_pair_distance
from fr_invariance.metrics.neighbours import MAX_CHUNK_PAIRS

EPSILONS = (0.4, 0.6, 0.8, 1.0)
N_CONTROLS = 8
N_MODES = 24
N_FEATURES = 48
FEATURE_NORM = 1.0  # typical norm of the smooth part; the mode centres have norm 1
NOISE = 0.03
STEP = 0.25
SLICE = 200_000  # pairs per paired_cosine_distances call in the reference (~0.4 GB per gathered array at D=512)


class SyntheticIdentity:
    """Embeddings ``e(p, mode)`` of one identity (see the module docstring); all draws seeded."""

    def __init__(self, n_curves: int, dim: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.modes = torch.nn.functional.normalize(torch.randn(N_MODES, dim, generator=generator), dim=1)
        sensitivity = torch.logspace(0.5, -1.2, N_CONTROLS)  # attribute 0 moves embeddings most
        self.frequencies = torch.randn(N_CONTROLS, N_FEATURES, generator=generator) * sensitivity[:, None]
        self.phases = torch.rand(N_FEATURES, generator=generator) * 2 * math.pi
        self.weights = torch.randn(N_FEATURES, dim, generator=generator) * (FEATURE_NORM * math.sqrt(2.0 / (N_FEATURES * dim)))
        self.controls = (torch.rand(n_curves, N_CONTROLS, generator=generator) * 2 - 1) * (1 - STEP)
        self.mode_of = torch.randint(0, N_MODES, (n_curves,), generator=generator)
        self.seed = seed

    def embed(self, controls: torch.Tensor, image_seed: int) -> torch.Tensor:
        """``(C, dim)`` unit embeddings of the centres' modes at ``controls``, with per-image noise."""
        noise = torch.randn(controls.shape[0], self.dim, generator=torch.Generator().manual_seed(image_seed))
        features = torch.cos(controls @ self.frequencies + self.phases)
        raw = self.modes[self.mode_of] + features @ self.weights + (NOISE / math.sqrt(self.dim)) * noise
        return torch.nn.functional.normalize(raw, dim=1)

    def positions(self) -> torch.Tensor:
        return self.embed(self.controls, self.seed + 1)

    def vectors(self, attribute: int) -> torch.Tensor:
        offset = torch.zeros(N_CONTROLS)
        offset[attribute] = STEP
        step2 = self.embed(self.controls + offset, self.seed + 100 + 2 * attribute)
        return step2.sub_(self.embed(self.controls - offset, self.seed + 101 + 2 * attribute))


def reset_peak_rss() -> None:
    """Reset VmHWM (Linux: writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def bare_gram_seconds(positions: torch.Tensor, vectors: torch.Tensor) -> float:
    """Wall time of the two full float32 Gram products of one field (positions and vectors against
    themselves) as bare ``torch.matmul`` calls on chunks of whole rows (2048, or fewer so that a chunk
    holds at most 2**24 pairs), nothing else."""
    n_points = positions.shape[0]
    rows = max(1, min(2048, MAX_CHUNK_PAIRS // n_points))
    out = torch.empty(rows, n_points)
    start = time.perf_counter()
    for matrix in (positions, vectors):
        for first in range(0, n_points, rows):
            block = matrix[first : first + rows]
            torch.matmul(block, matrix.T, out=out[: block.shape[0]])
    return time.perf_counter() - start


def reference_energies(positions: np.ndarray, vectors: np.ndarray, scale: float) -> list[float]:
    """The paper's algorithm (scikit-learn, float32 arrays), one energy per ε."""
    from sklearn.metrics.pairwise import paired_cosine_distances
    from sklearn.neighbors import RadiusNeighborsTransformer

    energies = []
    for eps in EPSILONS:
        graph = RadiusNeighborsTransformer(radius=eps * scale, mode="connectivity", metric="cosine").fit_transform(positions)
        a, b = graph.nonzero()
        distances = np.concatenate(
            [paired_cosine_distances(vectors[a[s : s + SLICE]], vectors[b[s : s + SLICE]]) for s in range(0, len(a), SLICE)]
        )
        counts = np.bincount(a, minlength=len(positions))
        per_point, start = [], 0
        for count in counts:
            per_point.append(distances[start : start + count].mean())
            start += count
        energies.append(float(np.mean(per_point)))
    return energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=10_000, help="C, curves per attribute (default 10000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--attributes", type=int, default=8, help="number of attributes (fields) to evaluate")
    parser.add_argument("--skip-reference", action="store_true", help="skip the scikit-learn reference and exact_repro run")
    parser.add_argument("--reference-attributes", type=int, default=1,
                        help="attributes run through the reference (its time is scaled to all attributes: the graph is "
                             "shared, so every attribute costs it the same; default 1)")
    parser.add_argument("--bound-attributes", type=int, default=None,
                        help="time the bare Gram passes on only the first N attributes and scale to all (large C)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="alignment_energy chunk_size (block side)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not 1 <= args.attributes <= N_CONTROLS:
        parser.error(f"--attributes must be in 1..{N_CONTROLS}")
    if not 1 <= args.reference_attributes <= args.attributes:
        parser.error("--reference-attributes must be in 1..--attributes")

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    identity = SyntheticIdentity(args.curves, args.dim, args.seed)
    positions = identity.positions()
    scale = mean_pair_distance(positions, "cosine", n_pairs=10_000, seed=args.seed)
    print(f"C={args.curves} D={args.dim} attributes={args.attributes} eps={EPSILONS} d_bar={scale:.4f}")

    baseline_mb = peak_rss_mb()
    reset_peak_rss()
    ours_seconds = bound = 0.0
    bound_attributes = min(args.bound_attributes or args.attributes, args.attributes)
    for attribute in range(args.attributes):
        vectors = identity.vectors(attribute)
        if attribute < bound_attributes:
            bound += bare_gram_seconds(positions, vectors)
        start = time.perf_counter()
        results = alignment_energy(positions, vectors, scale=scale, params=EPSILONS, chunk_size=args.chunk_size)
        ours_seconds += time.perf_counter() - start
        energies = " ".join(f"{r.energy:.4f}" for r in results)
        degrees = " ".join(f"{r.mean_degree:.1f}" for r in results)
        print(f"attribute {attribute}: energy {energies} | mean degree {degrees}")
        del vectors
    peak_mb = peak_rss_mb()
    bound *= args.attributes / bound_attributes
    rate = args.attributes * 2 * 2.0 * args.curves**2 * args.dim / bound / 1e9
    print(f"GEMM rate {rate:.1f} GFLOP/s (bare Gram passes interleaved with ours) -> bound {bound:.2f} s")
    print(f"ours (float32, one pass for all eps): {ours_seconds:.2f} s, ratio to bound {ours_seconds / bound:.2f}, "
          f"peak RSS {peak_mb:.0f} MB (before: {baseline_mb:.0f} MB)")

    reference_measured = reference_seconds = exact_seconds = max_abs_diff = None
    if not args.skip_reference:
        exact_seconds, reference_measured, max_abs_diff = 0.0, 0.0, 0.0
        positions_np = positions.numpy()
        for attribute in range(args.reference_attributes):
            vectors = identity.vectors(attribute)
            start = time.perf_counter()
            exact = alignment_energy(positions, vectors, scale=scale, params=EPSILONS, exact_repro=True, chunk_size=args.chunk_size)
            exact_seconds += time.perf_counter() - start
            start = time.perf_counter()
            reference = reference_energies(positions_np, vectors.numpy(), scale)
            reference_measured += time.perf_counter() - start
            difference = max(abs(r.energy - e) for r, e in zip(exact, reference))
            max_abs_diff = max(max_abs_diff, difference)
            print(f"attribute {attribute}: reference {' '.join(f'{e:.6f}' for e in reference)} | "
                  f"ours exact_repro {' '.join(f'{r.energy:.6f}' for r in exact)} | max |diff| {difference:.2e}")
        reference_seconds = reference_measured * args.attributes / args.reference_attributes
        print(f"ours exact_repro (float64): {exact_seconds:.2f} s for {args.reference_attributes} attribute(s); "
              f"reference (scikit-learn): {reference_measured:.2f} s measured for {args.reference_attributes}, "
              f"{reference_seconds:.2f} s scaled to {args.attributes}; "
              f"speedup of ours (float32) {reference_seconds / ours_seconds:.1f}x")

    print(json.dumps({
        "curves": args.curves,
        "dim": args.dim,
        "attributes": args.attributes,
        "threads": torch.get_num_threads(),
        "chunk_size": args.chunk_size,
        "seconds": round(ours_seconds, 3),
        "bound_seconds": round(bound, 3),
        "ratio_to_bound": round(ours_seconds / bound, 3),
        "gemm_gflops": round(rate, 1),
        "exact_repro_seconds": None if exact_seconds is None else round(exact_seconds, 3),
        "reference_seconds": None if reference_seconds is None else round(reference_seconds, 3),
        "reference_seconds_measured": None if reference_measured is None else round(reference_measured, 3),
        "reference_attributes": None if args.skip_reference else args.reference_attributes,
        "speedup_vs_reference": None if reference_seconds is None else round(reference_seconds / ours_seconds, 2),
        "max_abs_diff": max_abs_diff,
        "peak_mb": round(peak_mb, 1),
        "baseline_mb": round(baseline_mb, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()

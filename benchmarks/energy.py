"""Benchmark: ball energy of one identity, 8 attributes × 4 ε with the released script's cap of 100.

Data (a documented synthetic stand-in for one identity's paper-layout embeddings, D = 512): every image
has 8 controls ``p ∈ [-1, 1]^8`` and one of 24 discrete modes (think pose/lighting clusters); its embedding
is ``normalize(mode_centre + Σ_f cos(⟨ω_f, p⟩ + φ_f) w_f + image noise)`` (unit mode centres, smooth part
of norm ~1 from 48 random Fourier features, noise of norm 0.03), so nearby controls give nearby
embeddings (continuous, clustered distances; mean ball size ≈ 1.5 %, 4 %, 11 %, 40 % of C at
ε = 0.4..1.0). Attribute ``a`` has its own sensitivity (the scale of column a of ω), so its field
``v_c = e(p_c + h e_a) − e(p_c − h e_a)`` (h = 0.25) ranges from coherent (energy ≪ 1) to
noise-dominated (≈ 1). The identity's array holds ``C·(1 + 2·8)`` rows as in the paper layout: the C
centres (shared by all attributes), then step 0 and step 2 of every attribute; d̄ is drawn from all rows.

Measured in one run, on the same data:
  1. ``seconds``: the default mode — per attribute ``alignment_energy(..., max_neighbours=cap)`` (vectorised
     cap, all 4 ε in one pass), plus d̄ (``mean_pair_distance``);
  2. ``bound_seconds``: the dense-GEMM floor — before each attribute, one full position Gram and one full
     vector Gram (bare ``torch.matmul`` on row chunks) are timed; ``ratio_to_bound = seconds / bound``;
  3. ``script_seconds``: :func:`released_script_baseline`, a faithful re-implementation of the released
     script's algorithm as it runs (``energy_finetuning_ball.py``: ``np.random.seed``, d̄ from
     ``randint`` + ``paired_cosine_distances``, per ε a ``RadiusNeighborsTransformer`` refit, the per-row
     ``subsample_sparse_matrix`` loop with ``np.random.choice`` and list ``extend``, ``nonzero()``,
     ``np.unique`` counts, ``paired_cosine_distances`` of all pairs, the per-point loop, a plain mean), on
     ``--script-attributes`` attributes (default 2; all 4 ε each) and scaled to all attributes (every
     attribute shares the centres, so its graph costs the same); the one change is that
     ``paired_cosine_distances`` runs on slices of 200k pairs (same values; the script's single call
     needs ~4 GB at C = 10k);
  4. ``exact_seconds``: ``exact_repro`` — ``script_scale`` + ``alignment_energy(exact_repro=True)`` on all
     attributes with one stream, as the script draws; ``max_abs_diff`` = largest |exact − script| over
     the attributes the script ran (same stream prefix);
  5. ``peak_mb``: peak RSS during step 1 (VmHWM, reset before; includes the libraries and the ~350 MB
     array of the identity, printed as "before"); on CUDA the peak allocated device memory.

Run everything with ``OMP_NUM_THREADS=1`` for a fair comparison (torch, numpy's BLAS and scikit-learn
then all use one thread):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/energy.py [--curves 10000] [--cap 100]
        [--script-attributes 2] [--device cpu|cuda] [--precision float32|float64] [--skip-script]
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
from fr_invariance.metrics.exact_repro import script_scale
from fr_invariance.metrics.neighbours import MAX_CHUNK_PAIRS

EPSILONS = (0.4, 0.6, 0.8, 1.0)
N_CONTROLS = 8
N_MODES = 24
N_FEATURES = 48
FEATURE_NORM = 1.0  # typical norm of the smooth part; the mode centres have norm 1
NOISE = 0.03
STEP = 0.25
N_PAIRS = 10_000
SLICE = 200_000  # pairs per paired_cosine_distances call in the baseline (~0.4 GB per gathered array at D=512)


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

    def paper_array(self, attributes: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """The identity's ``(C·(1 + 2A), D)`` float32 array and, per attribute, the row indices of step 0,
        1 (the shared centres) and 2 of its curves."""
        n_curves = self.controls.shape[0]
        blocks = [self.embed(self.controls, self.seed + 1)]
        centres = np.arange(n_curves)
        curves = []
        for attribute in range(attributes):
            offset = torch.zeros(N_CONTROLS)
            offset[attribute] = STEP
            blocks.append(self.embed(self.controls - offset, self.seed + 101 + 2 * attribute))
            blocks.append(self.embed(self.controls + offset, self.seed + 100 + 2 * attribute))
            start = n_curves * (1 + 2 * attribute)
            curves.append((start + centres, centres, start + n_curves + centres))
        return torch.cat(blocks).numpy(), curves


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_gram_seconds(positions: torch.Tensor, vectors: torch.Tensor) -> float:
    """Wall time of the two full Gram products of one field (positions and vectors against themselves)
    as bare ``torch.matmul`` calls on chunks of whole rows (2048, or fewer so that a chunk holds at most
    2**24 pairs), nothing else: the dense-GEMM floor."""
    n_points = positions.shape[0]
    rows = max(1, min(2048, MAX_CHUNK_PAIRS // n_points))
    out = torch.empty(rows, n_points, dtype=positions.dtype, device=positions.device)
    synchronize(positions.device)
    start = time.perf_counter()
    for matrix in (positions, vectors):
        for first in range(0, n_points, rows):
            block = matrix[first : first + rows]
            torch.matmul(block, matrix.T, out=out[: block.shape[0]])
    synchronize(positions.device)
    return time.perf_counter() - start


# -- the released script's algorithm (the baseline) ------------------------------------------------------------

def _subsample_rows(graph, cap: int):
    """The script's ``subsample_sparse_matrix``: a Python loop over rows; a row with more than ``cap``
    entries keeps ``np.random.choice(len, cap, replace=False)`` of them (global stream); lists extended
    row by row, then a new CSR matrix."""
    from scipy.sparse import csr_matrix

    data, indices, indptr = [], [], [0]
    for row in range(graph.shape[0]):
        lo, hi = graph.indptr[row], graph.indptr[row + 1]
        row_data, row_indices = graph.data[lo:hi], graph.indices[lo:hi]
        if len(row_data) > cap:
            sampled = np.random.choice(len(row_data), size=cap, replace=False)
            row_data, row_indices = row_data[sampled], row_indices[sampled]
        data.extend(row_data)
        indices.extend(row_indices)
        indptr.append(len(data))
    return csr_matrix((data, indices, indptr), shape=graph.shape)


def released_script_baseline(
    embeddings: np.ndarray,
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    cap: int | None,
    seed: int,
) -> dict[tuple[int, float], float]:
    """The released ``energy_finetuning_ball.py`` algorithm on one identity held in memory (BASELINE).

    ``np.random.seed(seed)`` once; d̄ from two ``randint`` draws over all rows and ``paired_cosine_distances``
    (float32); then per attribute and ε: ``RadiusNeighborsTransformer(radius=ε·d̄, connectivity, cosine)``
    refitted on the centres, the per-row cap, ``nonzero()``, ``np.unique`` counts, ``paired_cosine_distances``
    of the field over every pair (in slices of 200k pairs), a per-point loop of means, a plain mean.
    Returns ``{(attribute, ε): energy}``.
    """
    from sklearn.metrics.pairwise import paired_cosine_distances
    from sklearn.neighbors import RadiusNeighborsTransformer

    np.random.seed(seed)
    first = np.random.randint(0, embeddings.shape[0], N_PAIRS)
    second = np.random.randint(0, embeddings.shape[0], N_PAIRS)
    d_avg = np.mean(paired_cosine_distances(embeddings[first, :], embeddings[second, :]))
    energies = {}
    for attribute, (idx0, idx1, idx2) in enumerate(curves):
        centres = embeddings[idx1, :]
        field = embeddings[idx2, :] - embeddings[idx0, :]
        for eps in EPSILONS:
            graph = RadiusNeighborsTransformer(radius=eps * d_avg, mode="connectivity", metric="cosine").fit_transform(centres)
            if cap is not None:
                graph = _subsample_rows(graph, cap)
            a, b = graph.nonzero()
            _, counts = np.unique(a, return_counts=True)
            distances = np.concatenate([paired_cosine_distances(field[a[s : s + SLICE], :], field[b[s : s + SLICE], :])
                                        for s in range(0, len(a), SLICE)])
            per_point = np.zeros(len(centres))
            lo = 0
            for point in range(len(centres)):
                per_point[point] = np.mean(distances[lo : lo + counts[point]])
                lo += counts[point]
            energies[attribute, eps] = float(np.mean(per_point))
    return energies


def exact_mode(
    embeddings: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]], cap: int | None, seed: int
) -> dict[tuple[int, float], float]:
    """``exact_repro``: the script's d̄ and every attribute's ball energies on one stream."""
    stream = np.random.RandomState(seed)
    scale = float(script_scale(embeddings, stream, N_PAIRS))
    tensor = torch.from_numpy(embeddings)
    energies = {}
    for attribute, (idx0, idx1, idx2) in enumerate(curves):
        positions = tensor[torch.from_numpy(idx1)]
        vectors = tensor[torch.from_numpy(idx2)] - tensor[torch.from_numpy(idx0)]
        results = alignment_energy(positions, vectors, scale=scale, params=EPSILONS, exact_repro=True,
                                   max_neighbours=cap, random_state=stream)
        energies.update({(attribute, r.param): r.energy for r in results})
    return energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=10_000, help="C, curves per attribute (default 10000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--attributes", type=int, default=8, help="attributes (fields) of the identity")
    parser.add_argument("--cap", type=int, default=100, help="max_neighbours (the script's default run: 100; 0 = none)")
    parser.add_argument("--script-attributes", type=int, default=2,
                        help="attributes the script baseline runs (all 4 ε each); its time is scaled to all attributes")
    parser.add_argument("--skip-script", action="store_true", help="skip the script baseline and exact mode")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the default mode and bound")
    parser.add_argument("--precision", choices=("float32", "float64"), default="float32",
                        help="compute dtype of the default mode and the bound (exact mode is float32, as the script)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="alignment_energy chunk_size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.attributes <= N_CONTROLS:
        parser.error(f"--attributes must be in 1..{N_CONTROLS}")
    if not 1 <= args.script_attributes <= args.attributes:
        parser.error("--script-attributes must be in 1..--attributes")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device, dtype = torch.device(args.device), getattr(torch, args.precision)
    cap = args.cap or None

    from threadpoolctl import threadpool_info

    blas_threads = sorted({(info["internal_api"], info["num_threads"]) for info in threadpool_info()})
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, BLAS/OpenMP pools {blas_threads}, "
          f"load average {os.getloadavg()}")
    identity = SyntheticIdentity(args.curves, args.dim, args.seed)
    embeddings, curves = identity.paper_array(args.attributes)
    print(f"C={args.curves} D={args.dim} attributes={args.attributes} eps={EPSILONS} cap={cap} "
          f"identity array {embeddings.shape} ({embeddings.nbytes / 2**20:.0f} MB), device {device}, {args.precision}")

    # 1 + 2: default mode, with the dense-GEMM floor timed before each attribute
    baseline_mb = peak_rss_mb()
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    points = torch.from_numpy(embeddings).to(device=device, dtype=dtype)
    seconds = bound = 0.0
    synchronize(device)
    start = time.perf_counter()
    scale = mean_pair_distance(points, "cosine", n_pairs=N_PAIRS, seed=args.seed)
    seconds += time.perf_counter() - start
    for attribute, (idx0, idx1, idx2) in enumerate(curves):
        positions = points[torch.from_numpy(idx1).to(device)]
        vectors = points[torch.from_numpy(idx2).to(device)] - points[torch.from_numpy(idx0).to(device)]
        bound += bare_gram_seconds(positions, vectors)
        synchronize(device)
        start = time.perf_counter()
        results = alignment_energy(positions, vectors, scale=scale, params=EPSILONS, max_neighbours=cap,
                                   seed=args.seed, chunk_size=args.chunk_size, dtype=dtype)
        synchronize(device)
        seconds += time.perf_counter() - start
        print(f"attribute {attribute}: default energy {' '.join(f'{r.energy:.4f}' for r in results)} | "
              f"mean ball size {' '.join(f'{r.mean_degree:.0f}' for r in results)}")
        del positions, vectors
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    del points
    print(f"default mode: {seconds:.2f} s; dense-GEMM floor {bound:.2f} s; ratio {seconds / bound:.2f}; "
          f"peak {peak_mb:.0f} MB (RSS before: {baseline_mb:.0f} MB)")

    # 3 + 4: the released script's algorithm and exact mode (CPU)
    script_seconds = script_measured = exact_seconds = max_abs_diff = None
    if not args.skip_script:
        start = time.perf_counter()
        exact = exact_mode(embeddings, curves, cap, args.seed)
        exact_seconds = time.perf_counter() - start
        print(f"exact_repro: {exact_seconds:.2f} s for {args.attributes} attributes")
        start = time.perf_counter()
        script = released_script_baseline(embeddings, curves[: args.script_attributes], cap, args.seed)
        script_measured = time.perf_counter() - start
        script_seconds = script_measured * args.attributes / args.script_attributes
        max_abs_diff = max(abs(exact[key] - value) for key, value in script.items())
        for attribute in range(args.script_attributes):
            print(f"attribute {attribute}: script {' '.join(f'{script[attribute, e]:.6f}' for e in EPSILONS)} | "
                  f"exact {' '.join(f'{exact[attribute, e]:.6f}' for e in EPSILONS)}")
        print(f"script baseline: {script_measured:.2f} s measured on {args.script_attributes} attribute(s) × "
              f"{len(EPSILONS)} ε, scaled to {args.attributes}: {script_seconds:.2f} s; max |exact − script| "
              f"{max_abs_diff:.2e}")

    def ratio(numerator: float | None, denominator: float) -> float | None:
        return None if numerator is None else round(numerator / denominator, 2)

    print(json.dumps({
        "device": args.device,
        "precision": args.precision,
        "C": args.curves,
        "attributes": args.attributes,
        "cap": cap,
        "seconds": round(seconds, 3),
        "bound_seconds": round(bound, 3),
        "ratio_to_bound": round(seconds / bound, 3),
        "script_seconds": None if script_seconds is None else round(script_seconds, 2),
        "script_seconds_measured": None if script_measured is None else round(script_measured, 2),
        "script_attributes": None if args.skip_script else args.script_attributes,
        "speedup_vs_script": ratio(script_seconds, seconds),
        "exact_seconds": None if exact_seconds is None else round(exact_seconds, 2),
        "exact_speedup_vs_script": None if exact_seconds is None else ratio(script_seconds, exact_seconds),
        "max_abs_diff": max_abs_diff,
        "peak_mb": round(peak_mb, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()

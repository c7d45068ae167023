"""The alignment energy of an attribute's vector field inside one identity (paper C, DESIGN §5).

For curves ``c = 1..C`` of one identity and one attribute: position ``x_c`` = embedding of the
centre image, vector ``v_c = e(step 2) − e(step 0)``. The energy is the mean over points of the
(weighted) mean vector dissimilarity ``d_V(v_c, v_c') = 1 − cos`` over a neighbourhood ``N(c)`` of
the position (ball of radius ``ε·d̄``, k nearest neighbours, or all points weighted by ``1/d_X``).
≈ 0: the attribute moves embeddings coherently; ≈ 1: random directions (invariance, up to noise).
Beside it, :func:`displacement_magnitude` ``d_X(e(step 0), e(step 2)) / d̄`` says how far the step moves
the embedding in the model's own metric (the primary readout across models).

Two modes: the default one (the project's convention: a point is not its own neighbour, zero vectors are
left out, per-call seeded draws, vectorised float32 chunks on any device) and ``exact_repro`` (the
authors' released script number for number: :mod:`fr_invariance.metrics.exact_repro`).

All functions are pure (tensors in, numbers out) and run on the inputs' device (exact mode: CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fr_invariance.metrics.exact_repro import script_ball
from fr_invariance.metrics.neighbours import (
    NeighbourMeans,
    PairBlocks,
    ball_means,
    inverse_distance_means,
    knn_means,
    unit_rows,
)

NEIGHBOURHOODS = ("ball", "knn", "inverse_distance")
METRICS = ("cosine", "euclidean")
PAPER_EPSILONS = (0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class EnergyResult:
    """Energy of one field for one neighbourhood parameter.

    Attributes:
        neighbourhood: ``"ball"``, ``"knn"`` or ``"inverse_distance"``.
        param: ε for ball (radius ``ε·d̄``), k for knn, None for inverse_distance.
        energy: mean of ``e_c`` over included points (nan if none). Default mode includes points that
            are neither isolated nor zero-vector; ``exact_repro`` includes every point.
        n_points: C.
        mean_degree: mean ``|N(c)|`` over non-zero-vector points (isolated ones count 0; in
            ``exact_repro`` mode the self-loop counts, so an isolated point has degree 1; with
            ``max_neighbours`` the ball size before the cap).
        n_isolated: points without any neighbour other than themselves (default: left out of the mean;
            ``exact_repro``: scored 0 and included).
        n_zero: zero vectors (default: left out of the mean and of every neighbourhood; ``exact_repro``:
            included with scikit-learn's 0.5 rule).
        per_point: ``(C,)`` float64 ``e_c`` on the CPU, nan where left out.
    """

    neighbourhood: str
    param: float | None
    energy: float
    n_points: int
    mean_degree: float
    n_isolated: int
    n_zero: int
    per_point: torch.Tensor


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; use one of {METRICS}.")


def _check_matrix(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D torch.Tensor of shape (N, D); got {getattr(tensor, 'shape', type(tensor))}.")


PAIR_MATRIX_FACTOR = 8
"""``mean_pair_distance`` computes the full ``(N, N)`` distance matrix when ``N² ≤ PAIR_MATRIX_FACTOR · n_pairs``."""


def _paired_distance(first: torch.Tensor, second: torch.Tensor, metric: str) -> torch.Tensor:
    """Row-wise ``d_X`` in float64: cosine as scikit-learn's ``paired_cosine_distances``
    (``½‖â − b̂‖²``, a zero row stays zero), or euclidean ``‖a − b‖``."""
    first, second = first.to(torch.float64), second.to(torch.float64)
    if metric == "cosine":
        difference = unit_rows(first)[0] - unit_rows(second)[0]
        return 0.5 * (difference * difference).sum(1)
    return torch.linalg.vector_norm(first - second, dim=1)


def mean_pair_distance(points: torch.Tensor, metric: str = "cosine", n_pairs: int = 10_000, seed: int = 0) -> float:
    """The scale ``d̄``: mean ``d_X`` over ``n_pairs`` random pairs of rows of ``points`` ``(N, D)``.

    Pairs are drawn with replacement (a pair may repeat a row: distance 0 is counted) from a
    ``np.random.RandomState(seed)``: ``first = randint(0, N, n_pairs)`` then ``second = randint(0, N,
    n_pairs)`` — the same indices as ``np.random.seed(seed); np.random.randint(0, N, (2, n_pairs))``.
    Cosine distances follow ``sklearn.metrics.pairwise.paired_cosine_distances``; computed in float64.
    """
    _check_matrix("points", points)
    _check_metric(metric)
    if points.shape[0] == 0:
        raise ValueError("points is empty: d̄ needs at least one embedded image of the identity.")
    if n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs}: draw at least one pair.")
    generator = np.random.RandomState(seed)
    first = torch.from_numpy(generator.randint(0, points.shape[0], n_pairs)).to(points.device)
    second = torch.from_numpy(generator.randint(0, points.shape[0], n_pairs)).to(points.device)
    if points.shape[0] ** 2 > PAIR_MATRIX_FACTOR * n_pairs:
        return float(_paired_distance(points[first], points[second], metric).mean())
    # Few rows: every distance once (exact differences, no Gram expansion), then look the pairs up.
    rows = points.to(torch.float64)
    if metric == "cosine":
        rows = unit_rows(rows)[0]
    distances = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist")[first, second]
    return float((0.5 * distances * distances if metric == "cosine" else distances).mean())


def displacement_magnitude(
    start: torch.Tensor, end: torch.Tensor, scale: float, metric: str = "cosine"
) -> torch.Tensor:
    """``m_c = d_X(e(step 0), e(step 2)) / d̄`` per curve (DESIGN §5): the attribute step's distance in the
    model's own metric, in units of the identity's mean pairwise distance in the same metric.

    Dimensionless: multiplying a cosine model's embeddings by any constant leaves it unchanged, and so
    does scaling a euclidean model's (numerator and d̄ scale alike). A zero displacement gives 0.

    Args:
        start, end: ``(C, D)`` embeddings of step 0 and step 2 of each curve.
        scale: ``d̄`` (> 0) in the same metric, e.g. from :func:`mean_pair_distance`.
        metric: ``"cosine"`` (``1 − cos``, scikit-learn's paired convention for zero rows) or ``"euclidean"``.

    Returns:
        ``(C,)`` float64 on the inputs' device.
    """
    _check_matrix("start", start)
    _check_matrix("end", end)
    if start.shape != end.shape:
        raise ValueError(f"start {tuple(start.shape)} and end {tuple(end.shape)} must have the same shape.")
    _check_metric(metric)
    _check_scale(scale)
    return _paired_distance(start, end.to(start.device), metric) / float(scale)


def _check_scale(scale: float) -> None:
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale}: d̄ must be a finite positive number (see mean_pair_distance).")


def _check_params(neighbourhood: str, params: Sequence[float]) -> list[float] | list[int]:
    if neighbourhood == "inverse_distance":
        return []
    values = list(params)
    if not values:
        raise ValueError(f"params is empty: give at least one {'ε' if neighbourhood == 'ball' else 'k'}.")
    if neighbourhood == "ball":
        if any(not (np.isfinite(eps) and eps >= 0) for eps in values):
            raise ValueError(f"ball params {values}: every ε must be a finite number >= 0.")
        return [float(eps) for eps in values]
    if any(int(k) != k or k < 1 for k in values):
        raise ValueError(f"knn params {values}: every k must be a positive integer.")
    return [int(k) for k in values]


def alignment_energy(
    positions: torch.Tensor,
    vectors: torch.Tensor,
    *,
    scale: float,
    neighbourhood: str = "ball",
    params: Sequence[float] = PAPER_EPSILONS,
    metric: str = "cosine",
    exact_repro: bool = False,
    max_neighbours: int | None = None,
    seed: int = 0,
    chunk_size: int = 2048,
    dtype: torch.dtype | None = None,
    random_state: np.random.RandomState | None = None,
) -> list[EnergyResult]:
    """Alignment energy of one field, one result per neighbourhood parameter (DESIGN §5).

    Args:
        positions: ``(C, D)`` embeddings of the curve centres.
        vectors: ``(C, D)`` field ``e(step 2) − e(step 0)``.
        scale: ``d̄`` of the identity (> 0), see :func:`mean_pair_distance` (exact mode:
            :func:`fr_invariance.metrics.exact_repro.script_scale`; it is used as float32).
        neighbourhood: ``"ball"`` (``{c' ≠ c : d_X ≤ ε·d̄}``, params = ε values), ``"knn"`` (the k
            nearest ``c' ≠ c``, ties by lower index; params = k values) or ``"inverse_distance"``
            (all ``c' ≠ c`` weighted by ``1/d_X``, 0 where ``d_X = 0``; params ignored).
        params: ε or k values; all are served by one chunked pass over the pairs.
        metric: position distance ``d_X``: ``"cosine"`` (``1 − cos``) or ``"euclidean"``.
        exact_repro: reproduce the authors' ``energy_finetuning_ball.py`` (ball, cosine only), see
            :mod:`fr_invariance.metrics.exact_repro`: each point is in its own ball (an isolated point
            scores 0), zero vectors follow scikit-learn's ``paired_cosine_distances`` (0.5 to a non-zero
            vector, 0 to a zero one), energy = plain mean over all points, float32 like the script; runs
            on the CPU with numpy.
        max_neighbours: ball only: cap m on the row length. Default mode: a vectorised uniform random
            m-subset per row, seeded by ``seed`` (see :func:`fr_invariance.metrics.neighbours.ball_means`).
            Exact mode: the script's per-row ``choice`` draws from ``random_state``, ε by ε.
        seed: seed of the cap (default mode; exact mode: of a fresh ``RandomState`` when no
            ``random_state`` is given).
        chunk_size: block side: ball without a cap and inverse_distance visit the upper triangle of
            ``chunk_size × chunk_size`` blocks (memory ``O(chunk_size²)``); knn and a capped ball visit
            chunks of ``chunk_size`` whole rows (memory ``O(chunk_size · C)``). Blocks hold at most
            2**24 pairs whatever ``chunk_size`` asks.
        dtype: compute dtype of the default mode (default float32).
        random_state: exact mode: the numpy stream the cap draws continue (the script's global stream,
            shared across identities and attributes); consumed in place.

    Returns:
        One :class:`EnergyResult` per param, in the order given (one with ``param=None`` for
        inverse_distance).
    """
    _check_matrix("positions", positions)
    _check_matrix("vectors", vectors)
    if positions.shape[0] != vectors.shape[0]:
        raise ValueError(
            f"positions has {positions.shape[0]} rows but vectors has {vectors.shape[0]}: give one vector per centre."
        )
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood={neighbourhood!r} is not supported; use one of {NEIGHBOURHOODS}.")
    _check_metric(metric)
    _check_scale(scale)
    values = _check_params(neighbourhood, params)
    if exact_repro and neighbourhood != "ball":
        raise ValueError("exact_repro reproduces the authors' ball script only: use neighbourhood='ball'.")
    if exact_repro and metric != "cosine":
        raise ValueError("exact_repro reproduces the authors' script, which measures cosine distances only.")
    if max_neighbours is not None and (neighbourhood != "ball" or int(max_neighbours) != max_neighbours
                                       or max_neighbours < 1):
        raise ValueError("max_neighbours caps ball rows only and must be an integer >= 1 (None for no cap).")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1.")

    n_points = positions.shape[0]
    zero_vectors = zero_rows(vectors)
    if exact_repro:
        stream = random_state if random_state is not None else np.random.RandomState(seed)
        balls = script_ball(
            positions.detach().cpu().numpy(), vectors.detach().cpu().numpy(), scale, values,
            max_neighbours=None if max_neighbours is None else int(max_neighbours), rng=stream, chunk_size=chunk_size,
        )
        means = [NeighbourMeans(torch.from_numpy(b.per_point), torch.from_numpy(b.degree)) for b in balls]
        kept = torch.arange(n_points)
        return [_result(neighbourhood, value, mean, n_points, kept, zero_vectors, True)
                for value, mean in zip(values, means)]

    compute_dtype = dtype or torch.float32
    vectors = vectors.to(device=positions.device, dtype=compute_dtype)
    kept = torch.nonzero(~zero_vectors).flatten()  # zero vectors leave the point set (no direction to compare)
    if kept.numel() == n_points:
        kept_positions, kept_vectors = positions.to(compute_dtype), vectors
    else:
        kept_device = kept.to(positions.device)
        kept_positions, kept_vectors = positions[kept_device].to(compute_dtype), vectors[kept_device]
    pairs = PairBlocks(
        kept_positions,
        kept_vectors,
        metric=metric,
        chunk_size=chunk_size,
        layers=len(values) if neighbourhood == "ball" else 1,
    )
    if neighbourhood == "ball":
        max_cap = None if max_neighbours is None else int(max_neighbours)
        means = ball_means(pairs, [eps * scale for eps in values], max_neighbours=max_cap, seed=seed)
    elif neighbourhood == "knn":
        means = knn_means(pairs, values)
    else:
        means = [inverse_distance_means(pairs)]
        values = [None]
    return [
        _result(neighbourhood, value, mean, n_points, kept, zero_vectors, False)
        for value, mean in zip(values, means)
    ]


def _result(
    neighbourhood: str,
    param: float | None,
    means: NeighbourMeans,
    n_points: int,
    kept: torch.Tensor,
    zero_vectors: torch.Tensor,
    exact_repro: bool,
) -> EnergyResult:
    """Scatter per-kept-point means back to all C points and summarise."""
    per_point = torch.full((n_points,), float("nan"), dtype=torch.float64)
    degree = torch.zeros(n_points, dtype=torch.int64)
    per_point[kept] = means.mean
    degree[kept] = means.degree
    nonzero = ~zero_vectors
    isolated = degree <= 1 if exact_repro else nonzero & (degree == 0)
    included = ~torch.isnan(per_point)
    return EnergyResult(
        neighbourhood=neighbourhood,
        param=param,
        energy=float(per_point[included].mean()) if included.any() else float("nan"),
        n_points=n_points,
        mean_degree=float(degree[nonzero].to(torch.float64).mean()) if nonzero.any() else float("nan"),
        n_isolated=int(isolated.sum()),
        n_zero=int(zero_vectors.sum()),
        per_point=per_point,
    )


def zero_rows(vectors: torch.Tensor) -> torch.Tensor:
    """``(C,)`` bool on the CPU: which rows of ``vectors`` ``(C, D)`` are exactly zero (in float64). Zero vectors
    have no direction: they leave the field's point set."""
    return (torch.linalg.vector_norm(vectors.to(torch.float64), dim=1) == 0).cpu()


def null_energy(
    positions: torch.Tensor,
    *,
    scale: float,
    neighbourhood: str = "ball",
    params: Sequence[float] = PAPER_EPSILONS,
    metric: str = "cosine",
    seed: int = 0,
    dimension: int | None = None,
    max_neighbours: int | None = None,
    chunk_size: int = 2048,
    dtype: torch.dtype | None = None,
) -> list[EnergyResult]:
    """The noise floor: the energy of isotropic random vectors on the same graph (same positions,
    scale, neighbourhood and params). Vectors are ``N(0, I)`` of dimension ``dimension`` (default: the
    positions' D), drawn from ``torch.Generator().manual_seed(seed)`` on the CPU; ≈ 1 ± O(1/√(D·|N|)).
    """
    _check_matrix("positions", positions)
    generator = torch.Generator().manual_seed(seed)
    width = positions.shape[1] if dimension is None else dimension
    random_vectors = torch.randn(positions.shape[0], width, generator=generator, dtype=torch.float64)
    return alignment_energy(
        positions,
        random_vectors.to(positions.device),
        scale=scale,
        neighbourhood=neighbourhood,
        params=params,
        metric=metric,
        max_neighbours=max_neighbours,
        seed=seed,
        chunk_size=chunk_size,
        dtype=dtype,
    )


def gravity(positions: torch.Tensor, vectors: torch.Tensor, *, normalise_vectors: bool = False) -> float:
    """``mean_c ⟨(b − x_c)/‖b − x_c‖, v_c⟩`` with ``b`` the barycentre (mean) of the positions.

    As written in DESIGN §5 only the direction to the barycentre is normalised: ``v_c`` keeps its
    length, so the value is the mean radial displacement towards ``b`` in embedding units (> 0: the
    attribute step pulls embeddings towards the centre of the cloud). With ``normalise_vectors=True``
    ``v_c`` is replaced by its unit vector (a mean cosine in [-1, 1]). Points at the barycentre and
    zero vectors are left out; nan if none remain. Computed in float64.

    Args:
        positions: ``(C, D)`` centre embeddings.
        vectors: ``(C, D)`` field.
    """
    _check_matrix("positions", positions)
    _check_matrix("vectors", vectors)
    if positions.shape != vectors.shape:
        raise ValueError(f"positions {tuple(positions.shape)} and vectors {tuple(vectors.shape)} must have the same shape.")
    x = positions.to(torch.float64)
    v = vectors.to(device=x.device, dtype=torch.float64)
    towards, at_centre = unit_rows(x.mean(0, keepdim=True) - x)
    if normalise_vectors:
        v, zero = unit_rows(v)
    else:
        zero = (v == 0).all(1)
    keep = ~(at_centre | zero)
    if not keep.any():
        return float("nan")
    return float((towards[keep] * v[keep]).sum(1).mean())


def field_correlation(vectors_a: torch.Tensor, vectors_b: torch.Tensor) -> float:
    """Mean cosine between two fields at the same centres (row c of both = curve centre c).

    ``vectors_a``, ``vectors_b``: ``(C, D)``. Rows where either vector is zero are left out; nan if
    none remain. 1: the two attributes move embeddings the same way; 0: unrelated. Computed in float64.
    """
    _check_matrix("vectors_a", vectors_a)
    _check_matrix("vectors_b", vectors_b)
    if vectors_a.shape != vectors_b.shape:
        raise ValueError(
            f"vectors_a {tuple(vectors_a.shape)} and vectors_b {tuple(vectors_b.shape)} must match: same centres, same D."
        )
    unit_a, zero_a = unit_rows(vectors_a.to(torch.float64))
    unit_b, zero_b = unit_rows(vectors_b.to(device=vectors_a.device, dtype=torch.float64))
    keep = ~(zero_a | zero_b)
    if not keep.any():
        return float("nan")
    return float((unit_a[keep] * unit_b[keep]).sum(1).mean())

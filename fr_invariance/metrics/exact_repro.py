"""The authors' released ball-energy script, reproduced number for number (DESIGN §5, ``exact_repro``).

The script is ``scripts/topo/energy_finetuning_ball.py`` of github.com/mantonios107/attrs-fr-embs (run
as ``random.seed(s); np.random.seed(s)`` then its ``compute_energy``). What it computes, and what this
module reproduces (re-implemented from reading it, vectorised except the per-row draws its stream needs):

- **Random sources.** Python's ``random`` shuffles each moving dimension's sorted curve ids once, for
  the 8 dimensions in the order ``'0'..'4', 'brightness', 'contrast', 'hue'``; the first ``max_curves``
  ids are kept and the curves are then ordered by ``id_curve``. numpy's single global stream draws, per
  identity (``.npy`` files in sorted file-name order here), the d̄ pairs, then for every dimension and
  every ε in turn the cap subsets; it never restarts. :class:`ScriptStreams` holds the two streams.
- **d̄**: ``randint(0, N, n_pairs)`` twice over ALL ``N`` rows of the identity's array, then the float32
  mean of scikit-learn's ``paired_cosine_distances`` (``½‖â − b̂‖²``): :func:`script_scale`.
- **Ball** of radius ``ε·d̄`` (float32; computed with numpy's scalar rules, as the script does) on the
  centres with scikit-learn's brute-force cosine distance in float32: rows normalised by
  ``sklearn.preprocessing.normalize``, ``1 − x̂ᵢ·x̂ⱼ`` from one float32 GEMM, clipped to [0, 2], the
  diagonal set to 0 (the query set is the fitted set) — so each point, also a zero-norm one, is in its own
  ball (self-loop), and a zero-norm position is at distance 1 from every other point. Membership is
  ``distance <= radius``. The GEMM runs through numpy's BLAS on row chunks of ≥ 2 rows, which gives the
  same float32 bits as the script's single product (checked on this machine's OpenBLAS).
- **Cap** ``m``: rows in increasing order whose ball (self included) holds more than m entries draw
  ``choice(len, m, replace=False)`` from the numpy stream — positions into the row's entries in increasing
  column order; other rows draw nothing. The self-loop may be dropped.
- **Vector distance** ``d_V``: ``paired_cosine_distances`` of the raw vectors — ``1 − cos``; a zero vector
  is at 0.5 from a non-zero one and 0 from another zero one; a point's self-loop scores 0.
- **Energy**: per point the plain mean of ``d_V`` over its (capped) row, then the plain mean over all C
  points (an isolated point scores 0 and counts).

Not reproduced: the script chunks scikit-learn's distance computation beyond ~11,585 centres (1 GB of
float64 working memory), where a zero-norm position stops being its own neighbour and the script's
counts loop fails; here the self-loop is always kept. The script computes in the ``.npy`` dtype; the
paper's arrays are float32 and so is everything here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics.pairwise import paired_cosine_distances
from sklearn.preprocessing import normalize

from fr_invariance.metrics.neighbours import MAX_CHUNK_PAIRS

SCRIPT_DIMENSIONS: tuple[str, ...] = ("0", "1", "2", "3", "4", "brightness", "contrast", "hue")
"""The script's moving dimensions, in its loop order."""

PACKED_MASK_BUDGET = 256 * 2**20
"""Bytes of bit-packed ball masks kept between the two passes; above it the masks are recomputed."""


@dataclass
class ScriptStreams:
    """The script's two random streams: Python's ``random`` (curve shuffle) and numpy's global legacy
    ``RandomState`` (d̄ pairs and cap draws). ``ScriptStreams.seeded(s)`` is ``random.seed(s);
    np.random.seed(s)`` without touching the global generators."""

    python: random.Random
    numpy: np.random.RandomState

    @classmethod
    def seeded(cls, seed: int) -> ScriptStreams:
        return cls(random.Random(seed), np.random.RandomState(seed))


@dataclass(frozen=True)
class ScriptBall:
    """Per-point result of one ε.

    Attributes:
        per_point: ``(C,)`` float64 mean ``d_V`` over the point's (capped) row, self-loop included.
        degree: ``(C,)`` int64 row length before the cap, self-loop included (>= 1).
    """

    per_point: np.ndarray
    degree: np.ndarray


def script_curve_selection(
    curve_ids: Mapping[str, np.ndarray], streams: ScriptStreams, max_curves: int | None = None
) -> dict[str, np.ndarray]:
    """The curves the script measures per moving dimension.

    Args:
        curve_ids: moving-dimension label → the ``id_curve`` values of its rows (any order, repeats ok).
        streams: the script's streams; Python's ``random`` is consumed for every label of
            :data:`SCRIPT_DIMENSIONS` in order (a label without curves consumes nothing).
        max_curves: keep the first ``max_curves`` shuffled ids (None: all; the shuffle still runs).

    Returns:
        label → selected ``id_curve`` values sorted increasingly, for the labels present in ``curve_ids``.
    """
    selected = {}
    for label in SCRIPT_DIMENSIONS:
        ids = list(np.unique(np.asarray(curve_ids.get(label, []))))
        streams.python.shuffle(ids)
        if label in curve_ids:
            selected[label] = np.sort(np.asarray(ids[:max_curves] if max_curves is not None else ids))
    return selected


def script_scale(embeddings: np.ndarray, rng: np.random.RandomState, n_pairs: int = 10_000) -> np.float32:
    """The script's d̄ of one identity: ``(N, D)`` embeddings (cast to float32) → float32 scalar.

    Draws ``randint(0, N, n_pairs)`` twice from ``rng`` and averages ``paired_cosine_distances`` of the
    pairs in float32.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n_rows = embeddings.shape[0]
    first = rng.randint(0, n_rows, n_pairs)
    second = rng.randint(0, n_rows, n_pairs)
    return np.mean(paired_cosine_distances(embeddings[first], embeddings[second]))


def _chunks(n_points: int, chunk_size: int) -> list[slice]:
    """Row chunks of at least 2 rows (a 1-row product takes a different BLAS path with other rounding)."""
    rows = max(2, min(chunk_size, MAX_CHUNK_PAIRS // max(n_points, 1)))
    starts = list(range(0, n_points, rows))
    bounds = [slice(start, min(start + rows, n_points)) for start in starts]
    if len(bounds) > 1 and bounds[-1].stop - bounds[-1].start == 1:
        bounds[-2:] = [slice(bounds[-2].start, n_points)]
    return bounds


_POPCOUNT = np.array([(value).bit_count() for value in range(256)], dtype=np.int32)
"""Set bits of every byte value."""
_SELECT = np.array([[([bit for bit in range(8) if value & (0x80 >> bit)] + [0] * 8)[rank] for rank in range(8)]
                    for value in range(256)], dtype=np.int64)
"""``_SELECT[value, r]``: column offset (0..7, most significant bit first, as ``np.packbits``) of the r-th set bit."""


class _BallRows:
    """Ball membership of row chunks with scikit-learn's float32 cosine distances (see the module
    docstring), bit-packed per radius, with reused buffers."""

    def __init__(self, unit_positions: np.ndarray, radii: Sequence[np.floating], max_rows: int):
        self.unit = unit_positions
        self.radii = radii
        n_points = unit_positions.shape[0]
        self.distance = np.empty((max_rows, n_points), dtype=np.float32)
        self.inside = np.empty((max_rows, n_points), dtype=bool)

    def packed(self, rows: slice) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per radius: the row lengths ``(rows,)`` int64 and the packed rows ``(rows, ⌈C/8⌉)`` uint8."""
        n_rows = rows.stop - rows.start
        distance, inside = self.distance[:n_rows], self.inside[:n_rows]
        np.matmul(self.unit[rows], self.unit.T, out=distance)  # the script's float32 product, through numpy's BLAS
        np.subtract(np.float32(1.0), distance, out=distance)
        np.clip(distance, 0.0, 2.0, out=distance)
        local = np.arange(n_rows)
        distance[local, rows.start + local] = 0.0  # the query set is the fitted set: self at distance 0
        lengths, packed = [], []
        for radius in self.radii:
            np.less_equal(distance, radius, out=inside)
            lengths.append(np.count_nonzero(inside, axis=1))
            packed.append(np.packbits(inside, axis=1))
        return lengths, packed


def _columns_of_positions(packed_rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Column of the ``positions[i, j]``-th (0-based) entry of row i, rows given bit-packed ``(n, ⌈C/8⌉)``:
    the entries of a row in increasing column order, as ``scipy.sparse`` lists them. ``(n, m)`` int64."""
    running = np.cumsum(_POPCOUNT[packed_rows], axis=1, dtype=np.int32)  # entries up to each byte
    target = torch.from_numpy((positions + 1).astype(np.int32))
    byte = torch.searchsorted(torch.from_numpy(running), target).numpy()  # first byte reaching the target
    before = np.where(byte > 0, np.take_along_axis(running, np.maximum(byte - 1, 0), axis=1), 0)
    rank = positions - before
    value = np.take_along_axis(packed_rows, byte, axis=1)
    return byte * 8 + _SELECT[value, rank]


def script_ball(
    positions: np.ndarray,
    vectors: np.ndarray,
    scale: float | np.floating,
    epsilons: Sequence[float],
    *,
    max_neighbours: int | None,
    rng: np.random.RandomState,
    chunk_size: int = 2048,
) -> list[ScriptBall]:
    """The script's per-point ball energies of one field, one :class:`ScriptBall` per ε in order.

    Args:
        positions: ``(C, D)`` centre embeddings (cast to float32).
        vectors: ``(C, D)`` field ``e(step 2) − e(step 0)`` (cast to float32; zero rows allowed).
        scale: d̄ (cast to float32, as the script's is), e.g. from :func:`script_scale`.
        epsilons: ε values, in the order the script loops over them (the order of its draws).
        max_neighbours: the cap m (None: no cap, no draws).
        rng: the numpy stream the cap draws continue.
        chunk_size: rows per block (memory ``O(chunk_size · C)``).

    Two passes over row blocks: the first finds every row's ball for every ε (bit-packed; the draws only
    depend on the ball sizes), then the draws run in the script's order (ε by ε, rows in increasing
    order; the only per-row loop), and the second pass sums ``d_V`` over whole rows and over the drawn
    entries — both vectorised.
    """
    x = np.ascontiguousarray(positions, dtype=np.float32)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    n_points = x.shape[0]
    unit_x, unit_v = normalize(x), normalize(v)
    zero = ~unit_v.any(axis=1)
    half = np.where(zero, 0.0, 0.5)  # ½‖v̂‖² (½, or 0 for a zero vector): d_V(i, j) = h_i + h_j − ⟨v̂_i, v̂_j⟩
    any_zero = bool(zero.any())
    scale32 = np.float32(scale)
    radii = [eps * scale32 for eps in epsilons]  # numpy's scalar rules, as in the script
    chunks = _chunks(n_points, chunk_size)
    max_rows = max((rows.stop - rows.start for rows in chunks), default=0)
    balls_of = _BallRows(unit_x, radii, max_rows)

    lengths = np.zeros((len(radii), n_points), dtype=np.int64)
    keep_masks = len(radii) * n_points * math.ceil(n_points / 8) <= PACKED_MASK_BUDGET
    stored: list[list[np.ndarray]] = []
    for rows in chunks:
        chunk_lengths, packed = balls_of.packed(rows)
        for k, length in enumerate(chunk_lengths):
            lengths[k, rows] = length
        if keep_masks:
            stored.append(packed)

    capped_rows, draws = [], []
    for k in range(len(radii)):
        rows_over = np.flatnonzero(lengths[k] > max_neighbours) if max_neighbours is not None else np.empty(0, np.int64)
        chosen = np.empty((rows_over.size, max_neighbours or 0), dtype=np.int64)
        for n, length in enumerate(lengths[k, rows_over].tolist()):
            # legacy RandomState: choice(length, m, replace=False) is permutation(length)[:m] (same draws)
            chosen[n] = rng.permutation(length)[:max_neighbours]
        capped_rows.append(rows_over)
        draws.append(chosen)

    sums = np.zeros((len(radii), n_points), dtype=np.float64)
    half32 = torch.from_numpy(half.astype(np.float32))
    ones = torch.ones(n_points, dtype=torch.float32)
    unit_v_t = torch.from_numpy(unit_v)
    gram_buffer = torch.empty((max_rows, n_points), dtype=torch.float32)
    inside_buffer = torch.empty((max_rows, n_points), dtype=torch.float32)
    for index, rows in enumerate(chunks):
        n_rows = rows.stop - rows.start
        local = np.arange(n_rows)
        gram = torch.matmul(unit_v_t[rows], unit_v_t.T, out=gram_buffer[:n_rows])
        gram_np = gram.numpy()
        # a self-loop scores exactly 0 in the script; the Gram form would leave ~1e-8
        self_term = 2.0 * half[rows] - gram_np[local, rows.start + local]
        packed = stored[index] if keep_masks else balls_of.packed(rows)[1]
        for k in range(len(radii)):
            first, last = np.searchsorted(capped_rows[k], [rows.start, rows.stop])
            over = capped_rows[k][first:last] - rows.start
            count = lengths[k, rows]
            if over.size < n_rows:  # rows kept whole: Σ_j (h_i + h_j − ⟨v̂_i, v̂_j⟩) over the ball
                inside = inside_buffer[:n_rows]
                inside.copy_(torch.from_numpy(np.unpackbits(packed[k], axis=1, count=n_points)))
                h_sum = torch.mv(inside, half32).numpy().astype(np.float64) if any_zero else 0.5 * count
                gram_sum = torch.mv(inside.mul_(gram), ones).numpy().astype(np.float64)
                sums[k, rows] = half[rows] * count + h_sum - gram_sum - self_term
            if over.size:  # capped rows: the drawn positions → columns → their d_V
                columns = _columns_of_positions(packed[k][over], draws[k][first:last])
                picked = gram_np[over[:, None], columns].astype(np.float64)
                totals = half[rows][over, None] + half[columns] - picked
                totals[columns == (over + rows.start)[:, None]] = 0.0
                sums[k, rows.start + over] = totals.sum(1)

    balls = []
    for k in range(len(radii)):
        kept = lengths[k] if max_neighbours is None else np.minimum(lengths[k], max_neighbours)
        per_point = np.clip(sums[k] / kept, 0.0, 2.0)  # Gram rounding can leave a self-only row at -1e-8
        balls.append(ScriptBall(per_point=per_point, degree=lengths[k].copy()))
    return balls

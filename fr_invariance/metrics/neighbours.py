"""Chunked all-pairs neighbourhood reductions behind the alignment energy (DESIGN §5).

The floor of the computation is two dense Gram products per field: positions ``(C, D)`` against
themselves (-> ``d_X``) and unit vectors against themselves (-> ``d_V``). Both are symmetric, so
neighbourhoods that only need per-point sums (ball without a cap, inverse distance) visit the upper
triangle of blocks only and credit every off-diagonal block to its rows and, transposed, to its
columns — half the GEMM work. Neighbourhoods that need whole rows in order (knn, a capped ball) visit
full-row chunks. Blocks are computed into reused buffers (memory ``O(block²)`` or ``O(rows · C)``, never
``C × C``) and every neighbourhood parameter (all ε, all k) is served by the same pass.

Neighbourhoods are weight matrices ``W`` (0/1 for ball and knn, ``1/d_X`` for inverse distance),
reduced without ever forming ``d_V`` elementwise:

    Σ_j W_ij d_V(i, j) = h_i Σ_j W_ij + Σ_j W_ij h_j − Σ_j W_ij ⟨v̂_i, v̂_j⟩,   h = ½‖v̂‖² ∈ {0, ½},

which is ``1 − cos`` for non-zero vectors and scikit-learn's ``paired_cosine_distances`` convention
(``½‖û − ŵ‖²``: 0.5 against a zero vector, 0 between two)
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

MAX_CHUNK_PAIRS = 1 << 24
"""Upper bound on the pairs held by one block (64 MB per float32 buffer), whatever ``chunk_size`` asks."""


@dataclass(frozen=True)
class NeighbourMeans:
    """Per-point result of one neighbourhood parameter.

    Attributes:
        mean: ``(C,)`` float64 (weighted) mean of ``d_V`` over ``N(c)``; nan where ``N(c)`` is empty.
        degree: ``(C,)`` int64 ``|N(c)|`` (ball: before any cap; inverse_distance: neighbours with
            non-zero weight).
    """

    mean: torch.Tensor
    degree: torch.Tensor


def unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit L2 norm, zero rows left at zero (scikit-learn's ``normalize``).

    Returns ``(unit, is_zero)``: ``(N, D)`` in ``x``'s dtype and ``(N,)`` bool.
    """
    norms = torch.linalg.vector_norm(x, dim=1)
    is_zero = norms == 0
    return x / torch.where(is_zero, torch.ones_like(norms), norms)[:, None], is_zero


@dataclass
class Block:
    """Rows ``rows`` × columns ``cols`` of the pair matrices, as views into reused buffers (valid until
    the next block).

    Attributes:
        rows, cols: index ranges.
        mirrored: the block also stands for its transpose (an off-diagonal block of a symmetric pass),
            so its column sums belong to the points ``cols``.
        distance: ``d_X``; +inf on a point against itself unless self is included.
        vector_gram: ``⟨v̂_i, v̂_j⟩``.
        work: ``(layers, rows, cols)`` scratch buffer for weights.
    """

    rows: slice
    cols: slice
    mirrored: bool
    distance: torch.Tensor
    vector_gram: torch.Tensor
    work: torch.Tensor


class PairBlocks:
    """Blocks of the position-distance and vector-Gram matrices of one field.

    Args:
        positions: ``(C, D)`` in the compute dtype.
        vectors: ``(C, D')`` in the compute dtype (zero vectors allowed).
        metric: ``"cosine"`` (``d_X = 1 − cos``) or ``"euclidean"``.
        chunk_size: block side (symmetric) or rows per chunk (full rows), capped so that a block holds
            at most :data:`MAX_CHUNK_PAIRS` pairs.
        include_self: keep each point in its own neighbourhood (distance as computed, ~0, and clipped
            to [0, 2] for cosine like scikit-learn's ``cosine_distances``); otherwise its distance is
            +inf, which removes it from every neighbourhood.
        layers: weight matrices per block (one per ε), stacked in ``Block.work``.
    """

    def __init__(
        self,
        positions: torch.Tensor,
        vectors: torch.Tensor,
        *,
        metric: str,
        chunk_size: int,
        include_self: bool,
        layers: int = 1,
    ):
        self.n_points = positions.shape[0]
        self.chunk_size = chunk_size
        self.include_self = include_self
        self.layers = layers
        if metric == "cosine":
            self.position_rows, _ = unit_rows(positions)
            self.position_sq = None
        else:
            self.position_rows = positions
            self.position_sq = (positions * positions).sum(1)
        self.unit_vectors, zero_vectors = unit_rows(vectors)
        self.half_sq = 0.5 * (~zero_vectors).to(positions.dtype)
        self.any_zero = bool(zero_vectors.any())
        self.ones = torch.ones(self.n_points, dtype=positions.dtype, device=positions.device)

    def full_rows(self) -> Iterator[Block]:
        """Chunks of whole rows, in row order."""
        rows = max(1, min(self.chunk_size, MAX_CHUNK_PAIRS // max(self.n_points, 1)))
        everything = slice(0, self.n_points)
        starts = range(0, self.n_points, rows)
        ranges = [(slice(start, min(start + rows, self.n_points)), everything, False) for start in starts]
        return self._blocks(ranges, rows * self.n_points)

    def upper_triangle(self) -> Iterator[Block]:
        """Blocks ``(I, J)`` with ``J >= I``; off-diagonal ones are ``mirrored``."""
        side = max(1, min(self.chunk_size, int(MAX_CHUNK_PAIRS**0.5)))
        bounds = [slice(start, min(start + side, self.n_points)) for start in range(0, self.n_points, side)]
        ranges = [(rows, cols, j > i) for i, rows in enumerate(bounds) for j, cols in enumerate(bounds) if j >= i]
        return self._blocks(ranges, side * side)

    def _blocks(self, ranges: list[tuple[slice, slice, bool]], capacity: int) -> Iterator[Block]:
        like = self.position_rows
        capacity = min(capacity, self.n_points**2)
        sizes = (capacity, capacity, self.layers * capacity)
        buffers = [torch.empty(size, dtype=like.dtype, device=like.device) for size in sizes]
        for rows, cols, mirrored in ranges:
            n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
            distance, vector_gram = (buffer[: n_rows * n_cols].view(n_rows, n_cols) for buffer in buffers[:2])
            work = buffers[2][: self.layers * n_rows * n_cols].view(self.layers, n_rows, n_cols)
            torch.matmul(self.position_rows[rows], self.position_rows[cols].T, out=distance)
            if self.position_sq is None:
                distance.neg_().add_(1.0)
                if self.include_self:
                    distance.clamp_(0.0, 2.0)
            else:
                distance.mul_(-2.0).add_(self.position_sq[rows, None]).add_(self.position_sq[None, cols])
                distance.clamp_(min=0.0).sqrt_()
            offset = rows.start - cols.start
            if not self.include_self and 0 <= offset < n_cols:
                distance[:, offset:].diagonal().fill_(float("inf"))
            torch.matmul(self.unit_vectors[rows], self.unit_vectors[cols].T, out=vector_gram)
            yield Block(rows, cols, mirrored, distance, vector_gram, work)

    def accumulate(
        self, block: Block, weights: torch.Tensor, sums: torch.Tensor, totals: torch.Tensor | None = None
    ) -> None:
        """Add ``Σ_j W_ij d_V(i, j)`` (and ``Σ_j W_ij`` if ``totals`` is given) of the block to float64 CPU
        accumulators: row sums to ``block.rows`` and, for a mirrored block, column sums to ``block.cols``.

        Args:
            weights: ``(L, rows, cols)`` weight matrices (overwritten).
            sums, totals: ``(L, C)`` accumulators.
        """
        layers, n_rows, n_cols = weights.shape
        flat = weights.view(layers * n_rows, n_cols)
        half_rows, half_cols = self.half_sq[block.rows], self.half_sq[block.cols]
        row_total = torch.mv(flat, self.ones[block.cols]).view(layers, n_rows)
        if self.any_zero:
            row_sum = half_rows * row_total + torch.mv(flat, half_cols).view(layers, n_rows)
        else:
            row_sum = row_total.clone()
        if block.mirrored:
            col_total = weights.sum(1)
            if self.any_zero:
                col_sum = half_cols * col_total + torch.matmul(half_rows, weights)
            else:
                col_sum = col_total.clone()
        weights.mul_(block.vector_gram)
        row_sum -= torch.mv(flat, self.ones[block.cols]).view(layers, n_rows)
        updates = [(block.rows, row_sum, row_total)]
        if block.mirrored:
            col_sum -= weights.sum(1)
            updates.append((block.cols, col_sum, col_total))
        for points, own_sum, total in updates:
            sums[:, points] += own_sum.to(device="cpu", dtype=torch.float64)
            if totals is not None:
                totals[:, points] += total.to(device="cpu", dtype=torch.float64)

    def dissimilarity(self, block: Block, row: int, columns: torch.Tensor) -> torch.Tensor:
        """``d_V`` between point ``block.rows.start + row`` and the points ``block.cols.start + columns``."""
        half_row = self.half_sq[block.rows.start + row]
        return half_row + self.half_sq[block.cols.start + columns] - block.vector_gram[row, columns]


def ball_means(
    pairs: PairBlocks, radii: Sequence[float], *, max_neighbours: int | None, seed: int
) -> list[NeighbourMeans]:
    """Mean ``d_V`` over ``{j : d_X(i, j) <= r}`` for every radius ``r`` in one pass.

    With ``max_neighbours = m``, a row with more than m entries keeps m of them: for each radius a
    fresh ``np.random.RandomState(seed)``; rows in increasing order, and only rows with more than m
    entries, draw ``choice(row_len, m, replace=False)`` — positions into the row's entries listed in
    increasing column order (the order of ``scipy.sparse`` ``nonzero()`` on a connectivity graph).
    """
    n_points = pairs.n_points
    sizes = torch.zeros(len(radii), n_points, dtype=torch.float64)
    sums = torch.zeros(len(radii), n_points, dtype=torch.float64)
    capped = torch.zeros(len(radii), n_points, dtype=torch.bool)
    generators = [np.random.RandomState(seed) for _ in radii]

    radii_column = torch.tensor(list(radii), dtype=pairs.ones.dtype, device=pairs.ones.device).view(-1, 1, 1)
    blocks = pairs.upper_triangle() if max_neighbours is None else pairs.full_rows()
    for block in blocks:
        inside = torch.le(block.distance.unsqueeze(0), radii_column, out=block.work)
        pairs.accumulate(block, inside, sums, sizes)
        if max_neighbours is None:
            continue
        for k, radius in enumerate(radii):
            for row in torch.nonzero(sizes[k, block.rows] > max_neighbours).flatten().tolist():
                columns = torch.nonzero(block.distance[row] <= radius).flatten()
                keep = torch.from_numpy(generators[k].choice(columns.numel(), max_neighbours, replace=False))
                picked = columns[keep.to(columns.device)]
                picked_dissimilarity = pairs.dissimilarity(block, row, picked).to(torch.float64)
                sums[k, block.rows.start + row] = float(picked_dissimilarity.sum())
                capped[k, block.rows.start + row] = True

    return [
        NeighbourMeans(
            mean=sums[k] / torch.where(capped[k], float(max_neighbours or 0), sizes[k]),
            degree=sizes[k].round().to(torch.int64),
        )
        for k in range(len(radii))
    ]


def knn_means(pairs: PairBlocks, ks: Sequence[int]) -> list[NeighbourMeans]:
    """Mean ``d_V`` over the k nearest other points (self excluded by ``pairs``), every k in one pass.

    Ties at the k-th distance are broken by lower index first. A point with fewer than k others uses
    all of them.
    """
    n_points = pairs.n_points
    effective = [min(k, max(n_points - 1, 0)) for k in ks]
    largest = max(effective)
    if largest == 0:  # fewer than two points: everybody is isolated
        nothing = torch.full((n_points,), float("nan"), dtype=torch.float64)
        return [NeighbourMeans(mean=nothing, degree=torch.zeros(n_points, dtype=torch.int64)) for _ in ks]

    sums = torch.zeros(len(ks), n_points, dtype=torch.float64)
    for block in pairs.full_rows():
        kth_values = torch.topk(block.distance, largest, dim=1, largest=False, sorted=True).values
        for index, k in enumerate(effective):
            threshold = kth_values[:, k - 1 : k]
            selected = block.distance <= threshold
            overfull = torch.nonzero(selected.sum(1) > k).flatten()
            if overfull.numel():
                below = block.distance[overfull] < threshold[overfull]
                ties = block.distance[overfull] == threshold[overfull]
                room = k - below.sum(1, keepdim=True)
                selected[overfull] = below | (ties & (ties.cumsum(1) <= room))
            block.work[0].copy_(selected)
            pairs.accumulate(block, block.work, sums[index : index + 1])

    return [
        NeighbourMeans(mean=sums[index] / k, degree=torch.full((n_points,), k, dtype=torch.int64))
        for index, k in enumerate(effective)
    ]


def inverse_distance_means(pairs: PairBlocks) -> NeighbourMeans:
    """Weighted mean of ``d_V`` over all other points (self excluded by ``pairs``) with weight
    ``1/d_X``, 0 where ``d_X = 0``."""
    totals = torch.zeros(1, pairs.n_points, dtype=torch.float64)
    sums = torch.zeros(1, pairs.n_points, dtype=torch.float64)
    degree = torch.zeros(pairs.n_points, dtype=torch.int64)
    for block in pairs.upper_triangle():
        weights = torch.reciprocal(block.distance.clamp_(min=0.0), out=block.work[0])
        weights.masked_fill_(torch.isinf(weights), 0.0)  # d_X = 0 (coincident points)
        positive = weights > 0
        degree[block.rows] += positive.sum(1).cpu()
        if block.mirrored:
            degree[block.cols] += positive.sum(0).cpu()
        pairs.accumulate(block, block.work, sums, totals)
    return NeighbourMeans(mean=sums[0] / totals[0], degree=degree)

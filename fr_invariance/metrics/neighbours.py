"""Chunked all-pairs neighbourhood reductions behind the alignment energy (default mode, DESIGN §5).

The floor of the computation is two dense Gram products per field: positions ``(C, D)`` against
themselves (-> ``d_X``) and unit vectors against themselves (-> ``d_V``). Both are symmetric, so
neighbourhoods that only need per-point sums (ball, inverse distance) visit the upper triangle of blocks
only and credit every off-diagonal block to its rows and, transposed, to its columns — half the GEMM
work; the capped ball does the same with per-group sums (see :func:`ball_means`). knn visits full-row
chunks. Blocks are computed into reused buffers (memory ``O(block²)`` or ``O(rows · C)``, never
``C × C``) and every neighbourhood parameter (all ε, all k) is served by the same pass.

Neighbourhoods are weight matrices ``W`` (0/1 for ball and knn, ``1/d_X`` for inverse distance),
reduced without ever forming ``d_V`` elementwise: with unit vectors ``v̂`` (zero vectors are removed
before, see :func:`fr_invariance.metrics.energy.alignment_energy`),

    Σ_j W_ij d_V(i, j) = Σ_j W_ij − Σ_j W_ij ⟨v̂_i, v̂_j⟩.

The released script's own algorithm (``exact_repro``) lives in :mod:`fr_invariance.metrics.exact_repro`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

MAX_CHUNK_PAIRS = 1 << 24
"""Upper bound on the pairs held by one block (64 MB per float32 buffer), whatever ``chunk_size`` asks."""

CAP_GROUP = 64
"""Columns per group in the capped-ball scan (see :func:`ball_means`)."""


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
        rows, cols: index ranges (``cols`` are column *slots*: with a column order, slot s holds point
            ``order[s]``; slots past C are padding).
        mirrored: the block also stands for its transpose (an off-diagonal block of a symmetric pass),
            so its column sums belong to the points ``cols``.
        distance: ``d_X``; +inf on a point against itself and on padding slots.
        vector_gram: ``⟨v̂_i, v̂_j⟩`` (0 on padding slots).
        work: ``(layers, rows, cols)`` scratch buffer for weights.
    """

    rows: slice
    cols: slice
    mirrored: bool
    distance: torch.Tensor
    vector_gram: torch.Tensor
    work: torch.Tensor


class PairBlocks:
    """Blocks of the position-distance and vector-Gram matrices of one field (default mode).

    Args:
        positions: ``(C, D)`` in the compute dtype.
        vectors: ``(C, D')`` in the compute dtype, no zero rows.
        metric: ``"cosine"`` (``d_X = 1 − cos``) or ``"euclidean"``.
        chunk_size: block side (symmetric) or rows per chunk (full rows), capped so that a block holds
            at most :data:`MAX_CHUNK_PAIRS` pairs.
        layers: weight matrices per block (one per ε), stacked in ``Block.work``.
        n_real: rows from ``n_real`` on are padding (distance +inf to and from everything); default none.

    A point is never its own neighbour: its distance to itself is +inf.
    """

    def __init__(self, positions: torch.Tensor, vectors: torch.Tensor, *, metric: str, chunk_size: int,
                 layers: int = 1, n_real: int | None = None):
        self.n_points = positions.shape[0]
        self.n_real = self.n_points if n_real is None else n_real
        self.chunk_size = chunk_size
        self.layers = layers
        self.metric = metric
        if metric == "cosine":
            self.position_rows, _ = unit_rows(positions)
            self.position_sq = None
        else:
            self.position_rows = positions
            self.position_sq = (positions * positions).sum(1)
        self.unit_vectors, zero_vectors = unit_rows(vectors)
        if bool(zero_vectors[: self.n_real].any()):
            raise ValueError("PairBlocks needs non-zero vectors; remove zero vectors first.")
        self.ones = torch.ones(self.n_points, dtype=positions.dtype, device=positions.device)

    def permuted(self, order: torch.Tensor, width: int) -> PairBlocks:
        """The same points in the order ``order`` (row s = point ``order[s]``), padded to ``width`` rows."""
        padding = width - self.n_points

        def arrange(x: torch.Tensor) -> torch.Tensor:
            x = x[order.to(x.device)]
            return torch.cat([x, x.new_zeros((padding, *x.shape[1:]))]) if padding else x

        return PairBlocks(arrange(self.position_rows), arrange(self.unit_vectors), metric=self.metric,
                          chunk_size=self.chunk_size, layers=self.layers, n_real=self.n_points)

    def full_rows(self, order: torch.Tensor | None = None, width: int | None = None,
                  layers: int | None = None) -> Iterator[Block]:
        """Chunks of whole rows, in row order.

        Args:
            order: optional ``(C,)`` permutation: column slot s holds point ``order[s]``.
            width: number of column slots (>= C; slots past C are padding with distance +inf).
            layers: weight layers per block (default ``self.layers``).
        """
        width = self.n_points if width is None else width
        rows = max(1, min(self.chunk_size, MAX_CHUNK_PAIRS // max(width, 1)))
        starts = range(0, self.n_points, rows)
        ranges = [(slice(start, min(start + rows, self.n_points)), slice(0, width), False) for start in starts]
        return self._blocks(ranges, rows * width, _ColumnSide(self, order, width), layers or self.layers)

    def upper_triangle(self, multiple: int = 1) -> Iterator[Block]:
        """Blocks ``(I, J)`` with ``J >= I``; off-diagonal ones are ``mirrored``. Block sides are multiples
        of ``multiple`` (except the last)."""
        side = max(1, min(self.chunk_size, int(MAX_CHUNK_PAIRS**0.5)))
        side = max(multiple, side // multiple * multiple)
        bounds = [slice(start, min(start + side, self.n_points)) for start in range(0, self.n_points, side)]
        ranges = [(rows, cols, j > i) for i, rows in enumerate(bounds) for j, cols in enumerate(bounds) if j >= i]
        return self._blocks(ranges, side * side, _ColumnSide(self, None, self.n_points), self.layers)

    def _blocks(self, ranges: list[tuple[slice, slice, bool]], capacity: int, columns: _ColumnSide,
                layers: int) -> Iterator[Block]:
        like = self.position_rows
        capacity = min(capacity, self.n_points * columns.width)
        sizes = (capacity, capacity, layers * capacity)
        buffers = [torch.empty(size, dtype=like.dtype, device=like.device) for size in sizes]
        for rows, cols, mirrored in ranges:
            n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
            distance, vector_gram = (buffer[: n_rows * n_cols].view(n_rows, n_cols) for buffer in buffers[:2])
            work = buffers[2][: layers * n_rows * n_cols].view(layers, n_rows, n_cols)
            torch.matmul(self.position_rows[rows], columns.positions[cols].T, out=distance)
            if self.position_sq is None:
                distance.neg_().add_(1.0)
            else:
                distance.mul_(-2.0).add_(self.position_sq[rows, None]).add_(columns.position_sq[None, cols])
                distance.clamp_(min=0.0).sqrt_()
            columns.mask_self_and_padding(distance, rows, cols)
            if self.n_real < self.n_points:  # padding rows and columns
                distance[max(self.n_real - rows.start, 0) :].fill_(float("inf"))
                distance[:, max(self.n_real - cols.start, 0) :].fill_(float("inf"))
            torch.matmul(self.unit_vectors[rows], columns.vectors[cols].T, out=vector_gram)
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
        ones = self.ones[block.cols]
        row_total = torch.mv(flat, ones).view(layers, n_rows)
        col_total = weights.sum(1) if block.mirrored else None
        weights.mul_(block.vector_gram)
        row_sum = row_total - torch.mv(flat, ones).view(layers, n_rows)
        updates = [(block.rows, row_sum, row_total)]
        if block.mirrored:
            updates.append((block.cols, col_total - weights.sum(1), col_total))
        for points, own_sum, total in updates:
            sums[:, points] += own_sum.to(device="cpu", dtype=torch.float64)
            if totals is not None:
                totals[:, points] += total.to(device="cpu", dtype=torch.float64)


class _ColumnSide:
    """The column operand of the blocks: the points in slot order (optionally permuted and padded)."""

    def __init__(self, pairs: PairBlocks, order: torch.Tensor | None, width: int):
        self.width = width
        self.n_points = pairs.n_points
        device = pairs.position_rows.device
        if order is None and width == pairs.n_points:
            self.positions, self.vectors, self.position_sq = pairs.position_rows, pairs.unit_vectors, pairs.position_sq
            self.slot_of = None
            return
        order = torch.arange(pairs.n_points, device=device) if order is None else order.to(device)
        padding = width - pairs.n_points

        def padded(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            x = x[order]
            return torch.cat([x, x.new_zeros((padding, *x.shape[1:]))]) if padding else x

        self.positions, self.vectors = padded(pairs.position_rows), padded(pairs.unit_vectors)
        self.position_sq = padded(pairs.position_sq)
        self.slot_of = torch.empty_like(order)
        self.slot_of[order] = torch.arange(pairs.n_points, device=device)

    def mask_self_and_padding(self, distance: torch.Tensor, rows: slice, cols: slice) -> None:
        """+inf at (point, its own slot) and on padding slots."""
        if self.slot_of is None:  # natural order: blocks are aligned, so self pairs lie on one diagonal
            offset = rows.start - cols.start
            if 0 <= offset < distance.shape[1]:
                distance[:, offset:].diagonal().fill_(float("inf"))
            return
        points = torch.arange(rows.start, rows.stop, device=distance.device)
        distance[torch.arange(points.numel(), device=distance.device), self.slot_of[points]] = float("inf")
        if self.width > self.n_points:
            distance[:, self.n_points:].fill_(float("inf"))


def ball_means(
    pairs: PairBlocks, radii: Sequence[float], *, max_neighbours: int | None, seed: int
) -> list[NeighbourMeans]:
    """Mean ``d_V`` over ``{j ≠ i : d_X(i, j) <= r}`` for every radius ``r`` in one pass.

    Without a cap the pass visits the upper triangle of blocks. With ``max_neighbours = m`` a row whose
    ball holds more than m points keeps m of them, uniformly at random, all rows and radii at once (no
    loop over rows):

    - one random column order per call: ``π = torch.randperm(C, generator=g)`` then per row a start
      group ``t_i = torch.randint(0, G, (C,), generator=g)`` with ``g = torch.Generator().manual_seed(seed)``
      (CPU), ``G = ⌈C / 64⌉`` groups of :data:`CAP_GROUP` = 64 consecutive slots of π;
    - row i scans the slots group by group cyclically from group ``t_i`` (slots in increasing order
      inside a group) and keeps the first m points of its ball it meets.

    A rotation of a uniformly random order is uniformly random, so each row keeps a uniform random
    m-subset of its ball; the rows' offsets differ, so the subsets of nearby points are not the same
    ones. The cut is found from per-group counts, not a sort: one symmetric pass over the upper triangle
    (in π order, blocks aligned to the groups) tabulates per point and group the ball count and the
    in-ball vector-Gram sum — the same GEMM work as the uncapped ball — and each row's one partial group
    is then recomputed. Results do not depend on ``chunk_size`` or the device (up to float rounding; a
    distance within rounding of the radius may leave a row with m − 1 kept points, and its mean is over
    those it kept).
    """
    n_points = pairs.n_points
    if max_neighbours is not None:
        return _capped_ball_means(pairs, radii, max_neighbours, seed)
    sizes = torch.zeros(len(radii), n_points, dtype=torch.float64)
    sums = torch.zeros(len(radii), n_points, dtype=torch.float64)
    radii_column = torch.tensor(list(radii), dtype=pairs.ones.dtype, device=pairs.ones.device).view(-1, 1, 1)
    for block in pairs.upper_triangle():
        inside = torch.le(block.distance.unsqueeze(0), radii_column, out=block.work)
        pairs.accumulate(block, inside, sums, sizes)
    return [NeighbourMeans(mean=sums[k] / sizes[k], degree=sizes[k].round().to(torch.int64)) for k in range(len(radii))]


CAP_TABLE_BUDGET = 512 * 2**20
"""Bytes of the per-(point, group) tables of the symmetric capped pass; above it (C ≳ 30k at 4 ε) the
capped ball runs on full rows instead (twice the GEMM work, same result)."""


class _CapScan:
    """The random scan of the capped ball (see :func:`ball_means`): column order, groups, start groups."""

    def __init__(self, n_points: int, seed: int, device: torch.device):
        self.n_groups = max(1, math.ceil(n_points / CAP_GROUP))
        self.width = self.n_groups * CAP_GROUP
        generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n_points, generator=generator)
        self.start_group = torch.randint(0, self.n_groups, (n_points,), generator=generator).to(device)
        self.steps = torch.arange(self.n_groups, device=device)

    def rotation(self, start_group: torch.Tensor) -> torch.Tensor:
        """``(rows, G)``: the groups in the order each row scans them."""
        return (start_group[:, None] + self.steps) % self.n_groups


@dataclass
class _Cut:
    """Where each row's scan reaches the cap, from its per-group counts ``(rows, G)`` in scan order."""

    total: torch.Tensor  # (rows,) float64 ball size
    capped: torch.Tensor  # (rows,) bool
    step: torch.Tensor  # (rows, 1) int64 scan step of the partial group
    need: torch.Tensor  # (rows,) float64 entries still needed in the partial group

    @classmethod
    def of(cls, counts_in_scan_order: torch.Tensor, cap: int) -> _Cut:
        seen = counts_in_scan_order.to(torch.float64).cumsum(1)
        total = seen[:, -1]
        limit = torch.full((seen.shape[0], 1), float(cap), dtype=seen.dtype, device=seen.device)
        step = torch.searchsorted(seen, limit).clamp_(max=seen.shape[1] - 1)
        return cls(total, total > cap, step, (cap - _before(seen, step)).squeeze(1))


def _before(running: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``running[:, step − 1]`` (0 where ``step = 0``), ``(rows, 1)``."""
    previous = running.gather(1, (step - 1).clamp(min=0))
    return torch.where(step > 0, previous, torch.zeros_like(previous))


def _capped_ball_means(pairs: PairBlocks, radii: Sequence[float], cap: int, seed: int) -> list[NeighbourMeans]:
    """The capped ball of :func:`ball_means`: one symmetric pass over the upper triangle of the permuted
    points that tabulates, per point and group, the ball count and the in-ball vector-Gram sum; then per
    row the groups before the cut come from the tables and the one partial group is recomputed (grouped by
    that group, one small product per group). Falls back to full rows above :data:`CAP_TABLE_BUDGET`."""
    device = pairs.ones.device
    scan = _CapScan(pairs.n_points, seed, device)
    n_layers = len(radii)
    if 2 * n_layers * scan.width * scan.n_groups * pairs.ones.element_size() > CAP_TABLE_BUDGET:
        return _capped_ball_means_full_rows(pairs, radii, cap, scan)
    permuted = pairs.permuted(scan.order, scan.width)  # row s = point order[s]; padding at the end
    permuted.layers = 1
    width, n_groups, group = scan.width, scan.n_groups, CAP_GROUP
    counts = torch.zeros(n_layers, width, n_groups, dtype=pairs.ones.dtype, device=device)
    grams = torch.zeros_like(counts)
    for block in permuted.upper_triangle(multiple=group):
        rows, cols = block.rows, block.cols
        n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
        row_groups = slice(cols.start // group, cols.stop // group)
        col_groups = slice(rows.start // group, rows.stop // group)
        for k, radius in enumerate(radii):
            inside = torch.le(block.distance, radius, out=block.work[0])
            for table in (counts, grams):
                if table is grams:
                    inside.mul_(block.vector_gram)  # in-ball ⟨v̂_i, v̂_j⟩
                table[k, rows, row_groups] = inside.view(n_rows, n_cols // group, group).sum(-1)
                if block.mirrored:
                    table[k, cols, col_groups] = inside.view(n_rows // group, group, n_cols).sum(1).T

    start_group = scan.start_group[scan.order.to(device)]  # of each permuted row
    start_group = torch.cat([start_group, start_group.new_zeros(width - pairs.n_points)])
    rotation = scan.rotation(start_group)
    sizes = torch.zeros(n_layers, pairs.n_points, dtype=torch.float64)
    sums = torch.zeros(n_layers, pairs.n_points, dtype=torch.float64)
    kept_counts = torch.zeros(n_layers, pairs.n_points, dtype=torch.float64)
    real = slice(0, pairs.n_points)
    for k, radius in enumerate(radii):
        cut = _Cut.of(counts[k].gather(1, rotation), cap)
        gram_seen = grams[k].gather(1, rotation).to(torch.float64).cumsum(1)
        kept_gram = gram_seen[:, -1].clone()
        kept = cut.total.clone()
        rows_capped = torch.nonzero(cut.capped[real]).flatten()
        if rows_capped.numel():
            partial_group = rotation.gather(1, cut.step)[rows_capped, 0]
            partial_gram, partial_kept = _partial_groups(permuted, rows_capped, partial_group,
                                                         cut.need[rows_capped], radius)
            kept_gram[rows_capped] = _before(gram_seen, cut.step)[rows_capped, 0] + partial_gram
            kept[rows_capped] = (cap - cut.need[rows_capped]) + partial_kept
        points = scan.order  # permuted row s is point order[s]
        sizes[k, points] = cut.total[real].cpu()
        kept_counts[k, points] = kept[real].cpu()
        sums[k, points] = (kept - kept_gram)[real].cpu()
    return [NeighbourMeans(mean=sums[k] / kept_counts[k], degree=sizes[k].round().to(torch.int64))
            for k in range(n_layers)]


def _partial_groups(pairs: PairBlocks, rows: torch.Tensor, groups: torch.Tensor, need: torch.Tensor,
                    radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row ``rows[i]`` (permuted, padded ``pairs``): the first ``need[i]`` ball members among the
    slots of group ``groups[i]`` (in slot order); returns their vector-Gram sum and their number
    ``(n,)`` float64 each. Rows are handled one group at a time (a loop over groups, not rows)."""
    group = CAP_GROUP
    gram_sum = torch.zeros(rows.numel(), dtype=torch.float64, device=rows.device)
    kept = torch.zeros_like(gram_sum)
    order = torch.argsort(groups, stable=True)
    values, counts = torch.unique_consecutive(groups[order], return_counts=True)
    for value, members in zip(values.tolist(), torch.split(order, counts.tolist())):
        slots = slice(value * group, (value + 1) * group)
        own = rows[members]
        x = pairs.position_rows
        if pairs.position_sq is None:
            distance = 1.0 - x[own] @ x[slots].T
        else:
            squared = pairs.position_sq[own, None] + pairs.position_sq[None, slots] - 2.0 * (x[own] @ x[slots].T)
            distance = squared.clamp_(min=0.0).sqrt_()
        offsets = own - slots.start
        mine = (offsets >= 0) & (offsets < group)
        distance[torch.nonzero(mine).flatten(), offsets[mine]] = float("inf")  # a point is not its own neighbour
        if slots.stop > pairs.n_real:
            distance[:, max(pairs.n_real - slots.start, 0) :] = float("inf")
        inside = (distance <= radius).to(distance.dtype)
        inside *= inside.cumsum(1) <= need[members, None]
        gram_sum[members] = (inside * (pairs.unit_vectors[own] @ pairs.unit_vectors[slots].T)).sum(1).to(torch.float64)
        kept[members] = inside.sum(1).to(torch.float64)
    return gram_sum, kept


def _capped_ball_means_full_rows(pairs: PairBlocks, radii: Sequence[float], cap: int,
                                 scan: _CapScan) -> list[NeighbourMeans]:
    """The capped ball of :func:`ball_means` on full rows (permuted, padded columns): for large C."""
    n_points, group, n_groups = pairs.n_points, CAP_GROUP, scan.n_groups
    slot_in_group = torch.arange(group, device=pairs.ones.device)
    sizes = torch.zeros(len(radii), n_points, dtype=torch.float64)
    sums = torch.zeros(len(radii), n_points, dtype=torch.float64)
    kept_counts = torch.zeros(len(radii), n_points, dtype=torch.float64)
    for block in pairs.full_rows(scan.order, scan.width, layers=1):
        n_rows = block.rows.stop - block.rows.start
        rotation = scan.rotation(scan.start_group[block.rows])
        for k, radius in enumerate(radii):
            inside = torch.le(block.distance, radius, out=block.work[0])
            cut = _Cut.of(inside.view(n_rows, n_groups, group).sum(-1).gather(1, rotation), cap)
            partial_slots = rotation.gather(1, cut.step) * group + slot_in_group  # (rows, 64)
            partial_inside = inside.gather(1, partial_slots)
            keep_partial = partial_inside * (partial_inside.cumsum(1) <= cut.need[:, None])

            inside.mul_(block.vector_gram)  # inside now holds in-ball ⟨v̂_i, v̂_j⟩
            gram_seen = inside.view(n_rows, n_groups, group).sum(-1).gather(1, rotation).to(torch.float64).cumsum(1)
            gram_partial = (inside.gather(1, partial_slots) * keep_partial).sum(1).to(torch.float64)
            kept_gram = torch.where(cut.capped, _before(gram_seen, cut.step).squeeze(1) + gram_partial,
                                    gram_seen[:, -1])
            kept = torch.where(cut.capped, cap - cut.need + keep_partial.sum(1).to(torch.float64), cut.total)
            sums[k, block.rows] = (kept - kept_gram).cpu()
            sizes[k, block.rows] = cut.total.cpu()
            kept_counts[k, block.rows] = kept.cpu()
    return [NeighbourMeans(mean=sums[k] / kept_counts[k], degree=sizes[k].round().to(torch.int64))
            for k in range(len(radii))]


def knn_means(pairs: PairBlocks, ks: Sequence[int]) -> list[NeighbourMeans]:
    """Mean ``d_V`` over the k nearest other points, every k in one pass.

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
            pairs.accumulate(block, block.work[:1], sums[index : index + 1])

    return [
        NeighbourMeans(mean=sums[index] / k, degree=torch.full((n_points,), k, dtype=torch.int64))
        for index, k in enumerate(effective)
    ]


def inverse_distance_means(pairs: PairBlocks) -> NeighbourMeans:
    """Weighted mean of ``d_V`` over all other points with weight ``1/d_X``, 0 where ``d_X = 0``.

    Identical position rows (after unit scaling for cosine) get weight 0 even where the Gram expansion of
    ``d_X`` leaves a rounding residue instead of an exact 0 (which would weigh ``1/residue``)."""
    totals = torch.zeros(1, pairs.n_points, dtype=torch.float64)
    sums = torch.zeros(1, pairs.n_points, dtype=torch.float64)
    degree = torch.zeros(pairs.n_points, dtype=torch.int64)
    same_position = torch.unique(pairs.position_rows, dim=0, return_inverse=True)[1]
    for block in pairs.upper_triangle():
        weights = torch.reciprocal(block.distance.clamp_(min=0.0), out=block.work[0])
        coincident = same_position[block.rows, None] == same_position[None, block.cols]
        weights.masked_fill_(torch.isinf(weights) | coincident, 0.0)  # d_X = 0 (coincident points)
        positive = weights > 0
        degree[block.rows] += positive.sum(1).cpu()
        if block.mirrored:
            degree[block.cols] += positive.sum(0).cpu()
        pairs.accumulate(block, block.work[:1], sums, totals)
    return NeighbourMeans(mean=sums[0] / totals[0], degree=degree)

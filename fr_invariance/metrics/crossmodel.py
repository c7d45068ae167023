"""Cross-model alignment of two embedding spaces (paper B, DESIGN §8).

``X`` ``(N, Dx)`` and ``Y`` ``(N, Dy)`` embed the same N images in the same order (two models, or one
backbone before and after a fine-tune); ``identities`` ``(N,)`` labels them.

Protocol (as the authors' code, re-implemented):

- :func:`identity_split` — identity-disjoint split: the sorted unique identities are shuffled with
  ``numpy.random.RandomState(seed)`` and the first ``int(0.7·I)`` train the map (seeds 42, 123, 217, 7, 531).
- :func:`centre_and_pad` — subtract the *training* means of X and Y from train and test, zero-pad both to
  ``max(Dx, Dy)`` columns.
- maps ``W`` with ``X W ≈ Y``: orthogonal Procrustes (``scipy.linalg.orthogonal_procrustes``), least
  squares (``numpy.linalg.lstsq``), ridge (``(XᵀX + αI)⁻¹ XᵀY``, α = 0.1, no intercept — equal to
  scikit-learn's ``Ridge(fit_intercept=False)``); ``unaligned`` = identity (the baseline).
- identification (:func:`identification_metrics`): mapped test X are the probes, test Y the gallery,
  cosine scores, a gallery item is relevant when it shows the probe's identity. ``paper_faithful`` keeps
  the probe's own image (its other-model embedding) in the gallery, as the authors' code does; ``strict``
  removes it. Rank-k, CMC to 50, mAP (full ranking) and mAP@50 (the authors': AP over the top 50 only,
  normalised by the relevant items found there, probes with none left out). Scores are computed in
  probe chunks with a memory budget, so memory stays ``O(chunk · N_gallery)``.
- verification (:func:`verification_pairs`, :func:`verification_metrics`): all genuine pairs ``i < j``
  of the test set and as many distinct random impostor pairs, score ``cos(X_i W, Y_j)``; ROC-AUC, EER,
  TMR at FMR ∈ {1e-4, 1e-3, 1e-2, 1e-1} = the highest TPR among ROC points with FPR ≤ target.
- :func:`rsa` (Spearman ρ of the cosine RDMs' upper triangles) and :func:`linear_cka`, on a seeded
  subsample of the test set.

Ties in identification scores are broken against the probe (a non-relevant item with the same score as
a relevant one is ranked before it), so no result depends on gallery order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from fr_invariance.errors import ConfigurationError

SEEDS = (42, 123, 217, 7, 531)
"""The authors' split seeds."""
TRAIN_FRACTION = 0.7
RIDGE_ALPHA = 0.1
RANKS = (1, 5, 10, 20)
MAX_RANK = 50
FMR_TARGETS = (1e-4, 1e-3, 1e-2, 1e-1)
METHODS = ("unaligned", "procrustes", "least_squares", "ridge")
PROTOCOLS = ("paper_faithful", "strict")


class CrossModelInputError(ConfigurationError):
    """Inputs that do not fit a cross-model computation (row mismatch, unknown method or protocol, ...)."""


# ----------------------------------------------------------------------------------------------------------
# split, pre-processing, maps
# ----------------------------------------------------------------------------------------------------------


def identity_split(identities: ArrayLike, *, seed: int, train_fraction: float = TRAIN_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, test_rows)`` (sorted row indices) of an identity-disjoint split.

    The unique identities, sorted as text (the authors' identities are folder names, so numeric labels
    1, 2, …, 10 sort as "1", "10", "2"), are shuffled with ``numpy.random.RandomState(seed).shuffle`` (the
    same stream as ``np.random.seed(seed); np.random.shuffle``) and the first ``int(train_fraction · I)``
    go to training.
    """
    if not 0.0 < train_fraction < 1.0:
        raise CrossModelInputError(f"train_fraction must be in (0, 1), got {train_fraction}.")
    identities = np.asarray(identities).reshape(-1).astype(str)
    unique = list(np.unique(identities))
    n_train = int(len(unique) * train_fraction)
    if n_train < 1 or n_train >= len(unique):
        raise CrossModelInputError(
            f"An identity-disjoint {train_fraction:.0%} split of {len(unique)} identities leaves one side empty; "
            "use more identities."
        )
    np.random.RandomState(seed).shuffle(unique)
    train_mask = np.isin(identities, np.asarray(unique[:n_train]))
    return np.flatnonzero(train_mask), np.flatnonzero(~train_mask)


@dataclass(frozen=True)
class Prepared:
    """Centred (with training means) and zero-padded train / test embeddings, all ``(·, max(Dx, Dy))``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _pad(a: np.ndarray, width: int) -> np.ndarray:
    return a if a.shape[1] == width else np.pad(a, ((0, 0), (0, width - a.shape[1])))


def centre_and_pad(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Prepared:
    """Subtract the training means of X and of Y (from train and test), zero-pad to a common width."""
    width = max(x_train.shape[1], y_train.shape[1])
    mean_x, mean_y = x_train.mean(axis=0, keepdims=True), y_train.mean(axis=0, keepdims=True)
    return Prepared(_pad(x_train - mean_x, width), _pad(y_train - mean_y, width),
                    _pad(x_test - mean_x, width), _pad(y_test - mean_y, width))


def fit_map(x: np.ndarray, y: np.ndarray, method: str, *, alpha: float = RIDGE_ALPHA) -> np.ndarray:
    """``(D, D)`` map ``W`` minimising ``‖X W − Y‖``: ``procrustes`` (W orthogonal), ``least_squares``,
    ``ridge`` (+ ``α‖W‖²``, no intercept) or ``unaligned`` (identity)."""
    from scipy.linalg import orthogonal_procrustes

    if x.shape != y.shape:
        raise CrossModelInputError(f"X and Y must have the same (padded) shape, got {x.shape} and {y.shape}.")
    if method == "unaligned":
        return np.eye(x.shape[1])
    if method == "procrustes":
        return orthogonal_procrustes(x, y)[0]
    if method == "least_squares":
        return np.linalg.lstsq(x, y, rcond=None)[0]
    if method == "ridge":
        gram = x.T @ x
        gram[np.diag_indices_from(gram)] += alpha
        return np.linalg.solve(gram, x.T @ y)
    raise CrossModelInputError(f"Unknown alignment method {method!r}; choose from {', '.join(METHODS)}.")


# ----------------------------------------------------------------------------------------------------------
# identification
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentificationResult:
    """Identification of probes against a gallery.

    Attributes:
        rank: k → share (in [0, 1]) of probes whose first relevant gallery item is within the top k.
        cmc: ``(max_rank,)``; ``cmc[k−1]`` = share with the first relevant item within the top k.
        mean_ap: mean over probes of the average precision over the full ranking.
        mean_ap_at_50: the authors' mAP@50 (AP over the top ``max_rank`` list, normalised by the relevant
            items found there; probes without any left out).
        n_probes: probes with at least one relevant gallery item (the denominators);
        n_without_mate: probes left out because the gallery holds no relevant item for them.
    """

    rank: dict[int, float]
    cmc: np.ndarray
    mean_ap: float
    mean_ap_at_50: float
    n_probes: int
    n_without_mate: int


def _unit_rows(a: torch.Tensor) -> torch.Tensor:
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _relevant_table(gallery_codes: np.ndarray, n_codes: int) -> np.ndarray:
    """``(n_codes, R_max)`` gallery indices of each identity code, padded with −1."""
    order = np.argsort(gallery_codes, kind="stable")
    sorted_codes = gallery_codes[order]
    counts = np.bincount(gallery_codes, minlength=n_codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    positions = np.arange(order.size) - starts[sorted_codes]
    table = np.full((n_codes, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    table[sorted_codes, positions] = order
    return table


def _padded_width(n_gallery: int) -> tuple[int, int]:
    """``(width, words_per_block)``: the gallery width padded so a row of booleans splits into blocks of
    ``words_per_block`` (≤ 255) 8-byte words (see :func:`_count_at_least`)."""
    words = -(-max(n_gallery, 1) // 8)
    words_per_block = min(255, words)
    blocks = -(-words // words_per_block)
    return blocks * words_per_block * 8, words_per_block


def _count_at_least(scores: torch.Tensor, thresholds: torch.Tensor, mask: torch.Tensor, words_per_block: int) -> torch.Tensor:
    """Per row, how many ``scores`` ``(c, W)`` are ≥ ``thresholds`` ``(c, 1)``: ``(c,)`` int64.

    The comparison writes bytes 0/1 into ``mask``; the bytes are summed as 8-byte words in blocks of at most
    255 words (every byte lane of a block sum stays ≤ 255, so no carry crosses lanes), then the bytes of the
    block sums are added up. That reads the mask once as int64 instead of reducing a bool tensor, which is
    several times faster on the CPU.
    """
    torch.ge(scores, thresholds, out=mask)
    c, width = mask.shape
    lanes = mask.view(torch.uint8).view(torch.int64).view(c, width // (8 * words_per_block), words_per_block).sum(dim=2)
    return lanes.view(torch.uint8).view(c, -1).sum(dim=1)


def default_chunk_size(n_gallery: int, max_rank_relevant: int, memory_budget_mb: float = 256.0) -> int:
    """Probe rows per chunk so that the chunk's score matrix and its comparison mask fit the budget."""
    bytes_per_row = n_gallery * (4 + 1) + max_rank_relevant * 64
    return int(max(16, min(8192, memory_budget_mb * 2**20 // max(bytes_per_row, 1))))


def identification_metrics(
    probes: ArrayLike | torch.Tensor,
    gallery: ArrayLike | torch.Tensor,
    probe_labels: ArrayLike,
    gallery_labels: ArrayLike,
    *,
    exclude_self: bool = False,
    ranks: Sequence[int] = RANKS,
    max_rank: int = MAX_RANK,
    chunk_size: int | None = None,
    memory_budget_mb: float = 256.0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> IdentificationResult:
    """Cosine identification of ``probes`` ``(P, D)`` against ``gallery`` ``(G, D)`` in probe chunks.

    Per chunk: one GEMM for the scores ``(chunk, G)``, a gather of each probe's relevant scores, and one
    comparison pass per relevant item to count the non-relevant items scoring at least as high; from those
    counts come every rank, the CMC, AP and AP@50 exactly (no sorting of the gallery).

    Args:
        exclude_self: the ``strict`` protocol: probe ``i`` and gallery item ``i`` are the same image
            (requires P = G), and that item is removed from probe ``i``'s gallery.
        ranks: k values of the Rank-k table (each ≤ ``max_rank``).
        chunk_size: probe rows per chunk (default: from ``memory_budget_mb``).
        device: where the GEMM and counting run (``cuda`` for large sets).
    """
    p = torch.as_tensor(np.asarray(probes) if not isinstance(probes, torch.Tensor) else probes)
    g = torch.as_tensor(np.asarray(gallery) if not isinstance(gallery, torch.Tensor) else gallery)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
        raise CrossModelInputError(f"probes (P, D) and gallery (G, D) must share D, got {tuple(p.shape)} and {tuple(g.shape)}.")
    probe_labels, gallery_labels = np.asarray(probe_labels).reshape(-1), np.asarray(gallery_labels).reshape(-1)
    if probe_labels.size != p.shape[0] or gallery_labels.size != g.shape[0]:
        raise CrossModelInputError("probe_labels / gallery_labels must have one entry per probe / gallery row.")
    if exclude_self and p.shape[0] != g.shape[0]:
        raise CrossModelInputError("exclude_self (strict protocol) needs probe i and gallery i to be the same image (P = G).")
    if any(k < 1 or k > max_rank for k in ranks):
        raise CrossModelInputError(f"ranks must lie in 1..max_rank={max_rank}, got {list(ranks)}.")
    device = torch.device(device)
    _, codes = np.unique(np.concatenate([probe_labels, gallery_labels]), return_inverse=True)
    codes = codes.reshape(-1)
    probe_codes, gallery_codes = codes[: probe_labels.size], codes[probe_labels.size :]
    table = torch.from_numpy(_relevant_table(gallery_codes, int(codes.max(initial=0)) + 1)).to(device)
    probe_codes_t = torch.from_numpy(probe_codes).to(device)
    n_probes, n_gallery = p.shape[0], g.shape[0]
    width, words_per_block = _padded_width(n_gallery)
    # gallery padded with zero rows to `width`; their score columns are set to −inf after every product
    gallery_unit = torch.zeros(width, g.shape[1], device=device, dtype=torch.float32)
    gallery_unit[:n_gallery] = _unit_rows(g.to(device=device, dtype=torch.float32))
    chunk = int(chunk_size or default_chunk_size(width, table.shape[1], memory_budget_mb))
    buffer = torch.empty(min(chunk, max(n_probes, 1)), width, device=device, dtype=torch.float32)
    mask = torch.empty(buffer.shape, device=device, dtype=torch.bool)

    first_ranks, aps, aps_at = [], [], []
    for start in tqdm(range(0, n_probes, chunk), desc="identification", disable=not progress, leave=False):
        stop = min(start + chunk, n_probes)
        scores = buffer[: stop - start]
        torch.mm(_unit_rows(p[start:stop].to(device=device, dtype=torch.float32)), gallery_unit.T, out=scores)
        scores[:, n_gallery:] = float("-inf")
        rows = torch.arange(stop - start, device=device)
        relevant = table[probe_codes_t[start:stop]]  # (c, R)
        valid = relevant >= 0
        if exclude_self:
            scores[rows, rows + start] = float("-inf")
            valid &= relevant != (rows + start)[:, None]
        rel_scores = scores.gather(1, relevant.clamp_min(0)).masked_fill(~valid, float("-inf"))
        rel_scores, _ = rel_scores.sort(dim=1, descending=True)
        n_rel = valid.sum(dim=1)
        r_max = int(n_rel.max().item()) if n_rel.numel() else 0
        if r_max == 0:
            continue
        rel_scores = rel_scores[:, :r_max]
        slot_valid = torch.arange(r_max, device=device)[None, :] < n_rel[:, None]
        at_least = torch.stack([_count_at_least(scores, rel_scores[:, r : r + 1], mask[: stop - start], words_per_block)
                                for r in range(r_max)], dim=1)
        rel_at_least = ((rel_scores[:, None, :] >= rel_scores[:, :, None]) & slot_valid[:, None, :]).sum(dim=2)
        position = (at_least - rel_at_least) + torch.arange(1, r_max + 1, device=device)[None, :]  # 1-based rank
        has_mate = n_rel > 0
        position, slot_valid, n_rel = position[has_mate], slot_valid[has_mate], n_rel[has_mate]
        precision = torch.arange(1, r_max + 1, device=device, dtype=torch.float64)[None, :] / position.double()
        precision = precision * slot_valid
        aps.append(precision.sum(dim=1) / n_rel.double())
        in_top = slot_valid & (position <= max_rank)
        n_top = in_top.sum(dim=1)
        ap_top = (precision * in_top).sum(dim=1)[n_top > 0] / n_top[n_top > 0].double()
        aps_at.append(ap_top)
        first_ranks.append(position[:, 0])
    first = torch.cat(first_ranks).cpu().numpy() if first_ranks else np.zeros(0, dtype=np.int64)
    n_with = int(first.size)
    cmc = np.array([(first <= k).mean() if n_with else np.nan for k in range(1, max_rank + 1)])
    ap_all = torch.cat(aps).cpu().numpy() if aps else np.zeros(0)
    ap_top_all = torch.cat(aps_at).cpu().numpy() if aps_at else np.zeros(0)
    return IdentificationResult(
        rank={int(k): float(cmc[k - 1]) for k in ranks},
        cmc=cmc,
        mean_ap=float(ap_all.mean()) if ap_all.size else float("nan"),
        mean_ap_at_50=float(ap_top_all.mean()) if ap_top_all.size else float("nan"),
        n_probes=n_with,
        n_without_mate=int(n_probes - n_with),
    )


# ----------------------------------------------------------------------------------------------------------
# verification
# ----------------------------------------------------------------------------------------------------------


def verification_pairs(identities: ArrayLike, *, seed: int = 0, max_attempts: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, genuine)`` row pairs: every genuine pair ``i < j`` of the same identity, and as many
    distinct unordered impostor pairs (different identities) drawn at random (fewer when the set has
    fewer). Each ``(M,)``; genuine pairs first."""
    identities = np.asarray(identities).reshape(-1)
    _, codes = np.unique(identities, return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_parts, second_parts = [], []
    for size in np.unique(counts[counts >= 2]):
        group_starts = starts[counts == size]
        i, j = np.triu_indices(int(size), k=1)
        first_parts.append(order[(group_starts[:, None] + i[None, :]).reshape(-1)])
        second_parts.append(order[(group_starts[:, None] + j[None, :]).reshape(-1)])
    genuine_first = np.concatenate(first_parts) if first_parts else np.zeros(0, dtype=np.int64)
    genuine_second = np.concatenate(second_parts) if second_parts else np.zeros(0, dtype=np.int64)
    swap = genuine_first > genuine_second
    genuine_first[swap], genuine_second[swap] = genuine_second[swap], genuine_first[swap].copy()
    n_genuine = genuine_first.size
    n = identities.size
    rng = np.random.default_rng(seed)
    found = np.zeros(0, dtype=np.int64)
    for _ in range(max_attempts):
        if found.size >= n_genuine or n < 2:
            break
        need = n_genuine - found.size
        a, b = rng.integers(0, n, size=(2, 2 * need + 16))
        keep = codes[a] != codes[b]
        low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        keys = np.concatenate([found, low.astype(np.int64) * n + high])
        _, first_seen = np.unique(keys, return_index=True)
        found = keys[np.sort(first_seen)][:n_genuine]
    impostor_first, impostor_second = found // n if n else found, found % n if n else found
    first = np.concatenate([genuine_first, impostor_first]).astype(np.int64)
    second = np.concatenate([genuine_second, impostor_second]).astype(np.int64)
    genuine = np.concatenate([np.ones(n_genuine, bool), np.zeros(impostor_first.size, bool)])
    return first, second, genuine


@dataclass(frozen=True)
class VerificationMetrics:
    """ROC summary of pair scores (higher = more similar).

    Attributes:
        auc: ROC-AUC (scikit-learn); eer: equal error rate (FPR = FNR, linear between ROC points);
        tmr_at_fmr: FMR target → highest TPR among ROC points with FPR ≤ target;
        n_genuine, n_impostor: pair counts (a target below ``1 / n_impostor`` cannot be resolved).
    """

    auc: float
    eer: float
    tmr_at_fmr: dict[float, float] = field(default_factory=dict)
    n_genuine: int = 0
    n_impostor: int = 0


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where FPR = FNR (= 1 − TPR) on a ROC curve (points ordered by decreasing threshold), linearly
    interpolated between the two ROC points that bracket the crossing."""
    fnr = 1.0 - tpr
    gap = fnr - fpr  # from +1 (strictest threshold) down to −1
    k = int(np.argmax(gap <= 0))
    if gap[k] > 0:
        return float("nan")
    if k == 0 or gap[k] == 0:
        return float(fpr[k])
    t = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def verification_metrics(scores: ArrayLike, genuine: ArrayLike, *, fmr_targets: Sequence[float] = FMR_TARGETS) -> VerificationMetrics:
    """AUC, EER and TMR@FMR of pair ``scores`` ``(M,)`` with ``genuine`` ``(M,)`` bool labels."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, genuine = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(genuine).astype(bool).reshape(-1)
    n_genuine, n_impostor = int(genuine.sum()), int((~genuine).sum())
    if n_genuine == 0 or n_impostor == 0:
        nan = float("nan")
        return VerificationMetrics(nan, nan, {float(t): nan for t in fmr_targets}, n_genuine, n_impostor)
    fpr, tpr, _ = roc_curve(genuine, scores, drop_intermediate=False)
    return VerificationMetrics(
        auc=float(roc_auc_score(genuine, scores)),
        eer=equal_error_rate(fpr, tpr),
        tmr_at_fmr={float(t): float(tpr[fpr <= t].max()) for t in fmr_targets},
        n_genuine=n_genuine,
        n_impostor=n_impostor,
    )


def pair_scores(x: np.ndarray, y: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``cos(x[first], y[second])`` ``(M,)`` (row-wise, no M × M matrix)."""
    xu = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    yu = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", xu[first], yu[second])


# ----------------------------------------------------------------------------------------------------------
# representational similarity
# ----------------------------------------------------------------------------------------------------------


def subsample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``min(n, size)`` distinct rows drawn with ``default_rng(seed)``, sorted."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))


def rsa(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ between the upper triangles (k = 1) of the cosine RDMs ``1 − cos`` of ``x`` and ``y``."""
    from scipy.stats import spearmanr

    xu = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    yu = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    upper = np.triu_indices(x.shape[0], k=1)
    return float(spearmanr(1.0 - (xu @ xu.T)[upper], 1.0 - (yu @ yu.T)[upper]).statistic)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of row-normalised ``x`` and ``y``: ``‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F)`` with
    column-centred ``Xᶜ``, ``Yᶜ`` (equal to the centred-Gram form ``⟨HKH, HLH⟩ / …``); in [0, 1]."""
    xu = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    yu = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    xc, yc = xu - xu.mean(axis=0), yu - yu.mean(axis=0)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    denominator = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / denominator) if denominator > 1e-20 else float("nan")


def relative_residual(mapped: np.ndarray, target: np.ndarray) -> float:
    """``‖mapped − target‖_F / ‖target‖_F``: how much of the (centred) target the map misses."""
    norm = np.linalg.norm(target)
    return float(np.linalg.norm(mapped - target) / norm) if norm > 0 else float("nan")

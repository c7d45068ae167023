"""Macroscale structure of an embedding space across identities (paper C, DESIGN §6).

Inputs are plain arrays: ``labels`` ``(N,)`` with values in {−1, +1} (one binary attribute),
``identities`` ``(N,)`` (any hashable codes), ``embeddings`` ``(N, D)``.

- :func:`intra_entropy` — mean over identities of the entropy (natural log) of the attribute's empirical
  distribution inside the identity, in ``[0, ln 2]``.
- :func:`inter_entropy` — entropy of the distribution of per-identity means ``m_i ∈ [−1, 1]``: Gaussian
  KDE with **absolute** bandwidth 0.1 (a kernel ``N(m_i, 0.1²)``, as scikit-learn's
  ``KernelDensity(bandwidth=0.1)`` which the authors used; scipy's ``gaussian_kde(bw_method=b)`` would
  instead scale ``b`` by the standard deviation of the data), evaluated at 101 equally spaced points on
  ``[−1, 1]``, normalised to a pmf ``p``; ``H = −Σ p ln p``.
- :func:`sample_attribute_sets` — one random image per identity among images with ``a = +1`` (X_a) and
  ``a = −1`` (X_ā), ``n = min(n_max, |ids+|, |ids−|)`` identities each, drawn as the authors' notebook
  draws them (shuffle the images, keep each identity's first), seeded.
- :func:`ks_statistics` — ``d_a`` (upper triangle of ``d(X_a, X_a)``), ``d_ā``, ``d_cross`` (all of
  ``d(X_a, X_ā)``, optionally without same-identity pairs); ``KS⁺ = KS(d_a, d_cross)``,
  ``KS⁻ = KS(d_ā, d_cross)`` with ``scipy.stats.ks_2samp`` (two-sided) and their p-values.
- :func:`spearman_with_ci` — Spearman ρ across attributes with a percentile bootstrap CI.
- :func:`logistic_recoverability` — 5-fold CV accuracy / balanced accuracy of a logistic regression.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from fr_invariance.errors import ConfigurationError

KDE_BANDWIDTH = 0.1
"""Absolute Gaussian kernel width (in units of the per-identity mean, which lies in [−1, 1])."""
KDE_POINTS = 101
"""Evaluation grid of the inter-entropy KDE: ``linspace(−1, 1, 101)``."""
N_MAX = 500
"""Identities sampled per side for the distance distributions (the paper's 500)."""


class MacroscaleInputError(ConfigurationError):
    """Inputs that do not fit a macroscale computation (labels outside {−1, +1}, shape mismatch, ...)."""


def check_binary_labels(labels: ArrayLike, name: str = "labels") -> np.ndarray:
    """``labels`` as an int8 ``(N,)`` array; raise unless every value is −1 or +1."""
    values = np.asarray(labels)
    if values.ndim != 1:
        raise MacroscaleInputError(f"{name} must be one-dimensional (N,), got shape {values.shape}.")
    if values.size and not np.isin(values, (-1, 1)).all():
        bad = np.unique(values[~np.isin(values, (-1, 1))])[:5]
        raise MacroscaleInputError(
            f"{name} must hold binary attribute values -1 / +1 only; found {bad.tolist()}. "
            "Map the attribute to {-1, +1} first."
        )
    return values.astype(np.int8)


def identity_codes(identities: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (N,) int64 in 0..I−1, unique identities (I,))`` in sorted order of the identities."""
    unique, codes = np.unique(np.asarray(identities), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), unique


def _check_same_length(labels: np.ndarray, identities: ArrayLike) -> np.ndarray:
    codes, _ = identity_codes(identities)
    if codes.shape[0] != labels.shape[0]:
        raise MacroscaleInputError(
            f"labels and identities must have the same length, got {labels.shape[0]} and {codes.shape[0]}."
        )
    return codes


def per_identity_counts(labels: ArrayLike, identities: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Number of images with ``a = +1`` and with ``a = −1`` per identity: two ``(I,)`` int arrays
    (identities in sorted order)."""
    values = check_binary_labels(labels)
    codes = _check_same_length(values, identities)
    n_identities = int(codes.max()) + 1 if codes.size else 0
    positive = np.bincount(codes[values == 1], minlength=n_identities)
    negative = np.bincount(codes[values == -1], minlength=n_identities)
    return positive, negative


def intra_entropy(labels: ArrayLike, identities: ArrayLike) -> float:
    """Mean over identities of the entropy (nats) of the attribute's values inside the identity.

    Returns a value in ``[0, ln 2]``; ``nan`` without images.
    """
    positive, negative = per_identity_counts(labels, identities)
    if positive.size == 0:
        return float("nan")
    counts = np.stack([positive, negative], axis=1).astype(np.float64)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return float(terms.sum(axis=1).mean())


def per_identity_means(labels: ArrayLike, identities: ArrayLike) -> np.ndarray:
    """``m_i`` = mean attribute value of identity ``i`` (sorted identities), ``(I,)`` in ``[−1, 1]``."""
    positive, negative = per_identity_counts(labels, identities)
    return (positive - negative) / np.maximum(positive + negative, 1)


def inter_entropy_pmf(means: ArrayLike, bandwidth: float = KDE_BANDWIDTH, n_points: int = KDE_POINTS) -> np.ndarray:
    """The pmf ``p`` (``(n_points,)``, sums to 1) of the Gaussian KDE of ``means`` on ``linspace(−1, 1, n_points)``.

    The kernel is ``N(m_i, bandwidth²)`` with an absolute ``bandwidth`` (scikit-learn's ``KernelDensity``
    convention). Computed in log space so far-away grid points do not underflow to an all-zero row.
    """
    means = np.asarray(means, dtype=np.float64).reshape(-1)
    if means.size == 0:
        raise MacroscaleInputError("inter-entropy needs at least one identity.")
    if bandwidth <= 0:
        raise MacroscaleInputError(f"bandwidth must be > 0, got {bandwidth}.")
    grid = np.linspace(-1.0, 1.0, n_points)
    log_kernel = -0.5 * ((grid[:, None] - means[None, :]) / bandwidth) ** 2  # (n_points, I), constants cancel
    log_density = np.logaddexp.reduce(log_kernel, axis=1)
    log_density -= log_density.max()
    density = np.exp(log_density)
    return density / density.sum()


def inter_entropy(
    labels: ArrayLike, identities: ArrayLike, bandwidth: float = KDE_BANDWIDTH, n_points: int = KDE_POINTS
) -> float:
    """Entropy (nats) of the KDE pmf of the per-identity means (see :func:`inter_entropy_pmf`)."""
    p = inter_entropy_pmf(per_identity_means(labels, identities), bandwidth, n_points)
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


@dataclass(frozen=True)
class AttributeSets:
    """One seeded draw of :func:`sample_attribute_sets`.

    Attributes:
        positive, negative: ``(n,)`` row indices of X_a (images with ``a = +1``) and X_ā (``a = −1``),
            one image per sampled identity.
        positive_identities, negative_identities: ``(n,)`` identity codes of those rows.
        n_identities_positive, n_identities_negative: identities having at least one ``+1`` / ``−1`` image.
    """

    positive: np.ndarray
    negative: np.ndarray
    positive_identities: np.ndarray
    negative_identities: np.ndarray
    n_identities_positive: int
    n_identities_negative: int

    @property
    def n(self) -> int:
        return int(self.positive.shape[0])


def attribute_seed(seed: int, attribute: str) -> list[int]:
    """Seed sequence of one attribute's draws: independent of which other attributes are analysed."""
    return [int(seed), zlib.crc32(attribute.encode("utf-8"))]


def _first_image_per_identity(rows: np.ndarray, codes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The authors' draw: shuffle ``rows``, keep each identity's first row, return the first ``n`` of those
    (in shuffled order). Each kept row is uniform within its identity; an identity with more rows comes
    earlier, so it is likelier to be among the ``n``."""
    shuffled = rows[rng.permutation(rows.size)]
    _, first = np.unique(codes[shuffled], return_index=True)
    return shuffled[np.sort(first)[:n]]


def sample_attribute_sets(
    labels: ArrayLike, identities: ArrayLike, *, n_max: int = N_MAX, seed: int = 0, attribute: str = ""
) -> AttributeSets:
    """Draw X_a and X_ā as the authors' notebook does: ``n = min(n_max, |ids+|, |ids−|)``; the images with
    ``a = +1`` are shuffled, each identity's first image is kept and the first ``n`` of those form X_a (X_ā
    likewise from ``a = −1``). One random image per identity; identities are drawn with a probability that
    grows with their number of images of that value.

    Seeded by ``(seed, attribute)`` (see :func:`attribute_seed`), so an attribute's draw does not depend on
    the other attributes (the authors' draws were unseeded). An identity having both values may appear in
    both sets.
    """
    values = check_binary_labels(labels)
    codes = _check_same_length(values, identities)
    if n_max < 1:
        raise MacroscaleInputError(f"n_max must be >= 1, got {n_max}.")
    rng = np.random.default_rng(attribute_seed(seed, attribute))
    rows_pos, rows_neg = np.flatnonzero(values == 1), np.flatnonzero(values == -1)
    n_ids_pos, n_ids_neg = np.unique(codes[rows_pos]).size, np.unique(codes[rows_neg]).size
    n = min(int(n_max), n_ids_pos, n_ids_neg)
    positive = _first_image_per_identity(rows_pos, codes, n, rng)
    negative = _first_image_per_identity(rows_neg, codes, n, rng)
    return AttributeSets(positive, negative, codes[positive], codes[negative], int(n_ids_pos), int(n_ids_neg))


def pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """``(len(a), len(b))`` distances: cosine ``1 − cos`` or euclidean (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return 1.0 - an @ bn.T
    if metric == "euclidean":
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.sqrt(np.maximum(squared, 0.0))
    raise MacroscaleInputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")


@dataclass(frozen=True)
class KSResult:
    """KS statistics of one attribute (two-sided ``scipy.stats.ks_2samp``).

    Attributes:
        ks_plus, p_plus: ``KS(d_a, d_cross)`` and its p-value.
        ks_minus, p_minus: ``KS(d_ā, d_cross)`` and its p-value.
        n: identities per side; n_a, n_abar, n_cross: sizes of the three distance samples.
        mean_d_a, mean_d_abar, mean_d_cross: mean distances (model's metric).
    """

    ks_plus: float
    p_plus: float
    ks_minus: float
    p_minus: float
    n: int
    n_a: int
    n_abar: int
    n_cross: int
    mean_d_a: float
    mean_d_abar: float
    mean_d_cross: float


def distance_samples(
    embeddings: np.ndarray, sets: AttributeSets, *, metric: str = "cosine", exclude_same_identity: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d_a, d_ā, d_cross)`` for one draw: upper triangles (k = 1) of the within-set distance matrices and
    all cross distances (without pairs of the same identity when ``exclude_same_identity``)."""
    x_a, x_abar = embeddings[sets.positive], embeddings[sets.negative]
    upper = np.triu_indices(sets.n, k=1)
    d_a = pairwise_distances(x_a, x_a, metric)[upper]
    d_abar = pairwise_distances(x_abar, x_abar, metric)[upper]
    cross = pairwise_distances(x_a, x_abar, metric)
    if exclude_same_identity:
        keep = sets.positive_identities[:, None] != sets.negative_identities[None, :]
        return d_a, d_abar, cross[keep]
    return d_a, d_abar, cross.reshape(-1)


def ks_statistics(
    embeddings: ArrayLike,
    labels: ArrayLike,
    identities: ArrayLike,
    *,
    metric: str = "cosine",
    n_max: int = N_MAX,
    seed: int = 0,
    attribute: str = "",
    exclude_same_identity: bool = False,
) -> KSResult:
    """KS⁺ and KS⁻ of one attribute on one seeded draw (see the module docstring).

    Args:
        embeddings: ``(N, D)`` embeddings, rows aligned with ``labels`` and ``identities``.
        metric: the model's position metric (``cosine`` = ``1 − cos``, or ``euclidean``).
        exclude_same_identity: drop cross pairs whose two images share an identity (beyond the paper).

    Raises:
        MacroscaleInputError: fewer than 2 identities on one side (the distance samples would be empty).
    """
    embeddings = np.asarray(embeddings)
    values = check_binary_labels(labels)
    if embeddings.ndim != 2 or embeddings.shape[0] != values.shape[0]:
        raise MacroscaleInputError(
            f"embeddings must be (N, D) with N = len(labels) = {values.shape[0]}, got shape {embeddings.shape}."
        )
    sets = sample_attribute_sets(values, identities, n_max=n_max, seed=seed, attribute=attribute)
    if sets.n < 2:
        raise MacroscaleInputError(
            f"attribute {attribute or '?'}: KS needs >= 2 identities with a = +1 and with a = -1, found "
            f"{sets.n_identities_positive} and {sets.n_identities_negative}."
        )
    d_a, d_abar, d_cross = distance_samples(embeddings, sets, metric=metric,
                                            exclude_same_identity=exclude_same_identity)
    plus = stats.ks_2samp(d_a, d_cross)
    minus = stats.ks_2samp(d_abar, d_cross)
    return KSResult(
        ks_plus=float(plus.statistic), p_plus=float(plus.pvalue),
        ks_minus=float(minus.statistic), p_minus=float(minus.pvalue),
        n=sets.n, n_a=int(d_a.size), n_abar=int(d_abar.size), n_cross=int(d_cross.size),
        mean_d_a=float(d_a.mean()), mean_d_abar=float(d_abar.mean()), mean_d_cross=float(d_cross.mean()),
    )


def ks_aggregates(ks_plus: float, ks_minus: float, count_plus: int, count_minus: int) -> dict[str, float]:
    """The three per-attribute aggregates: ``max``, ``mean`` and ``weighted`` =
    ``(count_plus·KS⁺ + count_minus·KS⁻) / (count_plus + count_minus)``, with the counts the numbers of
    images with ``a = +1`` / ``a = −1`` in the data (KS⁺ compares the ``+1`` side with the cross pairs)."""
    total = count_plus + count_minus
    weighted = (count_plus * ks_plus + count_minus * ks_minus) / total if total else float("nan")
    return {"max": max(ks_plus, ks_minus), "mean": 0.5 * (ks_plus + ks_minus), "weighted": float(weighted)}


@dataclass(frozen=True)
class Correlation:
    """Spearman ρ across attributes with a percentile bootstrap CI (attributes resampled with replacement).

    ``ci_low``/``ci_high`` are nan when fewer than 3 attributes or every bootstrap draw was degenerate;
    ``n_bootstrap_valid`` counts draws whose ρ was defined (not all-tied).
    """

    rho: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    n_bootstrap_valid: int


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def _rank_rows(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), like ``scipy.stats.rankdata``."""
    return stats.rankdata(values, axis=-1)


def spearman_with_ci(
    x: ArrayLike, y: ArrayLike, *, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Correlation:
    """Spearman ρ of ``x`` vs ``y`` (``(A,)`` each; pairs with a nan dropped) and its percentile bootstrap CI.

    Bootstrap draws resample the A pairs with replacement (vectorised); draws where x or y is constant
    have no ρ and are left out (counted in ``n_bootstrap_valid``).
    """
    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise MacroscaleInputError(f"x and y must have the same length, got {x.size} and {y.size}.")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    rho, p_value = _spearman(x, y)
    n = int(x.size)
    if n < 3 or n_bootstrap < 1 or np.isnan(rho):
        return Correlation(rho, p_value, float("nan"), float("nan"), n, 0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    rx, ry = _rank_rows(x[draws]), _rank_rows(y[draws])
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    valid = denominator > 0
    rhos = (rx * ry).sum(1)[valid] / denominator[valid]
    if rhos.size == 0:
        return Correlation(rho, p_value, float("nan"), float("nan"), n, 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(rhos, [alpha, 1.0 - alpha])
    return Correlation(rho, p_value, float(low), float(high), n, int(rhos.size))


@dataclass(frozen=True)
class Recoverability:
    """Cross-validated logistic-regression recoverability of one attribute.

    Attributes:
        accuracy, balanced_accuracy: means over the folds; ``*_std`` their std (ddof 0).
        majority: the share of the most frequent value (accuracy of always predicting it).
        n: samples used; folds: folds actually run.
    """

    accuracy: float
    accuracy_std: float
    balanced_accuracy: float
    balanced_accuracy_std: float
    majority: float
    n: int
    folds: int


def logistic_recoverability(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: str = "cosine",
    folds: int = 5,
    seed: int = 0,
    groups: ArrayLike | None = None,
    max_iter: int = 1000,
) -> Recoverability:
    """Stratified k-fold CV of ``LogisticRegression`` (L2, C = 1) predicting the attribute from embeddings.

    Rows are L2-normalised first for a cosine model. ``groups`` (e.g. identities) switches to
    ``StratifiedGroupKFold`` so no identity is in both train and test folds (the paper used plain
    folds). Folds are reduced to the size of the smaller class when needed (at least 2).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import (
        StratifiedGroupKFold,
        StratifiedKFold,
        cross_validate,
    )

    x = np.asarray(embeddings, dtype=np.float64)
    y = check_binary_labels(labels)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise MacroscaleInputError(f"embeddings must be (N, D) with N = {y.shape[0]}, got shape {x.shape}.")
    counts = np.array([(y == 1).sum(), (y == -1).sum()])
    majority = float(counts.max() / max(counts.sum(), 1))
    n_folds = int(min(folds, counts.min()))
    if n_folds < 2:
        return Recoverability(float("nan"), float("nan"), float("nan"), float("nan"), majority, int(y.size), 0)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        split_groups = None
    else:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        split_groups = np.asarray(groups)
    scores = cross_validate(LogisticRegression(max_iter=max_iter), x, y, cv=splitter, groups=split_groups,
                            scoring=("accuracy", "balanced_accuracy"))
    accuracy, balanced = scores["test_accuracy"], scores["test_balanced_accuracy"]
    return Recoverability(float(accuracy.mean()), float(accuracy.std()), float(balanced.mean()),
                          float(balanced.std()), majority, int(y.size), n_folds)

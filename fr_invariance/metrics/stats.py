"""Paired per-identity statistics (DESIGN §5): Wilcoxon signed-rank, bootstrap CI, Holm correction.

Two models (or attributes) measured on the same identities give paired values ``a_i``, ``b_i``; the
tests here use those pairs instead of the paper's unpaired adjacent-pair tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`paired_comparison`.

    Attributes:
        n: pairs used (pairs with a nan dropped).
        statistic: Wilcoxon signed-rank statistic (scipy's, two-sided).
        p_value: its two-sided p-value (1.0 when every difference is 0).
        median_difference: median of ``a − b``.
        ci_low, ci_high: percentile bootstrap confidence interval of that median.
    """

    n: int
    statistic: float
    p_value: float
    median_difference: float
    ci_low: float
    ci_high: float


def paired_comparison(
    a: ArrayLike, b: ArrayLike, *, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedComparison:
    """Compare paired values ``a[i]`` and ``b[i]`` (e.g. one identity's energy under two models).

    Wilcoxon signed-rank test via ``scipy.stats.wilcoxon(a, b, alternative="two-sided")`` with scipy's
    defaults, and a percentile bootstrap CI of the median of ``a − b``: ``n_bootstrap`` resamples of
    the n differences with replacement from ``np.random.default_rng(seed)``.

    Raises:
        ValueError: shapes differ, inputs are not 1-D, or fewer than 2 pairs without nan.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must be 1-D and of equal length (one value per identity).")
    if n_bootstrap < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"n_bootstrap={n_bootstrap} must be >= 1 and confidence={confidence} in (0, 1).")
    valid = ~(np.isnan(a) | np.isnan(b))
    differences = a[valid] - b[valid]
    n = differences.size
    if n < 2:
        raise ValueError(f"Only {n} pair(s) without nan: a paired comparison needs at least 2 identities.")

    if np.all(differences == 0):
        statistic, p_value = 0.0, 1.0
    else:
        test = stats.wilcoxon(a[valid], b[valid], alternative="two-sided")
        statistic, p_value = float(test.statistic), float(test.pvalue)

    generator = np.random.default_rng(seed)
    resampled = differences[generator.integers(0, n, size=(n_bootstrap, n))]
    medians = np.median(resampled, axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    ci_low, ci_high = np.percentile(medians, [tail, 100.0 - tail])
    return PairedComparison(
        n=n,
        statistic=statistic,
        p_value=p_value,
        median_difference=float(np.median(differences)),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
    )


def holm_correction(p_values: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    With ``p_(1) <= ... <= p_(m)`` sorted, ``adjusted_(j) = max_{i<=j} min(1, (m − i + 1) · p_(i))``;
    reject hypothesis j at level α iff ``adjusted_j <= α``.

    Raises:
        ValueError: not 1-D, or a value outside [0, 1] (nan included).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}.")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p_values must lie in [0, 1] (no nan): drop untested hypotheses first.")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted

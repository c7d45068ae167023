"""Paired per-identity statistics (DESIGN §5): Wilcoxon signed-rank, bootstrap CI, Holm correction.

Two models (or attributes) measured on the same identities give paired values ``a_i``, ``b_i``; the
tests here use those pairs instead of the paper's unpaired adjacent-pair tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
import pandas as pd
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
    """Holm–Bonferroni adjusted p-values, in the input order (``statsmodels``' ``multipletests``, method
    ``holm``): with ``p_(1) <= ... <= p_(m)``, ``adjusted_(j) = max_{i<=j} min(1, (m − i + 1) · p_(i))``.

    Raises:
        ValueError: not 1-D, or a value outside [0, 1] (nan included).
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}.")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p_values must lie in [0, 1] (no nan): drop untested hypotheses first.")
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]


CONTROL_COLUMNS: tuple[str, ...] = (
    "setting", "arm", "attribute", "family", "n", "control_mean", "arm_mean", "delta", "ci_low", "ci_high",
    "p_value", "p_holm",
)
"""Columns of :func:`compare_to_control`."""


def mean_bootstrap_ci(differences: np.ndarray, *, n_bootstrap: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``differences`` (resampled with replacement, seeded)."""
    generator = np.random.default_rng(seed)
    means = differences[generator.integers(0, differences.size, size=(n_bootstrap, differences.size))].mean(1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def compare_to_control(
    values: pd.DataFrame,
    *,
    control: str,
    targeted: Mapping[str, str | None],
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every arm against the named control, per measured attribute, paired over identities.

    Args:
        values: long table with columns ``setting`` (e.g. ``ball 0.6``), ``arm``, ``identity``, ``attribute``
            and ``value``, optionally ``seed``. With ``seed``, an identity's paired difference is the mean of
            ``arm − control`` over the seeds both measured (seed-matched; a seed or identity only one side
            has is left out); without it, repeated rows are averaged first.
        control: the arm every other arm is compared with.
        targeted: arm → the attribute it targeted (None: no targeted attribute, e.g. another control).

    Returns:
        One row per setting × arm × attribute with at least 2 paired identities (columns
        :data:`CONTROL_COLUMNS`): ``delta`` = mean over identities of ``arm − control``, its bootstrap CI, the
        two-sided Wilcoxon signed-rank p of the per-identity differences, and Holm's adjustment computed
        separately in each family — ``targeted`` (each arm's own targeted attribute) and ``side effect``
        (every other attribute) — within each setting. ``control_mean`` / ``arm_mean`` are over the same
        paired rows.

    Raises:
        ValueError: ``control`` is not one of the arms.
    """
    if control not in set(values["arm"]):
        raise ValueError(f"control {control!r} is not among the arms {sorted(set(values['arm']))}.")
    records = []
    keys = ["attribute", "identity", *(["seed"] if "seed" in values.columns else [])]
    for setting, at_setting in values.groupby("setting", sort=False):
        table = at_setting.pivot_table(index=keys, columns="arm", values="value", aggfunc="mean", dropna=False)
        for arm in [a for a in dict.fromkeys(at_setting["arm"]) if a != control]:
            for attribute in dict.fromkeys(at_setting["attribute"]):
                if arm not in table or control not in table or attribute not in table.index.get_level_values(0):
                    continue
                matched = table.loc[attribute, [control, arm]].dropna()
                pair = matched.groupby(level="identity").mean()  # over the seeds both sides measured
                if len(pair) < 2:
                    continue
                differences = (pair[arm] - pair[control]).to_numpy(dtype=float)
                if np.all(differences == 0):
                    p_value = 1.0
                else:
                    p_value = float(stats.wilcoxon(differences, alternative="two-sided").pvalue)
                low, high = mean_bootstrap_ci(differences, n_bootstrap=n_bootstrap, seed=seed)
                records.append({
                    "setting": setting, "arm": arm, "attribute": attribute,
                    "family": "targeted" if targeted.get(arm) == attribute else "side effect",
                    "n": int(differences.size), "control_mean": float(pair[control].mean()),
                    "arm_mean": float(pair[arm].mean()), "delta": float(differences.mean()),
                    "ci_low": low, "ci_high": high, "p_value": p_value,
                })
    frame = pd.DataFrame(records, columns=[c for c in CONTROL_COLUMNS if c != "p_holm"])
    frame["p_holm"] = np.nan
    for _, index in frame.groupby(["setting", "family"]).groups.items():
        frame.loc[index, "p_holm"] = holm_correction(frame.loc[index, "p_value"].to_numpy())
    return frame


REPLICATE_COLUMNS: tuple[str, ...] = (
    "setting", "arm", "attribute", "n_seeds", "delta_mean", "delta_sd", "control_spread", "exceeds_control_spread",
)


def replicate_effects(per_seed: pd.DataFrame, control_runs: pd.DataFrame) -> pd.DataFrame:
    """Run-level effects over seed replicates.

    Args:
        per_seed: columns ``setting, arm, attribute, seed, delta`` (one arm-vs-control Δ per seed, the
            control of the same seed).
        control_runs: columns ``setting, attribute, seed, value``: the control's mean value per seed.

    Returns:
        Per setting × arm × attribute: mean and sd (ddof 1) of Δ over seeds, the control-vs-control spread
        (largest |difference| between the control's seeds for that attribute; nan with one seed), and
        whether ``|mean Δ|`` exceeds it (columns :data:`REPLICATE_COLUMNS`; nullable boolean, ``<NA>`` when
        the spread or the mean Δ is unknown).
    """
    spread = (
        control_runs.groupby(["setting", "attribute"])["value"].agg(lambda v: float(v.max() - v.min()) if len(v) > 1 else np.nan)
        .rename("control_spread")
    )
    grouped = per_seed.groupby(["setting", "arm", "attribute"], sort=False)["delta"]
    frame = pd.DataFrame({
        "n_seeds": grouped.size(),
        "delta_mean": grouped.mean(),
        "delta_sd": grouped.std(ddof=1),
    }).reset_index()
    frame = frame.merge(spread.reset_index(), on=["setting", "attribute"], how="left")
    known = frame["delta_mean"].notna() & frame["control_spread"].notna()
    exceeds = (frame["delta_mean"].abs() > frame["control_spread"]).astype("boolean")
    frame["exceeds_control_spread"] = exceeds.where(known, pd.NA)
    return frame[list(REPLICATE_COLUMNS)]

"""Figures of invariance tables (columns ``INVARIANCE_COLUMNS``; one model = one ``run`` value).

- :func:`violin_plot`: per-identity energies per attribute and model at one param (identities are the
  samples); with ≥ 2 models, significant paired differences (:func:`paired_model_comparisons`) are
  marked with stars over a bracket.
- :func:`profile_plot`: energy vs param (ε or k), mean ± 95 % t-interval over identities, one panel per
  attribute, one line per model.

Figures are built on matplotlib's Agg canvas without pyplot (no GUI, no global state).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from fr_invariance.attributes import ATTRIBUTE_NAMES
from fr_invariance.metrics.stats import holm_correction, paired_comparison

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
COMPARISON_COLUMNS: tuple[str, ...] = (
    "neighbourhood", "param", "attribute", "run_a", "run_b", "n", "statistic", "p_value", "p_holm",
    "median_difference", "ci_low", "ci_high", "stars",
)


def runs_of(rows: pd.DataFrame) -> list[str]:
    """Model names in order of first appearance."""
    return list(dict.fromkeys(rows["run"]))


def attributes_of(rows: pd.DataFrame) -> list[str]:
    """Attributes present, registry order first."""
    present = set(rows["attribute"])
    return [a for a in ATTRIBUTE_NAMES if a in present] + sorted(present - set(ATTRIBUTE_NAMES))


def params_of(rows: pd.DataFrame) -> list[float]:
    """Distinct params in order of first appearance (NaN for ``inverse_distance``)."""
    return list(dict.fromkeys(float(p) for p in rows["param"]))


def rows_at(rows: pd.DataFrame, param: float) -> pd.DataFrame:
    """The rows measured at ``param`` (NaN matches NaN)."""
    mask = rows["param"].isna() if np.isnan(param) else np.isclose(rows["param"].astype(float), param)
    return rows[mask]


def stars(p_value: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, ``ns`` otherwise (or NaN)."""
    for threshold, label in ((0.001, "***"), (0.01, "**"), (0.05, "*")):
        if p_value < threshold:
            return label
    return "ns"


def paired_model_comparisons(rows: pd.DataFrame, *, n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Wilcoxon signed-rank tests between every pair of models, per param and attribute.

    Samples are identities measured by both models with a finite energy (difference ``a − b``). Holm's
    correction runs over the attribute × model-pair family of each param. Columns ``COMPARISON_COLUMNS``;
    empty when fewer than two models.
    """
    records = []
    runs = runs_of(rows)
    for param in params_of(rows):
        at_param = rows_at(rows, param)
        family = []
        for attribute in attributes_of(at_param):
            table = at_param[at_param["attribute"] == attribute].pivot_table(
                index="identity", columns="run", values="energy", aggfunc="mean"
            )
            for run_a, run_b in combinations(runs, 2):
                if run_a not in table or run_b not in table:
                    continue
                pair = table[[run_a, run_b]].dropna()
                if len(pair) < 2:  # a paired test needs at least two identities
                    continue
                result = paired_comparison(pair[run_a].to_numpy(), pair[run_b].to_numpy(),
                                           n_bootstrap=n_bootstrap, seed=seed)
                family.append({
                    "neighbourhood": at_param["neighbourhood"].iloc[0], "param": param, "attribute": attribute,
                    "run_a": run_a, "run_b": run_b, "n": result.n, "statistic": result.statistic,
                    "p_value": result.p_value, "median_difference": result.median_difference,
                    "ci_low": result.ci_low, "ci_high": result.ci_high,
                })
        if family:
            adjusted = holm_correction([record["p_value"] for record in family])
            for record, p_holm in zip(family, adjusted):
                record.update(p_holm=float(p_holm), stars=stars(float(p_holm)))
            records.extend(family)
    return pd.DataFrame(records, columns=list(COMPARISON_COLUMNS))


def _param_title(rows: pd.DataFrame, param: float) -> str:
    neighbourhood = rows["neighbourhood"].iloc[0]
    if neighbourhood == "ball":
        return f"ball ε = {param:g}·d̄"
    if neighbourhood == "knn":
        return f"kNN k = {int(param)}"
    return "inverse-distance weights"


def violin_plot(
    rows: pd.DataFrame, *, param: float | None = None, comparisons: pd.DataFrame | None = None, title: str = ""
) -> Figure:
    """Violins of per-identity energies per attribute (x) and model (colour) at ``param`` (default: the first).

    ``comparisons`` (from :func:`paired_model_comparisons`) adds a star bracket over each pair of models
    whose Holm-adjusted p-value is below 0.05. Individual identities are drawn as dots.
    """
    param = params_of(rows)[0] if param is None else float(param)
    at_param = rows_at(rows, param)
    runs, attributes = runs_of(at_param), attributes_of(at_param)
    width = 0.8 / len(runs)
    figure = Figure(figsize=(max(6.0, 1.1 * len(attributes) * max(1, len(runs)) ** 0.5 + 2), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions: dict[tuple[str, str], float] = {}
    top = np.nanmax(at_param["energy"].to_numpy(dtype=float)) if len(at_param) else 1.0
    rng = np.random.default_rng(0)
    for j, run in enumerate(runs):
        colour = _COLOURS[j % len(_COLOURS)]
        for i, attribute in enumerate(attributes):
            x = i - 0.4 + width * (j + 0.5)
            positions[(attribute, run)] = x
            values = at_param.loc[(at_param["run"] == run) & (at_param["attribute"] == attribute), "energy"]
            values = values.dropna().to_numpy(dtype=float)
            if values.size >= 2 and np.ptp(values) > 0:
                body = axes.violinplot([values], positions=[x], widths=width * 0.9, showmedians=True)
                for part in body["bodies"]:
                    part.set_facecolor(colour)
                    part.set_alpha(0.35)
                for key in ("cbars", "cmins", "cmaxes", "cmedians"):
                    body[key].set_color(colour)
            jitter = rng.uniform(-width * 0.15, width * 0.15, values.size)
            axes.scatter(x + jitter, values, s=9, color=colour, zorder=3,
                         label=run if i == 0 and len(runs) > 1 else None)
    if comparisons is not None and len(comparisons):
        significant = comparisons[np.isclose(comparisons["param"].astype(float), param, equal_nan=True)
                                  & (comparisons["stars"] != "ns")]
        level = {attribute: top for attribute in attributes}
        for record in significant.itertuples():
            if (record.attribute, record.run_a) not in positions or (record.attribute, record.run_b) not in positions:
                continue
            x_a, x_b = positions[(record.attribute, record.run_a)], positions[(record.attribute, record.run_b)]
            y = level[record.attribute] + 0.04
            axes.plot([x_a, x_a, x_b, x_b], [y, y + 0.02, y + 0.02, y], color="black", linewidth=0.8)
            axes.text((x_a + x_b) / 2, y + 0.02, record.stars, ha="center", va="bottom", fontsize=9)
            level[record.attribute] = y + 0.08
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xticks(range(len(attributes)), attributes, rotation=30, ha="right")
    axes.set_ylabel("alignment energy (per identity)")
    axes.set_title(title or f"Energy per identity, {_param_title(at_param, param)}")
    if len(runs) > 1:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _mean_and_halfwidth(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and t-interval half-width of ``values`` (half-width 0 for fewer than two values)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size < 2:
        return float(values.mean()), 0.0
    t = scipy_stats.t.ppf(0.5 + confidence / 2, values.size - 1)
    return float(values.mean()), float(t * values.std(ddof=1) / np.sqrt(values.size))


def energy_profile(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean energy over identities and its t-interval half-width per run, attribute and param."""
    records = []
    for (run, attribute, param), group in rows.groupby(["run", "attribute", "param"], dropna=False, sort=False):
        mean, halfwidth = _mean_and_halfwidth(group["energy"].to_numpy(dtype=float), confidence)
        records.append({"run": run, "attribute": attribute, "param": param, "mean": mean, "halfwidth": halfwidth,
                        "n": int(group["energy"].notna().sum())})
    return pd.DataFrame(records, columns=["run", "attribute", "param", "mean", "halfwidth", "n"])


def profile_plot(rows: pd.DataFrame, *, title: str = "") -> Figure:
    """Energy vs param per attribute (panels) and model (lines): mean ± 95 % t-interval over identities."""
    profile = energy_profile(rows)
    runs, attributes = runs_of(rows), attributes_of(rows)
    n_columns = min(4, len(attributes))
    n_rows = -(-len(attributes) // n_columns)
    figure = Figure(figsize=(3.2 * n_columns, 2.6 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes_grid = figure.subplots(n_rows, n_columns, squeeze=False, sharey=True)
    neighbourhood = rows["neighbourhood"].iloc[0]
    x_label = {"ball": "ε (multiples of d̄)", "knn": "k"}.get(neighbourhood, "param")
    for axes, attribute in zip(axes_grid.flat, attributes):
        for j, run in enumerate(runs):
            line = profile[(profile["run"] == run) & (profile["attribute"] == attribute)].sort_values("param")
            x = np.nan_to_num(line["param"].to_numpy(dtype=float), nan=0.0)
            axes.errorbar(x, line["mean"], yerr=line["halfwidth"], marker="o", markersize=3, capsize=2,
                          color=_COLOURS[j % len(_COLOURS)], label=run)
        axes.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        axes.set_title(attribute, fontsize=10)
        axes.set_xlabel(x_label, fontsize=8)
    for axes in axes_grid.flat[len(attributes):]:
        axes.set_visible(False)
    for axes in axes_grid[:, 0]:
        axes.set_ylabel("energy")
    if len(runs) > 1:
        axes_grid.flat[0].legend(fontsize=7)
    figure.suptitle(title or f"Alignment energy vs scale ({neighbourhood}; mean ± 95% CI over identities)")
    return figure


def figure_to_array(figure: Figure) -> np.ndarray:
    """Rasterise a figure to an (H, W, 3) uint8 RGB array (for image loggers)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()

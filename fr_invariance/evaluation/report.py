"""Markdown pieces of the energy analysis' report (tables of energies, graphs, magnitudes, paired tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from fr_invariance.evaluation.plots import (
    stars,
    attributes_of,
    params_of,
    rows_at,
    runs_of,
)

INTRO = (
    "Alignment energy (DESIGN §5): for each held-out identity and attribute, the field of embedding "
    "displacements `v_c = e(p + h·e_a) − e(p − h·e_a)` at curve centres `x_c = e(p)`; energy = mean over "
    "centres of the mean cosine distance between `v_c` and its neighbours' vectors. "
    "0 = the attribute moves embeddings coherently (the model depends on it); "
    "≈ 1 = random directions (invariant up to noise). Magnitude = mean `d_X(e(step 0), e(step 2)) / d̄`, with d̄ "
    "the identity's mean pairwise distance in the same metric. Samples for the statistics are identities."
)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in body]
    return "\n".join(lines)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna().to_numpy(dtype=float)
    if values.size == 0:
        return "–"
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.3f} ± {std:.3f}"


def _param_heading(neighbourhood: str, param: float) -> str:
    if neighbourhood == "ball":
        return f"ball ε = {param:g}·d̄"
    if neighbourhood == "knn":
        return f"kNN k = {int(param)}"
    return "inverse-distance weights"


def _shared_by_attributes(rows: pd.DataFrame, column: str) -> bool:
    """True when ``column`` is the same for every attribute of each run and identity (shared curve centres)."""
    spread = rows.groupby(["run", "identity"])[column].agg(lambda values: values.max() - values.min())
    return bool((spread.fillna(0) <= 1e-12).all())


def _per_attribute_table(rows: pd.DataFrame, column: str) -> str:
    """Mean ± std over identities per attribute (rows) and run (columns); one row when shared by all."""
    return _table(rows, lambda subset: _mean_std(subset[column]), shared=_shared_by_attributes(rows, column))


def _table(rows: pd.DataFrame, cell: Callable[[pd.DataFrame], str], *, shared: bool) -> str:
    """Rows = attributes (or one row when the values are shared by all), columns = runs."""
    runs, attributes = runs_of(rows), attributes_of(rows)
    groups = [("all attributes (shared centres)", attributes[:1])] if shared else [(a, [a]) for a in attributes]
    body = [[label] + [cell(rows[(rows["run"] == run) & rows["attribute"].isin(members)]) for run in runs]
            for label, members in groups]
    return markdown_table(["attribute"] + runs, body)


def _graph_table(rows: pd.DataFrame) -> str:
    """Mean |N| and mean fraction of isolated centres per attribute and run."""
    def cell(subset: pd.DataFrame) -> str:
        isolated = (subset["n_isolated"] / subset["n_points"]).mean()
        return f"{subset['mean_degree'].mean():.2f} ({isolated:.0%} isolated)"

    shared = _shared_by_attributes(rows, "mean_degree") and _shared_by_attributes(rows, "n_isolated")
    return _table(rows, cell, shared=shared)


def _comparisons_table(comparisons: pd.DataFrame) -> str:
    body = [
        [r.attribute, f"{r.param:g}", f"{r.run_a} − {r.run_b}", r.n,
         f"{r.median_difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
         f"{r.p_value:.3g}", f"{r.p_holm:.3g}", r.stars]
        for r in comparisons.itertuples()
    ]
    return markdown_table(["attribute", "param", "difference", "n", "median diff [95% CI]", "p", "p (Holm)", ""], body)


def summarise(rows: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean energy over identities per model and attribute at the first param: ``{run: {attribute: value}}``
    (None where no identity has a finite energy), rounded to 4 decimals for a JSON summary line."""
    first = rows_at(rows, params_of(rows)[0])
    summary: dict[str, dict[str, float | None]] = {}
    for run in runs_of(first):
        summary[run] = {}
        for attribute in attributes_of(first):
            values = first.loc[(first["run"] == run) & (first["attribute"] == attribute), "energy"].dropna()
            summary[run][attribute] = round(float(values.mean()), 4) if len(values) else None
    return summary


def _resolution_note(comparisons: pd.DataFrame) -> list[str]:
    """A warning when too few identities make every Holm-adjusted p-value ≥ 0.05 by construction."""
    if comparisons.empty:
        return []
    n = int(comparisons["n"].min())
    family = int(comparisons.groupby("param", dropna=False).size().max())
    smallest = 2.0 / 2**n  # exact two-sided Wilcoxon p when all n differences have the same sign
    if smallest * family < 0.05:
        return []
    return [f"Note: with {n} identities the smallest attainable Wilcoxon p-value is {smallest:.3g}; after Holm "
            f"over {family} tests nothing can reach p < 0.05. Evaluate more identities (design.n_identities).", ""]


def control_table_markdown(table: pd.DataFrame, *, value: str) -> str:
    """Arms vs the named control (from :func:`~fr_invariance.metrics.stats.compare_to_control`)."""
    body = [
        [r.setting, r.arm, r.attribute, r.family, r.n, f"{r.control_mean:.3f}", f"{r.arm_mean:.3f}",
         f"{r.delta:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", f"{r.p_value:.3g}", f"{r.p_holm:.3g}", stars(r.p_holm)]
        for r in table.itertuples()
    ]
    return markdown_table(["setting", "arm", "attribute", "family", "n", "control", "arm", f"Δ{value} [95% CI]",
                           "p", "p (Holm, family)", ""], body)


def render_markdown(rows: pd.DataFrame, comparisons: pd.DataFrame | None) -> str:
    """The Markdown body for the rows of ONE neighbourhood: energy, graph and magnitude tables, paired tests."""
    neighbourhood = rows["neighbourhood"].iloc[0]
    lines = [f"## Energy per attribute, {neighbourhood} (mean ± std over identities)", ""]
    for param in params_of(rows):
        at_param = rows_at(rows, param)
        lines += [f"### {_param_heading(neighbourhood, param)}", "", _per_attribute_table(at_param, "energy"), ""]
        if "null_energy" in rows and rows["null_energy"].notna().any():
            lines += ["Null baseline (isotropic random vectors on the same graph):", "",
                      _per_attribute_table(at_param, "null_energy"), ""]
        lines += ["Mean neighbourhood size |N| (isolated centres are left out of the energy):", "",
                  _graph_table(at_param), ""]
    if comparisons is not None and len(comparisons):
        lines += [f"### Paired tests between models ({neighbourhood})", "",
                  "Wilcoxon signed-rank over identities (difference = first − second model), bootstrap 95% CI of "
                  "the median difference, Holm correction over attributes × model pairs at each param; "
                  "* p < 0.05, ** p < 0.01, *** p < 0.001 (Holm).", "", _comparisons_table(comparisons), ""]
        lines += _resolution_note(comparisons)
    return "\n".join(lines)


def magnitude_markdown(rows: pd.DataFrame) -> str:
    """Displacement magnitude per attribute and model (identical for every neighbourhood and param)."""
    first = rows[(rows["neighbourhood"] == rows["neighbourhood"].iloc[0])]
    first = rows_at(first, params_of(first)[0])
    return "\n".join(["## Displacement magnitude d_X(e(step 0), e(step 2)) / d̄ (mean ± std over identities)", "",
                      "In units of the identity's mean pairwise distance, in the model's own metric; comparable "
                      "across models. Smaller = the attribute moves the embedding less (more invariant).", "",
                      _per_attribute_table(first, "magnitude"), ""])


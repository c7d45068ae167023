"""``evaluate.py analysis=macroscale``: how binary attributes shape the embedding space across identities
(paper C's macroscale experiment, DESIGN §6), per model or precomputed-embeddings folder.

Per attribute: intra- and inter-entropy of its labels, KS⁺ / KS⁻ between within-value and cross-value
distance distributions (one random image per identity, seeded), their max / mean / count-weighted
aggregates, logistic-regression recoverability; across attributes: Spearman ρ of each aggregate against
both entropies with bootstrap CIs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from fr_invariance.evaluation.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisInputError,
    AnalysisResult,
)
from fr_invariance.evaluation.labelled_embeddings import (
    LabelledData,
    NamedEmbeddings,
    attribute_kind,
    collect_labelled_embeddings,
    data_line,
    frame_of,
    labels_of,
    select_attributes,
)
from fr_invariance.evaluation.report import markdown_table
from fr_invariance.metrics import macroscale as mm

ATTRIBUTE_COLUMNS = (
    "run", "attribute", "kind", "metric", "n_images", "n_positive", "n_negative", "n_identities",
    "n_identities_positive", "n_identities_negative", "intra_entropy", "inter_entropy", "n_sampled",
    "n_d_a", "n_d_abar", "n_d_cross", "mean_d_a", "mean_d_abar", "mean_d_cross", "ks_plus", "p_plus",
    "ks_minus", "p_minus", "ks_max", "ks_mean", "ks_weighted", "lr_accuracy", "lr_accuracy_std",
    "lr_balanced_accuracy", "lr_balanced_accuracy_std", "lr_majority", "lr_n", "exclude_same_identity", "note",
)
CORRELATION_COLUMNS = ("run", "aggregate", "entropy", "rho", "p_value", "ci_low", "ci_high", "n_attributes",
                       "n_bootstrap_valid")
AGGREGATES = ("max", "mean", "weighted")
ENTROPIES = ("inter", "intra")


class MacroscaleAnalysis(Analysis):
    """Paper C's macroscale KS / entropy analysis.

    Args:
        data: labelled images a model is embedded on (:class:`LabelledData`; the synthetic set by default).
        attributes: attributes to analyse (None = every column of the data).
        n_max: identities per side for the distance samples (paper: 500).
        seed: seed of the one-image-per-identity draws (per attribute) and of the CV folds.
        exclude_same_identity: leave same-identity pairs out of ``d_cross`` (beyond the paper).
        n_bootstrap, confidence: bootstrap CI of the Spearman correlations.
        logistic: run the logistic-regression recoverability.
        folds: CV folds of the logistic regression (paper: 5).
        logistic_max_samples: rows used by the logistic regression (seeded subsample above it).
        group_folds: keep each identity inside one fold (``StratifiedGroupKFold``; the paper did not).
    """

    name = "macroscale"

    def __init__(self, data: Mapping[str, Any] | LabelledData | None = None, attributes: Sequence[str] | None = None,
                 n_max: int = mm.N_MAX, seed: int = 0, exclude_same_identity: bool = False, n_bootstrap: int = 2000,
                 confidence: float = 0.95, logistic: bool = True, folds: int = 5, logistic_max_samples: int = 5000,
                 group_folds: bool = False) -> None:
        self.data = LabelledData.from_config(data)
        self.attributes = list(attributes) if attributes is not None else None
        if int(n_max) < 2:
            raise AnalysisInputError(f"analysis.n_max={n_max}: KS needs at least 2 identities per side.")
        self.n_max = int(n_max)
        self.seed = int(seed)
        self.exclude_same_identity = bool(exclude_same_identity)
        self.n_bootstrap = int(n_bootstrap)
        self.confidence = float(confidence)
        self.logistic = bool(logistic)
        self.folds = int(folds)
        self.logistic_max_samples = int(logistic_max_samples)
        self.group_folds = bool(group_folds)

    # ------------------------------------------------------------------------------------------ measuring

    def attribute_rows(self, source: NamedEmbeddings, progress: bool = False) -> list[dict[str, Any]]:
        """One row of :data:`ATTRIBUTE_COLUMNS` per attribute of one source."""
        table = source.table
        identities = table.identities
        rng = np.random.default_rng([self.seed, 1])
        lr_rows = (np.sort(rng.choice(len(table), self.logistic_max_samples, replace=False))
                   if len(table) > self.logistic_max_samples else np.arange(len(table)))
        rows = []
        attributes = select_attributes(table, self.attributes)
        for attribute in tqdm(attributes, desc=f"{source.name}: macroscale", disable=not progress, leave=False):
            labels = labels_of(table, attribute)
            positive, negative = mm.per_identity_counts(labels, identities)
            row: dict[str, Any] = {
                "run": source.name, "attribute": attribute, "kind": attribute_kind(table, attribute),
                "metric": source.metric, "n_images": int(labels.size), "n_positive": int((labels == 1).sum()),
                "n_negative": int((labels == -1).sum()), "n_identities": int(positive.size),
                "n_identities_positive": int((positive > 0).sum()), "n_identities_negative": int((negative > 0).sum()),
                "intra_entropy": mm.intra_entropy(labels, identities),
                "inter_entropy": mm.inter_entropy(labels, identities),
                "exclude_same_identity": self.exclude_same_identity, "note": "",
            }
            if min(row["n_identities_positive"], row["n_identities_negative"]) < 2:
                row["note"] = "fewer than 2 identities on one side: no KS"
            else:
                ks = mm.ks_statistics(table.embeddings, labels, identities, metric=source.metric, n_max=self.n_max,
                                      seed=self.seed, attribute=attribute,
                                      exclude_same_identity=self.exclude_same_identity)
                aggregates = mm.ks_aggregates(ks.ks_plus, ks.ks_minus, row["n_positive"], row["n_negative"])
                row.update({
                    "n_sampled": ks.n, "n_d_a": ks.n_a, "n_d_abar": ks.n_abar, "n_d_cross": ks.n_cross,
                    "mean_d_a": ks.mean_d_a, "mean_d_abar": ks.mean_d_abar, "mean_d_cross": ks.mean_d_cross,
                    "ks_plus": ks.ks_plus, "p_plus": ks.p_plus, "ks_minus": ks.ks_minus, "p_minus": ks.p_minus,
                    **{f"ks_{name}": value for name, value in aggregates.items()},
                })
            if self.logistic:
                recoverability = mm.logistic_recoverability(
                    table.embeddings[lr_rows], labels[lr_rows], metric=source.metric, folds=self.folds,
                    seed=self.seed, groups=identities[lr_rows] if self.group_folds else None)
                row.update({"lr_accuracy": recoverability.accuracy, "lr_accuracy_std": recoverability.accuracy_std,
                            "lr_balanced_accuracy": recoverability.balanced_accuracy,
                            "lr_balanced_accuracy_std": recoverability.balanced_accuracy_std,
                            "lr_majority": recoverability.majority, "lr_n": recoverability.n})
            rows.append(row)
        return rows

    def correlation_rows(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        """Spearman ρ (bootstrap CI) of every KS aggregate against both entropies, per run."""
        out = []
        for run, subset in rows.groupby("run", sort=False):
            for aggregate in AGGREGATES:
                for entropy in ENTROPIES:
                    result = mm.spearman_with_ci(subset[f"ks_{aggregate}"].to_numpy(float),
                                                 subset[f"{entropy}_entropy"].to_numpy(float),
                                                 n_bootstrap=self.n_bootstrap, confidence=self.confidence,
                                                 seed=self.seed)
                    out.append({"run": run, "aggregate": aggregate, "entropy": entropy, "rho": result.rho,
                                "p_value": result.p_value, "ci_low": result.ci_low, "ci_high": result.ci_high,
                                "n_attributes": result.n, "n_bootstrap_valid": result.n_bootstrap_valid})
        return out

    # ------------------------------------------------------------------------------------------ reporting

    def run(self, context: AnalysisContext) -> AnalysisResult:
        sources = collect_labelled_embeddings(context, self.data)
        rows = frame_of([row for source in sources for row in self.attribute_rows(source, bool(context.progress))],
                        ATTRIBUTE_COLUMNS)
        correlations = frame_of(self.correlation_rows(rows), CORRELATION_COLUMNS)
        result = AnalysisResult(tables={"macroscale": rows, "macroscale_correlations": correlations},
                                figures={"macroscale_ks_vs_entropy": ks_entropy_figure(rows, correlations)})
        result.markdown = self.markdown(rows, correlations, sources)
        result.summary = {
            "analysis": self.name,
            "models": [s.name for s in sources],
            "ks_mean": {run: {a: _round(v) for a, v in zip(sub["attribute"], sub["ks_mean"])}
                        for run, sub in rows.groupby("run", sort=False)},
            "rho_mean_ks": {run: {f"vs_{e}_entropy": _round(sub.loc[(sub["aggregate"] == "mean")
                                                                     & (sub["entropy"] == e), "rho"].iloc[0])
                                  for e in ENTROPIES}
                            for run, sub in correlations.groupby("run", sort=False)},
        }
        return result

    def markdown(self, rows: pd.DataFrame, correlations: pd.DataFrame, sources: list[NamedEmbeddings]) -> str:
        lines = [
            "## Macroscale: attributes across identities (paper C, DESIGN §6)", "",
            "Per binary attribute a (values ±1): **intra-entropy** = mean over identities of the entropy (nats) of a "
            "inside the identity (0 = every identity is all-+1 or all-−1, ln 2 = 0.693 = half/half); "
            "**inter-entropy** = entropy of the Gaussian KDE (absolute bandwidth 0.1, 101 points on [−1, 1]) of "
            "the per-identity means (high = identities spread over all mixtures). One random image per identity "
            f"among images with a = +1 (X_a) and with a = −1 (X_ā), n = min({self.n_max}, |ids+|, |ids−|) "
            f"identities per side (seed {self.seed}); d_a, d_ā = within-set distances, d_cross = all X_a × X_ā "
            "distances" + (" without same-identity pairs" if self.exclude_same_identity else "") + ", in the model's "
            "metric. **KS⁺** = KS(d_a, d_cross), **KS⁻** = KS(d_ā, d_cross) (scipy `ks_2samp`, two-sided). "
            "A large KS means images sharing the attribute value sit measurably closer to each other than to "
            "images with the other value: the attribute shapes the space. Paper C found every ρ(KS, entropy) "
            "negative, intra-entropy the better predictor: attributes that stay constant within an identity "
            "(low intra-entropy) are the ones the model encodes.", "",
            "Aggregates: max(KS⁺, KS⁻), their mean, and count-weighted (N₊·KS⁺ + N₋·KS⁻)/(N₊ + N₋) with N± the "
            f"images having a = ±1. Logistic regression: {self.folds}-fold stratified CV accuracy and balanced "
            "accuracy (rows L2-normalised for cosine models; majority = always predicting the frequent value"
            + ("; folds keep identities apart" if self.group_folds else "") + ").", "",
            "## Settings", "",
            f"- data: {data_line(self.data, sources)}",
            f"- sources: {', '.join(f'{s.name} ({s.metric}, {len(s.table)} images, {s.table.embeddings.shape[1]}-D)' for s in sources)}",
            f"- Spearman CIs: percentile bootstrap over attributes, {self.n_bootstrap} draws, {self.confidence:.0%}",
            "",
        ]
        for run, subset in rows.groupby("run", sort=False):
            lines += [f"### {run}", "", markdown_table(
                ["attribute", "kind", "H_intra", "H_inter", "n", "KS⁺ (p)", "KS⁻ (p)", "KS mean", "KS max",
                 "LR acc", "LR bal. acc (majority)"],
                [[r.attribute, r.kind, _f(r.intra_entropy), _f(r.inter_entropy), _i(r.n_sampled),
                  f"{_f(r.ks_plus)} ({_p(r.p_plus)})", f"{_f(r.ks_minus)} ({_p(r.p_minus)})", _f(r.ks_mean),
                  _f(r.ks_max), _f(getattr(r, "lr_accuracy", float("nan"))),
                  f"{_f(getattr(r, 'lr_balanced_accuracy', float('nan')))} ({_f(getattr(r, 'lr_majority', float('nan')))})"]
                 for r in subset.sort_values("ks_mean", ascending=False, na_position="last").itertuples()]), ""]
            skipped = subset[subset["note"] != ""]
            if len(skipped):
                lines += [f"No KS for {', '.join(skipped['attribute'])}: fewer than 2 identities on one side.", ""]
            corr = correlations[correlations["run"] == run]
            lines += ["Spearman ρ across attributes (95 % bootstrap CI):", "", markdown_table(
                ["KS aggregate", "vs inter-entropy", "vs intra-entropy"],
                [[aggregate] + [_rho(corr[(corr["aggregate"] == aggregate) & (corr["entropy"] == e)])
                                for e in ENTROPIES] for aggregate in AGGREGATES]), ""]
        lines.append("Files: `macroscale.csv` (one row per model × attribute), `macroscale_correlations.csv`, "
                     "`macroscale_ks_vs_entropy.png` (mean KS vs inter-entropy, point size = intra-entropy).")
        return "\n".join(lines)


def ks_entropy_figure(rows: pd.DataFrame, correlations: pd.DataFrame) -> Figure:
    """Mean KS vs inter-entropy per attribute, one panel per run, point area ∝ intra-entropy (paper C Fig. 1d)."""
    runs = list(dict.fromkeys(rows["run"]))
    figure = Figure(figsize=(5.2 * max(len(runs), 1), 4.4))
    for k, run in enumerate(runs or [""]):
        axes = figure.add_subplot(1, max(len(runs), 1), k + 1)
        subset = rows[(rows["run"] == run) & rows["ks_mean"].notna()]
        sizes = 30.0 + 400.0 * subset["intra_entropy"].to_numpy(float) / math.log(2)
        colours = ["tab:orange" if kind == "identity" else "tab:blue" for kind in subset["kind"]]
        axes.scatter(subset["inter_entropy"], subset["ks_mean"], s=sizes, c=colours, alpha=0.6, edgecolors="k")
        for r in subset.itertuples():
            axes.annotate(r.attribute, (r.inter_entropy, r.ks_mean), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
        corr = correlations[(correlations["run"] == run) & (correlations["aggregate"] == "mean")]
        title = run
        for entropy in ENTROPIES:
            match = corr[corr["entropy"] == entropy]
            if len(match) and not np.isnan(match["rho"].iloc[0]):
                title += f"\nρ(KS, H_{entropy}) = {match['rho'].iloc[0]:.2f}"
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("inter-entropy (nats)")
        axes.set_ylabel("mean KS (KS⁺ + KS⁻)/2")
        axes.grid(alpha=0.3)
    figure.suptitle("Macroscale: KS vs entropy (point size = intra-entropy; orange = per-identity attribute)",
                    fontsize=9)
    figure.tight_layout()
    return figure


def _round(value: Any, digits: int = 4) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, digits)


def _f(value: Any, digits: int = 3) -> str:
    value = float(value) if value is not None else float("nan")
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


def _i(value: Any) -> str:
    value = float(value) if value is not None else float("nan")
    return "–" if np.isnan(value) else str(int(value))


def _p(value: Any) -> str:
    value = float(value) if value is not None else float("nan")
    if np.isnan(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _rho(match: pd.DataFrame) -> str:
    if not len(match) or np.isnan(match["rho"].iloc[0]):
        return "–"
    r = match.iloc[0]
    ci = "" if np.isnan(r["ci_low"]) else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    return f"{r['rho']:.3f}{ci} (p {_p(r['p_value'])})"

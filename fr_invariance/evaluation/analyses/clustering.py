"""``evaluate.py analysis=clustering``: which attributes unsupervised clustering recovers from frozen
embeddings (paper A, DESIGN §7), per model or precomputed-embeddings folder.

Per binary attribute:

- **extra-class** (across identities): the images (or a seeded subsample of ``max_images``; or one image
  / the mean embedding per identity) clustered into 2 by k-means (seeded, ≥ 10 restarts), a Gaussian mixture
  and agglomerative (Ward); Hungarian-matched accuracy, purity, NMI, ARI, the majority baseline and a
  label-permutation p-value (identities' labels permuted when the label is constant within every identity);
  a logistic regression cross-validated over identity-grouped folds as the supervised upper bound; the
  per-dimension Fisher-score ranking and the ablation curve (drop the top-m dimensions, re-cluster).
- **intra-class** (within identities): each identity that shows both values at least ``min_per_class``
  times is clustered on its own; scores averaged over identities (with their spread), p-value from labels
  permuted inside each identity.
"""

from __future__ import annotations

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
from fr_invariance.metrics import clustering as mc

SCORE_COLUMNS = (
    "run", "attribute", "kind", "case", "method", "n", "n_identities", "accuracy", "accuracy_std", "purity",
    "nmi", "ari", "majority", "p_value", "linear_probe", "note",
)
FISHER_COLUMNS = ("run", "attribute", "rank", "dimension", "fisher_score")
ABLATION_COLUMNS = ("run", "attribute", "method", "dropped", "accuracy", "majority")
SAMPLINGS = ("all", "one_per_identity", "identity_mean")
CASES = ("extra", "intra")


class ClusteringAnalysis(Analysis):
    """Paper A's clustering recoverability.

    Args:
        data: labelled images a model is embedded on (the synthetic set by default).
        attributes: attributes to analyse (None = all).
        methods: any of ``kmeans``, ``gmm``, ``agglomerative``.
        cases: ``extra`` and/or ``intra``.
        n_init: restarts of k-means (at least 10) and of the Gaussian mixture.
        covariance_type: Gaussian-mixture covariance (``diag`` suits 512-D with few samples).
        seed: seed of clustering, subsampling, permutations and CV folds.
        n_permutations: label permutations of the p-value.
        extra_sampling: ``all`` images, ``one_per_identity`` (a random one) or ``identity_mean`` (the majority
            value as label; identities with a tie left out).
        max_images: cap on extra-class samples (seeded subsample above it).
        min_per_class: intra-class: an identity needs this many images of each value.
        max_intra_identities: intra-class: at most this many eligible identities (seeded choice).
        linear_probe, folds: the supervised upper bound (extra-class sample, stratified CV folds grouped by
            identity; C chosen by an inner CV).
        ablation: numbers of top-Fisher dimensions dropped for the ablation curve (empty = none).
        ablation_method: clustering method of the ablation curve.
        fisher_top: dimensions listed per attribute in ``clustering_fisher.csv``.
    """

    name = "clustering"

    def __init__(self, data: Mapping[str, Any] | LabelledData | None = None, attributes: Sequence[str] | None = None,
                 methods: Sequence[str] = mc.METHODS, cases: Sequence[str] = CASES, n_init: int = 10,
                 covariance_type: str = "diag", seed: int = 0, n_permutations: int = 1000,
                 extra_sampling: str = "all", max_images: int = 2000, min_per_class: int = 2,
                 max_intra_identities: int = 50, linear_probe: bool = True, folds: int = 5,
                 ablation: Sequence[int] = (0, 1, 2, 4, 8, 16, 32, 64), ablation_method: str = "kmeans",
                 fisher_top: int = 20) -> None:
        self.data = LabelledData.from_config(data)
        self.attributes = list(attributes) if attributes is not None else None
        self.methods = list(methods)
        unknown = [m for m in [*self.methods, ablation_method] if m not in mc.METHODS]
        if unknown or not self.methods:
            raise AnalysisInputError(f"analysis.methods / ablation_method: unknown {unknown}; choose from {', '.join(mc.METHODS)}.")
        self.cases = list(cases)
        if not self.cases or any(c not in CASES for c in self.cases):
            raise AnalysisInputError(f"analysis.cases={self.cases}; choose from {', '.join(CASES)}.")
        if extra_sampling not in SAMPLINGS:
            raise AnalysisInputError(f"analysis.extra_sampling={extra_sampling!r}; choose from {', '.join(SAMPLINGS)}.")
        if int(n_init) < 10:
            raise AnalysisInputError(f"analysis.n_init={n_init}: k-means needs at least 10 restarts.")
        self.n_init = int(n_init)
        self.covariance_type = covariance_type
        self.seed = int(seed)
        self.n_permutations = int(n_permutations)
        self.extra_sampling = extra_sampling
        self.max_images = int(max_images)
        self.min_per_class = int(min_per_class)
        self.max_intra_identities = int(max_intra_identities)
        self.linear_probe = bool(linear_probe)
        self.folds = int(folds)
        self.ablation = [int(m) for m in ablation]
        self.ablation_method = ablation_method
        self.fisher_top = int(fisher_top)

    # ------------------------------------------------------------------------------------------ samples

    def extra_sample(self, source: NamedEmbeddings, labels: np.ndarray,
                     attribute: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(x prepared (n, D), labels (n,), identities (n,), tied)`` of the extra-class case for one attribute;
        ``tied``: identities left out of ``identity_mean`` for a mean label of exactly 0 (no majority value)."""
        table = source.table
        rng = np.random.default_rng([self.seed, 2])
        identities = table.identities
        tied = 0
        if self.extra_sampling == "all":
            x, y, ids = table.embeddings, labels, identities
        elif self.extra_sampling == "one_per_identity":
            order = rng.permutation(len(table))
            _, first = np.unique(identities[order], return_index=True)
            rows = np.sort(order[first])
            x, y, ids = table.embeddings[rows], labels[rows], identities[rows]
        else:
            unique, codes = np.unique(identities, return_inverse=True)
            codes = codes.reshape(-1)
            prepared = mc.prepare(table.embeddings, source.metric)
            sums = np.zeros((unique.size, prepared.shape[1]))
            np.add.at(sums, codes, prepared)
            label_sums = np.bincount(codes, weights=labels.astype(float))
            decided = label_sums != 0  # majority value; a tie has none
            tied = int((~decided).sum())
            x = (sums / np.bincount(codes)[:, None])[decided]
            y = np.sign(label_sums[decided]).astype(np.int8)
            ids = unique[decided]
        if len(y) > self.max_images:
            keep = np.sort(rng.choice(len(y), self.max_images, replace=False))
            x, y, ids = x[keep], y[keep], ids[keep]
        return mc.prepare(x, source.metric), y, ids, tied

    # ------------------------------------------------------------------------------------------ measuring

    def measure(self, source: NamedEmbeddings, progress: bool) -> tuple[list[dict], list[dict], list[dict]]:
        """Score, Fisher and ablation rows of one source."""
        scores, fisher, ablation = [], [], []
        table = source.table
        attributes = select_attributes(table, self.attributes)
        for attribute in tqdm(attributes, desc=f"{source.name}: clustering", disable=not progress, leave=False):
            labels = labels_of(table, attribute)
            kind = attribute_kind(table, attribute)
            base = {"run": source.name, "attribute": attribute, "kind": kind}
            if "extra" in self.cases:
                x, y, ids, tied = self.extra_sample(source, labels, attribute)
                extra = {**base, "case": "extra", "n_identities": int(np.unique(ids).size),
                         "note": f"{tied} identities with a tied mean label left out" if tied else ""}
                if np.unique(y).size < 2:
                    scores.append({**extra, "method": "-", "n": int(y.size), "majority": 1.0})
                else:
                    probe = (mc.linear_probe_accuracy(x, y, identities=ids, folds=self.folds, seed=self.seed)
                             if self.linear_probe else float("nan"))
                    for method in self.methods:
                        s = mc.cluster_and_score(x, y, method, identities=ids, seed=self.seed, n_init=self.n_init,
                                                 n_permutations=self.n_permutations,
                                                 covariance_type=self.covariance_type)
                        scores.append({**extra, "method": method, "n": s.n, "accuracy": s.accuracy,
                                       "purity": s.purity, "nmi": s.nmi, "ari": s.ari, "majority": s.majority,
                                       "p_value": s.p_value, "linear_probe": probe})
                    ranking = mc.fisher_scores(x, y)
                    order = np.argsort(-ranking, kind="stable")[: self.fisher_top]
                    fisher += [{**base, "rank": k + 1, "dimension": int(d), "fisher_score": float(ranking[d])}
                               for k, d in enumerate(order)]
                    majority = mc.majority_baseline(y)
                    for dropped, accuracy in mc.ablation_curve(x, y, self.ablation, method=self.ablation_method,
                                                               seed=self.seed, n_init=self.n_init,
                                                               covariance_type=self.covariance_type,
                                                               renormalise=source.metric == "cosine"):
                        ablation.append({"run": source.name, "attribute": attribute, "method": self.ablation_method,
                                         "dropped": dropped, "accuracy": accuracy, "majority": majority})
            if "intra" in self.cases and kind != "identity":
                scores += self.intra_rows(source, labels, base)
        return scores, fisher, ablation

    def intra_rows(self, source: NamedEmbeddings, labels: np.ndarray, base: dict[str, Any]) -> list[dict]:
        """Intra-class rows (one per method) of one attribute; none when no identity is eligible."""
        identities = source.table.identities
        eligible = mc.eligible_identities(labels, identities, min_per_class=self.min_per_class)
        if eligible.size == 0:
            return []
        if eligible.size > self.max_intra_identities:
            rng = np.random.default_rng([self.seed, 3])
            eligible = np.sort(rng.choice(eligible, self.max_intra_identities, replace=False))
        mask = np.isin(identities, eligible)
        x = mc.prepare(source.table.embeddings[mask], source.metric)
        rows = []
        for method in self.methods:
            s = mc.intra_class_scores(x, labels[mask], identities[mask], method, min_per_class=self.min_per_class,
                                      seed=self.seed, n_init=self.n_init, n_permutations=self.n_permutations,
                                      covariance_type=self.covariance_type)
            if s is None:
                continue
            rows.append({**base, "case": "intra", "method": method, "n": s.n, "n_identities": s.n_identities,
                         "accuracy": s.accuracy, "accuracy_std": s.accuracy_std, "purity": s.purity, "nmi": s.nmi,
                         "ari": s.ari, "majority": s.majority, "p_value": s.p_value, "note": ""})
        return rows

    # ------------------------------------------------------------------------------------------ reporting

    def run(self, context: AnalysisContext) -> AnalysisResult:
        sources = collect_labelled_embeddings(context, self.data)
        scores, fisher, ablation = [], [], []
        for source in sources:
            s, f, a = self.measure(source, bool(context.progress))
            scores += s
            fisher += f
            ablation += a
        score_frame = frame_of(scores, SCORE_COLUMNS)
        ablation_frame = frame_of(ablation, ABLATION_COLUMNS)
        result = AnalysisResult(
            tables={"clustering": score_frame, "clustering_fisher": frame_of(fisher, FISHER_COLUMNS),
                    "clustering_ablation": ablation_frame},
            figures={"clustering_accuracy": accuracy_figure(score_frame)},
        )
        if len(ablation_frame):
            result.figures["clustering_ablation"] = ablation_figure(ablation_frame)
        result.markdown = self.markdown(score_frame, ablation_frame, sources)
        kmeans = score_frame[(score_frame["method"] == self.methods[0])]
        result.summary = {
            "analysis": self.name,
            "models": [s.name for s in sources],
            f"{self.methods[0]}_accuracy": {
                run: {case: {a: _round(v) for a, v in zip(c["attribute"], c["accuracy"])}
                      for case, c in sub.groupby("case", sort=False)}
                for run, sub in kmeans.groupby("run", sort=False)},
        }
        return result

    def markdown(self, scores: pd.DataFrame, ablation: pd.DataFrame, sources: list[NamedEmbeddings]) -> str:
        lines = [
            "## Clustering recoverability (paper A, DESIGN §7)", "",
            "Can an attribute be read from frozen embeddings without supervision? Each binary attribute's images "
            "are clustered into 2 groups; **accuracy** = share of images whose cluster maps to their value under the "
            "best one-to-one cluster → value matching (Hungarian). Compare it with the **majority** baseline "
            "(everything in one cluster) and the **linear probe** (logistic regression, stratified "
            f"{self.folds}-fold cross-validation with folds grouped by identity, fewer folds when a value has fewer "
            "identities; L2 strength C chosen from " + ", ".join(f"{c:g}" for c in mc.PROBE_CS) + " by an inner "
            f"{mc.PROBE_INNER_FOLDS}-fold identity-grouped CV on each training part: what a supervised read-out "
            "reaches on unseen identities, the upper bound). **p** = (1 + number of label permutations whose "
            f"accuracy is at least the observed one) / (1 + {self.n_permutations}) (smallest possible "
            f"{1 / (1 + self.n_permutations):.1e}); extra-class: an attribute constant within every identity has "
            "its identities' labels permuted (an identity's images are not independent draws of it), any other "
            "its images' labels; intra-class: labels permuted within each identity, mean accuracies compared. "
            "**Extra-class** clusters across identities; **intra-class** clusters each identity's own images "
            "(identities showing both values), averaged over identities (± std). Paper A's headline (v2): beards "
            "90.0 %, glasses 76.0 % (intra); gender 99.3 %, skin tone 99.3 %, age 94.1 % (extra).", "",
            "## Settings", "",
            f"- data: {data_line(self.data, sources)}",
            f"- methods: {', '.join(self.methods)} (k-means {self.n_init} restarts, GMM covariance "
            f"{self.covariance_type}, agglomerative Ward); seed {self.seed}; rows L2-normalised for cosine models",
            f"- extra-class sample: {self.extra_sampling}, at most {self.max_images} rows; intra-class: identities with "
            f">= {self.min_per_class} images of each value, at most {self.max_intra_identities}",
            "",
        ]
        for run, subset in scores.groupby("run", sort=False):
            lines += [f"### {run}", ""]
            for case in ("extra", "intra"):
                part = subset[(subset["case"] == case) & (subset["method"] != "-")]
                if not len(part):
                    continue
                pivot = {(r.attribute, r.method): r for r in part.itertuples()}
                attributes = list(dict.fromkeys(part["attribute"]))
                header = ["attribute", "kind", *[f"{m} acc" for m in self.methods], "majority", "NMI / ARI (" +
                          self.methods[0] + ")", "p (" + self.methods[0] + ")"]
                if case == "extra":
                    header.insert(len(self.methods) + 2, "linear probe")
                body = []
                for attribute in sorted(attributes, key=lambda a: -_get(pivot, a, self.methods[0], "accuracy")):
                    first = pivot.get((attribute, self.methods[0]))
                    row = [attribute, getattr(first, "kind", "")]
                    row += [_acc(pivot.get((attribute, m)), case) for m in self.methods]
                    if case == "extra":
                        row.append(_pct(getattr(first, "linear_probe", float("nan"))))
                    row += [_pct(getattr(first, "majority", float("nan"))),
                            f"{_f(getattr(first, 'nmi', float('nan')))} / {_f(getattr(first, 'ari', float('nan')))}",
                            _p(getattr(first, "p_value", float("nan")))]
                    body.append(row)
                title = "Extra-class (across identities)" if case == "extra" else (
                    "Intra-class (within identities; mean ± std over identities)")
                notes = [f"- {a}: {n}" for a, n in dict(zip(part["attribute"], part["note"].fillna(""))).items() if n]
                lines += [f"{title}:", "", markdown_table(header, body), "", *notes, *([""] if notes else [])]
            curve = ablation[ablation["run"] == run]
            if len(curve):
                steps = sorted(curve["dropped"].unique())
                lines += [f"Ablation ({self.ablation_method}, extra-class): accuracy after dropping the top-m Fisher "
                          "dimensions (m = " + ", ".join(map(str, steps)) + "):", "",
                          markdown_table(["attribute", *[f"m={m}" for m in steps]],
                                         [[a, *[_pct(c.loc[c["dropped"] == m, "accuracy"].iloc[0])
                                                if (c["dropped"] == m).any() else "–" for m in steps]]
                                          for a, c in curve.groupby("attribute", sort=False)]), ""]
        lines.append("A fast drop along the ablation curve means the attribute lives in a few dimensions; a flat "
                     "curve means it is spread out. Files: `clustering.csv` (one row per model × attribute × case × "
                     "method), `clustering_fisher.csv` (top Fisher dimensions), `clustering_ablation.csv`, "
                     "`clustering_accuracy.png`, `clustering_ablation.png`.")
        return "\n".join(lines)


def accuracy_figure(scores: pd.DataFrame) -> Figure:
    """Grouped bars of accuracy per attribute and method (one panel per run × case), majority baseline as a
    black tick, linear probe as a red diamond, intra-class bars with ± std error bars."""
    panels = [(run, case) for run, sub in scores.groupby("run", sort=False)
              for case in ("extra", "intra") if ((sub["case"] == case) & (sub["method"] != "-")).any()]
    figure = Figure(figsize=(10, 3.4 * max(len(panels), 1)))
    for k, (run, case) in enumerate(panels):
        axes = figure.add_subplot(max(len(panels), 1), 1, k + 1)
        part = scores[(scores["run"] == run) & (scores["case"] == case) & (scores["method"] != "-")]
        attributes = list(dict.fromkeys(part["attribute"]))
        methods = list(dict.fromkeys(part["method"]))
        width = 0.8 / max(len(methods), 1)
        positions = np.arange(len(attributes))
        for j, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("attribute").reindex(attributes)
            errors = rows["accuracy_std"].to_numpy(float) if case == "intra" else None
            axes.bar(positions + (j - (len(methods) - 1) / 2) * width, rows["accuracy"], width, yerr=errors,
                     label=method, alpha=0.8, capsize=2)
        first = part.drop_duplicates("attribute").set_index("attribute").reindex(attributes)
        axes.scatter(positions, first["majority"], marker="_", s=400, c="k", label="majority", zorder=3)
        if case == "extra" and first["linear_probe"].notna().any():
            axes.scatter(positions, first["linear_probe"], marker="D", s=25, c="tab:red", label="linear probe", zorder=3)
        axes.set_xticks(positions, attributes, rotation=40, ha="right", fontsize=8)
        axes.set_ylim(0.4, 1.02)
        axes.set_ylabel("accuracy")
        axes.set_title(f"{run}: {case}-class clustering accuracy", fontsize=9)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Accuracy vs number of dropped top-Fisher dimensions, one line per attribute, one panel per run."""
    runs = list(dict.fromkeys(ablation["run"]))
    figure = Figure(figsize=(5.5 * len(runs), 4))
    for k, run in enumerate(runs):
        axes = figure.add_subplot(1, len(runs), k + 1)
        for attribute, curve in ablation[ablation["run"] == run].groupby("attribute", sort=False):
            axes.plot(curve["dropped"] + 1, curve["accuracy"], marker="o", ms=3, label=attribute)
        axes.set_xscale("log")
        axes.set_xlabel("top-Fisher dimensions dropped + 1")
        axes.set_ylabel("clustering accuracy")
        axes.set_title(f"{run}: ablation", fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    return figure


def _get(pivot: dict, attribute: str, method: str, column: str) -> float:
    row = pivot.get((attribute, method))
    value = getattr(row, column, float("nan")) if row is not None else float("nan")
    return -1.0 if value is None or np.isnan(value) else float(value)


def _round(value: Any, digits: int = 4) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, digits)


def _f(value: Any) -> str:
    value = float(value) if value is not None else float("nan")
    return "–" if np.isnan(value) else f"{value:.3f}"


def _pct(value: Any) -> str:
    value = float(value) if value is not None else float("nan")
    return "–" if np.isnan(value) else f"{100 * value:.1f} %"


def _acc(row: Any, case: str) -> str:
    if row is None:
        return "–"
    text = _pct(row.accuracy)
    if case == "intra" and not np.isnan(float(row.accuracy_std)):
        text += f" ± {100 * float(row.accuracy_std):.1f}"
    return text


def _p(value: Any) -> str:
    value = float(value) if value is not None else float("nan")
    return "–" if np.isnan(value) else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")

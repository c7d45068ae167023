"""``evaluate.py analysis=crossmodel``: are two embedding spaces related by a low-capacity linear map?
(paper B, DESIGN §8). The headline use: one backbone **before and after** a targeted fine-tune — does the
augmentation rotate the space (Procrustes recovers it), or squash directions (least squares beats
Procrustes, the fit residual stays high)?

Two or more sources embedding the same images in the same order (two checkpoints embedded on the labelled
synthetic set, or two ``embeddings.npy`` + ``meta.csv`` folders). For every ordered pair (source → target),
seed and method: identity-disjoint 70/30 split, centring with training means, zero-padding, fit on train,
map the held-out source set and score it against the held-out target set by cosine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from fr_invariance.data.embeddings_table import same_images
from fr_invariance.evaluation.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisInputError,
    AnalysisResult,
)
from fr_invariance.evaluation.labelled_embeddings import (
    LabelledData,
    NamedEmbeddings,
    collect_labelled_embeddings,
    data_line,
)
from fr_invariance.evaluation.report import markdown_table
from fr_invariance.metrics import crossmodel as cm

REFERENCE = "within_target"
"""The target's own held-out embeddings as probes: what identification reaches inside the target space."""
IDENTIFICATION_COLUMNS = ("source", "target", "seed", "method", "protocol", "rank1", "rank5", "rank10", "rank20",
                          "map", "map_at_50", "n_probes", "n_without_mate", "n_train_identities",
                          "n_test_identities", "n_test_images")
SIMILARITY_COLUMNS = ("source", "target", "seed", "method", "rsa", "cka", "residual")
CMC_COLUMNS = ("source", "target", "method", "protocol", "rank", "mean", "std", "n_seeds")
SUMMARY_COLUMNS = ("source", "target", "method", "protocol", "metric", "mean", "std", "n_seeds")


def _fmr_column(target: float) -> str:
    return f"tmr_at_fmr_{target:.0e}"


class CrossModelAnalysis(Analysis):
    """Paper B's cross-model alignment.

    Args:
        data: labelled images the models are embedded on (the synthetic set by default; identities label them).
        seeds: split seeds (paper: 42, 123, 217, 7, 531); mean ± std (ddof 0, as the authors) over them.
        train_fraction: identities fitting the map (paper: 0.7).
        methods: maps fitted besides the ``unaligned`` baseline: ``procrustes``, ``least_squares``, ``ridge``.
        ridge_alpha: ridge penalty (paper: 0.1; no intercept).
        protocols: ``paper_faithful`` (probe's own image stays in the gallery) and/or ``strict``.
        ranks, max_rank: Rank-k values and the CMC length (paper: 1, 5, 10, 20 and 50).
        fmr_targets: FMR operating points of TMR@FMR.
        directions: ``both`` (A→B and B→A) or ``forward`` (each source → every later one).
        reference: also score the target's own embeddings (``within_target``): the ceiling of every map.
        verification, similarity: run the verification protocol / RSA, linear CKA and fit residuals.
        rsa_subsample: held-out images used by RSA and CKA (paper: 500).
        memory_budget_mb: per-chunk budget of the chunked identification.
    """

    name = "crossmodel"

    def __init__(self, data: Mapping[str, Any] | LabelledData | None = None, seeds: Sequence[int] = cm.SEEDS,
                 train_fraction: float = cm.TRAIN_FRACTION,
                 methods: Sequence[str] = ("procrustes", "least_squares", "ridge"), ridge_alpha: float = cm.RIDGE_ALPHA,
                 protocols: Sequence[str] = cm.PROTOCOLS, ranks: Sequence[int] = cm.RANKS, max_rank: int = cm.MAX_RANK,
                 fmr_targets: Sequence[float] = cm.FMR_TARGETS, directions: str = "both", reference: bool = True,
                 verification: bool = True, similarity: bool = True, rsa_subsample: int = 500,
                 memory_budget_mb: float = 256.0) -> None:
        self.data = LabelledData.from_config(data)
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise AnalysisInputError("analysis.seeds is empty; give at least one split seed.")
        self.train_fraction = float(train_fraction)
        self.methods = ["unaligned", *[m for m in methods if m != "unaligned"]]
        unknown = [m for m in self.methods if m not in cm.METHODS]
        if unknown:
            raise AnalysisInputError(f"analysis.methods: unknown {unknown}; choose from {', '.join(cm.METHODS[1:])}.")
        self.ridge_alpha = float(ridge_alpha)
        self.protocols = list(protocols)
        if not self.protocols or any(p not in cm.PROTOCOLS for p in self.protocols):
            raise AnalysisInputError(f"analysis.protocols={self.protocols}; choose from {', '.join(cm.PROTOCOLS)}.")
        self.ranks = [int(k) for k in ranks]
        self.max_rank = int(max_rank)
        if any(k < 1 or k > self.max_rank for k in self.ranks):
            raise AnalysisInputError(f"analysis.ranks={self.ranks} must lie in 1..max_rank={self.max_rank}.")
        self.fmr_targets = [float(t) for t in fmr_targets]
        if directions not in ("both", "forward"):
            raise AnalysisInputError(f"analysis.directions={directions!r}; choose 'both' or 'forward'.")
        self.directions = directions
        self.reference = bool(reference)
        self.verification = bool(verification)
        self.similarity = bool(similarity)
        self.rsa_subsample = int(rsa_subsample)
        self.memory_budget_mb = float(memory_budget_mb)

    # ------------------------------------------------------------------------------------------ measuring

    def pairs(self, sources: list[NamedEmbeddings]) -> list[tuple[NamedEmbeddings, NamedEmbeddings]]:
        """Ordered (source, target) pairs to align; checks that every source lists the same images."""
        if len(sources) < 2:
            raise AnalysisInputError(
                f"analysis=crossmodel needs two sources (got {len(sources)}): checkpoints=[A,B] (e.g. before and "
                "after a fine-tune) or two embeddings folders of the same images in the same order.")
        first = sources[0]
        for other in sources[1:]:
            if not same_images(first.table, other.table):
                raise AnalysisInputError(
                    f"{first.name} ({len(first.table)} rows) and {other.name} ({len(other.table)} rows) do not list the "
                    "same images in the same order (identity column and image names must match row by row); "
                    "re-export both embeddings from one image list.")
        pairs = []
        for i, a in enumerate(sources):
            for j, b in enumerate(sources):
                if i < j or (self.directions == "both" and i > j):
                    pairs.append((a, b))
        return pairs

    def measure_pair(self, source: NamedEmbeddings, target: NamedEmbeddings, device: Any,
                     progress: bool) -> tuple[list[dict], list[dict], list[dict], dict]:
        """Identification, verification and similarity rows of one direction, and its CMC curves per seed."""
        x_all = source.table.embeddings.astype(np.float64)
        y_all = target.table.embeddings.astype(np.float64)
        identities = target.table.identities
        ident, verif, simil = [], [], []
        cmc: dict[tuple[str, str], list[np.ndarray]] = {}
        methods = self.methods + ([REFERENCE] if self.reference else [])
        for seed in tqdm(self.seeds, desc=f"{source.name} → {target.name}", disable=not progress, leave=False):
            train, test = cm.identity_split(identities, seed=seed, train_fraction=self.train_fraction)
            prepared = cm.centre_and_pad(x_all[train], y_all[train], x_all[test], y_all[test])
            labels = identities[test]
            split = {"n_train_identities": int(np.unique(identities[train]).size),
                     "n_test_identities": int(np.unique(labels).size), "n_test_images": int(test.size)}
            pairs = cm.verification_pairs(labels, seed=seed) if self.verification else None
            subsample = cm.subsample_rows(test.size, self.rsa_subsample, seed)
            for method in methods:
                if method == REFERENCE:
                    probes = prepared.y_test
                else:
                    w = cm.fit_map(prepared.x_train, prepared.y_train, method, alpha=self.ridge_alpha)
                    probes = prepared.x_test @ w
                base = {"source": source.name, "target": target.name, "seed": seed, "method": method}
                for protocol in self.protocols:
                    result = cm.identification_metrics(
                        probes, prepared.y_test, labels, labels, exclude_self=protocol == "strict", ranks=self.ranks,
                        max_rank=self.max_rank, memory_budget_mb=self.memory_budget_mb, device=device)
                    ident.append({**base, "protocol": protocol, **{f"rank{k}": v for k, v in result.rank.items()},
                                  "map": result.mean_ap, "map_at_50": result.mean_ap_at_50,
                                  "n_probes": result.n_probes, "n_without_mate": result.n_without_mate, **split})
                    cmc.setdefault((method, protocol), []).append(result.cmc)
                if pairs is not None:
                    first, second, genuine = pairs
                    v = cm.verification_metrics(cm.pair_scores(probes, prepared.y_test, first, second), genuine,
                                                fmr_targets=self.fmr_targets)
                    verif.append({**base, "auc": v.auc, "eer": v.eer,
                                  **{_fmr_column(t): v.tmr_at_fmr[t] for t in self.fmr_targets},
                                  "n_genuine": v.n_genuine, "n_impostor": v.n_impostor})
                if self.similarity and method != REFERENCE:
                    x_sub, y_sub = probes[subsample], prepared.y_test[subsample]
                    simil.append({**base, "rsa": cm.rsa(x_sub, y_sub), "cka": cm.linear_cka(x_sub, y_sub),
                                  "residual": cm.relative_residual(probes, prepared.y_test)})
        return ident, verif, simil, cmc

    # ------------------------------------------------------------------------------------------ reporting

    def run(self, context: AnalysisContext) -> AnalysisResult:
        sources = collect_labelled_embeddings(context, self.data)
        ident, verif, simil, cmc_rows = [], [], [], []
        for source, target in self.pairs(sources):
            i, v, s, cmc = self.measure_pair(source, target, context.device, bool(context.progress))
            ident += i
            verif += v
            simil += s
            for (method, protocol), curves in cmc.items():
                stacked = np.vstack(curves)
                for rank in range(1, self.max_rank + 1):
                    cmc_rows.append({"source": source.name, "target": target.name, "method": method,
                                     "protocol": protocol, "rank": rank, "mean": float(stacked[:, rank - 1].mean()),
                                     "std": float(stacked[:, rank - 1].std()), "n_seeds": stacked.shape[0]})
        identification = pd.DataFrame(ident, columns=list(IDENTIFICATION_COLUMNS))
        verification_columns = ["source", "target", "seed", "method", "auc", "eer",
                                *[_fmr_column(t) for t in self.fmr_targets], "n_genuine", "n_impostor"]
        verification = pd.DataFrame(verif, columns=verification_columns)
        similarity = pd.DataFrame(simil, columns=list(SIMILARITY_COLUMNS))
        summary = summarise(identification, verification, similarity)
        cmc_frame = pd.DataFrame(cmc_rows, columns=list(CMC_COLUMNS))
        result = AnalysisResult(
            tables={"crossmodel": summary, "crossmodel_identification": identification, "crossmodel_cmc": cmc_frame},
            figures={"crossmodel_rank1": rank1_figure(summary, self.methods, self.protocols, self.reference),
                     "crossmodel_cmc": cmc_figure(cmc_frame)},
        )
        if self.verification:
            result.tables["crossmodel_verification"] = verification
        if self.similarity:
            result.tables["crossmodel_similarity"] = similarity
        result.markdown = self.markdown(summary, sources)
        result.summary = {
            "analysis": self.name,
            "models": [s.name for s in sources],
            "rank1": {f"{src}→{tgt}": {f"{m}/{p}": _round(value) for (m, p), value in
                                       grp.set_index(["method", "protocol"])["mean"].items()}
                      for (src, tgt), grp in summary[summary["metric"] == "rank1"].groupby(["source", "target"], sort=False)},
        }
        return result

    def markdown(self, summary: pd.DataFrame, sources: list[NamedEmbeddings]) -> str:
        lines = [
            "## Cross-model alignment (paper B, DESIGN §8)", "",
            "Does a low-capacity linear map carry one model's embeddings into the other's space? Per direction "
            "source → target and split seed: identities split 70/30 (disjoint), both sets centred with the "
            "training means and zero-padded to a common width; the map W (X W ≈ Y) is fitted on the training "
            "identities — **procrustes** (orthogonal: rotation/reflection only), **least_squares**, **ridge** "
            f"(α = {self.ridge_alpha:g}, no intercept) — and the held-out source embeddings, mapped, are the probes "
            "searched by cosine among the held-out target embeddings. **unaligned** = no map (the baseline); "
            f"**{REFERENCE}** = the target's own embeddings as probes (the ceiling). `paper_faithful` keeps the "
            "probe's own image in the gallery (as the authors' code); `strict` removes it, so Rank-1 needs another "
            "image of the same identity. mAP over the full ranking; mAP@50 as the authors (top 50 only). "
            "Verification: every genuine pair of the held-out set and as many random impostor pairs, score "
            "cos(x_i W, y_j); TMR@FMR = highest TMR with FMR ≤ target.", "",
            "Reading it (before → after a fine-tune): unaligned ≈ ceiling → the space barely moved; unaligned low "
            "but procrustes ≈ ceiling → the fine-tune rotated the space; least squares clearly above procrustes "
            "(and a procrustes residual well above the least-squares one) → directions were rescaled or squashed, "
            "not only rotated. RSA and linear CKA are invariant to rotations, so procrustes leaves them unchanged; "
            "only least squares / ridge can raise them.", "",
            "## Settings", "",
            f"- data: {data_line(self.data, sources)}",
            f"- seeds {', '.join(map(str, self.seeds))} (mean ± std, ddof 0); train fraction {self.train_fraction:g}; "
            f"protocols {', '.join(self.protocols)}; ranks {', '.join(map(str, self.ranks))}, CMC to {self.max_rank}",
            "",
        ]
        for (src, tgt), grp in summary.groupby(["source", "target"], sort=False):
            lines += [f"### {src} → {tgt}", ""]
            cell = {(r.method, r.protocol, r.metric): (r.mean, r.std) for r in grp.itertuples()}
            body = []
            for protocol in self.protocols:
                for method in self.methods + ([REFERENCE] if self.reference else []):
                    body.append([protocol, method, *[_ms(cell.get((method, protocol, f"rank{k}")), 100)
                                                     for k in self.ranks],
                                 _ms(cell.get((method, protocol, "map"))), _ms(cell.get((method, protocol, "map_at_50")))])
            lines += ["Identification (%, mAP in [0, 1]):", "", markdown_table(
                ["protocol", "method", *[f"Rank-{k}" for k in self.ranks], "mAP", "mAP@50"], body), ""]
            if self.verification:
                body = [[method, _ms(cell.get((method, "-", "auc"))), _ms(cell.get((method, "-", "eer")), 100),
                         *[_ms(cell.get((method, "-", _fmr_column(t))), 100) for t in self.fmr_targets]]
                        for method in self.methods + ([REFERENCE] if self.reference else [])]
                counts = grp[grp["metric"] == "n_impostor"]["mean"]
                lines += ["Verification (EER and TMR in %):", "", markdown_table(
                    ["method", "AUC", "EER", *[f"TMR@FMR={t:g}" for t in self.fmr_targets]], body), ""]
                if len(counts):
                    lines += [f"About {int(counts.iloc[0])} impostor pairs per seed: FMR targets below "
                              f"{1 / max(counts.iloc[0], 1):.0e} are not resolved (they mean zero false matches).", ""]
            if self.similarity:
                body = [[method, _ms(cell.get((method, "-", "rsa"))), _ms(cell.get((method, "-", "cka"))),
                         _ms(cell.get((method, "-", "residual")))] for method in self.methods]
                lines += ["Representational similarity of mapped probes vs target (held-out subsample), and the "
                          "relative fit residual ‖XW − Y‖/‖Y‖ on the held-out set:", "",
                          markdown_table(["method", "RSA", "linear CKA", "residual"], body), ""]
        lines.append("Files: `crossmodel.csv` (mean ± std over seeds, one row per direction × method × protocol × "
                     "metric), `crossmodel_identification.csv` / `crossmodel_verification.csv` / "
                     "`crossmodel_similarity.csv` (per seed), `crossmodel_cmc.csv`, `crossmodel_rank1.png`, "
                     "`crossmodel_cmc.png`.")
        return "\n".join(lines)


def summarise(identification: pd.DataFrame, verification: pd.DataFrame, similarity: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 0) over seeds of every metric, long format (:data:`SUMMARY_COLUMNS`); verification
    and similarity metrics carry protocol ``-``."""
    keys = ["source", "target", "method", "protocol"]
    frames = []
    metrics = [c for c in IDENTIFICATION_COLUMNS if c not in ("source", "target", "seed", "method", "protocol")]
    frames.append(identification.melt(id_vars=keys + ["seed"], value_vars=metrics, var_name="metric"))
    for table in (verification, similarity):
        if len(table):
            value_vars = [c for c in table.columns if c not in ("source", "target", "seed", "method")]
            frames.append(table.assign(protocol="-").melt(id_vars=keys + ["seed"], value_vars=value_vars,
                                                          var_name="metric"))
    long = pd.concat(frames, ignore_index=True)
    long["value"] = long["value"].astype(float)
    grouped = long.groupby(keys + ["metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: float(np.std(v.to_numpy())), n_seeds="count").reset_index()
    return out[list(SUMMARY_COLUMNS)]


def rank1_figure(summary: pd.DataFrame, methods: list[str], protocols: list[str], reference: bool) -> Figure:
    """Heat map of mean Rank-1 (%): rows = direction × protocol, columns = methods (annotated mean ± std)."""
    columns = methods + ([REFERENCE] if reference else [])
    rank1 = summary[summary["metric"] == "rank1"]
    directions = list(dict.fromkeys(zip(rank1["source"], rank1["target"])))
    rows = [(s, t, p) for s, t in directions for p in protocols]
    values = np.full((len(rows), len(columns)), np.nan)
    stds = np.full_like(values, np.nan)
    for i, (s, t, p) in enumerate(rows):
        for j, m in enumerate(columns):
            match = rank1[(rank1["source"] == s) & (rank1["target"] == t) & (rank1["protocol"] == p) & (rank1["method"] == m)]
            if len(match):
                values[i, j], stds[i, j] = 100 * match["mean"].iloc[0], 100 * match["std"].iloc[0]
    figure = Figure(figsize=(1.8 * len(columns) + 3, 0.6 * len(rows) + 1.6))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not np.isnan(values[i, j]):
                axes.text(j, i, f"{values[i, j]:.1f}\n±{stds[i, j]:.1f}", ha="center", va="center", fontsize=7,
                          color="w" if values[i, j] < 60 else "k")
    axes.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    axes.set_yticks(range(len(rows)), [f"{s} → {t} ({p})" for s, t, p in rows], fontsize=7)
    figure.colorbar(image, ax=axes, label="Rank-1 (%)")
    axes.set_title("Cross-model Rank-1 (mean ± std over seeds)", fontsize=9)
    figure.tight_layout()
    return figure


def cmc_figure(cmc: pd.DataFrame) -> Figure:
    """CMC (mean over seeds) per method, one panel per direction; solid = strict, dashed = paper_faithful."""
    directions = list(dict.fromkeys(zip(cmc["source"], cmc["target"])))
    figure = Figure(figsize=(5.2 * max(len(directions), 1), 4))
    for k, (s, t) in enumerate(directions or [("", "")]):
        axes = figure.add_subplot(1, max(len(directions), 1), k + 1)
        part = cmc[(cmc["source"] == s) & (cmc["target"] == t)]
        colours: dict[str, Any] = {}
        for (method, protocol), curve in part.groupby(["method", "protocol"], sort=False):
            colour = colours.setdefault(method, f"C{len(colours)}")
            axes.plot(curve["rank"], 100 * curve["mean"], color=colour, ls="-" if protocol == "strict" else "--",
                      label=f"{method} ({protocol})")
        axes.set_xscale("log")
        axes.set_xlabel("rank")
        axes.set_ylabel("identification rate (%)")
        axes.set_title(f"CMC {s} → {t}", fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6)
    figure.tight_layout()
    return figure


def _round(value: Any, digits: int = 4) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, digits)


def _ms(pair: tuple[float, float] | None, scale: float = 1.0) -> str:
    if pair is None or np.isnan(pair[0]):
        return "–"
    mean, std = pair
    digits = 1 if scale == 100 else 3
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"

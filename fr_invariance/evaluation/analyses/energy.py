"""``evaluate.py analysis=energy``: the probe's alignment energy and displacement magnitude per model
(DESIGN §5), paired tests between models or against a named control (§12)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fr_invariance.evaluation.analyses.base import Analysis, AnalysisContext, AnalysisInputError, AnalysisResult
from fr_invariance.evaluation.checkpoints import open_embedding_source
from fr_invariance.evaluation.invariance import measure_invariance_from_embeddings
from fr_invariance.evaluation.plots import paired_model_comparisons, profile_plot, runs_of, violin_plot
from fr_invariance.evaluation.probe import EnergyProbe, param_label
from fr_invariance.evaluation.report import (
    INTRO,
    control_table_markdown,
    magnitude_markdown,
    render_markdown,
    summarise,
)
from fr_invariance.metrics.stats import compare_to_control


def setting_label(neighbourhood: str, param: float | None) -> str:
    """``ball 0.6``, ``knn k10``, ``inverse_distance invdist``: one energy setting in tables."""
    return f"{neighbourhood} {param_label(neighbourhood, param)}"


def control_values(rows: pd.DataFrame, *, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Long table for :func:`compare_to_control` (arm = ``run``): energy per setting, and the magnitude as its
    own setting ``magnitude``; the columns ``keep`` are carried along."""
    energy = rows.assign(setting=[setting_label(n, p) for n, p in zip(rows["neighbourhood"], rows["param"])],
                         arm=rows["run"], value=rows["energy"])
    first = rows[(rows["neighbourhood"] == rows["neighbourhood"].iloc[0]) & (rows["param"].eq(rows["param"].iloc[0])
                                                                             | rows["param"].isna())]
    magnitude = first.assign(setting="magnitude", arm=first["run"], value=first["magnitude"])
    return pd.concat([energy, magnitude], ignore_index=True)[["setting", "arm", "identity", "attribute", "value", *keep]]


class EnergyAnalysis(Analysis):
    """Measure the probe on every model (and paper-layout embeddings folder) given.

    Args:
        probe: the invariance probe (``conf/probe``, energy settings ``conf/energy``).
        cache_dir: keep each model's probe embeddings there (one subfolder per model) and reuse them.
        control: name of the control model (as shown in the tables): every other model is compared with it
            only, with Holm's correction over the targeted family (each model's trained attribute) and over
            side effects separately. Without it, every pair of models is compared.
        n_bootstrap: bootstrap resamples of the confidence intervals.
    """

    name = "energy"

    def __init__(self, probe: EnergyProbe, cache_dir: str | None = None, control: str | None = None,
                 n_bootstrap: int = 2000) -> None:
        self.probe = probe
        self.cache_dir = cache_dir
        self.control = control
        self.n_bootstrap = int(n_bootstrap)

    def measure(self, context: AnalysisContext) -> tuple[pd.DataFrame, dict[str, str | None]]:
        """Tidy rows of every source, and model name → the attribute it was trained to target (if known)."""
        frames, targeted = [], {}
        for model in context.models():
            cache = Path(self.cache_dir) / model.name.replace("/", "__") if self.cache_dir else None
            print(f"{model.name}: {model.weights_format} weights, {model.image_size} px, on {context.device}")
            frames.append(self.probe.measure(model.backbone, image_size=model.image_size, run=model.name,
                                             epoch=model.epoch, cache_dir=cache, progress=context.progress))
            targeted[model.name] = model.targeted_attribute
        for name, path in context.embedding_sources():
            source = open_embedding_source(path, metric=context.metric, name=name)
            for settings in self.probe.settings:
                frames.append(measure_invariance_from_embeddings(
                    source.embeddings, metric=source.metric, energy=settings, run=name, progress=context.progress))
            targeted[name] = None
        if not frames:
            raise AnalysisInputError("Nothing to evaluate: pass checkpoint=PATH, checkpoints=[PATH1,PATH2], "
                                     "embeddings_dir=DIR, or model=<name> of a model shipped with its weights.")
        return pd.concat(frames, ignore_index=True), targeted

    def run(self, context: AnalysisContext) -> AnalysisResult:
        rows, targeted = self.measure(context)
        runs = runs_of(rows)
        if self.control is not None and self.control not in runs:
            raise AnalysisInputError(f"control={self.control} is not one of the evaluated models {runs}; "
                                     "use one of these names.")
        result = AnalysisResult(tables={"energies": rows})
        sections = [INTRO, "", "## Settings", "", f"- probe: {self.probe.describe()}",
                    f"- models: {', '.join(runs)}", ""]
        for neighbourhood, subset in rows.groupby("neighbourhood", sort=False):
            comparisons = (paired_model_comparisons(subset, n_bootstrap=self.n_bootstrap)
                           if self.control is None and len(runs) >= 2 else None)
            if comparisons is not None and len(comparisons):
                result.tables[f"stats_{neighbourhood}"] = comparisons
            result.figures[f"violin_{neighbourhood}"] = violin_plot(subset, comparisons=comparisons)
            if subset["param"].nunique() > 1:
                result.figures[f"profile_{neighbourhood}"] = profile_plot(subset)
            sections.append(render_markdown(subset, comparisons))
        sections.append(magnitude_markdown(rows))
        if self.control is not None:
            control = compare_to_control(control_values(rows), control=self.control, targeted=targeted,
                                         n_bootstrap=self.n_bootstrap)
            result.tables["control"] = control
            sections += [f"## Against the control `{self.control}`", "",
                         "Per identity, paired: Δ = model − control (mean over identities, bootstrap 95% CI), "
                         "two-sided Wilcoxon signed-rank p; Holm within each family and setting: `targeted` = each "
                         "model's own trained attribute, `side effect` = every other attribute.", "",
                         control_table_markdown(control, value=""), ""]
        sections.append("Files: `energies.csv` (one row per model × identity × attribute × neighbourhood × param), "
                        "violin / profile plots per neighbourhood, statistics tables as CSV.")
        result.markdown = "\n".join(sections)
        result.summary = {"models": runs, "energy": summarise(rows)}
        return result


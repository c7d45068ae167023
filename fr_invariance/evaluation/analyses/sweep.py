"""``evaluate.py analysis=sweep sweep_dir=DIR``: the report of a controlled experiment (DESIGN §12).

Reads the run folders the experiment wrote (``DIR/arms/*``: ``config.yaml``, ``invariance.csv``,
``summary.json``) and compares every arm with the control ``attr=none`` of the same seed, on the last
measurement of the probe (same identities and curves for every arm), per energy setting (ball and kNN)
and for the displacement magnitude:

- per identity, paired: Δ = arm − control (identity values averaged over the seeds, which every arm and
  the control share), Wilcoxon p with Holm over the targeted family (each arm's own attribute) and over
  side effects (all other attributes) separately;
- at run level: Δ per seed (mean over identities), its mean ± sd over seeds, and whether |mean Δ|
  exceeds the control-vs-control spread between seeds;
- verification cost: the arm's final held-out accuracies minus the control's (same seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fr_invariance.attributes import ATTRIBUTE_NAMES, NO_ATTRIBUTE
from fr_invariance.evaluation.analyses.base import Analysis, AnalysisContext, AnalysisInputError, AnalysisResult
from fr_invariance.evaluation.analyses.energy import control_values
from fr_invariance.evaluation.report import markdown_table
from fr_invariance.metrics.stats import compare_to_control, replicate_effects
from fr_invariance.errors import MissingPathError

CONTROL = NO_ATTRIBUTE
MAGNITUDE = "magnitude"


def read_arms(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """All finished arms of a sweep folder.

    Returns:
        ``rows``: every invariance row of every arm (columns of ``invariance.csv`` plus ``attr``,
        ``strength``, ``seed``, ``arm``); ``finals``: each arm's final val metrics (one row per arm and
        seed); ``arms``: one row per arm folder (``attr``, ``strength``, ``seed``, ``directory``).
    """
    folders = sorted(p for p in (sweep_dir / "arms").glob("*") if (p / "summary.json").exists())
    if not folders:
        raise AnalysisInputError(f"{sweep_dir} holds no finished arm (arms/*/summary.json); pass sweep_dir= the "
                                 "folder written by `python train.py experiment=controlled`.")
    frames, finals, arms = [], [], []
    for folder in folders:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        attr, seed = str(config["attr"]["name"]), int(config["seed"])
        strength = 0.0 if attr == CONTROL else float(config["aug"]["strength"])
        arm = CONTROL if attr == CONTROL else f"{attr}@{strength:g}"
        meta = {"attr": attr, "strength": strength, "seed": seed, "arm": arm}
        arms.append({**meta, "directory": str(folder)})
        if (folder / "invariance.csv").exists():
            frames.append(pd.read_csv(folder / "invariance.csv").assign(**meta))
        summary = json.loads((folder / "summary.json").read_text())
        finals.append({**meta, **{k: v for k, v in summary.items() if k.startswith("val") and v is not None}})
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rows = with_base_start(rows, sweep_dir / "base" / "invariance.csv")
    if rows.empty or CONTROL not in set(rows["arm"]):
        raise AnalysisInputError(f"{sweep_dir} has no invariance rows of the control arm (attr=none); run the "
                                 "experiment with the invariance callback on.")
    return rows, pd.DataFrame(finals), pd.DataFrame(arms)


def with_base_start(rows: pd.DataFrame, base_csv: Path) -> pd.DataFrame:
    """Arms measured without an epoch −1 (``invariance.before_training=false``) start from the base model: its
    last measurement, on the same probe, is their epoch −1."""
    if rows.empty or not base_csv.exists():
        return rows
    base = pd.read_csv(base_csv)
    base = base[base["epoch"] == base["epoch"].max()].assign(epoch=-1)
    starts = [base.assign(**meta) for meta in rows[["attr", "strength", "seed", "arm"]].drop_duplicates()
              .to_dict("records") if not ((rows["arm"] == meta["arm"]) & (rows["seed"] == meta["seed"])
                                          & (rows["epoch"] == -1)).any()]
    return pd.concat([rows, *starts], ignore_index=True) if starts else rows


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Each arm × seed's last measurement (its largest epoch)."""
    last = rows.groupby(["arm", "seed"])["epoch"].transform("max")
    return rows[rows["epoch"] == last]


class SweepAnalysis(Analysis):
    """The sweep report of a controlled experiment folder.

    Args:
        sweep_dir: the experiment folder (``base/``, ``arms/``).
        n_bootstrap: bootstrap resamples of the confidence intervals.
        alpha: significance level of the Holm-adjusted p-values (an effect is called when p (Holm) < alpha and
            |mean Δ over seeds| exceeds the control-vs-control spread).
        seed: seed of the bootstrap resamples.
    """

    name = "sweep"

    def __init__(self, sweep_dir: str | None = None, n_bootstrap: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> None:
        self.sweep_dir = sweep_dir
        self.n_bootstrap = int(n_bootstrap)
        self.alpha = float(alpha)
        self.seed = int(seed)

    def run(self, context: AnalysisContext) -> AnalysisResult:
        if not self.sweep_dir:
            raise AnalysisInputError("analysis=sweep needs sweep_dir=DIR (the folder of `train.py experiment=controlled`).")
        if not Path(self.sweep_dir).is_dir():
            raise MissingPathError(f"sweep_dir {self.sweep_dir} does not exist.")
        return self.run_on_folder(Path(self.sweep_dir))

    def run_on_folder(self, sweep_dir: Path) -> AnalysisResult:
        rows, finals, arms = read_arms(sweep_dir)
        last = final_rows(rows)
        targeted = {arm: attr for arm, attr in zip(arms["arm"], arms["attr"]) if arm != CONTROL}
        values = control_values(last.assign(run=last["arm"]), keep=("seed",))
        paired = compare_to_control(values, control=CONTROL, targeted=targeted, n_bootstrap=self.n_bootstrap,
                                    seed=self.seed)
        per_seed = seed_deltas(values)
        controls = (values[values["arm"] == CONTROL].groupby(["setting", "attribute", "seed"])["value"].mean()
                    .rename("value").reset_index())
        replicates = replicate_effects(per_seed, controls)
        effects = paired.merge(replicates, on=["setting", "arm", "attribute"], how="left")
        effects.insert(2, "strength", [strength_of(a) for a in effects["arm"]])
        effects.insert(2, "targeted_attribute", [targeted.get(a) for a in effects["arm"]])
        effects["ratio"] = effects["arm_mean"] / effects["control_mean"]
        effects["called"] = (effects["p_holm"] < self.alpha) & effects["exceeds_control_spread"].fillna(False)
        verification = verification_cost(finals)
        curves = (rows.groupby(["arm", "attribute", "neighbourhood", "param", "epoch"], dropna=False)
                  [["energy", "magnitude"]].mean().reset_index())
        settings = list(dict.fromkeys(values["setting"]))
        result = AnalysisResult(tables={"effects": effects, "verification": verification, "curves": curves,
                                        "per_seed": per_seed})
        for setting in settings:
            stem = setting.replace(" ", "_")
            result.figures[f"side_effects_{stem}"] = side_effect_heatmap(effects[effects["setting"] == setting], setting)
            result.figures[f"dose_response_{stem}"] = dose_response_plot(effects[effects["setting"] == setting], setting)
        first_energy = next(s for s in settings if s != MAGNITUDE)
        neighbourhood, label = first_energy.split(" ")
        result.figures["curves"] = invariance_curves(curves, neighbourhood, label)
        result.markdown = self.markdown(effects, verification, settings, arms)
        targeted_rows = effects[effects["family"] == "targeted"]
        result.summary = {
            "sweep_dir": str(sweep_dir),
            "arms": int(arms["arm"].nunique()), "seeds": sorted(int(s) for s in arms["seed"].unique()),
            "targeted_significant": {
                setting: sorted(targeted_rows["arm"][(targeted_rows["setting"] == setting) & targeted_rows["called"]])
                for setting in settings},
        }
        return result

    def markdown(self, effects: pd.DataFrame, verification: pd.DataFrame, settings: list[str],
                 arms: pd.DataFrame) -> str:
        seeds = sorted(int(s) for s in arms["seed"].unique())
        lines = [
            "Every arm fine-tunes the same base with the same schedule; the control is `attr=none` at the same "
            f"seed. Seeds: {seeds}. Values are the last probe measurement of each run. Δ = arm − control; "
            "`p (Holm)` = paired Wilcoxon over probe identities (each identity's arm − control averaged over the "
            "seeds both measured), Holm within the family; `seeds: mean ± sd` = Δ per seed (mean over the "
            "identities both measured); `> spread` = |mean Δ| exceeds the control-vs-control spread between "
            "seeds (– when unknown: one control seed, or no seed shared with the control). An effect is called "
            f"when p (Holm) < {self.alpha:g} AND it exceeds the spread.",
            "",
        ]
        for setting in settings:
            subset = effects[(effects["setting"] == setting) & (effects["family"] == "targeted")]
            title = "displacement magnitude (ratio = arm / control)" if setting == MAGNITUDE else f"energy, {setting}"
            lines += [f"## Targeted attribute: {title}", "", targeted_table(subset), ""]
        lines += ["## Side effects (other attributes; Holm over that family)", "",
                  "Effects that pass both criteria; the full matrix is in `effects.csv` and the heatmaps.", ""]
        called = effects[(effects["family"] == "side effect") & effects["called"]]
        lines += [targeted_table(called, side=True) if len(called) else "None pass both criteria.", ""]
        lines += ["## Verification cost (final held-out accuracy, arm − control of the same seed; mean over seeds)",
                  "", verification_table(verification), ""]
        lines += ["Files: `effects.csv`, `per_seed.csv`, `verification.csv`, `curves.csv` (mean over identities per "
                  "arm × epoch), `side_effects_*.png`, `dose_response_*.png`, `curves.png`."]
        return "\n".join(lines)


def seed_deltas(values: pd.DataFrame) -> pd.DataFrame:
    """Per setting × arm × attribute × seed: mean over the identities both measured of (arm − control of that
    seed)."""
    keys = ["setting", "attribute", "seed", "identity"]
    measured = values.dropna(subset=["value"]).groupby(["arm", *keys])["value"].mean().reset_index()
    control = measured[measured["arm"] == CONTROL].rename(columns={"value": "control"}).drop(columns="arm")
    arms = measured[measured["arm"] != CONTROL].merge(control, on=keys, how="inner")
    arms = arms.assign(delta=arms["value"] - arms["control"])
    return arms.groupby(["setting", "arm", "attribute", "seed"], sort=False)["delta"].mean().reset_index()


def strength_of(arm: str) -> float:
    return 0.0 if arm == CONTROL else float(arm.split("@")[1])


def verification_cost(finals: pd.DataFrame) -> pd.DataFrame:
    """Final held-out verification per arm and seed against the control of the same seed: on ordinary pairs
    (``val/ordinary/*``) and on pairs that vary the arm's targeted attribute widely (``val/vary_<attr>/*``,
    which the control measures for every attribute of the experiment)."""
    control = finals[finals["arm"] == CONTROL].set_index("seed")
    records = []
    for record in finals[finals["arm"] != CONTROL].to_dict("records"):
        row = {k: record[k] for k in ("arm", "attr", "strength", "seed")}
        for kind, prefix in (("ordinary", "val/ordinary"), ("targeted", f"val/vary_{record['attr']}")):
            for metric in ("acc", "tar@far1e-3"):
                value = record.get(f"{prefix}/{metric}", np.nan)
                base = control[f"{prefix}/{metric}"].get(record["seed"], np.nan) if f"{prefix}/{metric}" in control else np.nan
                row[f"{kind}_{metric}"], row[f"control_{kind}_{metric}"] = value, base
                row[f"delta_{kind}_{metric}"] = value - base
        records.append(row)
    return pd.DataFrame(records)


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:+.{digits}f}"


def targeted_table(subset: pd.DataFrame, *, side: bool = False) -> str:
    body = []
    for r in subset.sort_values(["targeted_attribute", "strength", "attribute"]).itertuples():
        body.append([r.targeted_attribute, f"{r.strength:g}"] + ([r.attribute, r.setting] if side else []) + [
            f"{r.control_mean:.3f} → {r.arm_mean:.3f}", f"×{r.ratio:.2f}", f"{_fmt(r.delta)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]",
            f"{r.p_holm:.3g}", f"{_fmt(r.delta_mean)} ± {abs(r.delta_sd) if np.isfinite(r.delta_sd) else float('nan'):.3f}",
            f"{r.control_spread:.3f}" if np.isfinite(r.control_spread) else "–",
            "–" if pd.isna(r.exceeds_control_spread) else ("yes" if r.exceeds_control_spread else "no")])
    header = ["arm attribute", "strength"] + (["measured", "setting"] if side else []) + [
        "control → arm", "ratio", "Δ [95% CI]", "p (Holm)", "seeds: mean ± sd", "spread", "> spread"]
    return markdown_table(header, body)


def verification_table(verification: pd.DataFrame) -> str:
    """Mean over seeds of each arm's accuracy and TAR@FAR=1e-3, with Δ vs the control, per pair set."""
    if verification.empty:
        return "No verification metrics were logged."
    columns = [f"{kind}_{metric}" for kind in ("ordinary", "targeted") for metric in ("acc", "tar@far1e-3")]
    body = []
    for arm, group in verification.groupby("arm", sort=True):
        body.append([arm] + [f"{group[c].mean():.4f} ({_fmt(group[f'delta_{c}'].mean(), 4)})" for c in columns])
    return markdown_table(["arm"] + [f"{c} (Δ vs control)" for c in columns], body)


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def side_effect_heatmap(effects: pd.DataFrame, setting: str) -> Figure:
    """Arm (rows) × measured attribute (columns): Δ (energy) or ratio − 1 (magnitude); targeted cells boxed,
    called cells (column ``called``: p (Holm) < alpha and beyond the control spread) starred."""
    column = "ratio" if setting == MAGNITUDE else "delta"
    table = effects.pivot_table(index="arm", columns="attribute", values=column)
    table = table[[a for a in ATTRIBUTE_NAMES if a in table.columns]]
    values = table.to_numpy(dtype=float) - (1.0 if column == "ratio" else 0.0)
    figure = _figure(1.0 * table.shape[1] + 3, 0.4 * table.shape[0] + 1.8)
    axes = figure.add_subplot()
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i, arm in enumerate(table.index):
        for j, attribute in enumerate(table.columns):
            cell = effects[(effects["arm"] == arm) & (effects["attribute"] == attribute)]
            if cell.empty:
                continue
            called = bool(cell["called"].iloc[0])
            axes.text(j, i, f"{values[i, j]:+.2f}{'*' if called else ''}", ha="center", va="center", fontsize=7)
            if cell["family"].iloc[0] == "targeted":
                axes.add_patch(_box(j, i))
    axes.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    axes.set_yticks(range(table.shape[0]), table.index)
    label = "magnitude ratio − 1" if column == "ratio" else f"Δ energy ({setting})"
    figure.colorbar(image, ax=axes, label=label)
    axes.set_title(f"Arm vs control: {label}; boxed = targeted, * = called")
    return figure


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


def dose_response_plot(effects: pd.DataFrame, setting: str) -> Figure:
    """Targeted Δ (energy) or ratio (magnitude) vs strength, one line per attribute, ± sd over seeds."""
    column = "ratio" if setting == MAGNITUDE else "delta_mean"
    targeted = effects[effects["family"] == "targeted"]
    figure = _figure(6.5, 4.0)
    axes = figure.add_subplot()
    for attribute, group in targeted.groupby("targeted_attribute", sort=False):
        group = group.sort_values("strength")
        x = np.concatenate([[0.0], group["strength"].to_numpy()])
        y = np.concatenate([[1.0 if column == "ratio" else 0.0], group[column].to_numpy(dtype=float)])
        axes.plot(x, y, marker="o", label=attribute)
        if column == "delta_mean":
            axes.errorbar(group["strength"], group["delta_mean"], yerr=group["delta_sd"].fillna(0), fmt="none",
                          capsize=2, color=axes.lines[-1].get_color())
    axes.axhline(1.0 if column == "ratio" else 0.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("augmentation strength")
    axes.set_ylabel("magnitude ratio arm / control" if column == "ratio" else f"Δ energy ({setting}), mean ± sd over seeds")
    axes.set_title(f"Dose-response of the targeted attribute ({setting})")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def invariance_curves(curves: pd.DataFrame, neighbourhood: str, label: str) -> Figure:
    """Energy vs epoch per measured attribute (panels), one line per arm (mean over seeds and identities)."""
    from fr_invariance.evaluation.probe import param_label

    labels = pd.Series([param_label(neighbourhood, p) for p in curves["param"]], index=curves.index)
    subset = curves[(curves["neighbourhood"] == neighbourhood) & (labels == label)]
    attributes = [a for a in ATTRIBUTE_NAMES if a in set(subset["attribute"])]
    columns = min(4, len(attributes))
    rows = -(-len(attributes) // columns)
    figure = _figure(3.4 * columns + 1.5, 2.6 * rows + 0.6)
    grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
    for axes, attribute in zip(grid.flat, attributes):
        for arm, line in subset[subset["attribute"] == attribute].groupby("arm", sort=True):
            line = line.groupby("epoch")["energy"].mean()
            targeted = arm.split("@")[0] == attribute
            axes.plot(line.index, line.values, marker=".", linewidth=2.0 if targeted or arm == CONTROL else 0.7,
                      color="black" if arm == CONTROL else None, label=arm)
        axes.set_title(attribute, fontsize=9)
        axes.set_xlabel("epoch (−1 = base)", fontsize=8)
    for axes in grid.flat[len(attributes):]:
        axes.set_visible(False)
    grid[0, 0].set_ylabel(f"energy ({neighbourhood} {label})")
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=6, loc="outside right upper")
    figure.suptitle("Invariance curves of every arm (bold: the arm's targeted attribute; black: control)")
    return figure



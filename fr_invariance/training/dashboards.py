"""Invariance dashboards (issue: read at a glance): per-epoch charts in TensorBoard and W&B.

- **TensorBoard**: invariance scalars are written with the *epoch* as their step (−1 = before training),
  plus reference lines at 0 and at 1 (the level of random directions) so the energy chart always spans
  [0, 1]. A custom-scalars layout, written once per run, shows one multi-line chart "energy vs epoch" per
  setting with every attribute, one "magnitude vs epoch", one "verification accuracy", and per attribute a
  margin chart of the mean ± one standard error. Runs under one log folder (a Hydra multirun) appear as one
  line per run in the same charts. No ``hp_metric`` placeholder: the final metrics are logged as hparams.
- **W&B**: ``epoch`` is declared the x-axis of every invariance and verification metric once; the combined
  "energy vs epoch" and "magnitude vs epoch" line charts (all attributes in one panel) are logged once, when
  training ends, instead of a new table every epoch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

REFERENCE_TAGS = {"invariance/reference/zero": 0.0, "invariance/reference/random_directions": 1.0}
"""Constant reference lines of the energy charts: 0 (fully coherent) and 1 (random directions)."""


def tensorboard_layout(attributes: Sequence[str], energy_labels: Sequence[str]) -> dict:
    """The custom-scalars layout (``SummaryWriter.add_custom_scalars`` format)."""
    overview = {
        f"energy vs epoch ({label})": ["Multiline", [rf"invariance/[^/]+/energy@{re.escape(label)}$",
                                                      r"invariance/reference/.*"]]
        for label in energy_labels
    }
    overview["magnitude vs epoch"] = ["Multiline", [r"invariance/[^/]+/magnitude$"]]
    overview["verification accuracy"] = ["Multiline", [r"verification/.*"]]
    layout = {"Invariance (x = epoch, -1 = before training)": overview}
    for label in energy_labels:
        layout[f"Energy {label} ± 1 SE"] = {
            f"{attribute} energy@{label}": ["Margin", [f"invariance/{attribute}/energy@{label}", f"invariance/{attribute}/energy@{label}_lo",
                                   f"invariance/{attribute}/energy@{label}_hi"]]
            for attribute in attributes
        }
    layout["Magnitude ± 1 SE"] = {
        f"{attribute} magnitude": ["Margin", [f"invariance/{attribute}/magnitude", f"invariance/{attribute}/magnitude_lo",
                               f"invariance/{attribute}/magnitude_hi"]]
        for attribute in attributes
    }
    return layout


def with_bands(metrics: Mapping[str, float]) -> dict[str, float]:
    """``…`` and ``…_se`` pairs → ``…``, ``…_lo`` (mean − SE) and ``…_hi`` (mean + SE)."""
    banded: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith("_se"):
            continue
        banded[key] = value
        error = metrics.get(f"{key}_se")
        if error is not None and error == error:  # not nan
            banded[f"{key}_lo"], banded[f"{key}_hi"] = value - error, value + error
    return banded


class DashboardWriter:
    """Writes one measurement (metrics of an epoch) to every logger, the way each displays it best."""

    def __init__(self, attributes: Sequence[str], energy_labels: Sequence[str]) -> None:
        self.attributes = list(attributes)
        self.energy_labels = list(energy_labels)
        self._prepared: set[int] = set()

    def _prepare(self, logger: object) -> None:
        if id(logger) in self._prepared:
            return
        self._prepared.add(id(logger))
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(tensorboard_layout(self.attributes, self.energy_labels))
        elif isinstance(logger, WandbLogger):
            experiment = logger.experiment
            experiment.define_metric("epoch")
            for pattern in ("invariance/*", "verification/*"):
                experiment.define_metric(pattern, step_metric="epoch")

    def write(self, loggers: Sequence[object], metrics: Mapping[str, float], verification: Mapping[str, float],
              *, epoch: int, step: int) -> None:
        """Log ``metrics`` (invariance) and ``verification`` (held-out accuracies, may be empty) of ``epoch``."""
        for logger in loggers:
            self._prepare(logger)
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment
                for tag, value in {**with_bands(metrics), **REFERENCE_TAGS, **verification}.items():
                    writer.add_scalar(tag, value, global_step=epoch)
                writer.flush()
            else:
                logger.log_metrics({**metrics, **verification, "epoch": epoch}, step=step)

    def finish(self, loggers: Sequence[object], history: Mapping[int, Mapping[str, float]]) -> None:
        """At the end of training: W&B combined line charts (logged once); TensorBoard hparams with the final
        metrics (instead of a ``hp_metric`` placeholder)."""
        if not history:
            return
        epochs = sorted(history)
        final = history[epochs[-1]]
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                charts = {}
                for label in [*(f"energy@{x}" for x in self.energy_labels), "magnitude"]:
                    ys = [[history[e].get(f"invariance/{a}/{label}", float("nan")) for e in epochs]
                          for a in self.attributes]
                    charts[f"charts/{label} vs epoch"] = wandb.plot.line_series(
                        xs=epochs, ys=ys, keys=self.attributes, title=f"{label} vs epoch (all attributes)",
                        xname="epoch")
                logger.experiment.log(charts)
            elif isinstance(logger, TensorBoardLogger):
                finals = {f"final/{key}": value for key, value in final.items() if not key.endswith("_se")}
                logger.log_hyperparams({"final_epoch": epochs[-1]}, metrics=finals)

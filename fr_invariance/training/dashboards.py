"""Invariance dashboards: per-epoch charts in TensorBoard and W&B, readable at a glance.

- **TensorBoard**: invariance scalars are written with the *epoch* as their step (−1 = before training).
  TensorBoard colours lines by run, so each attribute is written as its own sub-run (``attr_<name>/``, as
  ``SummaryWriter.add_scalars`` does) under the same tags: ``invariance/energy@<label>`` with ``…_lo`` /
  ``…_hi`` (mean ∓ one standard error) and ``invariance/magnitude`` likewise. Two reference sub-runs hold
  0 and 1 (the level of random directions), so the energy chart always spans [0, 1]; each validation set is
  a sub-run ``val_<name>`` with ``verification/acc`` and ``verification/tar@far1e-3``. A custom-scalars
  layout, written once per run, shows one chart "energy vs epoch" per setting with every attribute and its
  ± SE band, one "magnitude vs epoch" and one "verification accuracy". With the log folder of a Hydra
  multirun, the same charts hold one line per run and attribute (filter runs with e.g. ``attr_contrast``).
  No ``hp_metric`` placeholder: the final metrics are logged as hparams.
- **W&B**: ``epoch`` is declared once as the x-axis of every invariance and verification metric; the
  combined "energy vs epoch" and "magnitude vs epoch" line charts (all attributes in one panel) are logged
  once, when training ends, instead of a new table every epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch.utils.tensorboard import SummaryWriter

REFERENCE_RUNS = {"reference_zero": 0.0, "reference_random_directions": 1.0}
"""Sub-runs drawn as constant lines in the energy charts: 0 (fully coherent) and 1 (random directions)."""


def tensorboard_layout(energy_labels: Sequence[str]) -> dict:
    """The custom-scalars layout (``SummaryWriter.add_custom_scalars`` format): margin charts (mean ± 1 SE)
    whose lines are the per-attribute sub-runs."""
    charts = {
        f"energy vs epoch ({label})": ["Margin", [f"invariance/energy@{label}", f"invariance/energy@{label}_lo",
                                                   f"invariance/energy@{label}_hi"]]
        for label in energy_labels
    }
    charts["magnitude vs epoch"] = ["Margin", ["invariance/magnitude", "invariance/magnitude_lo",
                                               "invariance/magnitude_hi"]]
    charts["verification accuracy"] = ["Multiline", [r"verification/.*"]]
    return {"Invariance (x = epoch, -1 = before training; one line per attribute, band = ± 1 SE)": charts}


def attribute_scalars(metrics: Mapping[str, float], attribute: str) -> dict[str, float]:
    """``invariance/<attr>/<name>`` (+ ``…_se``) → ``invariance/<name>``, ``…_lo``, ``…_hi`` of one attribute."""
    prefix = f"invariance/{attribute}/"
    scalars: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix) or key.endswith("_se"):
            continue
        name = f"invariance/{key[len(prefix):]}"
        error = metrics.get(f"{key}_se", float("nan"))
        error = 0.0 if error != error else error  # a single identity has no standard error: no band
        scalars.update({name: value, f"{name}_lo": value - error, f"{name}_hi": value + error})
    return scalars


class DashboardWriter:
    """Writes one measurement (the metrics of an epoch) to every logger, the way each displays it best.

    Args:
        attributes: the measured attributes.
        energy_labels: labels of the energy settings (``0.6``, ``k5``...).
    """

    def __init__(self, attributes: Sequence[str], energy_labels: Sequence[str]) -> None:
        self.attributes = list(attributes)
        self.energy_labels = list(energy_labels)
        self._prepared: set[int] = set()
        self._writers: dict[tuple[int, str], SummaryWriter] = {}

    def _prepare(self, logger: object) -> None:
        if id(logger) in self._prepared:
            return
        self._prepared.add(id(logger))
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(tensorboard_layout(self.energy_labels))
        elif isinstance(logger, WandbLogger):
            experiment = logger.experiment
            experiment.define_metric("epoch")
            for pattern in ("invariance/*", "verification/*"):
                experiment.define_metric(pattern, step_metric="epoch")

    def write(self, loggers: Sequence[object], metrics: Mapping[str, float], verification: Mapping[str, float],
              *, epoch: int, step: int) -> None:
        """Log ``metrics`` (invariance) and ``verification`` (``verification/<set>/<metric>``, may be empty)."""
        for logger in loggers:
            self._prepare(logger)
            if isinstance(logger, TensorBoardLogger):
                self._write_tensorboard(logger, metrics, verification, epoch)
            else:
                logger.log_metrics({**metrics, **verification, "epoch": epoch}, step=step)

    def _sub_writer(self, logger: TensorBoardLogger, run: str) -> SummaryWriter:
        key = (id(logger), run)
        if key not in self._writers:
            self._writers[key] = SummaryWriter(log_dir=str(Path(logger.log_dir) / run))
        return self._writers[key]

    def _write_tensorboard(self, logger: TensorBoardLogger, metrics: Mapping[str, float],
                           verification: Mapping[str, float], epoch: int) -> None:
        runs: dict[str, dict[str, float]] = {f"attr_{a}": attribute_scalars(metrics, a) for a in self.attributes}
        for run, level in REFERENCE_RUNS.items():
            runs[run] = {f"invariance/energy@{label}{end}": level
                         for label in self.energy_labels for end in ("", "_lo", "_hi")}
        for key, value in verification.items():
            _, name, metric = key.split("/", 2)
            runs.setdefault(f"val_{name}", {})[f"verification/{metric}"] = value
        for run, scalars in runs.items():
            writer = self._sub_writer(logger, run)
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=epoch)
            writer.flush()

    def finish(self, loggers: Sequence[object], history: Mapping[int, Mapping[str, float]]) -> None:
        """At the end of training: W&B combined line charts (logged once); TensorBoard hparams with the final
        metrics (instead of a ``hp_metric`` placeholder); sub-run writers closed."""
        if history:
            epochs = sorted(history)
            final = history[epochs[-1]]
            for logger in loggers:
                if isinstance(logger, WandbLogger):
                    self._wandb_charts(logger, history, epochs)
                elif isinstance(logger, TensorBoardLogger):
                    finals = {f"final/{key}": value for key, value in final.items() if not key.endswith("_se")}
                    logger.log_hyperparams({"final_epoch": epochs[-1]}, metrics=finals)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _wandb_charts(self, logger: WandbLogger, history: Mapping[int, Mapping[str, float]],
                      epochs: list[int]) -> None:
        import wandb

        charts = {}
        for label in [*(f"energy@{x}" for x in self.energy_labels), "magnitude"]:
            ys = [[history[e].get(f"invariance/{a}/{label}", float("nan")) for e in epochs] for a in self.attributes]
            charts[f"charts/{label} vs epoch"] = wandb.plot.line_series(
                xs=epochs, ys=ys, keys=self.attributes, title=f"{label} vs epoch (all attributes)", xname="epoch")
        logger.experiment.log(charts)

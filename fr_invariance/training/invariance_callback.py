"""Per-epoch invariance measurement during training: thin hooks around an ``EnergyProbe`` (DESIGN §9).

Measurements: once before the first training step (epoch −1, the starting point of every curve; skipped
on resume) and after every ``every_n_epochs``-th epoch, after that epoch's validation (so its accuracies are logged
beside it) or at the end of the training epoch when it has none. Epoch ``e`` is the epoch stored in the checkpoint saved after it, so
``evaluate.py`` on that checkpoint reports the same ``e``.

Logged to every logger (x = ``epoch``), per attribute: ``invariance/<attr>/energy@<label>`` (mean over
probe identities) and ``…_se`` (its standard error), ``invariance/<attr>/magnitude`` and
``invariance/<attr>/magnitude_se``, with the epoch's held-out verification accuracies as
``verification/<name>``; how each logger shows them is in :mod:`fr_invariance.training.dashboards`.
Per-identity rows go to ``<run dir>/invariance.csv`` (appended, tidy). A failing measurement is reported as
a warning and never stops the training run.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.loggers import WandbLogger

from fr_invariance.evaluation.plots import figure_to_array, violin_plot
from fr_invariance.evaluation.probe import EnergyProbe, param_label, summary_metrics
from fr_invariance.training.dashboards import DashboardWriter

CSV_NAME = "invariance.csv"
BEFORE_TRAINING = -1


class InvarianceCallback(L.Callback):
    """Measure ``probe`` on ``pl_module.backbone`` before training and every ``every_n_epochs`` epochs.

    Args:
        probe: the measurement (identities, design, energy settings, image cache).
        every_n_epochs: measure after epochs ``n-1, 2n-1, ...`` (like ``check_val_every_n_epoch``).
        before_training: also measure before the first training step (epoch −1).
        image_size: rendered side in pixels (default: ``backbone.input_size``).
    """

    def __init__(self, probe: EnergyProbe, every_n_epochs: int = 1, before_training: bool = True,
                 image_size: int | None = None) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"invariance.every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.probe = probe
        self.every_n_epochs = int(every_n_epochs)
        self.before_training = bool(before_training)
        self.image_size = image_size
        self.last_metrics: dict[str, float] = {}
        self.history: dict[int, dict[str, float]] = {}
        self.seconds = 0.0  # wall time spent measuring (rank 0), for the cost share of the run
        self._measured_epochs: set[int] = set()
        labels = [param_label(s.neighbourhood, p) for s in probe.settings for p in (s.params or (None,))]
        self.dashboards = DashboardWriter(probe.attributes, labels)

    @property
    def last_energies(self) -> dict[str, float]:
        """Attribute → last mean energy of the probe's first setting (e.g. ball ε = 0.6)."""
        first = f"@{_first_label(self.probe)}"
        return {key.split("/")[1]: value for key, value in self.last_metrics.items() if key.endswith(first)}

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before_training and trainer.global_step == 0:
            self._measure(trainer, pl_module, BEFORE_TRAINING)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._maybe_measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_measure(trainer, pl_module)

    # -- measurement ---------------------------------------------------------------------------------
    def _maybe_measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch in self._measured_epochs or (epoch + 1) % self.every_n_epochs:
            return
        self._measure(trainer, pl_module, epoch)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        self._measured_epochs.add(epoch)
        if not trainer.is_global_zero:
            return  # rank 0 measures; the others go on (nothing here is collective)
        start = time.perf_counter()
        try:
            rows = self.probe.measure(pl_module.backbone, image_size=self.image_size,
                                      run=Path(trainer.default_root_dir).name, epoch=epoch)
        except Exception:  # noqa: BLE001 - a failed measurement must not lose the training run
            warnings.warn(f"invariance measurement at epoch {epoch} failed; training goes on:\n"
                          f"{traceback.format_exc()}", stacklevel=1)
            return
        finally:
            self.seconds += time.perf_counter() - start
        self.last_metrics = summary_metrics(rows)
        self.history[epoch] = self.last_metrics
        csv_path = Path(trainer.default_root_dir) / CSV_NAME
        rows.to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
        verification = verification_metrics(getattr(pl_module, "verification_before_training", {})
                                            if epoch == BEFORE_TRAINING else trainer.callback_metrics)
        self.dashboards.write(trainer.loggers, self.last_metrics, verification, epoch=epoch, step=trainer.global_step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._log_violin(logger, rows, epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.dashboards.finish(trainer.loggers, self.history)

    def _log_violin(self, logger: WandbLogger, rows: pd.DataFrame, epoch: int) -> None:
        """This epoch's per-identity energies (first setting) as a violin plot image."""
        import wandb

        first = rows[rows["neighbourhood"] == rows["neighbourhood"].iloc[0]]
        first = first[first["param"] == first["param"].iloc[0]]
        violin = violin_plot(first, title=f"Energy per probe identity, epoch {epoch}")
        logger.experiment.log({"invariance/violin": wandb.Image(figure_to_array(violin)), "epoch": epoch})


def _first_label(probe: EnergyProbe) -> str:
    settings = probe.settings[0]
    return param_label(settings.neighbourhood, settings.params[0] if settings.params else None)


def verification_metrics(callback_metrics: Mapping[str, object]) -> dict[str, float]:
    """The epoch's held-out accuracy and TAR@FAR per validation set: ``val/<set>/acc`` →
    ``verification/<set>/acc`` (likewise ``tar@far1e-3``); a bare ``val_verification_acc`` →
    ``verification/main/acc``."""
    metrics = {}
    for key, value in callback_metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "val" and parts[2] in ("acc", "tar@far1e-3"):
            metrics[f"verification/{parts[1]}/{parts[2]}"] = float(value)
    if not metrics and "val_verification_acc" in callback_metrics:
        metrics["verification/main/acc"] = float(callback_metrics["val_verification_acc"])
    return metrics

"""Per-epoch invariance measurement during training (DESIGN §9).

Every ``every_n_epochs`` epochs, the callback embeds FIXED held-out identities under a FIXED sampled curve
design (both built once, in the constructor; same seeds every epoch, so epochs are comparable) with
``pl_module.backbone`` in eval mode, and logs, to every logger, the mean over identities of

- ``invariance/<attr>/energy@<param>`` (``energy@0.6`` for ball ε = 0.6·d̄, ``energy@k10`` for kNN,
  ``energy@invdist`` for inverse-distance weights) and
- ``invariance/<attr>/magnitude`` (mean ‖v‖/d̄).

Tidy per-identity rows are appended to ``<trainer.default_root_dir>/invariance.csv`` (the run directory) after every
measurement. With a W&B logger, energy curves are plotted against ``epoch`` and a violin plot of the
per-identity energies is logged as an image.

The measurement happens at the end of the epoch's first validation run (never during the sanity check) or,
in epochs without validation, at the end of the training epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn

from fr_invariance.evaluation.embed import embed_images, embed_renders, iter_renders, model_device
from fr_invariance.evaluation.invariance import EnergySettings, declared_metric, identity_names, invariance_rows
from fr_invariance.evaluation.plots import figure_to_array, violin_plot
from fr_invariance.synth.designs import CurveDesign, sampled_design
from fr_invariance.synth.identity import sample_identities

CSV_NAME = "invariance.csv"


class InvarianceCallback(L.Callback):
    """Measure the alignment energy of every attribute on held-out synthetic identities during training.

    Args:
        every_n_epochs: measure after epochs ``n-1, 2n-1, ...`` (like ``check_val_every_n_epoch``).
        n_identities, identity_seed: held-out identities ``sample_identities(n_identities, identity_seed)``
            (use a seed different from the training and validation identities).
        n_curves, step, nuisance, attributes, design_seed: the sampled curve design
            (``sampled_design``; ``attributes=None`` → all 8). Images per identity: ``n_curves·(1 + 2·A)``.
        neighbourhood, params, n_pairs, energy_seed: energy settings (see ``EnergySettings``).
        image_size: rendered side in pixels (default: ``backbone.input_size``).
        batch_size: images per forward pass.
        image_cache_mb: the probe images are rendered once and kept in CPU memory when they fit in this
            budget (then each measurement only runs the backbone); otherwise they are re-rendered each time.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        n_identities: int = 4,
        identity_seed: int = 10_000,
        n_curves: int = 20,
        step: float = 0.25,
        nuisance: float = 0.5,
        attributes: Sequence[str] | None = None,
        neighbourhood: str = "ball",
        params: Sequence[float] = (0.6,),
        n_pairs: int = 10_000,
        energy_seed: int = 0,
        image_size: int | None = None,
        batch_size: int = 256,
        design_seed: int = 0,
        image_cache_mb: float = 256.0,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"invariance.every_n_epochs must be >= 1, got {every_n_epochs}.")
        if n_identities < 1:
            raise ValueError(f"invariance.n_identities must be >= 1, got {n_identities}.")
        self.every_n_epochs = every_n_epochs
        self.n_identities = n_identities
        self.identity_seed = identity_seed
        self.energy = EnergySettings(neighbourhood=neighbourhood, params=tuple(params), n_pairs=n_pairs,
                                     seed=energy_seed)
        self.design: CurveDesign = sampled_design(n_curves, attributes=list(attributes) if attributes else None,
                                                  step=step, nuisance=nuisance, seed=design_seed)
        self.image_size = image_size
        self.batch_size = batch_size
        self.image_cache_mb = image_cache_mb
        self.identities = sample_identities(n_identities, identity_seed)
        self.names = identity_names(n_identities)
        self.last_energies: dict[str, float] = {}
        self._images: torch.Tensor | None = None
        self._measured_epochs: set[int] = set()

    # -- hooks ---------------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._maybe_measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_measure(trainer, pl_module)

    # -- measurement ---------------------------------------------------------------------------------
    def _maybe_measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch in self._measured_epochs or (epoch + 1) % self.every_n_epochs:
            return
        self._measured_epochs.add(epoch)
        rows = self.measure(pl_module.backbone, run=Path(trainer.default_root_dir).name, epoch=epoch)
        metrics = self.epoch_metrics(rows)
        pl_module.log_dict(metrics, sync_dist=False)
        first = self.energy.param_label(None if pd.isna(rows["param"].iloc[0]) else float(rows["param"].iloc[0]))
        self.last_energies = {
            key.split("/")[1]: value for key, value in metrics.items() if key.endswith(f"/energy@{first}")
        }
        if trainer.is_global_zero:
            csv_path = self.csv_path(trainer)
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    self._log_to_wandb(logger, csv_path, rows, epoch, trainer.global_step)

    def measure(self, backbone: nn.Module, *, run: str = "", epoch: int | None = None) -> pd.DataFrame:
        """Embed the fixed probe images with ``backbone`` (its device; train mode restored) → tidy rows."""
        n_images = self.design.controls.shape[0]
        if self.image_size is None:
            self.image_size = int(backbone.input_size)
        if self._images is None and self._cache_fits():
            self._images = self._render_probes(model_device(backbone))
        if self._images is not None:
            embeddings = embed_images(backbone, self._images, batch_size=self.batch_size)
            embeddings = embeddings.reshape(self.n_identities, n_images, -1)
        else:
            embeddings = embed_renders(backbone, self.identities, self.design.controls, image_size=self.image_size,
                                       batch_size=self.batch_size)
        per_identity = {name: embeddings[k] for k, name in enumerate(self.names)}
        return invariance_rows(per_identity, self.design.table, metric=declared_metric(backbone),
                               energy=self.energy, run=run, epoch=epoch)

    def epoch_metrics(self, rows: pd.DataFrame) -> dict[str, float]:
        """Mean over identities: ``invariance/<attr>/energy@<param>`` and ``invariance/<attr>/magnitude``."""
        metrics = {}
        for (attribute, param), group in rows.groupby(["attribute", "param"], sort=False, dropna=False):
            label = self.energy.param_label(None if pd.isna(param) else float(param))
            metrics[f"invariance/{attribute}/energy@{label}"] = float(np.nanmean(group["energy"]))
            metrics[f"invariance/{attribute}/magnitude"] = float(group["magnitude"].mean())
        return metrics

    def csv_path(self, trainer: L.Trainer) -> Path:
        """``<trainer.default_root_dir>/invariance.csv`` (the run directory)."""
        return Path(trainer.default_root_dir) / CSV_NAME

    def _cache_fits(self) -> bool:
        n_values = self.n_identities * self.design.controls.shape[0] * 3 * self.image_size**2
        return n_values * 4 <= self.image_cache_mb * 2**20

    def _render_probes(self, device: torch.device) -> torch.Tensor:
        """All probe images (I·N, 3, S, S) in [0, 1], rendered on ``device``, kept on the CPU."""
        batches = iter_renders(self.identities, self.design.controls, image_size=self.image_size,
                               batch_size=self.batch_size, device=device)
        return torch.cat([images.cpu() for images in batches])

    def _log_to_wandb(self, logger: WandbLogger, csv_path: Path, rows: pd.DataFrame, epoch: int, step: int) -> None:
        """Energy-vs-epoch charts (x-axis ``epoch``) and this epoch's per-identity violin plot."""
        import wandb

        logger.experiment.define_metric("invariance/*", step_metric="epoch")
        history = pd.read_csv(csv_path)
        history = history[np.isclose(history["param"], rows["param"].iloc[0], equal_nan=True)]
        curves = history.groupby(["attribute", "epoch"], sort=False)["energy"].mean().unstack("epoch")
        epochs = [int(e) for e in sorted(curves.columns)]
        label = self.energy.param_label(rows["param"].iloc[0])
        chart = wandb.plot.line_series(
            xs=epochs, ys=[curves.loc[a, epochs].tolist() for a in curves.index], keys=list(curves.index),
            title=f"Alignment energy vs epoch ({self.energy.neighbourhood} {label})", xname="epoch",
        )
        violin = violin_plot(rows, title=f"Energy per held-out identity, epoch {epoch}")
        logger.log_metrics({"invariance/violin": wandb.Image(figure_to_array(violin)),
                            "invariance/energy_vs_epoch": chart, "epoch": epoch}, step=step)

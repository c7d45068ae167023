"""Small training callbacks: stop on a non-finite loss, export the backbone, resolve the throughput batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from fr_invariance.models.weights import export_insightface


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NaNGuard(L.Callback):
    """Stops training with a clear message at the first non-finite training loss."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"Training loss is {loss.item()} at epoch {trainer.current_epoch}, step {trainer.global_step}. "
                "Lower optim.lr, enable trainer.gradient_clip_val, or use trainer.precision=32-true."
            )


class BackboneExport(L.Callback):
    """Writes the backbone in the insightface layout to ``path`` at every epoch end and when training ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            export_insightface(pl_module.backbone, self.path)


def batch_size_of(batch: Any) -> int:
    """Number of samples in a training batch (before or after rendering)."""
    if isinstance(batch, dict):
        return int(batch["labels"].shape[0])
    return int(batch[-1].shape[0])

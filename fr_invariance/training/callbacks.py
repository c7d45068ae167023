"""Training callbacks and plugins that make a run survive faults (DESIGN §9).

- :class:`NaNGuard`: stops at the first non-finite training loss, before any checkpoint of the bad weights.
- :class:`BackboneExport`: ``backbone.pth`` (insightface layout), replaced atomically.
- :class:`AtomicCheckpointIO`: every Lightning checkpoint is written to a temporary file, fsynced and
  renamed over the target, so a kill while saving leaves the previous ``last.ckpt`` intact.
- :class:`RunFilesState`: stores in every checkpoint how many rows the run's CSV files had, so a resumed
  run cuts the rows written after that checkpoint and appends the same rows again.
- :class:`LoaderStateRestore`: a resumed run continues mid-epoch at the next batch, not at the epoch's first.
- :func:`checkpoint_callbacks`: ``last.ckpt`` at every epoch end and every ``checkpoint_every_n_steps``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from fr_invariance.atomic import atomic_writer
from fr_invariance.errors import TrainingError
from fr_invariance.models.weights import export_insightface

RUN_FILES_KEY = "fr_invariance_run_files"
"""Checkpoint entry: ``{"global_step": int, "rows": {file name: data rows}}`` at the time of the save."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""


class NaNGuard(L.Callback):
    """Stops training with a clear message at the first non-finite training loss.

    It runs before the checkpoint callbacks (Lightning calls them last), so the weights of the bad step
    are never saved: ``last.ckpt`` stays the last good checkpoint, and the message names it.
    """

    def __init__(self, checkpoint: str | Path | None = None) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or bool(torch.isfinite(loss).all()):
            return
        kept = (f"the last good checkpoint is kept: {self.checkpoint}" if self.checkpoint is not None
                and self.checkpoint.is_file() else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at epoch {trainer.current_epoch}, step {trainer.global_step}; {kept}. "
            "Lower optim.lr, set trainer.gradient_clip_val, or use trainer.precision=32-true."
        )


class BackboneExport(L.Callback):
    """Writes the backbone in the insightface layout to ``path`` at every epoch end and when training ends,
    atomically (a temporary file renamed over ``path``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def export(self, pl_module: L.LightningModule) -> None:
        """Write ``pl_module.backbone`` to :attr:`path` (replace it atomically)."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            export_insightface(pl_module.backbone, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.export(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.export(pl_module)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint IO, written through :func:`fr_invariance.atomic.atomic_writer`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_writer(path, "wb") as handle:
            torch.save(checkpoint, handle)


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV file with a header (0 when absent); an unterminated last line is not a row."""
    if not path.is_file():
        return 0
    return max(0, path.read_bytes().count(b"\n") - 1)  # complete lines, less the header


def truncate_csv(path: Path, rows: int) -> None:
    """Keep the header and the first ``rows`` data rows of ``path`` (rewritten atomically)."""
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty or an unfinished row
    kept = complete[: rows + 1]
    if len(kept) == len(complete) and lines[-1] == b"":
        return
    with atomic_writer(path, "wb") as handle:
        handle.write(b"\n".join(kept) + (b"\n" if kept else b""))


class RunFilesState(L.Callback):
    """Records the row counts of the run's CSV files in every checkpoint (:data:`RUN_FILES_KEY`).

    Loggers with a ``flush`` method are flushed before the count; Lightning logs a step's training metrics
    just after that step's checkpoint, and loggers with ``flush_after_next_row`` write that row at once.

    Args:
        run_dir: the run directory.
        files: CSV files (relative to ``run_dir``) that callbacks append to (e.g. ``invariance.csv``).
    """

    def __init__(self, run_dir: str | Path, files: tuple[str, ...] = ("invariance.csv",)) -> None:
        self.run_dir = Path(run_dir)
        self.files = files

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            flush = getattr(logger, "flush", None)
            if callable(flush):
                flush()
        rows = {name: count_csv_rows(self.run_dir / name) for name in self.files}
        for logger in trainer.loggers:
            if hasattr(logger, "row_count"):
                rows[f"logger:{logger.name}"] = int(logger.row_count)
            if callable(getattr(logger, "flush_after_next_row", None)):
                logger.flush_after_next_row()
        checkpoint[RUN_FILES_KEY] = {"global_step": int(trainer.global_step), "rows": rows}


class LoaderStateRestore(L.Callback):
    """Restores the state of stateful training loaders (mid-epoch position) when a run resumes.

    Lightning applies a saved loader state only when it builds the training loader after loading the
    checkpoint; a module that reads ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` makes it
    build the loader earlier, and the state was silently dropped. This applies it at train start, before the
    first batch is drawn (applying it twice is harmless: it only sets where the next pass starts).
    """

    def __init__(self) -> None:
        self._states: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self._states = self._states, []
        loaders = trainer.train_dataloader
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        stateful = [loader for loader in loaders if callable(getattr(loader, "load_state_dict", None))]
        if states and len(states) == len(stateful):
            for loader, state in zip(stateful, states):
                loader.load_state_dict(state)


class EpochEndCheckpoint(Checkpoint):
    """``dirpath/last.ckpt`` at the end of every training epoch, after its validation and invariance measurement
    (Lightning runs checkpoint callbacks after the others), and when training stops inside an epoch
    (``max_steps``). ``ModelCheckpoint`` with ``save_top_k=0`` writes ``last.ckpt`` only when training ends."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        self.saved_step: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.saved_step:
            self._save(trainer)


class MidEpochCheckpoint(ModelCheckpoint):
    """A step checkpoint that never falls on an epoch's last batch: a state saved there resumes into the next
    epoch, so that epoch's validation and invariance measurement (which run after its last batch) would be
    lost. The epoch checkpoint saves right after them instead."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: :class:`EpochEndCheckpoint` holds the final state (ModelCheckpoint would save it again here,
        as a later epoch)."""


def checkpoint_callbacks(dirpath: str | Path, every_n_steps: int = 0) -> list[Checkpoint]:
    """``last.ckpt`` in ``dirpath`` after every epoch (after its validation and invariance measurement) and,
    with ``every_n_steps > 0``, every that many optimizer steps inside an epoch (never at its last batch). Both
    write the same ``last.ckpt`` (no ``last-v1.ckpt``), so resuming always finds the newest state."""
    callbacks: list[Checkpoint] = [EpochEndCheckpoint(dirpath)]
    if every_n_steps > 0:
        callbacks.append(MidEpochCheckpoint(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False,
                                            every_n_train_steps=int(every_n_steps)))
    return callbacks


def batch_size_of(batch: Any) -> int:
    """Number of samples in a training batch (before or after rendering)."""
    if isinstance(batch, dict):
        return int(batch["labels"].shape[0])
    return int(batch[-1].shape[0])

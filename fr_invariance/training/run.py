"""Build every object of a training run from the Hydra config and run it (``train.py`` calls :func:`run_training`).

A run lives in one directory (Hydra's run directory). When that directory already holds
``checkpoints/last.ckpt`` the run continues from it (``resume=true`` finds the directory, see
:mod:`fr_invariance.training.resume`): same directory, the CSV files cut back to the checkpoint and appended
to, the same W&B run id (``wandb_run_id.txt``). Checkpoints are written atomically at every epoch end and
every ``checkpoint_every_n_steps`` steps.
"""

from __future__ import annotations

import copy
import json
import time
import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from fr_invariance.atomic import atomic_write_text
from fr_invariance.data.factory import build_datamodule
from fr_invariance.errors import ConfigurationError
from fr_invariance.models.checkpoint_io import load_checkpoint
from fr_invariance.training.callbacks import (
    RUN_FILES_KEY,
    AtomicCheckpointIO,
    BackboneExport,
    LoaderStateRestore,
    NaNGuard,
    RunFilesState,
    batch_size_of,
    checkpoint_callbacks,
    truncate_csv,
)
from fr_invariance.training.controlled import SUMMARY_FILE
from fr_invariance.training.csv_logger import RunCSVLogger
from fr_invariance.training.invariance_callback import CSV_NAME, InvarianceCallback
from fr_invariance.training.module import FaceRecognitionModule
from fr_invariance.training.warm_start import warm_start
from fr_invariance.validation import validate_train_config

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"


def wandb_has_credentials() -> bool:
    """True when a W&B API key is available (environment or ``~/.netrc``); otherwise runs go offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory (created once, stored in ``wandb_run_id.txt``)."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))  # W&B's own id format
    atomic_write_text(path, run_id + "\n")
    return run_id


def build_loggers(logger_cfg: DictConfig | None, run_dir: Path) -> list[Logger]:
    """Instantiate every configured logger. W&B resumes this run directory's run id and switches to offline
    mode when no credentials are found."""
    loggers: list[Logger] = []
    for name, node in (logger_cfg or {}).items():
        if name == "wandb":
            extra: dict[str, Any] = {"id": wandb_run_id(run_dir), "resume": "allow"}
            if not wandb_has_credentials():
                extra["offline"] = True
            node = copy.deepcopy(node)
            with open_dict(node):
                node.merge_with(extra)
        loggers.append(instantiate(node))
    return loggers


def finish_wandb_runs(loggers: list[Logger]) -> None:
    """Flush and close W&B runs now, so the run files are complete when the process (or a sweep job) ends."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def build_callbacks(cfg: DictConfig, output_dir: Path) -> list[L.Callback]:
    """Checkpoints (epoch ends, every ``checkpoint_every_n_steps``), LR / throughput monitors, NaN guard,
    backbone export, run-file bookkeeping and the invariance callback (unless ``invariance=off``)."""
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    callbacks: list[L.Callback] = [
        *checkpoint_callbacks(checkpoint_dir, int(cfg.get("checkpoint_every_n_steps") or 0)),
        LearningRateMonitor(logging_interval="step"),
        ThroughputMonitor(batch_size_fn=batch_size_of, window_size=10),
        NaNGuard(checkpoint_dir / LAST_CHECKPOINT),
        BackboneExport(output_dir / "backbone.pth"),
        RunFilesState(output_dir, files=(CSV_NAME,)),
        LoaderStateRestore(),
    ]
    if cfg.get("invariance") is not None:
        callbacks.append(instantiate(cfg.invariance))
    return callbacks


def build_module(cfg: DictConfig, *, num_classes: int, resuming: bool = False) -> FaceRecognitionModule:
    """The LightningModule from the config's objects (backbone, head, optimizer and scheduler partials),
    warm-started from ``model.weights`` unless the run resumes from a checkpoint."""
    backbone = instantiate(cfg.model.backbone)
    head = instantiate(cfg.head, num_classes=num_classes, embedding_size=backbone.embedding_size)
    module = FaceRecognitionModule(
        backbone,
        head,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        head_lr_mult=cfg.head_lr_mult,
        freeze_bn=cfg.freeze_bn,
        freeze_trunk=cfg.freeze_trunk,
        head_warmup_steps=cfg.head_warmup_steps,
        head_init=cfg.head_init,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.model.weights and not resuming:
        warm_start(module, cfg.model, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    return module


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this run continues from: ``ckpt_path`` when given, else the run directory's
    ``last.ckpt`` when it exists (``resume=true`` without one is an error), else None (a fresh run)."""
    if cfg.get("ckpt_path"):
        return Path(cfg.ckpt_path)
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():
        return last
    if cfg.get("resume"):
        raise ConfigurationError(f"resume=true but {last} does not exist: nothing to continue (run without resume, "
                                 "or pass the run directory of an interrupted run: resume=<run dir>).")
    return None


def restore_run_files(checkpoint: Path, run_dir: Path, loggers: list[Logger], *,
                      trust_checkpoint: bool = False) -> dict[str, Any]:
    """Cut the run's CSV files back to what they held when ``checkpoint`` was written (the resumed run logs
    the rest again); return the checkpoint's bookkeeping entry (empty for checkpoints of older versions)."""
    state = load_checkpoint(checkpoint, trust=trust_checkpoint, mmap=True)  # tensors-only unless trusted
    entry = dict(state.get(RUN_FILES_KEY) or {})
    del state
    rows: dict[str, int] = entry.get("rows", {})
    for name, count in rows.items():
        if name.startswith("logger:"):
            for logger in loggers:
                if isinstance(logger, RunCSVLogger) and f"logger:{logger.name}" == name:
                    logger.keep_first(int(count), before_step=entry.get("global_step"))
        else:
            truncate_csv(run_dir / name, int(count))
    return entry


def discard_run_files(run_dir: Path, loggers: list[Logger]) -> None:
    """A fresh start in a folder that an earlier attempt wrote to but left no checkpoint in (e.g. an unfinished
    sweep arm run again): its invariance rows and logged metrics go, instead of being appended to."""
    (run_dir / CSV_NAME).unlink(missing_ok=True)
    for logger in loggers:
        if isinstance(logger, RunCSVLogger):
            logger.keep_first(0)


def trainer_overrides(cfg: DictConfig, steps_per_epoch: int, *, fresh: bool) -> dict[str, Any]:
    """Trainer arguments that depend on the run: a logging interval no longer than an epoch, no progress bar
    in quiet sweeps (``FR_INVARIANCE_QUIET=1``), and on a fresh run measured before training, a full
    validation pass before the first step (Lightning's sanity check), whose held-out verification the
    invariance callback logs with its epoch −1 measurement."""
    overrides: dict[str, Any] = {}
    if fresh and cfg.get("invariance") is not None and cfg.invariance.get("before_training", False):
        overrides["num_sanity_val_steps"] = -1
    interval = int(cfg.trainer.get("log_every_n_steps", 50))
    if steps_per_epoch > 0 and interval > steps_per_epoch:
        overrides["log_every_n_steps"] = steps_per_epoch
    if os.environ.get("FR_INVARIANCE_QUIET") == "1":
        overrides["enable_progress_bar"] = False
    return overrides


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Fine-tune as configured (or continue the run in ``output_dir``); return the run's summary."""
    output_dir = Path(output_dir)
    validate_train_config(cfg)
    checkpoint = resume_checkpoint(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, num_classes=datamodule.num_classes, resuming=checkpoint is not None)
    callbacks = build_callbacks(cfg, output_dir)
    loggers = build_loggers(cfg.logger, output_dir)
    if checkpoint is not None:
        entry = restore_run_files(checkpoint, output_dir, loggers,
                                  trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
        log.info("continuing the run in %s from %s (step %s)", output_dir, checkpoint, entry.get("global_step", "?"))
    else:
        discard_run_files(output_dir, loggers)
    samples, batch = cfg.data.get("samples_per_epoch"), cfg.data.get("batch_size")
    steps = int(samples) // int(batch) if samples and batch else 0
    trainer: L.Trainer = instantiate(
        cfg.trainer, default_root_dir=str(output_dir), logger=loggers, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], **trainer_overrides(cfg, steps, fresh=checkpoint is None),
    )
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint is not None else None)
    fit_seconds = time.perf_counter() - fit_start
    finish_wandb_runs(trainer.loggers)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    invariance = next((c for c in callbacks if isinstance(c, InvarianceCallback)), None)
    summary = {
        "run_dir": str(output_dir),
        "last_checkpoint": str(output_dir / CHECKPOINT_DIR / LAST_CHECKPOINT),
        "backbone_pth": str(output_dir / "backbone.pth"),
        "epochs": int(trainer.current_epoch),
        "torch_threads": int(torch.get_num_threads()),
        "global_step": int(trainer.global_step),
        **{name: value for name, value in metrics.items() if name.startswith("val")},
        "energy": dict(invariance.last_energies) if invariance is not None else {},
        "magnitude": dict(_last_magnitudes(invariance)) if invariance is not None else {},
        "fit_seconds": round(fit_seconds, 2),  # wall time of trainer.fit, the invariance measurements included
        "invariance_seconds": round(invariance.seconds, 2) if invariance is not None else 0.0,
    }
    if trainer.is_global_zero:
        atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    return summary


def _last_magnitudes(invariance: InvarianceCallback) -> dict[str, float]:
    """Attribute → last mean magnitude measured by the invariance callback."""
    return {key.split("/")[1]: value for key, value in invariance.last_metrics.items()
            if key.endswith("/magnitude")}


def end_of_run_table(summary: dict[str, Any]) -> str:
    """A short table of a finished run: accuracy, energy and magnitude per attribute, where files went."""
    lines = [f"run: {summary['run_dir']}  (epochs {summary.get('epochs', '?')}, step {summary.get('global_step', '?')})"]
    accuracy = summary.get("val_verification_acc")
    if accuracy is not None:
        lines.append(f"held-out verification accuracy: {accuracy:.4f}")
    energy, magnitude = summary.get("energy") or {}, summary.get("magnitude") or {}
    if energy:
        lines.append(f"{'attribute':<14}{'energy':>10}{'magnitude':>12}")
        for name in energy:
            mag = magnitude.get(name)
            lines.append(f"{name:<14}{energy[name]:>10.4f}{'' if mag is None else f'{mag:>12.4f}'}")
    run_dir = Path(summary["run_dir"])
    lines.append(f"checkpoint: {summary['last_checkpoint']}")
    lines.append(f"backbone:   {summary['backbone_pth']}")
    for name in ("metrics_tidy.csv", CSV_NAME, SUMMARY_FILE):
        if (run_dir / name).is_file():
            lines.append(f"{name + ':':<18}{run_dir / name}")
    return "\n".join(lines)


def run_controlled(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """``experiment=controlled``: the base, every arm and the sweep report in ``output_dir`` (resumable)."""
    experiment = instantiate(cfg.controlled)
    return experiment.run(output_dir)

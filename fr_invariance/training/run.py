"""Build every object of a training run from the Hydra config and run it (``train.py`` calls :func:`run_training`)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from fr_invariance.attributes import NO_ATTRIBUTE, get_attribute
from fr_invariance.data.controls import validate_strength
from fr_invariance.data.factory import build_datamodule
from fr_invariance.training.callbacks import BackboneExport, NaNGuard, batch_size_of
from fr_invariance.atomic import atomic_write_text
from fr_invariance.training.controlled import SUMMARY_FILE
from fr_invariance.training.invariance_callback import InvarianceCallback
from fr_invariance.training.module import FaceRecognitionModule
from fr_invariance.training.warm_start import warm_start


def wandb_has_credentials() -> bool:
    """True when a W&B API key is available (environment or ``~/.netrc``); otherwise runs go offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every configured logger; W&B switches to offline mode when no credentials are found."""
    loggers: list[Logger] = []
    for name, node in (logger_cfg or {}).items():
        if name == "wandb" and not wandb_has_credentials():
            node = OmegaConf.merge(node, {"offline": True})
        loggers.append(instantiate(node))
    return loggers


def finish_wandb_runs(loggers: list[Logger]) -> None:
    """Flush and close W&B runs now, so the run files are complete when the process (or a sweep job) ends."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def validate_config(cfg: DictConfig) -> None:
    """Fail early, with the fix in the message, on invalid attribute / strength / data combinations."""
    if cfg.attr.name != NO_ATTRIBUTE:
        get_attribute(cfg.attr.name)
    validate_strength(cfg.aug.strength)


# Samples/s is what we report; FLOP counting would need a model-specific flops_per_batch.
warnings.filterwarnings("ignore", message=".*ThroughputMonitor.*flops_per_batch.*")


def build_callbacks(cfg: DictConfig, output_dir: Path) -> list[L.Callback]:
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True, save_top_k=0, every_n_epochs=1),
        LearningRateMonitor(logging_interval="step"),
        ThroughputMonitor(batch_size_fn=batch_size_of, window_size=10),
        NaNGuard(),
        BackboneExport(output_dir / "backbone.pth"),
    ]
    if cfg.get("invariance") is not None:
        callbacks.append(instantiate(cfg.invariance))
    return callbacks


def build_module(cfg: DictConfig, *, num_classes: int) -> FaceRecognitionModule:
    """The LightningModule from the config's objects (backbone, head, optimizer and scheduler partials),
    warm-started from ``model.weights`` unless the run resumes from ``ckpt_path``."""
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
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.model.weights and not cfg.ckpt_path:
        warm_start(module, cfg.model, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    return module


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Fine-tune as configured; return the summary printed by ``train.py`` as one JSON line."""
    output_dir = Path(output_dir)
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, num_classes=datamodule.num_classes)

    callbacks = build_callbacks(cfg, output_dir)
    trainer: L.Trainer = instantiate(
        cfg.trainer, default_root_dir=str(output_dir), logger=build_loggers(cfg.logger), callbacks=callbacks
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    finish_wandb_runs(trainer.loggers)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    invariance = next((c for c in callbacks if isinstance(c, InvarianceCallback)), None)
    summary = {
        "run_dir": str(output_dir),
        "last_checkpoint": str(output_dir / "checkpoints" / "last.ckpt"),
        "backbone_pth": str(output_dir / "backbone.pth"),
        **{name: value for name, value in metrics.items() if name.startswith("val")},
        "energy": dict(invariance.last_energies) if invariance is not None else {},
    }
    atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    return summary


def run_controlled(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """``experiment=controlled``: the base, every arm and the sweep report in ``output_dir`` (resumable)."""
    experiment = instantiate(cfg.controlled)
    return experiment.run(output_dir)

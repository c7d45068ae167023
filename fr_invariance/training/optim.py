"""Optimizers and learning-rate schedules built from the ``optim`` and ``scheduler`` config groups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR

from fr_invariance.errors import ConfigurationError


def build_optimizer(param_groups: list[dict[str, Any]], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (``lr``, ``momentum``, ``weight_decay``) or AdamW (``lr``, ``betas``, ``weight_decay``)."""
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
    raise ConfigurationError(f"Unknown optimizer {name!r}: use optim=sgd or optim=adamw.")


def polynomial_warmup_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """LR multiplier: linear ramp ``(step+1)/warmup_steps`` then ``(1 - progress) ** power`` down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (1.0 - progress) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int, steps_per_epoch: int
) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` dict: ``poly`` (stepped per optimizer step) or ``multistep`` (per epoch)."""
    name = cfg["name"]
    if name == "poly":
        warmup_steps = int(round(cfg["warmup_epochs"] * steps_per_epoch))
        power = float(cfg["power"])
        scheduler: LRScheduler = LambdaLR(
            optimizer, lambda step: polynomial_warmup_factor(step, warmup_steps, total_steps, power)
        )
        return {"scheduler": scheduler, "interval": "step"}
    if name == "multistep":
        scheduler = MultiStepLR(optimizer, milestones=list(cfg["milestones"]), gamma=cfg["gamma"])
        return {"scheduler": scheduler, "interval": "epoch"}
    raise ConfigurationError(f"Unknown scheduler {name!r}: use scheduler=poly or scheduler=multistep.")

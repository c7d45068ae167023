"""Learning-rate schedules for the ``scheduler`` config group.

Optimizers are built straight from ``conf/optim/*.yaml`` (``_target_: torch.optim.SGD``, ``_partial_: true``);
schedules are ``_partial_`` factories here, called by the LightningModule as
``scheduler(optimizer, total_steps=..., steps_per_epoch=...)`` and returning Lightning's
``lr_scheduler`` dict (scheduler + stepping interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR


def polynomial_warmup_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """LR multiplier: linear ramp ``(step+1)/warmup_steps`` then ``(1 - progress) ** power`` down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (1.0 - progress) ** power


def polynomial_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 1.0,
    power: float = 2.0,
) -> dict[str, Any]:
    """Linear warm-up over ``warmup_epochs`` epochs, then polynomial decay to 0 at ``total_steps``;
    stepped every optimizer step."""
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    scheduler = LambdaLR(optimizer, lambda step: polynomial_warmup_factor(step, warmup_steps, total_steps, power))
    return {"scheduler": scheduler, "interval": "step"}


def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    milestones: Sequence[int] = (8, 14, 18),
    gamma: float = 0.1,
) -> dict[str, Any]:
    """Multiply the learning rate by ``gamma`` at each epoch in ``milestones``; stepped every epoch."""
    del total_steps, steps_per_epoch  # epoch-based: the run length does not matter
    return {"scheduler": MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma), "interval": "epoch"}


def constant(optimizer: torch.optim.Optimizer, *, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """A constant learning rate (fine-tuning arms that should not warm up again)."""
    del total_steps, steps_per_epoch
    return {"scheduler": LambdaLR(optimizer, lambda step: 1.0), "interval": "step"}

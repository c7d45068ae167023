"""Warm start of a fine-tune: backbone weights from any supported file, and optionally the margin head
from our own Lightning checkpoint trained on the same identities (``model.keep_head=true``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from fr_invariance.errors import ConfigurationError
from fr_invariance.models.checkpoint_io import load_checkpoint
from fr_invariance.models.weights import load_backbone_weights


class HeadWarmStartError(ConfigurationError):
    """``model.keep_head=true`` with a file whose head cannot be reused."""


def load_head_weights(head: nn.Module, path: str, *, trust_checkpoint: bool = False) -> None:
    """Copy ``state_dict['head.*']`` of our Lightning checkpoint at ``path`` into ``head`` (strict).

    Raises:
        HeadWarmStartError: the file has no head (not our ``.ckpt``) or its head has another shape
            (another class count: the identities differ, so the head cannot be kept).
    """
    checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    head_state: dict[str, Tensor] = {
        key[len("head."):]: value for key, value in (state or {}).items() if key.startswith("head.")
    }
    if not head_state:
        raise HeadWarmStartError(
            f"model.keep_head=true but {path} holds no margin head (only our Lightning .ckpt files do); "
            "drop model.keep_head, optionally with head_warmup_steps=N to train a fresh head first."
        )
    expected = head.state_dict()
    mismatched = [
        f"{key} {tuple(head_state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in head_state and head_state[key].shape != value.shape
    ]
    missing = sorted(set(expected) - set(head_state))
    if mismatched or missing:
        raise HeadWarmStartError(
            f"model.keep_head=true but the head in {path} does not fit this run "
            f"(mis-shaped {mismatched or 'none'}, missing {missing or 'none'}): it was trained on other "
            "identities; drop model.keep_head (a fresh head, with head_warmup_steps=N if needed)."
        )
    head.load_state_dict({key: head_state[key] for key in expected}, strict=True)


def warm_start(module: nn.Module, model_cfg: Mapping[str, Any], *, trust_checkpoint: bool = False) -> None:
    """Load ``model_cfg.weights`` into ``module.backbone`` (format ``weights_format``, ``bgr_to_rgb``) and, with
    ``model_cfg.keep_head``, the margin head into ``module.head``."""
    path = str(model_cfg["weights"])
    load_backbone_weights(module.backbone, path, fmt=model_cfg.get("weights_format", "auto"),
                          bgr_to_rgb=model_cfg.get("bgr_to_rgb", "auto"), trust_checkpoint=trust_checkpoint)
    if model_cfg.get("keep_head", False):
        load_head_weights(module.head, path, trust_checkpoint=trust_checkpoint)

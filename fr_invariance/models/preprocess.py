"""Image → backbone input conversion shared by training and evaluation."""

from __future__ import annotations

import torch


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Map ``(N, 3, H, W)`` RGB images in ``[0, 1]`` to the backbones' input range ``[-1, 1]`` (``x·2 − 1``)."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (N, 3, H, W) RGB tensor in [0, 1], got {images.dtype} {tuple(images.shape)}"
        )
    return images * 2.0 - 1.0

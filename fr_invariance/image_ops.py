"""Image-level attribute operations in torch: the one definition of brightness, contrast and hue.

Images are float tensors ``(N, 3, H, W)``, RGB in ``[0, 1]``; controls ``t`` are ``(N,)`` in ``[-1, 1]``.
``t = 0`` is the identity map (up to clamping, which is a no-op on valid images). The albumentations
transforms in :mod:`fr_invariance.data.image_transforms` call these same functions, so the
deterministic (lattice) path and the random (augmentation) path agree exactly.
"""

from __future__ import annotations

import math

import torch

from fr_invariance.attributes import attribute_index

BRIGHTNESS_SHIFT = 0.3  # additive shift at |t| = 1, in [0, 1] intensity units
CONTRAST_LOG2_GAIN = 1.2  # contrast factor is 2 ** (CONTRAST_LOG2_GAIN * t)
HUE_DEGREES = 90.0  # hue rotation at |t| = 1

_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _per_image(t: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return t.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Add ``BRIGHTNESS_SHIFT * t`` to every channel, then clamp to ``[0, 1]``."""
    return (images + BRIGHTNESS_SHIFT * _per_image(t, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Scale deviations from each image's mean luma by ``2 ** (CONTRAST_LOG2_GAIN * t)``; clamp."""
    luma = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    mean = (images * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    gain_minus_one = torch.exp2(CONTRAST_LOG2_GAIN * _per_image(t, images)) - 1.0
    return (images + (images - mean) * gain_minus_one).clamp_(0.0, 1.0)


def hue_rotation_offsets(t: torch.Tensor) -> torch.Tensor:
    """``M - I`` for the RGB->RGB matrices ``M`` ``(N, 3, 3)`` (float64) that rotate chroma by
    ``HUE_DEGREES * t`` in YIQ space; exactly zero at ``t = 0`` so the neutral image is unchanged."""
    angle = t.to(torch.float64).cpu() * math.radians(HUE_DEGREES)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation_minus_identity = torch.zeros(angle.shape[0], 3, 3, dtype=torch.float64)
    rotation_minus_identity[:, 1, 1], rotation_minus_identity[:, 1, 2] = cos - 1.0, -sin
    rotation_minus_identity[:, 2, 1], rotation_minus_identity[:, 2, 2] = sin, cos - 1.0
    return _YIQ_TO_RGB @ rotation_minus_identity @ _RGB_TO_YIQ


def rotate_hue(images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``HUE_DEGREES * t`` degrees (luma preserved before clamping); clamp."""
    offsets = hue_rotation_offsets(t.reshape(-1)).to(device=images.device, dtype=images.dtype)
    return (images + torch.einsum("nij,njhw->nihw", offsets, images)).clamp_(0.0, 1.0)


IMAGE_OPS = {"brightness": adjust_brightness, "contrast": adjust_contrast, "hue": rotate_hue}


def apply_image_attributes(images: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """Apply brightness, then contrast, then hue from a ``(N, NUM_ATTRIBUTES)`` controls tensor.

    Every operation is exactly the identity at ``t = 0``, so operations whose control is zero for
    every image in the batch are skipped without changing any pixel.
    """
    out = images
    for name, op in IMAGE_OPS.items():
        t = controls[:, attribute_index(name)]
        if bool(torch.any(t != 0)):
            out = op(out, t)
    return out

"""Image-level attribute transforms (brightness, contrast, hue) for numpy images and torch batches.

Both paths call the single torch definition in :mod:`fr_invariance.image_ops`, so for the same image
and control ``t`` they agree by construction:

- albumentations path (per image, CPU data loading): :class:`ImageAttributeTransform` on HWC RGB
  numpy images, ``uint8`` in ``[0, 255]`` or ``float32`` in ``[0, 1]`` (output has the input dtype;
  ``uint8`` is rounded to the nearest level). :func:`build_albumentations_augmentation` builds the
  random augmentation pipeline.
- torch path (whole batches on any device): :func:`random_image_controls` and :func:`augment_batch`.

Deterministic use takes a control ``t`` in ``[-1, 1]``; random use takes a strength ``s`` in
``[0, 1]`` and draws ``t ~ U(-s, s)`` independently per image and attribute. Only image-level
attributes are accepted; a semantic attribute (which only the renderer can change) is an error.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import albumentations as A
import numpy as np
import torch

from fr_invariance.attributes import (
    IMAGE_ATTRIBUTES,
    NUM_ATTRIBUTES,
    attribute_index,
    validate_attributes,
)
from fr_invariance.image_ops import IMAGE_OPS, apply_image_attributes


def validate_strengths(strengths: Mapping[str, float]) -> dict[str, float]:
    """Check ``{attribute: strength}``: image-level attributes only, strengths in ``[0, 1]``.

    Raises :class:`~fr_invariance.attributes.UnknownAttributeError` for an unknown or semantic
    attribute and ``ValueError`` for a strength outside ``[0, 1]``.
    """
    validate_attributes(strengths.keys(), allow_semantic=False)
    checked = {}
    for name, strength in strengths.items():
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(
                f"Augmentation strength of {name!r} is {strength}; it must lie in [0, 1] "
                f"(the control is drawn from U(-s, s) and controls live in [-1, 1])."
            )
        checked[name] = strength
    return checked


def _validate_control(attribute: str, t: float) -> float:
    t = float(t)
    if not -1.0 <= t <= 1.0:
        raise ValueError(f"Control t={t} of {attribute!r} is outside the valid range [-1, 1].")
    return t


def apply_attribute_to_numpy(image: np.ndarray, attribute: str, t: float) -> np.ndarray:
    """Apply one image-level attribute with control ``t`` to a single numpy image.

    Args:
        image: ``(H, W, 3)`` RGB, ``uint8`` in ``[0, 255]`` or ``float32`` in ``[0, 1]``.
        attribute: ``"brightness"``, ``"contrast"`` or ``"hue"``.
        t: control in ``[-1, 1]``.

    Returns:
        The transformed image, same shape and dtype (``uint8`` rounded to the nearest level).
    """
    validate_attributes([attribute], allow_semantic=False)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Expected an RGB image of shape (H, W, 3), got shape {image.shape}; "
            "convert grayscale or RGBA images to RGB first."
        )
    if image.dtype == np.uint8:
        pixels = image.astype(np.float32) / np.float32(255.0)
    elif image.dtype == np.float32:
        pixels = image
    else:
        raise ValueError(
            f"Unsupported image dtype {image.dtype}; use uint8 in [0, 255] or float32 in [0, 1]."
        )
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    control = torch.tensor([_validate_control(attribute, t)], dtype=torch.float32)
    result = IMAGE_OPS[attribute](batch, control)[0].permute(1, 2, 0).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.rint(result * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(result, dtype=np.float32)


class ImageAttributeTransform(A.ImageOnlyTransform):
    """albumentations transform for one image-level attribute, deterministic or random.

    Give exactly one of ``t`` (fixed control in ``[-1, 1]``, e.g. for lattices) or ``strength``
    (``t ~ U(-strength, strength)`` per call, drawn from the transform's albumentations RNG, so
    ``A.Compose([...], seed=...)`` is reproducible). The drawn ``t`` is in
    ``get_applied_params()["t"]`` after a call.

    With ``A.Compose(seed=s)`` albumentations seeds every child with the same ``s``; this class
    mixes its attribute into the seed so that several random attributes in one pipeline draw
    independent controls instead of the same sequence.
    """

    def __init__(
        self,
        attribute: str,
        t: float | None = None,
        strength: float | None = None,
        p: float = 1.0,
    ):
        validate_attributes([attribute], allow_semantic=False)
        if (t is None) == (strength is None):
            raise ValueError(
                "Give exactly one of t (deterministic control in [-1, 1]) or strength "
                "(random control t ~ U(-strength, strength), strength in [0, 1])."
            )
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Probability p={p} is outside the valid range [0, 1].")
        self.attribute = attribute
        self.t = None if t is None else _validate_control(attribute, t)
        self.strength = None if strength is None else validate_strengths({attribute: strength})[attribute]
        super().__init__(p=p)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed this transform's RNGs from ``(seed, attribute)`` (independent streams per attribute)."""
        super().set_random_seed(seed)
        if seed is not None:
            sequence = np.random.SeedSequence([seed, attribute_index(self.attribute)])
            self.random_generator = np.random.default_rng(sequence)
            self.py_random = random.Random(int(sequence.generate_state(1)[0]))

    def get_params(self) -> dict[str, float]:
        """The control of this call: the fixed ``t`` or a draw from ``U(-strength, strength)``."""
        if self.t is not None:
            return {"t": self.t}
        return {"t": float(self.random_generator.uniform(-self.strength, self.strength))}

    def apply(self, img: np.ndarray, t: float = 0.0, **params: Any) -> np.ndarray:
        """Transform one ``(H, W, 3)`` image (see :func:`apply_attribute_to_numpy`)."""
        return apply_attribute_to_numpy(img, self.attribute, t)


def build_albumentations_augmentation(strengths: Mapping[str, float], seed: int | None = None) -> A.Compose:
    """Random image-level augmentation: one :class:`ImageAttributeTransform` per attribute with a
    non-zero strength, applied in registry order (brightness, contrast, hue — the order of
    :func:`fr_invariance.image_ops.apply_image_attributes`). ``seed`` makes the pipeline reproducible.
    """
    checked = validate_strengths(strengths)
    transforms = [
        ImageAttributeTransform(name, strength=checked[name])
        for name in IMAGE_ATTRIBUTES
        if checked.get(name, 0.0) > 0.0
    ]
    return A.Compose(transforms, seed=seed)


def random_image_controls(
    n: int, strengths: Mapping[str, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random image-level controls: ``(n, 3)`` float32, columns ``IMAGE_ATTRIBUTES`` order
    (brightness, contrast, hue); column ``a`` ~ ``U(-s_a, s_a)``, 0 for attributes not in ``strengths``.

    Drawn on ``generator``'s device (CPU without a generator).
    """
    checked = validate_strengths(strengths)
    if n < 0:
        raise ValueError(f"Number of images n={n} must be non-negative.")
    device = generator.device if generator is not None else torch.device("cpu")
    half_widths = torch.tensor([checked.get(name, 0.0) for name in IMAGE_ATTRIBUTES], device=device)
    uniform = torch.rand(n, len(IMAGE_ATTRIBUTES), generator=generator, device=device)
    return (2.0 * uniform - 1.0) * half_widths


def augment_batch(
    images: torch.Tensor, strengths: Mapping[str, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly augment a batch ``(N, 3, H, W)`` RGB in ``[0, 1]`` with per-image controls from
    :func:`random_image_controls`; returns ``(N, 3, H, W)`` on the images' device (the input
    itself when every drawn control is zero, e.g. all strengths 0)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected images of shape (N, 3, H, W), got {tuple(images.shape)}.")
    image_controls = random_image_controls(images.shape[0], strengths, generator).to(images.device)
    controls = torch.zeros(images.shape[0], NUM_ATTRIBUTES, device=images.device, dtype=torch.float32)
    for column, name in enumerate(IMAGE_ATTRIBUTES):
        controls[:, attribute_index(name)] = image_controls[:, column]
    return apply_image_attributes(images, controls)

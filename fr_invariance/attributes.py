"""The attribute registry: the single source of truth for attribute names, kinds and ranges.

Every attribute is driven by one control ``t`` in ``[-1, 1]`` with ``0`` the neutral value.
A batch of controls is a float tensor of shape ``(N, NUM_ATTRIBUTES)`` whose columns follow
``ATTRIBUTE_NAMES`` (use :func:`attribute_index` to find a column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import torch

from fr_invariance.errors import ConfigurationError

AttributeKind = Literal["semantic", "image"]


class UnknownAttributeError(ConfigurationError):
    """Raised for an attribute name that is not in the registry."""


@dataclass(frozen=True)
class Attribute:
    """One controllable attribute.

    Attributes:
        name: config name (``attr=<name>``).
        kind: ``"semantic"`` (rendered by the synthetic renderer only) or ``"image"``
            (a post-render transform that applies to any image, synthetic or real).
        meaning: what the control does at ``t = -1`` and ``t = +1``.
        low, high: control range.
        neutral: control value of the unmodified face.
        base_nuisance: half-width of the default nuisance range ``U(-b, b)`` used for this
            attribute during training when it is not the targeted attribute.
    """

    name: str
    kind: AttributeKind
    meaning: str
    base_nuisance: float
    low: float = -1.0
    high: float = 1.0
    neutral: float = 0.0


_REGISTRY: tuple[Attribute, ...] = (
    Attribute("head_angle", "semantic", "yaw: -1 = head turned 45 deg to its right, +1 = 45 deg to its left", 0.15),
    Attribute("age", "semantic", "-1 = young (smooth skin, full face), +1 = old (wrinkles, grey hair, sagging jaw)", 0.15),
    Attribute("hair_color", "semantic", "natural hair-colour path: -1 = platinum blond, 0 = identity's own, +1 = jet black (via golden blond, light brown, auburn, chestnut, dark brown)", 0.15),
    Attribute("illumination", "semantic", "key-light azimuth: -1 = lit from the face's right (-90 deg), +1 = from its left (+90 deg)", 0.15),
    Attribute("expression", "semantic", "-1 = frown (brows down, mouth corners down), +1 = broad smile", 0.15),
    Attribute("brightness", "image", "additive luminance shift of -0.3 .. +0.3 (images in [0, 1])", 0.1),
    Attribute("contrast", "image", "contrast scale 2**(1.2 t) around the image's mean grey (0.44x .. 2.3x)", 0.1),
    Attribute("hue", "image", "hue rotation by 90*t degrees about the grey axis (YIQ chroma rotation)", 0.1),
)

ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in _REGISTRY}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in _REGISTRY)
SEMANTIC_ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in _REGISTRY if a.kind == "semantic")
IMAGE_ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in _REGISTRY if a.kind == "image")
NUM_ATTRIBUTES: int = len(_REGISTRY)
NO_ATTRIBUTE = "none"  # the ``attr=none`` baseline: no targeted augmentation


def get_attribute(name: str) -> Attribute:
    """Return the registry entry for ``name``; raise :class:`UnknownAttributeError` listing valid names."""
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise UnknownAttributeError(
            f"Unknown attribute {name!r}. Valid attributes: {', '.join(ATTRIBUTE_NAMES)}"
            f" (or '{NO_ATTRIBUTE}' for no targeted augmentation)."
        ) from None


def attribute_index(name: str) -> int:
    """Column of ``name`` in a ``(N, NUM_ATTRIBUTES)`` controls tensor."""
    get_attribute(name)
    return ATTRIBUTE_NAMES.index(name)


def validate_attributes(names: Iterable[str], *, allow_semantic: bool = True) -> list[str]:
    """Check every name; with ``allow_semantic=False`` (real images) semantic ones are an error."""
    names = list(names)
    for name in names:
        attribute = get_attribute(name)
        if not allow_semantic and attribute.kind == "semantic":
            raise UnknownAttributeError(
                f"Attribute {name!r} is semantic: only the synthetic renderer can change it. "
                f"On real images use an image-level attribute: {', '.join(IMAGE_ATTRIBUTES)}."
            )
    return names


def neutral_controls(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Controls of ``n`` neutral images: shape ``(n, NUM_ATTRIBUTES)``, float32."""
    neutral = torch.tensor([a.neutral for a in _REGISTRY], dtype=torch.float32, device=device)
    return neutral.expand(n, NUM_ATTRIBUTES).clone()

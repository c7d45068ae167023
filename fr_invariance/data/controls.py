"""Random attribute controls for training: targeted attribute U(-s, s), the others a small nuisance range."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fr_invariance.attributes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    NO_ATTRIBUTE,
    NUM_ATTRIBUTES,
    attribute_index,
    get_attribute,
)
from fr_invariance.errors import ConfigurationError


def validate_strength(strength: float) -> float:
    """Return ``strength`` as float; raise ConfigurationError unless it lies in ``[0, 1]``."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ConfigurationError(f"aug.strength={strength} is outside [0, 1]: use e.g. aug.strength=0.5.")
    return strength


def nuisance_ranges(overrides: Mapping[str, float | None] | None = None) -> torch.Tensor:
    """Half-widths ``(NUM_ATTRIBUTES,)`` of the base nuisance ranges; ``None`` entries keep the registry default."""
    ranges = torch.tensor([ATTRIBUTES[name].base_nuisance for name in ATTRIBUTE_NAMES])
    for name, value in (overrides or {}).items():
        get_attribute(name)
        if value is None:
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigurationError(f"aug.nuisance.{name}={value} is outside [0, 1].")
        ranges[attribute_index(name)] = float(value)
    return ranges


def training_ranges(attr: str, strength: float, nuisance: Mapping[str, float | None] | None = None) -> torch.Tensor:
    """Half-widths ``(NUM_ATTRIBUTES,)``: nuisance ranges, with the targeted attribute's set to ``strength``.

    ``attr="none"`` is the baseline without targeted augmentation.
    """
    ranges = nuisance_ranges(nuisance)
    strength = validate_strength(strength)
    if attr != NO_ATTRIBUTE:
        ranges[attribute_index(attr)] = strength
    return ranges


def sample_controls(n: int, half_widths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Controls ``(n, NUM_ATTRIBUTES)`` with column ``a`` drawn from ``U(-half_widths[a], half_widths[a])``."""
    uniform = torch.rand(n, NUM_ATTRIBUTES, generator=generator)
    return (2.0 * uniform - 1.0) * half_widths.reshape(1, -1)

"""Helpers shared by the tests that render faces."""

from __future__ import annotations

import torch

from fr_invariance.attributes import NUM_ATTRIBUTES, attribute_index


def controls_with(n: int, **values: float) -> torch.Tensor:
    """``(n, 8)`` controls, zero except the named attributes (e.g. ``head_angle=0.5``)."""
    controls = torch.zeros(n, NUM_ATTRIBUTES)
    for name, value in values.items():
        controls[:, attribute_index(name)] = value
    return controls

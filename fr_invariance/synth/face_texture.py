"""The fixed per-identity skin texture: moles and freckles, derived deterministically from the identity.

Mole positions and freckle phases are smooth functions (sines of fixed random projections) of the whole
identity vector, so every identity gets its own pattern, the same one in every image of it, and CPU/GPU
agree to float precision. Coordinates are head-frame decal coordinates (see ``face_features``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fr_invariance.synth.face_params import Traits
from fr_invariance.synth.identity import NUM_IDENTITY_PARAMS

NUM_MOLES = 4
_PROJECTION_SEED = 20_240_611
_PROJECTIONS = np.random.default_rng(_PROJECTION_SEED).normal(size=(3 * NUM_MOLES + 4, NUM_IDENTITY_PARAMS))
_FRECKLE_WAVELENGTH = 0.032
MOLE_COLOUR = (0.28, 0.17, 0.12)
FRECKLE_TINT = (0.80, 0.66, 0.58)


def _identity_codes(identities: torch.Tensor) -> torch.Tensor:
    """``(N, 3 * NUM_MOLES + 4)`` values in ``[-1, 1]``, each a sine of a random projection of the identity."""
    projections = torch.as_tensor(_PROJECTIONS, dtype=torch.float32, device=identities.device)
    return torch.sin(2.3 * identities @ projections.T)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, 1, 1)


def paint_skin_marks(
    albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, identities: torch.Tensor, traits: Traits, pixel: float
) -> None:
    """Darken ``albedo`` ``(N, 3, h, w)`` in place with the identity's moles and freckles.

    ``fx`` ``(N, h, w)`` and ``fy`` ``(1, h, 1)`` are the decal coordinates of the same pixels.
    """
    codes = _identity_codes(identities)
    # Freckles: peaks of two crossed plane waves, gathered over nose and cheeks.
    angle = _unit(codes[:, 3 * NUM_MOLES]) * math.pi
    phase_a, phase_b = _unit(codes[:, 3 * NUM_MOLES + 1]) * 40.0, _unit(codes[:, 3 * NUM_MOLES + 2]) * 40.0
    k = 2.0 * math.pi / _FRECKLE_WAVELENGTH
    ca, sa = torch.cos(angle), torch.sin(angle)
    wave = torch.cos(k * (fx * ca + fy * sa) + phase_a) * torch.cos(k * 0.83 * (fy * ca - fx * sa) + phase_b)
    region = torch.exp(-((fx / 0.24) ** 2) - ((fy - traits["nose_tip_y"] - 0.04) / 0.09) ** 2)
    freckles = ((wave - 0.6) / 0.3).clamp(0.0, 1.0) * region * (0.9 * traits["freckles"])
    tint = torch.tensor(FRECKLE_TINT, device=albedo.device).reshape(1, 3, 1, 1)
    albedo.mul_(1.0 - freckles.unsqueeze(1) * (1.0 - tint))
    # Moles: a few dark dots; codes decide whether each exists, where and how big.
    mole_colour = torch.tensor(MOLE_COLOUR, device=albedo.device).reshape(1, 3, 1, 1)
    for m in range(NUM_MOLES):
        presence, cx_code, cy_code = (_unit(codes[:, 3 * m + j]) for j in range(3))
        radius = (0.012 * (presence - 0.15) / 0.85).clamp(min=0.0)
        cx = 0.36 * cx_code
        cy = traits["nose_tip_y"] + 0.02 + 0.15 * cy_code  # cheeks, between the mouth and the eyes
        # (r^2 - d^2) / 2r ~ r - d near the rim: anti-aliased without a square root
        distance_sq = (fx - cx) ** 2 + (fy - cy) ** 2
        inside = (radius * radius - distance_sq) / (2.0 * radius.clamp(min=1e-4) * max(pixel, 0.006))
        coverage = (inside + 0.5).clamp(0.0, 1.0) * (radius > 0)
        albedo.add_(coverage.unsqueeze(1) * 0.85 * (mole_colour - albedo))

"""Identity sampler for the synthetic face renderer.

An identity is a vector of ``NUM_IDENTITY_PARAMS`` continuous parameters, each uniform in ``[-1, 1]``;
their names (``IDENTITY_PARAM_NAMES``) say which facial trait each one drives. The renderer maps them
to physical sizes, positions and colours (:mod:`fr_invariance.synth.face_params`). The fixed skin
texture (moles, freckle pattern) is derived deterministically from the whole vector.
"""

from __future__ import annotations

import numpy as np
import torch

IDENTITY_PARAM_NAMES: tuple[str, ...] = (
    "face_width",  # narrow .. broad head
    "face_length",  # short .. long head
    "jaw_width",  # tapered .. square jaw
    "chin_shape",  # round .. pointed chin
    "cheek_fullness",  # hollow .. full cheeks (head depth profile)
    "skin_tone",  # light .. dark
    "skin_undertone",  # olive/yellow .. pink/red
    "eye_spacing",  # close .. wide-set eyes
    "eye_size",  # small .. large eyes
    "eye_height",  # low .. high eye line
    "eye_tilt",  # down-turned .. up-turned outer corners
    "iris_color",  # dark brown .. hazel .. green .. blue .. grey
    "brow_thickness",  # thin .. bushy brows
    "brow_height",  # low .. high brows (above the eyes)
    "brow_arch",  # straight .. arched brows
    "nose_length",  # short .. long nose
    "nose_width",  # narrow .. wide nose
    "nose_prominence",  # flat .. prominent bridge and tip
    "mouth_width",  # narrow .. wide mouth
    "lip_fullness",  # thin .. full lips
    "lip_color",  # pale pink .. deep brown-red
    "mouth_height",  # low .. high mouth
    "hairline_height",  # low .. high (receding) hairline
    "hair_length",  # cropped .. shoulder length
    "hair_volume",  # flat .. voluminous
    "hair_part",  # parting/fringe to the left .. right
    "fringe",  # no fringe .. full fringe over the forehead
    "hair_color",  # own hair colour: position on the blond .. black path
    "ear_size",  # small .. large ears
    "ear_height",  # low .. high ears
    "freckles",  # none .. many freckles
    "facial_hair",  # none (below 0) .. stubble .. full beard with moustache
    "skin_marks",  # texture seed: where moles and freckles sit (see face_texture)
)
NUM_IDENTITY_PARAMS: int = len(IDENTITY_PARAM_NAMES)

_ROWS_PER_BLOCK = 1024  # rows drawn per independently seeded block (makes sampling prefix-stable)


def identity_param_index(name: str) -> int:
    """Column of the identity parameter ``name``; ValueError listing valid names otherwise."""
    if name not in IDENTITY_PARAM_NAMES:
        raise ValueError(f"Unknown identity parameter {name!r}. Valid: {', '.join(IDENTITY_PARAM_NAMES)}.")
    return IDENTITY_PARAM_NAMES.index(name)


def sample_identities(n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Draw ``n`` identities: ``(n, NUM_IDENTITY_PARAMS)`` float32, every entry uniform in ``[-1, 1]``.

    Prefix-stable: row ``k`` is the same for every ``n > k`` with the same ``seed`` (rows come in blocks
    of 1024, each from its own generator seeded by ``(seed, block)``). Different seeds give different
    identities. Raises ValueError for a negative ``n`` or ``seed``.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    blocks = []
    for block in range(-(-int(n) // _ROWS_PER_BLOCK)):
        rng = np.random.default_rng([int(seed), block])
        blocks.append(rng.uniform(-1.0, 1.0, size=(_ROWS_PER_BLOCK, NUM_IDENTITY_PARAMS)))
    rows = np.concatenate(blocks)[:n] if blocks else np.zeros((0, NUM_IDENTITY_PARAMS))
    return torch.as_tensor(rows, dtype=torch.float32).to(device)

"""An attribute-labelled synthetic face set for the macroscale, clustering and cross-model analyses.

Many identities (``sample_identities(n_identities, identity_seed)``), ``images_per_identity`` renders each,
and one binary attribute (values −1 / +1) per column:

- **image attributes** — one per registry attribute (``head_angle`` … ``hue``, semantic and image-level):
  the label is the sign of the image's control, ``t = label · U(low, high)`` with
  ``(low, high) = control_range`` (0.2, 0.8 by default, so a label is always visible and faces stay
  recognisable). How often an attribute changes inside one identity is set per attribute by
  ``concentration[a] = c``: identity ``i`` draws its share of ``+1`` images ``π_i ~ Beta(c/2, c/2)``
  and each image draws its label ``~ Bernoulli(π_i)``. Small ``c`` → identities are nearly all-``+1`` or
  all-``−1`` (low intra-entropy, high inter-entropy); large ``c`` → about half of each identity's images
  are ``+1`` (high intra-entropy, low inter-entropy). Other controls of an image are the drawn ones of the
  other attributes (every attribute is labelled in every image).
- **identity attributes** — constant within an identity (intra-entropy 0), read from the identity
  parameters through the renderer's own trait mapping (:func:`fr_invariance.synth.face_params.face_traits`):
  ``dark_skin`` (``skin_tone`` parameter > 0), ``dark_hair`` (own hair colour in the darker half of the
  hair path: ``hair_color`` parameter > 0; the ``hair_color`` *control* then shifts the rendered colour),
  ``beard`` (full beard and moustache: trait ``facial_hair`` > 0.5, above stubble), ``long_hair`` (hair
  reaching below the renderer's long-hair line), ``fringe`` (trait ``fringe`` > 0.25).

Everything is a deterministic function of ``(n_identities, images_per_identity, identity_seed, seed,
concentration, control_range)``. Rows are identity-major: row ``i · images_per_identity + k``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fr_invariance.attributes import ATTRIBUTE_NAMES, ATTRIBUTES, neutral_controls
from fr_invariance.errors import ConfigurationError
from fr_invariance.synth.face_params import face_traits
from fr_invariance.synth.identity import identity_param_index, sample_identities
from fr_invariance.synth.render import LONG_HAIR_BELOW, render

DEFAULT_CONCENTRATION: dict[str, float] = {
    "head_angle": 20.0,  # pose changes freely within a person's photos
    "age": 0.3,  # a person is mostly young or mostly old
    "hair_color": 1.0,  # dyed hair: often, not always, consistent
    "illumination": 20.0,
    "expression": 5.0,
    "brightness": 10.0,
    "contrast": 2.0,
    "hue": 0.5,  # a camera's colour cast: mostly consistent per person
}
"""Beta concentration per image attribute (see the module docstring)."""

IDENTITY_ATTRIBUTES: dict[str, str] = {
    "dark_skin": "skin_tone identity parameter > 0 (darker half of the skin-tone range)",
    "dark_hair": "own hair colour in the darker half of the hair path (hair_color identity parameter > 0)",
    "beard": "full beard and moustache (facial_hair trait > 0.5; stubble below)",
    "long_hair": "hair reaching below the renderer's long-hair line (covers the ears)",
    "fringe": "a fringe over the forehead (fringe trait > 0.25)",
}
"""Per-identity attributes and their definitions."""


class LabelledSyntheticError(ConfigurationError):
    """Settings of the labelled synthetic set that cannot work (too few identities or images, bad ranges...)."""


def identity_attributes(identities: torch.Tensor) -> dict[str, np.ndarray]:
    """The per-identity attributes of ``identities`` ``(I, P)``: name → ``(I,)`` int8 in {−1, +1}."""
    traits = face_traits(identities, neutral_controls(identities.shape[0], device=identities.device))
    params = identities.detach().cpu()

    def flag(mask: torch.Tensor) -> np.ndarray:
        return np.where(mask.reshape(-1).cpu().numpy(), 1, -1).astype(np.int8)

    return {
        "dark_skin": flag(params[:, identity_param_index("skin_tone")] > 0),
        "dark_hair": flag(params[:, identity_param_index("hair_color")] > 0),
        "beard": flag(traits["facial_hair"] > 0.5),
        "long_hair": flag(traits["hair_bottom_y"] < LONG_HAIR_BELOW),
        "fringe": flag(traits["fringe"] > 0.25),
    }


@dataclass
class LabelledSyntheticSet:
    """The labelled set: who each row is, its controls and its binary attributes.

    Attributes:
        identities: ``(I, P)`` identity parameters.
        identity_of_row: ``(N,)`` int64 index into ``identities`` (identity-major rows).
        controls: ``(N, 8)`` float32 controls in :data:`~fr_invariance.attributes.ATTRIBUTE_NAMES` order.
        attributes: ``(N, A)`` int8 frame (−1 / +1): the 8 image attributes, then the identity attributes.
        kinds: attribute → ``semantic`` / ``image`` (per image) or ``identity`` (per identity).
    """

    identities: torch.Tensor
    identity_of_row: np.ndarray
    controls: torch.Tensor
    attributes: pd.DataFrame
    kinds: dict[str, str]

    def __len__(self) -> int:
        return int(self.identity_of_row.shape[0])

    @property
    def identity_labels(self) -> np.ndarray:
        """``(N,)`` identity label of each row (its index in ``identities``)."""
        return self.identity_of_row.copy()

    def iter_images(self, *, image_size: int, batch_size: int = 256, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        """Rendered rows in order, ``(≤ batch_size, 3, S, S)`` RGB in [0, 1] on ``device``."""
        if batch_size < 1:
            raise LabelledSyntheticError(f"batch_size must be >= 1, got {batch_size}.")
        identities, controls = self.identities.to(device), self.controls.to(device)
        rows = torch.from_numpy(self.identity_of_row).to(device)
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield render(identities[rows[start:stop]], controls[start:stop], size=image_size, device=device)


def build_labelled_synthetic(
    n_identities: int = 200,
    images_per_identity: int = 12,
    *,
    identity_seed: int = 20000,
    seed: int = 0,
    concentration: Mapping[str, float] | None = None,
    control_range: tuple[float, float] = (0.2, 0.8),
) -> LabelledSyntheticSet:
    """Build the set described in the module docstring.

    Args:
        n_identities: identities (≥ 4: every analysis needs identities on both sides of a split).
        images_per_identity: renders per identity (≥ 2).
        identity_seed: seed of ``sample_identities`` (keep it away from training seeds: held-out faces).
        seed: seed of the per-identity shares, labels and control magnitudes.
        concentration: per image attribute Beta concentration (missing ones use
            :data:`DEFAULT_CONCENTRATION`).
        control_range: ``(low, high)`` of ``|t|``, with ``0 ≤ low < high ≤ 1``.
    """
    if n_identities < 4:
        raise LabelledSyntheticError(f"data.n_identities={n_identities}: use at least 4 identities.")
    if images_per_identity < 2:
        raise LabelledSyntheticError(f"data.images_per_identity={images_per_identity}: use at least 2 images per identity.")
    low, high = (float(v) for v in control_range)
    if not 0.0 <= low < high <= 1.0:
        raise LabelledSyntheticError(f"data.control_range={list(control_range)} must satisfy 0 <= low < high <= 1.")
    given = dict(concentration or {})
    unknown = sorted(set(given) - set(ATTRIBUTE_NAMES))
    if unknown:
        raise LabelledSyntheticError(f"data.concentration names unknown attributes {unknown}; valid: {', '.join(ATTRIBUTE_NAMES)}.")
    levels = {**DEFAULT_CONCENTRATION, **{k: float(v) for k, v in given.items()}}
    if any(v <= 0 for v in levels.values()):
        raise LabelledSyntheticError(f"data.concentration values must be > 0, got {levels}.")

    identities = sample_identities(int(n_identities), int(identity_seed))
    n_rows = int(n_identities) * int(images_per_identity)
    identity_of_row = np.repeat(np.arange(n_identities, dtype=np.int64), images_per_identity)
    rng = np.random.default_rng([int(seed), int(identity_seed)])
    labels = np.empty((n_rows, len(ATTRIBUTE_NAMES)), dtype=np.int8)
    for column, name in enumerate(ATTRIBUTE_NAMES):
        c = levels[name]
        share = rng.beta(c / 2.0, c / 2.0, size=n_identities)
        positive = rng.random(n_rows) < share[identity_of_row]
        labels[:, column] = np.where(positive, 1, -1)
    magnitude = rng.uniform(low, high, size=labels.shape)
    controls = torch.as_tensor(labels * magnitude, dtype=torch.float32)

    frame = pd.DataFrame(labels, columns=list(ATTRIBUTE_NAMES))
    kinds = {name: ATTRIBUTES[name].kind for name in ATTRIBUTE_NAMES}
    for name, per_identity in identity_attributes(identities).items():
        frame[name] = per_identity[identity_of_row]
        kinds[name] = "identity"
    return LabelledSyntheticSet(identities, identity_of_row, controls, frame, kinds)

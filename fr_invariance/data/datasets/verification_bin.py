"""insightface verification ``.bin`` pair sets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW layout), without MXNet.

A ``.bin`` is a pickle of ``(list of encoded images, list of bools issame)``; images ``2i`` and ``2i+1``
form pair ``i``. It is read with the project's restricted unpickler
(:func:`fr_invariance.data.safe_pickle.read_verification_bin`), never with plain ``pickle.load``.
Evaluation follows DESIGN §11 (:mod:`fr_invariance.metrics.verification`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fr_invariance.data.datasets.base import BadSampleCounter, CorruptImageError, decode_image, to_chw_tensor
from fr_invariance.data.safe_pickle import VerificationBinError, read_verification_bin
from fr_invariance.data.verification_pairs import VerificationSet, VerificationSource
from fr_invariance.errors import MissingPathError


def write_verification_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> Path:
    """Write ``(images, issame)`` as insightface does (a pickle of a list of encoded images and a list of bools)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(([bytes(image) for image in images], [bool(flag) for flag in issame]), handle, protocol=4)
    return path


def load_verification_bin(path: str | Path, image_size: int = 112, max_bad_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a ``.bin``: images ``(2P', 3, S, S)`` uint8 RGB and ``issame`` ``(P',)`` bool.

    A pair with an undecodable image is dropped (warned, counted against ``max_bad_fraction`` of the
    pairs). Raises :class:`~fr_invariance.data.safe_pickle.VerificationBinError` (a ConfigurationError) for
    an image count that is odd or not twice the number of flags, or a file that is not a ``.bin``;
    MissingPathError (a FileNotFoundError) for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Verification set {path} not found (data.val_bins / bins= take paths to .bin files).")
    encoded, issame = read_verification_bin(path)
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    counter = BadSampleCounter(f"the pairs of {path}", int(issame.size), max_bad_fraction)
    images, kept = [], []
    for pair in range(issame.size):
        try:
            first = decode_image(encoded[2 * pair], image_size, f"{2 * pair} of {path}")
            second = decode_image(encoded[2 * pair + 1], image_size, f"{2 * pair + 1} of {path}")
        except CorruptImageError as error:
            counter.add(pair, str(error))
            continue
        images += [to_chw_tensor(first), to_chw_tensor(second)]
        kept.append(pair)
    if not kept:
        raise VerificationBinError(f"No pair of {path} could be decoded.")
    return torch.stack(images), torch.from_numpy(issame[kept])


class BinPairs(VerificationSource):
    """One ``.bin`` file as a validation set named after its stem (``lfw.bin`` → ``val/lfw/acc``)."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem

    def load(self, image_size: int, max_bad_fraction: float = 0.0) -> list[VerificationSet]:
        images, issame = load_verification_bin(self.path, image_size, max_bad_fraction)
        return [VerificationSet(self.name, images, issame)]

"""What every face dataset on disk shares: decoding to fixed-size uint8 items, skipping corrupt samples
with a count, and the errors a data file can cause.

A training item is ``(image, label, index, problem)``: ``image`` a uint8 tensor ``(3, S, S)`` RGB (or
``None`` when the sample could not be decoded), ``label`` the identity in ``0..K-1``, ``index`` the
sample's position in the dataset, ``problem`` ``""`` or a one-line description of what was wrong.
:func:`collate_faces` drops the bad items from a batch and passes their descriptions on, so the
:class:`~fr_invariance.data.module.FaceDataModule` can count them (in the main process, across
workers) and fail when too many are bad. Images stay uint8 until they reach the model's device, where
the image-level attribute augmentation runs (:func:`fr_invariance.image_ops.apply_image_attributes`,
the renderer's own definition).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fr_invariance.errors import ConfigurationError, InputDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataFormatError(InputDataError, ConfigurationError):
    """A data file that does not follow its format (wrong magic, bad index, odd pair count...);
    the message names the file and the fix. Both an input-data and a configuration error (the fix is
    the data, or the config that points at it)."""


class TooManyBadSamplesError(DataFormatError):
    """More than ``max_bad_fraction`` of a dataset could not be decoded."""


class CorruptImageError(ValueError):
    """One encoded image could not be decoded (skipped and counted during training)."""


def decode_image(encoded: bytes | np.ndarray, size: int | None, source: str) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG...) to ``(S, S, 3)`` uint8 RGB.

    Grayscale and alpha become RGB. With ``size`` the image is resized to ``size × size`` when it is
    not already (area interpolation when shrinking, bilinear when enlarging; aligned face crops are
    square). ``source`` names the file/record in the :class:`CorruptImageError` message.
    """
    buffer = np.frombuffer(encoded, dtype=np.uint8) if isinstance(encoded, (bytes, bytearray, memoryview)) else encoded
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise CorruptImageError(f"Cannot decode image {source}: corrupt, truncated or not an image.")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None and image.shape[:2] != (size, size):
        shrinking = image.shape[0] * image.shape[1] > size * size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return image


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` uint8 tensor (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


FaceItem = tuple[torch.Tensor | None, int, int, str]


class FaceImageDataset(Dataset):
    """Base of the map-style training datasets over encoded images (image folder, RecordIO, generated).

    Subclasses implement :meth:`_index` (scan the files: called once, by :meth:`setup`, never in
    ``__init__``) and :meth:`_read` (encoded bytes of sample ``i``). Labels are ``0..K-1``.

    Args:
        image_size: side ``S`` of the returned square images in pixels.

    Attributes:
        carried_attributes: attribute names whose controls the dataset knows per sample (only the
            generated-images dataset has any); a semantic attribute can be targeted only if carried.
    """

    carried_attributes: tuple[str, ...] = ()

    def __init__(self, image_size: int = 112) -> None:
        if int(image_size) < 1:
            raise ConfigurationError(f"data.image_size={image_size} must be a positive number of pixels.")
        self.image_size = int(image_size)
        self._labels: np.ndarray | None = None
        self._class_names: list[str] | None = None

    @abstractmethod
    def _index(self) -> tuple[np.ndarray, list[str]]:
        """Scan the data: labels ``(N,)`` int64 in ``0..K-1`` and the ``K`` class names."""

    def _read(self, index: int) -> bytes:
        """Encoded bytes of sample ``index``: by default the file named by :meth:`describe` (datasets of
        records override this); raises :class:`CorruptImageError` for an unreadable sample."""
        path = Path(self.describe(index))
        try:
            return path.read_bytes()
        except OSError as error:
            raise CorruptImageError(f"Cannot read image {path}: {error.strerror or error}.") from error

    def describe(self, index: int) -> str:
        """Human name of sample ``index`` (file path, record key) for warnings."""
        return f"sample {index}"

    def setup(self) -> None:
        """Read the index (idempotent; the data module calls it from its own ``setup``)."""
        if self._labels is None:
            labels, names = self._index()
            self._labels = np.asarray(labels, dtype=np.int64)
            self._class_names = list(names)

    @property
    def labels(self) -> np.ndarray:
        """Identity label of every sample ``(N,)`` int64 (reads the index on first use)."""
        self.setup()
        return self._labels

    @property
    def class_names(self) -> list[str]:
        """Name of every identity (folder name, record label...)."""
        self.setup()
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Number of identities ``K`` (reads the index on first use)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index`` decoded to ``(S, S, 3)`` uint8 RGB (raises :class:`CorruptImageError`)."""
        return decode_image(self._read(index), self.image_size, self.describe(index))

    def __getitem__(self, index: int) -> FaceItem:
        label = int(self.labels[index])
        try:
            image = to_chw_tensor(self.load_image(index))
        except CorruptImageError as error:
            return None, label, int(index), str(error)
        return image, label, int(index), ""


def collate_faces(items: Sequence[FaceItem]) -> dict[str, object]:
    """Batch ``FaceItem`` s: ``{"images": uint8 (B', 3, S, S), "labels": int64 (B',), "bad": [(index, problem)]}``
    where ``B'`` counts the decodable items only."""
    good = [item for item in items if item[0] is not None]
    images = torch.stack([item[0] for item in good]) if good else torch.empty(0, dtype=torch.uint8)
    labels = torch.tensor([item[1] for item in good], dtype=torch.int64)
    return {"images": images, "labels": labels, "bad": [(item[2], item[3]) for item in items if item[0] is None]}


@dataclass
class BadSampleCounter:
    """Counts distinct bad samples of one dataset and fails past ``max_bad_fraction`` of it.

    Each bad sample is warned about once (``warnings.warn``, with the running count); the run fails with
    :class:`TooManyBadSamplesError` naming the last bad file when the count exceeds
    ``max_bad_fraction × dataset_size``.
    """

    dataset_name: str
    dataset_size: int
    max_bad_fraction: float
    bad: dict[int, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.bad)

    def add(self, index: int, problem: str) -> None:
        if index in self.bad:
            return
        self.bad[index] = problem
        allowed = int(self.max_bad_fraction * self.dataset_size)
        if self.count > allowed:
            raise TooManyBadSamplesError(
                f"{self.count} of {self.dataset_size} samples of {self.dataset_name} are unreadable, more than "
                f"data.max_bad_fraction={self.max_bad_fraction:g} allows; last: {problem} "
                "Remove or re-encode the bad files, or raise data.max_bad_fraction."
            )
        warnings.warn(
            f"Skipped a bad sample ({self.count} of {self.dataset_size} so far in {self.dataset_name}): {problem}",
            stacklevel=2,
        )

"""A face dataset over an image folder tree: ``root/<identity>/<image>.{jpg,jpeg,png,bmp}``."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class CorruptImageError(ValueError):
    """Raised when an image file cannot be decoded."""


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _scan_identities(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Identity folder names (sorted) and ``(image path, label)`` pairs, images sorted per identity."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder root {root} does not exist or is not a directory; expected "
            f"root/<identity>/<image> with images {', '.join(IMAGE_EXTENSIONS)}."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"No identity folders in {root}; expected one sub-folder per identity (root/<identity>/<image>)."
        )
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        images = sorted(p for p in (root / name).iterdir() if _is_image(p))
        if not images:
            empty.append(name)
        samples.extend((str(path), label) for path in images)
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise FileNotFoundError(
            f"{len(empty)} identity folder(s) in {root} contain no image ({', '.join(IMAGE_EXTENSIONS)}): "
            f"{shown}. Add images or remove those folders."
        )
    return classes, samples


def read_rgb_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale and alpha are converted)."""
    encoded = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
    if image is None:
        raise CorruptImageError(
            f"Cannot decode image {path}: the file is corrupt or not an image. Remove it from the dataset."
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageFolderFaces(Dataset):
    """Face images with identity labels from ``root/<identity>/<image>``.

    Labels are ``0..K-1`` in sorted identity-folder order (``classes[label]`` is the folder name);
    ``samples`` lists ``(path, label)``. An item is ``(image, label)`` with ``image`` a float32
    tensor ``(3, H, W)``, RGB in ``[0, 1]``: decoded, converted to RGB, resized to
    ``image_size × image_size`` if needed (area interpolation when shrinking, bilinear when
    enlarging; aligned face crops are expected to be square), then passed as ``uint8`` HWC through
    ``augmentation`` (an albumentations pipeline returning a numpy HWC image, uint8 or float32 in
    ``[0, 1]``).
    """

    def __init__(self, root: str | Path, image_size: int = 112, augmentation: A.Compose | None = None):
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be a positive number of pixels.")
        self.root = Path(root)
        self.image_size = image_size
        self.augmentation = augmentation
        self.classes, self.samples = _scan_identities(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[item]
        image = read_rgb_image(path)
        height, width = image.shape[:2]
        if (height, width) != (self.image_size, self.image_size):
            shrinking = height * width > self.image_size**2
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=interpolation)
        if self.augmentation is not None:
            image = self.augmentation(image=image)["image"]
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise TypeError(
                "The augmentation must return an (H, W, 3) numpy image; do not end it with ToTensorV2 "
                "(this dataset converts to a tensor itself)."
            )
        pixels = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), label

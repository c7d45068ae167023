"""CelebA-format attribute tables and images (DESIGN §6, §10).

Files under ``root``::

    list_attr_celeba.txt   line 1: number of images N; line 2: the attribute names (whitespace separated);
                           then N lines ``<image> v_1 ... v_A`` with v in {-1, 1}
    identity_CelebA.txt    N lines ``<image> <identity>``
    img_align_celeba/      the images named in both files

:func:`read_celeba_annotations` joins the two tables (images present in both; an image listed in only one is
an error naming how many), keeps identities with at least ``min_images`` images (the paper's 30), and
returns one row per image in file order. :class:`CelebAFaces` decodes those images for embedding:
centre-cropped to a square (CelebA's aligned crops are 178 × 218) and resized to ``image_size``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fr_invariance.data.datasets.base import (
    DataFormatError,
    FaceImageDataset,
    decode_image,
)
from fr_invariance.errors import MissingPathError

ATTRIBUTE_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_DIR = "img_align_celeba"
MIN_IMAGES = 30


def _read_attribute_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingPathError(f"CelebA attribute file not found: {path} (expected {ATTRIBUTE_FILE} in the CelebA root).")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DataFormatError(f"{path}: line 1 must be the image count and line 2 the attribute names.")
    count, names, rows = int(lines[0][0]), lines[1], lines[2:]
    if len(rows) != count:
        raise DataFormatError(f"{path}: line 1 announces {count} images but {len(rows)} rows follow; fix the count or the rows.")
    bad = next((k for k, row in enumerate(rows) if len(row) != len(names) + 1), None)
    if bad is not None:
        raise DataFormatError(
            f"{path}: row {bad + 3} has {len(rows[bad]) - 1} values for {len(names)} attributes; every row is "
            "'<image> v_1 ... v_A'."
        )
    values = np.array([row[1:] for row in rows], dtype=np.int64) if rows else np.zeros((0, len(names)), np.int64)
    if values.size and not np.isin(values, (-1, 1)).all():
        raise DataFormatError(f"{path}: attribute values must be -1 or 1.")
    frame = pd.DataFrame(values.astype(np.int8), columns=names)
    frame.insert(0, "image", [row[0] for row in rows])
    return frame


def _read_identity_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingPathError(f"CelebA identity file not found: {path} (expected {IDENTITY_FILE} in the CelebA root).")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((k for k, row in enumerate(rows) if len(row) != 2), None)
    if bad is not None:
        raise DataFormatError(f"{path}: line {bad + 1} is not '<image> <identity>'.")
    return pd.DataFrame(rows, columns=["image", "identity"])


def read_celeba_annotations(
    root: str | Path,
    *,
    min_images: int = MIN_IMAGES,
    attributes: list[str] | None = None,
    attribute_file: str = ATTRIBUTE_FILE,
    identity_file: str = IDENTITY_FILE,
) -> pd.DataFrame:
    """One row per kept image: ``image``, ``identity`` (string), then the attributes (int8, −1/+1).

    Args:
        min_images: keep identities with at least this many images.
        attributes: keep only these attribute columns (all when None); unknown names are an error.

    Raises:
        FileNotFoundError: a file is missing. DataFormatError: malformed rows, images in only one file, an
        unknown attribute, or no identity left after the filter.
    """
    root = Path(root)
    table = _read_attribute_file(root / attribute_file)
    ids = _read_identity_file(root / identity_file)
    only_attr = set(table["image"]) - set(ids["image"])
    only_ids = set(ids["image"]) - set(table["image"])
    if only_attr or only_ids:
        raise DataFormatError(
            f"{root}: {len(only_attr)} image(s) have attributes but no identity and {len(only_ids)} an identity but "
            f"no attributes (e.g. {sorted(only_attr | only_ids)[:3]}); the two files must list the same images."
        )
    merged = table.merge(ids, on="image", how="left", validate="one_to_one")
    names = [c for c in table.columns if c != "image"]
    if attributes is not None:
        unknown = sorted(set(attributes) - set(names))
        if unknown:
            raise DataFormatError(f"{root / attribute_file}: unknown attribute(s) {unknown}; available: {', '.join(names)}.")
        names = list(attributes)
    counts = merged["identity"].map(merged["identity"].value_counts())
    kept = merged[counts >= int(min_images)]
    if kept.empty:
        raise DataFormatError(
            f"{root}: no identity has >= {min_images} images (data.min_images); lower it for a small CelebA subset."
        )
    return kept[["image", "identity", *names]].reset_index(drop=True)


class CelebAFaces(FaceImageDataset):
    """Images of :func:`read_celeba_annotations` (labels = identity index in sorted identity order).

    Args:
        root: the CelebA folder (both text files and ``image_dir`` inside).
        image_size: side of the returned square images (centre-cropped, then resized).
        min_images, attributes: as :func:`read_celeba_annotations`.
        image_dir: the image folder inside ``root``.
        crop: ``center`` (crop the largest centred square first) or ``none`` (resize as is).
    """

    def __init__(self, root: str | Path, image_size: int = 112, *, min_images: int = MIN_IMAGES,
                 attributes: list[str] | None = None, image_dir: str = IMAGE_DIR, crop: str = "center") -> None:
        super().__init__(image_size)
        if crop not in ("center", "none"):
            raise DataFormatError(f"crop must be 'center' or 'none', got {crop!r}.")
        self.root = Path(root)
        self.image_dir = self.root / image_dir
        if not self.image_dir.is_dir():
            raise MissingPathError(f"CelebA image folder not found: {self.image_dir} (data.celeba_image_dir).")
        self.crop = crop
        self.table = read_celeba_annotations(self.root, min_images=min_images, attributes=attributes)

    @property
    def attributes(self) -> pd.DataFrame:
        """``(N, A)`` int8 attribute frame, rows aligned with the dataset."""
        return self.table.drop(columns=["image", "identity"]).reset_index(drop=True)

    @property
    def identities(self) -> np.ndarray:
        """``(N,)`` identity of every image (strings from ``identity_CelebA.txt``)."""
        return self.table["identity"].to_numpy()

    def _index(self) -> tuple[np.ndarray, list[str]]:
        names, labels = np.unique(self.table["identity"].to_numpy(), return_inverse=True)
        return labels.reshape(-1).astype(np.int64), [str(n) for n in names]

    def describe(self, index: int) -> str:
        return str(self.image_dir / self.table["image"].iat[index])

    def load_image(self, index: int) -> np.ndarray:
        image = decode_image(self._read(index), None, self.describe(index))
        if self.crop == "center":
            height, width = image.shape[:2]
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            image = image[top : top + side, left : left + side]
        if image.shape[:2] != (self.image_size, self.image_size):
            shrinking = image.shape[0] * image.shape[1] > self.image_size**2
            image = cv2.resize(image, (self.image_size, self.image_size),
                               interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return np.ascontiguousarray(image)

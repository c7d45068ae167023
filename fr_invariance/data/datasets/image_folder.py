"""Face images in an image folder tree: ``root/<identity>/<image>.{jpg,jpeg,png,bmp,webp}``.

The file list comes from torchvision's ``make_dataset`` (sorted, recursive inside each identity folder,
extensions case-insensitive); identity folders are the non-hidden sub-folders of ``root`` in sorted
order, so ``label k`` is ``class_names[k]``. Nothing is read before :meth:`setup`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.folder import make_dataset

from fr_invariance.data.datasets.base import IMAGE_EXTENSIONS, DataFormatError, FaceImageDataset
from fr_invariance.errors import ConfigurationError, MissingPathError


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Identity folder names (sorted) and ``(image path, label)`` pairs (sorted per identity).

    Raises :class:`~fr_invariance.errors.MissingPathError` naming ``root`` when it is missing,
    :class:`DataFormatError` when it holds no identity folder or some identity folders hold no image.
    """
    if not root.is_dir():
        raise MissingPathError(
            f"Image folder root {root} does not exist or is not a directory; expected "
            f"root/<identity>/<image> with images {', '.join(IMAGE_EXTENSIONS)}."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(
            f"No identity folders in {root}; expected one sub-folder per identity (root/<identity>/<image>)."
        )
    samples = make_dataset(
        str(root),
        {name: label for label, name in enumerate(classes)},
        is_valid_file=lambda path: Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith("."),
        allow_empty=True,
    )
    present = {label for _, label in samples}
    empty = [name for label, name in enumerate(classes) if label not in present]
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataFormatError(
            f"{len(empty)} identity folder(s) in {root} contain no image ({', '.join(IMAGE_EXTENSIONS)}): "
            f"{shown}. Add images or remove those folders."
        )
    return classes, samples


class ImageFolderFaces(FaceImageDataset):
    """Identities from ``root/<identity>/<image>`` (see :class:`FaceImageDataset` for the items).

    Args:
        root: the folder tree.
        image_size: side of the returned images in pixels (resized when the files differ).
    """

    def __init__(self, root: str | Path | None, image_size: int = 112) -> None:
        super().__init__(image_size)
        self.root = Path(root) if root is not None else None  # None: no data (an optional held-out set)
        self._samples: list[tuple[str, int]] = []

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` of every image (scans the folder on first use)."""
        self.setup()
        return self._samples

    def _index(self) -> tuple[np.ndarray, list[str]]:
        if self.root is None:
            raise ConfigurationError("data.root is not set: give data.root=DIR (DIR/<identity>/<image>).")
        classes, self._samples = scan_image_folder(self.root)
        return np.array([label for _, label in self._samples], dtype=np.int64), classes

    def describe(self, index: int) -> str:
        return self.samples[index][0]

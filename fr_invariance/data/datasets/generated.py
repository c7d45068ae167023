"""Images from a user's own generator together with their controls (DESIGN §10), e.g. GAN-Control renders.

Layout: a folder of images plus a CSV table (default ``controls.csv`` in that folder) with columns
``path`` (relative to the folder, or absolute), ``identity`` (any name or number), and one column per
attribute whose control the generator set, named as in the attribute registry (``head_angle``, ``age``,
...) with values in ``[-1, 1]``. Labels are the identities in sorted order.

Because every image carries its controls, semantic attributes can be targeted here: training keeps the
images whose carried controls fall inside the run's ranges (the targeted attribute within
``±aug.strength``, every other carried attribute within its nuisance range ``±aug.nuisance.<name>``),
which is the rendered data's distribution restricted to what the generator produced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fr_invariance.attributes import ATTRIBUTE_NAMES
from fr_invariance.data.datasets.base import DataFormatError, FaceImageDataset
from fr_invariance.errors import ConfigurationError, MissingPathError

REQUIRED_COLUMNS = ("path", "identity")


class GeneratedFaces(FaceImageDataset):
    """Generated face images with per-image attribute controls (see the module docstring).

    Args:
        root: folder of the images.
        table: the CSV (relative to ``root`` or absolute).
        image_size: side of the returned images in pixels.

    Attributes (after :meth:`setup`):
        paths: image path per sample; ``controls``: ``(N, len(carried_attributes))`` float32.
    """

    may_carry_controls = True

    def __init__(self, root: str | Path | None, table: str | Path = "controls.csv", image_size: int = 112) -> None:
        super().__init__(image_size)
        self.root = Path(root) if root is not None else None  # None: no data (an optional held-out set)
        self.table_path = Path(table) if Path(table).is_absolute() or self.root is None else self.root / table
        self.paths: list[str] = []
        self.controls = np.zeros((0, 0), dtype=np.float32)
        self._carried: tuple[str, ...] = ()

    @property
    def carried_attributes(self) -> tuple[str, ...]:  # type: ignore[override]
        """Attributes with a column in the table (reads the table on first use)."""
        self.setup()
        return self._carried

    def _index(self) -> tuple[np.ndarray, list[str]]:
        if self.root is None:
            raise ConfigurationError("data.root is not set: give data.root=DIR with the images and their controls table.")
        if not self.table_path.is_file():
            raise MissingPathError(
                f"Controls table {self.table_path} not found: data=generated needs data.root=DIR with the images "
                "and a CSV (data.table) with columns path, identity and one column per attribute control."
            )
        table = pd.read_csv(self.table_path)
        missing = [name for name in REQUIRED_COLUMNS if name not in table.columns]
        if missing:
            raise DataFormatError(f"{self.table_path} lacks column(s) {', '.join(missing)}; it needs path, identity, "
                                  f"then attribute controls ({', '.join(ATTRIBUTE_NAMES)}).")
        unknown = [c for c in table.columns if c not in REQUIRED_COLUMNS and c not in ATTRIBUTE_NAMES]
        if unknown:
            raise DataFormatError(f"{self.table_path}: column(s) {', '.join(map(str, unknown))} are not attributes; "
                                  f"control columns must be named {', '.join(ATTRIBUTE_NAMES)}.")
        if table.empty:
            raise DataFormatError(f"{self.table_path} has no rows.")
        self._carried = tuple(c for c in ATTRIBUTE_NAMES if c in table.columns)
        controls = table[list(self._carried)].to_numpy(dtype=np.float64) if self._carried else np.zeros((len(table), 0))
        outside = ~np.isfinite(controls) | (np.abs(controls) > 1.0)
        if outside.any():
            row, column = map(int, np.argwhere(outside)[0])
            raise DataFormatError(
                f"{self.table_path} row {row + 2}: {self._carried[column]} = {controls[row, column]} is outside [-1, 1] "
                "(controls use the registry's scale, 0 = neutral); rescale the column."
            )
        self.controls = controls.astype(np.float32)
        self.paths = [str(p if Path(p).is_absolute() else self.root / p) for p in table["path"].astype(str)]
        names, labels = np.unique(table["identity"].astype(str).to_numpy(), return_inverse=True)
        return labels.astype(np.int64), [str(n) for n in names]

    def restrict(self, half_widths: dict[str, float]) -> int:
        """Keep only samples whose carried control ``a`` lies in ``[-half_widths[a], half_widths[a]]`` for
        every carried attribute; returns the number kept (identity labels are unchanged)."""
        self.setup()
        keep = np.ones(len(self.paths), dtype=bool)
        for column, name in enumerate(self._carried):
            keep &= np.abs(self.controls[:, column]) <= half_widths[name] + 1e-6
        if not keep.any():
            ranges = ", ".join(f"{name} ±{half_widths[name]:g}" for name in self._carried)
            raise DataFormatError(
                f"No image of {self.table_path} has its controls inside this run's ranges ({ranges}); widen them "
                "(aug.strength for the targeted attribute, aug.nuisance.<name> for the others)."
            )
        self.paths = [path for path, kept in zip(self.paths, keep) if kept]
        self.controls = self.controls[keep]
        self._labels = self._labels[keep]
        return int(keep.sum())

    def describe(self, index: int) -> str:
        self.setup()
        return self.paths[index]

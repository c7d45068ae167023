"""Precomputed, attribute-labelled embeddings on disk: the input of the macroscale, clustering and
cross-model analyses for models the product cannot load.

Format (one folder)::

    embeddings.npy   (N, D) float16/32/64 array, read with allow_pickle=False (no object arrays)
    meta.csv         N rows, same order: a column `identity` (any string or integer) and one column per
                     binary attribute with values -1 / +1 (also accepted: 0 / 1 and false / true, read as
                     -1 / +1). Optional columns `path`, `image` and `file` (image file names) are kept
                     aside and never treated as attributes.

Two folders hold "the same images in the same order" (what the cross-model analysis needs) when their
`identity` columns, and their `path`/`image`/`file` columns if both have one, are equal row by row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fr_invariance.atomic import atomic_writer
from fr_invariance.errors import ConfigurationError, MissingPathError

EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.csv"
IDENTITY_COLUMN = "identity"
NAME_COLUMNS = ("path", "image", "file")
"""Optional per-row image names: kept, compared across folders, never attributes."""


class EmbeddingsTableError(ConfigurationError):
    """A folder that is not a valid embeddings table (missing file, wrong shape, non-binary attribute...)."""


@dataclass
class EmbeddingsTable:
    """Embeddings with identities and binary attributes, rows aligned.

    Attributes:
        embeddings: ``(N, D)`` float32.
        identities: ``(N,)`` identity labels as text, exactly as written (``0001`` stays ``0001``).
        attributes: ``(N, A)`` int8 frame with values −1 / +1, one column per attribute.
        names: ``(N,)`` image names from a ``path``/``image``/``file`` column, or None.
        kinds: attribute → kind (``image``, ``semantic``, ``identity``, ``annotated``...), for reports.
        path: the folder read from (None when built in memory).
    """

    embeddings: np.ndarray
    identities: np.ndarray
    attributes: pd.DataFrame
    names: np.ndarray | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.identities = np.asarray(self.identities).astype(str)
        n = self.embeddings.shape[0]
        if self.embeddings.ndim != 2:
            raise EmbeddingsTableError(f"embeddings must be (N, D), got shape {self.embeddings.shape}.")
        if len(self.identities) != n or len(self.attributes) != n or (self.names is not None and len(self.names) != n):
            raise EmbeddingsTableError(
                f"embeddings ({n} rows), identities ({len(self.identities)}) and attributes ({len(self.attributes)}) "
                "must have one row per image."
            )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def attribute_names(self) -> list[str]:
        return list(self.attributes.columns)


def _binary_column(values: pd.Series, column: str, source: Path) -> np.ndarray:
    """−1/+1 int8 from a column of −1/+1, 0/1 or booleans."""
    if values.dtype == bool:
        return np.where(values.to_numpy(), 1, -1).astype(np.int8)
    if values.dtype == object:
        lowered = values.astype(str).str.strip().str.lower()
        if lowered.isin(["true", "false"]).all():
            return np.where(lowered == "true", 1, -1).astype(np.int8)
    numeric = pd.to_numeric(values, errors="coerce")
    present = set(np.unique(numeric.dropna().to_numpy()).tolist())
    if numeric.isna().any() or not (present <= {-1, 1} or present <= {0, 1}):
        shown = sorted(map(str, set(values.astype(str).unique())))[:5]
        raise EmbeddingsTableError(
            f"{source}: column {column!r} is not a binary attribute (values {shown}); use -1/+1 (or 0/1) or "
            f"rename it to one of {', '.join(NAME_COLUMNS)} if it names the image."
        )
    as_int = numeric.to_numpy().astype(np.int64)
    return np.where(as_int == 1, 1, -1).astype(np.int8) if present <= {0, 1} and 0 in present else as_int.astype(np.int8)


def read_embeddings_table(path: str | Path) -> EmbeddingsTable:
    """Read a folder holding ``embeddings.npy`` + ``meta.csv`` (format in the module docstring).

    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        EmbeddingsTableError: object arrays, wrong shape, non-finite values, row mismatch, no ``identity``
            column, or a non-binary attribute column.
    """
    path = Path(path)
    embeddings_file, meta_file = path / EMBEDDINGS_FILE, path / META_FILE
    for required in (embeddings_file, meta_file):
        if not required.is_file():
            raise MissingPathError(
                f"{required} not found: an embeddings folder holds {EMBEDDINGS_FILE} (N, D) and {META_FILE} "
                f"(columns {IDENTITY_COLUMN}, <binary attributes...>)."
            )
    try:
        embeddings = np.load(embeddings_file, allow_pickle=False)
    except ValueError as error:
        raise EmbeddingsTableError(f"{embeddings_file}: {error}; save a plain float array (np.save, no objects).") from error
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise EmbeddingsTableError(f"{embeddings_file} must be a 2-D float array (N, D), got {embeddings.dtype} {embeddings.shape}.")
    if not np.isfinite(embeddings).all():
        raise EmbeddingsTableError(f"{embeddings_file} holds NaN or infinite values; re-export the embeddings.")
    # identities and names as written ('0001' must not become 1, nor 'NA' a missing value); only '' is missing
    meta = pd.read_csv(meta_file, dtype={IDENTITY_COLUMN: str, **dict.fromkeys(NAME_COLUMNS, str)},
                       keep_default_na=False, na_values=[""])
    if IDENTITY_COLUMN not in meta.columns:
        raise EmbeddingsTableError(f"{meta_file} has no {IDENTITY_COLUMN!r} column (columns: {', '.join(meta.columns)}).")
    if len(meta) != embeddings.shape[0]:
        raise EmbeddingsTableError(
            f"{meta_file} has {len(meta)} rows but {embeddings_file} has {embeddings.shape[0]}; one row per image."
        )
    if meta[IDENTITY_COLUMN].isna().any():
        raise EmbeddingsTableError(f"{meta_file}: empty {IDENTITY_COLUMN!r} values; every image needs an identity.")
    name_column = next((c for c in NAME_COLUMNS if c in meta.columns), None)
    attribute_columns = [c for c in meta.columns if c != IDENTITY_COLUMN and c not in NAME_COLUMNS]
    attributes = pd.DataFrame({c: _binary_column(meta[c], c, meta_file) for c in attribute_columns}, index=meta.index)
    return EmbeddingsTable(
        embeddings=embeddings.astype(np.float32, copy=False),
        identities=meta[IDENTITY_COLUMN].to_numpy(),
        attributes=attributes.reset_index(drop=True),
        names=meta[name_column].astype(str).to_numpy() if name_column else None,
        kinds={c: "annotated" for c in attribute_columns},
        path=path,
    )


def write_embeddings_table(
    path: str | Path,
    embeddings: np.ndarray,
    identities: np.ndarray,
    attributes: pd.DataFrame | Mapping[str, np.ndarray],
    *,
    names: np.ndarray | None = None,
) -> Path:
    """Write ``embeddings.npy`` (float32) and ``meta.csv`` into ``path`` (created); return the folder."""
    path = Path(path)
    frame = pd.DataFrame(attributes).reset_index(drop=True)
    table = EmbeddingsTable(np.asarray(embeddings, dtype=np.float32), np.asarray(identities), frame,
                            None if names is None else np.asarray(names))
    for column in frame.columns:
        if column == IDENTITY_COLUMN or column in NAME_COLUMNS:
            raise EmbeddingsTableError(f"attribute name {column!r} is reserved; rename the attribute.")
        _binary_column(frame[column], column, path / META_FILE)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path / EMBEDDINGS_FILE, "wb") as handle:
        np.save(handle, table.embeddings, allow_pickle=False)
    meta = pd.concat([pd.DataFrame({IDENTITY_COLUMN: table.identities}), frame], axis=1)
    if names is not None:
        meta.insert(1, "path", np.asarray(names))
    with atomic_writer(path / META_FILE, "w") as handle:
        meta.to_csv(handle, index=False)
    return path


def same_images(first: EmbeddingsTable, second: EmbeddingsTable) -> bool:
    """True when both tables list the same images in the same order (identities, and names if both have)."""
    if len(first) != len(second):
        return False
    if not np.array_equal(first.identities.astype(str), second.identities.astype(str)):
        return False
    if first.names is not None and second.names is not None:
        return bool(np.array_equal(first.names, second.names))
    return True

"""Read and write the paper-C lattice embeddings layout (DESIGN §4).

A directory holds ``df_param_step.csv`` (one row per image-in-curve: ``id_curve, moving_dimension,
param_step, index``) and one ``<identity>.npy`` per identity: an ``(N, D)`` array whose row ``index``
is the embedding of that image. The table is the same for every identity (and every model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from fr_invariance.synth.designs import TABLE_COLUMNS
from fr_invariance.errors import InputDataError, MissingPathError

TABLE_FILENAME = "df_param_step.csv"


class PaperFormatError(InputDataError):
    """Raised for a table or embedding array that does not fit the layout."""


def _check_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """The four layout columns (extra columns, e.g. a saved pandas index, are dropped), with
    ``moving_dimension`` as str and non-negative integer ``index``."""
    missing = [column for column in TABLE_COLUMNS if column not in table.columns]
    if missing:
        raise PaperFormatError(f"{source} lacks column(s) {missing}; the layout needs {list(TABLE_COLUMNS)}.")
    table = table.loc[:, list(TABLE_COLUMNS)].copy()
    table["moving_dimension"] = table["moving_dimension"].astype(str)
    if table.empty:
        raise PaperFormatError(f"{source} has no rows: it must list at least one image-in-curve.")
    if not pd.api.types.is_integer_dtype(table["index"]) or (table["index"] < 0).any():
        raise PaperFormatError(f"{source}: column 'index' must hold non-negative integers (rows of the .npy arrays).")
    return table


def _check_embeddings(array: np.ndarray, table: pd.DataFrame, source: str) -> None:
    if array.ndim != 2:
        raise PaperFormatError(f"{source} has shape {array.shape}; an identity's embeddings must be (N, D).")
    needed = int(table["index"].max()) + 1
    if array.shape[0] < needed:
        raise PaperFormatError(
            f"{source} has {array.shape[0]} rows but {TABLE_FILENAME} refers to index {needed - 1}: "
            f"the array needs at least {needed} rows (embed every image of the design)."
        )


@dataclass
class PaperEmbeddings:
    """An opened layout directory.

    Attributes:
        directory: the directory.
        table: the ``df_param_step`` table (``moving_dimension`` as str).
        identities: ``.npy`` file stems, sorted.
        listed: the same stems in the directory's ``os.listdir`` order (the order the authors' script walks).
    """

    directory: Path
    table: pd.DataFrame
    identities: list[str]
    listed: list[str]

    def load(self, identity: str) -> np.ndarray:
        """Embeddings of one identity: ``(N, D)`` float32, checked to cover every ``index`` of the table."""
        path = self.directory / f"{identity}.npy"
        if identity not in self.identities or not path.is_file():
            raise MissingPathError(
                f"No embeddings for identity {identity!r} ({path} missing); known identities: {self.identities[:10]}"
                f"{' ...' if len(self.identities) > 10 else ''}."
            )
        try:
            array = np.load(path, allow_pickle=False)  # object arrays / pickles would unpickle (could run code)
        except ValueError as error:
            raise PaperFormatError(f"{path} is not a numeric .npy array ({error}); write embeddings with np.save.") \
                from error
        _check_embeddings(array, self.table, str(path))
        return array.astype(np.float32, copy=False)


def read_paper_embeddings(directory: str | Path) -> PaperEmbeddings:
    """Open a layout directory (reads the table now, each identity's array on :meth:`PaperEmbeddings.load`).

    Raises:
        FileNotFoundError: the directory, its ``df_param_step.csv`` or every ``.npy`` file is missing.
        PaperFormatError: the table lacks a column or has a bad ``index``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingPathError(f"Embeddings directory {directory} does not exist.")
    table_path = directory / TABLE_FILENAME
    if not table_path.is_file():
        raise MissingPathError(
            f"{table_path} is missing: a paper-format directory needs {TABLE_FILENAME} next to the .npy files."
        )
    table = _check_table(pd.read_csv(table_path), str(table_path))
    listed = [name[: -len(".npy")] for name in os.listdir(directory) if name.endswith(".npy")]
    if not listed:
        raise MissingPathError(f"{directory} has no <identity>.npy embedding files.")
    return PaperEmbeddings(directory=directory, table=table, identities=sorted(listed), listed=listed)


def write_paper_embeddings(
    directory: str | Path, table: pd.DataFrame, embeddings: Mapping[str, np.ndarray]
) -> Path:
    """Write ``df_param_step.csv`` (layout columns only, no pandas index) and one float32
    ``<identity>.npy`` per entry of ``embeddings`` (each ``(N, D)`` covering the table's indices).
    Creates the directory; returns it.
    """
    table = _check_table(table, "table")
    if not embeddings:
        raise PaperFormatError("embeddings is empty: give at least one identity's (N, D) array.")
    arrays = {}
    for identity, array in embeddings.items():
        if not identity or Path(identity).name != identity or "/" in identity or "\\" in identity:
            raise PaperFormatError(f"Identity name {identity!r} cannot be a file stem; use a plain name.")
        arrays[identity] = np.asarray(array, dtype=np.float32)
        _check_embeddings(arrays[identity], table, f"embeddings[{identity!r}]")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table.to_csv(directory / TABLE_FILENAME, index=False)
    for identity, array in arrays.items():
        np.save(directory / f"{identity}.npy", array)
    return directory

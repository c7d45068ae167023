"""The run's metrics as CSV files that survive kills and resumes (``conf/logger/csv.yaml``).

Two views of the same rows, both rewritten atomically (temporary file, fsync, rename) at every flush:

- ``<save_dir>/csv/metrics.csv``: wide, one row per logging call (Lightning's ``CSVLogger`` layout:
  ``step``, ``epoch`` and one column per metric, empty where a metric was not logged);
- ``<save_dir>/metrics_tidy.csv``: long (tidy), one row per logged value: ``step``, ``epoch``, ``metric``,
  ``value``.

Unlike Lightning's ``CSVLogger`` it keeps the rows already on disk when the run directory is reused, so a
resumed run appends to the same files (:meth:`keep_first` first cuts the rows written after the checkpoint
the run resumes from).
"""

from __future__ import annotations

import csv
import io
import math
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from fr_invariance.atomic import atomic_write_text

WIDE_FILE = "metrics.csv"
TIDY_FILE = "metrics_tidy.csv"
TIDY_COLUMNS = ("step", "epoch", "metric", "value")


def _number(text: str) -> float | int | None:
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class RunCSVLogger(Logger):
    """Wide and tidy CSV metrics of a run, appended across resumes, written atomically.

    Args:
        save_dir: the run directory (``metrics_tidy.csv`` goes there, ``metrics.csv`` into ``name/``).
        name: sub-folder of the wide file (``csv``, as with Lightning's ``CSVLogger``).
        flush_every: write the files after this many new rows (and at every checkpoint and at the end).
    """

    def __init__(self, save_dir: str | Path, name: str = "csv", flush_every: int = 20) -> None:
        super().__init__()
        self._save_dir = Path(save_dir)
        self._name = name
        self.flush_every = max(1, int(flush_every))
        self.rows: list[dict[str, Any]] = self._read_existing()
        self._pending = 0
        self._flush_next_row = False

    # --- Logger interface ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def log_dir(self) -> str:
        return str(self._save_dir / self._name)

    @property
    def wide_path(self) -> Path:
        return self._save_dir / self._name / WIDE_FILE

    @property
    def tidy_path(self) -> Path:
        return self._save_dir / TIDY_FILE

    @property
    def row_count(self) -> int:
        """Rows logged so far (including those read from an earlier part of the run)."""
        return len(self.rows)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: the run's full config is ``config.yaml`` in the run directory."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row: dict[str, Any] = {"step": int(step) if step is not None else len(self.rows)}
        for key, value in metrics.items():
            row[key] = value.item() if hasattr(value, "item") else value
        self.rows.append(row)
        self._pending += 1
        if self._flush_next_row:
            self._flush_next_row = False
            self.flush()

    def flush_after_next_row(self) -> None:
        """Write the files as soon as the next row is logged (the training metrics of a step are logged just
        after that step's checkpoint, and belong to it)."""
        self._flush_next_row = True

    @rank_zero_only
    def save(self) -> None:
        if self._pending >= self.flush_every:
            self.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    # --- files ---------------------------------------------------------------------------------------
    @rank_zero_only
    def flush(self) -> None:
        """Write both files now (atomically)."""
        if not self.rows and not self.wide_path.exists():
            return
        columns = ["step", "epoch"] + sorted({key for row in self.rows for key in row} - {"step", "epoch"})
        wide = io.StringIO()
        writer = csv.DictWriter(wide, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.wide_path, wide.getvalue())
        tidy = io.StringIO()
        tidy_writer = csv.writer(tidy, lineterminator="\n")
        tidy_writer.writerow(TIDY_COLUMNS)
        for row in self.rows:
            epoch = row.get("epoch")
            for key, value in row.items():
                if key in ("step", "epoch") or value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                tidy_writer.writerow((row["step"], "" if epoch is None else epoch, key, value))
        atomic_write_text(self.tidy_path, tidy.getvalue())
        self._pending = 0

    def keep_first(self, rows: int, before_step: int | None = None) -> None:
        """Keep the first ``rows`` rows and, of the later ones, those logged with ``step < before_step`` (the
        checkpointed step's own training metrics, logged just after its checkpoint); drop the rest (a
        resumed run logs them again)."""
        later = [row for row in self.rows[rows:] if before_step is not None and int(row.get("step", 0)) < before_step]
        kept = self.rows[:rows] + later
        if len(kept) != len(self.rows):
            self.rows = kept
            self.flush()

    def _read_existing(self) -> list[dict[str, Any]]:
        if not self.wide_path.is_file():
            return []
        with open(self.wide_path, newline="") as handle:
            return [{key: _number(value) for key, value in row.items() if value not in ("", None)}
                    for row in csv.DictReader(handle)]

"""The small interface every ``evaluate.py analysis=<name>`` shares.

An analysis is one class (a subclass of :class:`Analysis`, built from ``conf/analysis/<name>.yaml`` with
``_target_``; its settings are constructor arguments) whose :meth:`Analysis.run` turns the sources of
an :class:`AnalysisContext` (trained models and/or precomputed embeddings) into an :class:`AnalysisResult`:
tidy tables, figures, one Markdown section and a JSON summary. :func:`write_result` puts them in the
output folder (``<stem>.csv``, ``<stem>.png``, ``report.md``); ``evaluate.py`` prints the summary as its
last line. Adding an analysis = one module in this package + one YAML file.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from matplotlib.figure import Figure

from fr_invariance.errors import ConfigurationError
from fr_invariance.atomic import atomic_write_text, atomic_writer


class AnalysisInputError(ConfigurationError):
    """The sources given do not fit the analysis (too few models, embeddings where a model is needed...)."""


@dataclass
class AnalysisContext:
    """What the user asked to analyse, and where the results go.

    Attributes:
        sources: paths in the order given: model files (our ``.ckpt``, bare weights) and/or folders of
            precomputed embeddings. Empty when ``model`` names a pretrained model shipped with its weights
            (``model=sface``): then :meth:`models` yields that one model.
        names: short display name per source (same order).
        model_cfg: the ``model`` config node (plain dict) for bare weights / shipped models, else None.
        device: where models run.
        batch_size: images per forward pass when embedding.
        progress: show progress bars.
        output_dir: the report folder (created by :func:`write_result`).
        trust_checkpoint: allow full unpickling of model files (explicit per-run opt-in).
        metric: position metric of precomputed embeddings (models declare their own).
    """

    sources: list[str]
    names: list[str]
    model_cfg: Mapping[str, Any] | None
    device: torch.device
    batch_size: int = 256
    progress: bool = True
    output_dir: Path = Path(".")
    trust_checkpoint: bool = False
    metric: str = "cosine"
    options: dict[str, Any] = field(default_factory=dict)

    def model_sources(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every source that is a model file (not an embeddings folder)."""
        return [(name, path) for name, path in zip(self.names, self.sources) if not Path(path).is_dir()]

    def embedding_sources(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every source that is a folder of precomputed embeddings."""
        return [(name, path) for name, path in zip(self.names, self.sources) if Path(path).is_dir()]

    def models(self) -> Iterator[Any]:
        """Load the model sources one at a time (a :class:`~fr_invariance.evaluation.checkpoints.ModelSource`
        each, on :attr:`device`, in eval mode); a shipped pretrained ``model_cfg`` when no path is given."""
        from fr_invariance.evaluation.checkpoints import load_model_source, load_shipped_model

        if not self.sources and self.model_cfg is not None:
            yield load_shipped_model(self.model_cfg, device=self.device)
            return
        for name, path in self.model_sources():
            yield load_model_source(path, model_cfg=self.model_cfg, device=self.device, name=name,
                                    trust_checkpoint=self.trust_checkpoint)


@dataclass
class AnalysisResult:
    """What one analysis produced.

    Attributes:
        tables: file stem → tidy table, written as ``<stem>.csv``.
        figures: file stem → matplotlib figure, written as ``<stem>.png`` (then closed).
        markdown: this analysis' section of ``report.md`` (starts with a ``## `` heading).
        summary: JSON-serialisable summary, printed by ``evaluate.py`` as its last line.
    """

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    markdown: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


class Analysis(ABC):
    """One analysis of ``evaluate.py``; settings are constructor arguments (``conf/analysis/<name>.yaml``)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, context: AnalysisContext) -> AnalysisResult:
        """Analyse ``context``'s sources."""


def write_result(result: AnalysisResult, output_dir: str | Path, *, title: str) -> dict[str, Path]:
    """Write tables (``.csv``), figures (``.png``, 120 dpi) and ``report.md`` (``# title`` + the section)
    into ``output_dir`` atomically; return stem → path (``report`` for the Markdown)."""
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for stem, table in result.tables.items():
        path = output_dir / f"{stem}.csv"
        with atomic_writer(path, "w") as handle:
            table.to_csv(handle, index=False)
        written[stem] = path
    for stem, figure in result.figures.items():
        path = output_dir / f"{stem}.png"
        with atomic_writer(path, "wb") as handle:
            figure.savefig(handle, dpi=120, bbox_inches="tight", format="png")
        plt.close(figure)
        written[stem] = path
    report = output_dir / "report.md"
    atomic_write_text(report, f"# {title}\n\n{result.markdown.strip()}\n")
    written["report"] = report
    atomic_write_text(output_dir / "summary.json", json.dumps(result.summary, indent=1, default=str) + "\n")
    return written

"""Invariance report of trained models or precomputed embeddings (settings: conf/evaluate.yaml).

    python evaluate.py checkpoint=runs/.../checkpoints/last.ckpt
    python evaluate.py checkpoints=[runs/a/checkpoints/last.ckpt,runs/b/checkpoints/last.ckpt]
    python evaluate.py checkpoint=backbone.pth model=iresnet50
    python evaluate.py embeddings_dir=path/to/paper_layout

Writes the analysis' tables, figures and report.md to ``output_dir``, prints the folder and, as its last
line, a one-line JSON summary. A user error ends in one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from fr_invariance.cli import main_entry, run_task


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    from fr_invariance.evaluation.run import evaluate
    from fr_invariance.validation import validate_evaluate_config

    validate_evaluate_config(cfg)
    summary = evaluate(cfg)
    print(f"Invariance report written to {summary['output_dir']}")
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    return run_task(cfg, _evaluate)


if __name__ == "__main__":
    main_entry(main)

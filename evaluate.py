"""Invariance report of trained models or precomputed embeddings (settings: conf/evaluate.yaml).

    python evaluate.py checkpoint=runs/.../checkpoints/last.ckpt
    python evaluate.py checkpoints=[runs/a/checkpoints/last.ckpt,runs/b/checkpoints/last.ckpt]
    python evaluate.py checkpoint=backbone.pth model=iresnet50
    python evaluate.py embeddings_dir=path/to/paper_layout

Writes energies.csv, violin.png, profile.png, stats.csv (≥ 2 models) and report.md to ``output_dir``,
prints the folder and, as its last line, a one-line JSON summary. Configuration mistakes end with one
``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from fr_invariance.cli import USER_ERRORS, exit_with_user_error


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from fr_invariance.evaluation.run import evaluate

    try:
        summary = evaluate(cfg)
    except USER_ERRORS as error:
        exit_with_user_error(error)
    print(f"Invariance report written to {summary['output_dir']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

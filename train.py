"""Fine-tune a face-recognition backbone with targeted attribute augmentation.

    python train.py attr=contrast model=iresnet50
    python train.py attr=contrast model=iresnet50 resume=true      # continue the last run of this config
    python train.py -m attr=contrast,hue aug.strength=0.25,1.0 experiment=quickstart
    python train.py -m hydra/launcher=joblib attr=contrast,hue      # jobs in parallel, threads divided
    python train.py experiment=controlled          # base + every arm x strength x seed + sweep report

Prints a short end-of-run table and, as its last line, one JSON summary (run directory, checkpoints,
held-out verification accuracy, energies). A user error ends in one ``error: ...`` line (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from fr_invariance.cli import main_entry, run_task
from fr_invariance.training.resume import resolve_resume_argv


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from fr_invariance.training.run import end_of_run_table, run_controlled, run_training

    if cfg.get("controlled"):
        summary = run_controlled(cfg, output_dir)
    else:
        summary = run_training(cfg, output_dir)
        if rank_zero_only.rank != 0:
            return summary  # the other DDP processes stay quiet
        print(end_of_run_table(summary), flush=True)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    return run_task(cfg, _train)


if __name__ == "__main__":
    main_entry(main, before=resolve_resume_argv)

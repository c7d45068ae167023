"""Fine-tune a face-recognition backbone with targeted attribute augmentation.

    python train.py attr=contrast model=iresnet50
    python train.py -m attr=contrast,hue aug.strength=0.25,1.0 experiment=quickstart
    python train.py experiment=controlled          # base + every arm x strength x seed + sweep report

Prints one JSON line at the end: run directory, checkpoints, held-out verification accuracy, energies.
"""

from __future__ import annotations

import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fr_invariance.cli import USER_ERRORS, exit_with_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from fr_invariance.training.run import run_controlled, run_training

    run = run_controlled if cfg.get("controlled") else run_training
    try:
        summary = run(cfg, HydraConfig.get().runtime.output_dir)
    except USER_ERRORS as error:
        exit_with_user_error(error)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())

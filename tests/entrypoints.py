"""Run the real entry points as subprocesses, the way a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_entry_point(script: str, *overrides: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` in the repo; with ``check`` a failure shows its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, script, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}")
    return result


def run_train(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_entry_point("train.py", *overrides, check=check)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    """The JSON summary an entry point prints as its last stdout line."""
    return json.loads(result.stdout.strip().splitlines()[-1])



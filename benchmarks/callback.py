"""Cost and precision of the per-epoch invariance callback on the quickstart it watches.

Runs the real ``python train.py experiment=quickstart`` (callback at its defaults: the default probe,
measured before training and after every epoch) and, as the baseline in the same run, the same command
with ``invariance=off``. Reports:

- ``callback_share``: seconds the callback spent measuring ÷ seconds of training (the fit's wall time
  minus the callback's own time), from the run's ``summary.json``;
- ``end_to_end_share``: (wall with callback − wall without) ÷ wall without — the whole-process view,
  which also holds the one-time probe rendering and run-to-run noise;
- ``energy_se_max``: the largest standard error over identities of a per-attribute energy at the final
  epoch, over every setting the probe measures (ball and kNN), from ``invariance.csv``.

    python benchmarks/callback.py [--device cpu|cuda] [--threads N] [--overrides k=v ...] [--keep DIR]

``--keep DIR`` keeps the run with the callback in DIR (e.g. with ``--overrides logger=tensorboard`` for the
dashboard screenshots of ``docs/screenshot_dashboards.py``).

Last line: JSON with callback_share, energy_se_max and the raw timings. Targets: ≤ 0.10 and ≤ 0.02.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run_quickstart(run_dir: Path, threads: int, device: str, extra: list[str]) -> float:
    """Wall seconds of one ``train.py experiment=quickstart`` run into ``run_dir``."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, str(REPO / "train.py"), "experiment=quickstart", f"trainer.accelerator={accelerator}",
               f"hydra.run.dir={run_dir}", *extra]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=environment, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def final_standard_errors(rows: pd.DataFrame) -> pd.Series:
    """Standard error over identities of each attribute × setting's energy at the last epoch."""
    last = rows[rows["epoch"] == rows["epoch"].max()]
    grouped = last.groupby(["attribute", "neighbourhood", "param"])["energy"]
    return grouped.std(ddof=1) / grouped.count() ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--overrides", nargs="*", default=[], help="extra train.py overrides for both runs")
    parser.add_argument("--keep", type=Path, default=None, help="run folder of the run with the callback (kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        with_callback = args.keep or Path(folder) / "with"
        wall_with = run_quickstart(with_callback, args.threads, args.device, args.overrides)
        wall_without = run_quickstart(Path(folder) / "without", args.threads, args.device,
                                      [*args.overrides, "invariance=off"])
        summary = json.loads((with_callback / "summary.json").read_text())
        errors = final_standard_errors(pd.read_csv(with_callback / "invariance.csv"))
    callback_seconds, fit_seconds = summary["invariance_seconds"], summary["fit_seconds"]
    result = {
        "callback_share": round(callback_seconds / (fit_seconds - callback_seconds), 4),
        "energy_se_max": round(float(errors.max()), 4),
        "energy_se_max_at": " ".join(str(x) for x in errors.idxmax()),
        "callback_seconds": round(callback_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "wall_with_callback": round(wall_with, 2),
        "wall_without_callback": round(wall_without, 2),
        "end_to_end_share": round((wall_with - wall_without) / wall_without, 4),
        "final_val_verification_acc": summary.get("val_verification_acc"),
        "threads": args.threads,
        "device": args.device,
    }
    print(errors.round(4).to_string())
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Wall time of a sweep of quickstart-size jobs: sequential (Hydra's basic launcher, every job uses all the
cores) vs in parallel (``hydra/launcher=joblib``, the cores divided between the jobs that run at once).

    python benchmarks/sweep.py                      # 4 jobs (attr=contrast,hue,brightness,age), 1 epoch each
    python benchmarks/sweep.py --epochs 4 --attrs contrast,hue
    python benchmarks/sweep.py invariance=off        # extra train.py overrides for every job

Each mode runs ``train.py -m experiment=quickstart trainer.max_epochs=<epochs> attr=<attrs>`` in a fresh
sweep folder with ``threads=auto`` and without OMP_NUM_THREADS, so the thread counts are the product's own
defaults. The last line is one JSON object: ``sequential_seconds``, ``parallel_seconds``, ``speedup``, the
jobs, cores and threads per job of each mode.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fr_invariance.cli import SWEEP_SUMMARY_FILE, available_cores  # noqa: E402


def run_sweep(sweep_dir: Path, attrs: str, epochs: int, launcher: list[str], extra: list[str]) -> tuple[float, list[int]]:
    """Run one sweep; return its wall time and the torch threads each job used."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({"WANDB_MODE": "offline", "FR_INVARIANCE_QUIET": "1"})
    command = [sys.executable, "train.py", "-m", *launcher, "experiment=quickstart", f"trainer.max_epochs={epochs}",
               f"attr={attrs}", *extra, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    summary = json.loads((sweep_dir / SWEEP_SUMMARY_FILE).read_text())
    threads = [json.loads((Path(job["output_dir"]) / "summary.json").read_text())["torch_threads"]
               for job in summary["finished"]]
    return seconds, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attrs", default="contrast,hue,brightness,age", help="one job per attribute")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per job (quickstart trains 4)")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every job")
    args = parser.parse_args()
    jobs = len(args.attrs.split(","))
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as root:
        sequential, sequential_threads = run_sweep(Path(root) / "sequential", args.attrs, args.epochs, [],
                                                         args.overrides)
        print(f"sequential: {sequential:.1f} s, threads per job {sequential_threads}", flush=True)
        parallel, parallel_threads = run_sweep(Path(root) / "parallel", args.attrs, args.epochs,
                                               ["hydra/launcher=joblib"], args.overrides)
        print(f"parallel (joblib): {parallel:.1f} s, threads per job {parallel_threads}", flush=True)
    print(json.dumps({"jobs": jobs, "epochs": args.epochs, "overrides": args.overrides, "cores": available_cores(),
                      "sequential_threads_per_job": sorted(set(sequential_threads)),
                      "parallel_threads_per_job": sorted(set(parallel_threads)),
                      "sequential_seconds": round(sequential, 1), "parallel_seconds": round(parallel, 1),
                      "speedup": round(sequential / parallel, 2)}))


if __name__ == "__main__":
    main()

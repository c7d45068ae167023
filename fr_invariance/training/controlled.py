"""The controlled experiment as one command (DESIGN §12): ``python train.py experiment=controlled``.

1. **Base**: one model trained once (``base`` overrides), in ``<sweep>/base``.
2. **Arms**: every arm starts from the base checkpoint (head kept: same identities) with the same
   schedule: the control ``attr=none`` and every attribute × strength, each for every seed, in
   ``<sweep>/arms/<attr>_s<strength>_seed<seed>``. Jobs run ``n_jobs`` at a time as separate ``train.py``
   processes, the CPU cores divided between them (torch threads = cores // n_jobs, at least 1).
   A job whose ``summary.json`` exists is skipped, so re-running the same command resumes the sweep;
   a failed job is recorded (``error.txt`` in its folder, ``jobs.csv``) and the others go on.
3. **Report**: the sweep analysis (``fr_invariance.evaluation.analyses.sweep``) on the run folders, in
   ``<sweep>/report`` — also rebuilt by ``python evaluate.py analysis=sweep sweep_dir=<sweep>``.

Each arm's invariance callback measures the same probe (same identities, curves and settings) before its
first step and after every epoch; the sweep compares the last measurement of each arm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fr_invariance.atomic import atomic_write_text
from fr_invariance.attributes import ATTRIBUTE_NAMES, NO_ATTRIBUTE, validate_attributes
from fr_invariance.errors import ConfigurationError

SUMMARY_FILE = "summary.json"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class Job:
    """One ``train.py`` run of the sweep."""

    name: str
    directory: Path
    overrides: tuple[str, ...]


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def arm_name(attribute: str, strength: float, seed: int) -> str:
    """Folder name of an arm: ``contrast_s0.5_seed1``; the control is ``none_s0_seed1``."""
    return f"{attribute}_s{0 if attribute == NO_ATTRIBUTE else strength:g}_seed{seed}"


class ControlledExperiment:
    """Base + arms + sweep report (see the module doc).

    Args:
        attributes: targeted attributes of the arms (None: all 8).
        strengths: ``aug.strength`` values of every attribute arm (the control has none).
        seeds: seed replicates of every arm (≥ 2 for a control-vs-control spread; ≥ 3 recommended).
        n_jobs: concurrent training processes.
        common: ``train.py`` overrides of every job (e.g. ``experiment=quickstart``).
        base: extra overrides of the base run.
        arm: extra overrides of every arm (schedule, learning rate...).
        base_seed: seed of the base run.
        report: settings of the sweep analysis (keyword arguments of ``SweepAnalysis``).
    """

    def __init__(self, *, attributes: Sequence[str] | None = None, strengths: Sequence[float] = (0.5, 1.0),
                 seeds: Sequence[int] = (1, 2, 3), n_jobs: int = 2, common: Sequence[str] = (),
                 base: Sequence[str] = (), arm: Sequence[str] = (), base_seed: int = 0,
                 report: dict[str, Any] | None = None) -> None:
        self.attributes = list(ATTRIBUTE_NAMES) if attributes is None else validate_attributes(attributes)
        self.strengths = [float(s) for s in strengths]
        self.seeds = [int(s) for s in seeds]
        if not self.attributes or not self.strengths or not self.seeds:
            raise ConfigurationError("controlled: attributes, strengths and seeds must each list at least one value.")
        if any(not 0.0 < s <= 1.0 for s in self.strengths):
            raise ConfigurationError(f"controlled.strengths={self.strengths}: every strength must lie in (0, 1].")
        if n_jobs < 1:
            raise ConfigurationError(f"controlled.n_jobs={n_jobs} must be >= 1.")
        self.n_jobs = int(n_jobs)
        self.common, self.base, self.arm = list(common), list(base), list(arm)
        self.base_seed = int(base_seed)
        self.report = dict(report or {})

    def jobs(self, sweep_dir: Path) -> tuple[Job, list[Job]]:
        """The base job and the arm jobs (control first, then attribute × strength, seed-major)."""
        base = Job("base", sweep_dir / "base", (*self.common, *self.base, f"seed={self.base_seed}",
                                                 f"hydra.run.dir={sweep_dir / 'base'}"))
        checkpoint = sweep_dir / "base" / "checkpoints" / "last.ckpt"
        arms = []
        for seed in self.seeds:
            settings = [(NO_ATTRIBUTE, 0.0)] + [(a, s) for a in self.attributes for s in self.strengths]
            for attribute, strength in settings:
                name = arm_name(attribute, strength, seed)
                directory = sweep_dir / "arms" / name
                # the control also verifies on pairs that vary each arm's attribute, the arms' reference
                vary = f"data.val_vary=[{','.join(self.attributes)}]" if attribute == NO_ATTRIBUTE else None
                arms.append(Job(name, directory, tuple(o for o in (
                    *self.common, *self.arm, f"attr={attribute}", f"aug.strength={strength:g}", f"seed={seed}", vary,
                    f"model.weights={checkpoint}", "model.keep_head=true", f"hydra.run.dir={directory}") if o)))
        return base, arms

    def run(self, sweep_dir: str | Path) -> dict[str, Any]:
        """Train the base, the arms, write the report; return a summary (folders, failed jobs, wall time)."""
        from fr_invariance.evaluation.analyses.base import write_result
        from fr_invariance.evaluation.analyses.sweep import SweepAnalysis

        sweep_dir = Path(sweep_dir)
        start = time.perf_counter()
        base, arms = self.jobs(sweep_dir)
        records = [run_job(base, threads=available_cores())]
        if records[0]["status"] == "failed":
            raise ConfigurationError(f"the base run failed (see {base.directory / ERROR_FILE}); no arm can start.")
        threads = max(1, available_cores() // self.n_jobs)
        print(f"controlled: {len(arms)} arms, {self.n_jobs} at a time, {threads} torch thread(s) each", flush=True)
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            records += list(pool.map(lambda job: run_job(job, threads=threads), arms))
        jobs = pd.DataFrame(records)
        atomic_write_text(sweep_dir / "jobs.csv", jobs.to_csv(index=False))
        analysis = SweepAnalysis(sweep_dir=str(sweep_dir), **self.report)
        result = analysis.run_on_folder(sweep_dir)
        write_result(result, sweep_dir / "report", title="Controlled experiment")
        wall = time.perf_counter() - start
        failed = jobs.loc[jobs["status"] == "failed", "name"].tolist()
        return {"sweep_dir": str(sweep_dir), "report": str(sweep_dir / "report" / "report.md"),
                "jobs": len(records), "failed": failed, "wall_seconds": round(wall, 1)}


def run_job(job: Job, *, threads: int) -> dict[str, Any]:
    """Run one ``train.py`` job in a subprocess (skipped when its summary exists); never raises for a
    failed job: the error goes to ``<job>/error.txt`` and the record says ``failed``."""
    if (job.directory / SUMMARY_FILE).exists():
        return {"name": job.name, "status": "done (kept)", "seconds": 0.0, "directory": str(job.directory)}
    job.directory.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, str(train_script()), *job.overrides]
    start = time.perf_counter()
    print(f"controlled: start {job.name}", flush=True)
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    seconds = round(time.perf_counter() - start, 1)
    atomic_write_text(job.directory / "train.log", completed.stdout + completed.stderr)
    if completed.returncode != 0 or not (job.directory / SUMMARY_FILE).exists():
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-20:])
        atomic_write_text(job.directory / ERROR_FILE, f"exit code {completed.returncode}\n{tail}\n")
        print(f"controlled: FAILED {job.name} ({seconds} s): see {job.directory / ERROR_FILE}", flush=True)
        return {"name": job.name, "status": "failed", "seconds": seconds, "directory": str(job.directory)}
    print(f"controlled: done {job.name} ({seconds} s)", flush=True)
    return {"name": job.name, "status": "done", "seconds": seconds, "directory": str(job.directory)}


def train_script() -> Path:
    """The ``train.py`` entry point of this checkout."""
    return Path(__file__).resolve().parents[2] / "train.py"

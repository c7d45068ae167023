"""Sweeps: a failed job is recorded and the others finish; the joblib launcher runs jobs in parallel with the
torch threads divided; the SLURM launcher config composes into the plugin's own schema."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from fr_invariance.cli import JOB_ERROR_FILE, JOB_STATUS_FILE, SWEEP_SUMMARY_FILE, default_threads
from tests.entrypoints import run_entry_point
from tests.test_cli_errors import TINY


# our hydra/launcher files share the plugins' schema names: Hydra checks them against it, and says so
pytestmark = pytest.mark.filterwarnings("ignore:.*validated against ConfigStore schema")

def test_a_failed_job_is_recorded_and_the_others_finish(tmp_path):
    result = run_entry_point("train.py", "-m", *TINY, "aug.strength=0.5,1.5", f"hydra.sweep.dir={tmp_path}",
                             check=False)
    assert result.returncode == 2, result.stderr[-3000:]  # every failure was a user error
    summary = json.loads((tmp_path / SWEEP_SUMMARY_FILE).read_text())
    assert [job["num"] for job in summary["finished"]] == [0]
    assert [job["num"] for job in summary["failed"]] == [1]
    failed = summary["failed"][0]
    assert failed["user_error"] and "aug.strength=1.5 is outside [0, 1]" in failed["error"]
    job_dirs = {json.loads(p.read_text())["num"]: p.parent for p in tmp_path.glob(f"*/{JOB_STATUS_FILE}")}
    assert "aug.strength=1.5 is outside [0, 1]" in (job_dirs[1] / JOB_ERROR_FILE).read_text()
    assert (job_dirs[0] / "checkpoints" / "last.ckpt").is_file()
    assert "sweep: 1 finished, 1 failed" in result.stdout
    assert "Traceback" not in result.stderr


def test_joblib_launcher_runs_two_jobs_in_parallel_with_divided_threads(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_entry_point("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
                             "attr=contrast,hue", f"hydra.sweep.dir={tmp_path}")
    summary = json.loads((tmp_path / SWEEP_SUMMARY_FILE).read_text())
    assert len(summary["finished"]) == 2 and not summary["failed"], result.stdout[-2000:]
    for job in summary["finished"]:
        run = json.loads((tmp_path / job["output_dir"].split("/")[-1] / "summary.json").read_text())
        assert run["torch_threads"] == default_threads(parallel=2)  # cores // 2 jobs (capped by OMP_NUM_THREADS)
    assert "Joblib.Parallel" in result.stdout + result.stderr


def test_submitit_slurm_launcher_config_composes_into_the_plugin_schema():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf

    from tests.entrypoints import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert get_class(launcher["_target_"]).__name__ == "SlurmLauncher"
    assert set(launcher) == {field.name for field in fields(SlurmQueueConf)}  # no misspelt or missing key
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] >= 1


def test_thread_defaults_divide_the_available_cores(monkeypatch):
    import os

    from fr_invariance.cli import available_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert default_threads(1) == cores
    assert default_threads(2) == max(1, cores // 2)
    assert default_threads(4 * cores) == 1  # never 0, and jobs x threads never above the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads(1) == 1

"""End-to-end tests of train.py with tiny overrides (subprocesses, like a user types them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.entrypoints import run_entry_point, run_train, summary_of

TINY = [
    "experiment=quickstart",
    "data.image_size=32",
    "data.identities=16",
    "data.samples_per_epoch=128",
    "data.batch_size=64",
    "data.val_identities=8",
    "data.val_pairs=40",
    "trainer.max_epochs=2",
]
SMALL_INVARIANCE = ["probe.n_identities=2", "probe.n_curves=8", "energy.n_pairs=2000", "energy.knn=[4]"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    summary = summary_of(run_train(*TINY, *SMALL_INVARIANCE, "attr=contrast", "logger=wandb",
                                   "checkpoint_every_n_steps=1", f"hydra.run.dir={run_dir}"))
    return run_dir, summary


def test_single_run_writes_checkpoint_backbone_and_tidy_metrics(trained_run):
    run_dir, summary = trained_run
    assert Path(summary["run_dir"]) == run_dir
    assert Path(summary["last_checkpoint"]).is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]  # epoch and step saves share it
    assert Path(summary["backbone_pth"]).is_file()
    assert 0.0 <= summary["val_verification_acc"] <= 1.0
    assert set(summary["energy"]) == {
        "head_angle", "age", "hair_color", "illumination", "expression", "brightness", "contrast", "hue"
    }
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert metrics["val_verification_acc"].notna().sum() == 2  # one per epoch
    energy_columns = [c for c in metrics.columns if c.startswith("invariance/contrast/energy@")]
    assert energy_columns and metrics[energy_columns[0]].notna().sum() == 3  # epochs -1 (before training), 0, 1
    tidy = pd.read_csv(run_dir / "metrics_tidy.csv")  # the same values in long format
    assert list(tidy.columns) == ["step", "epoch", "metric", "value"]
    assert sorted(tidy.loc[tidy["metric"] == energy_columns[0], "epoch"]) == [-1, 0, 1]
    # held-out verification beside every measurement, epoch -1 included (a full validation before the first step)
    assert sorted(tidy.loc[tidy["metric"] == "verification/ordinary/acc", "epoch"]) == [-1, 0, 1]
    assert (run_dir / "config.yaml").is_file()
    checkpoint = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["cfg"]["attr"]["name"] == "contrast"
    assert any(key.startswith("backbone.") for key in checkpoint["state_dict"])


def test_wandb_logger_writes_an_offline_run_with_the_invariance_metrics(trained_run):
    run_dir, _ = trained_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run directory"
    history = b"".join(path.read_bytes() for path in runs[0].glob("*.wandb"))
    assert b"invariance/contrast/energy@" in history and b"val_verification_acc" in history


def test_evaluate_reports_on_the_trained_checkpoint(trained_run, tmp_path):
    _, summary = trained_run
    out = tmp_path / "report"
    result = run_entry_point(
        "evaluate.py", f"checkpoint={summary['last_checkpoint']}", f"output_dir={out}", "probe.n_identities=2",
        "probe.n_curves=8", "energy.n_pairs=2000", "energy.knn=[4]", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert {p.name for p in out.iterdir()} >= {"energies.csv", "violin_ball.png", "violin_knn.png", "report.md"}
    rows = pd.read_csv(out / "energies.csv")
    assert set(rows["attribute"]) == set(summary["energy"])
    assert rows["energy"].dropna().between(0, 2).all() and rows["energy"].notna().any()
    assert summary_of(result)["output_dir"] == str(out)


def test_warm_start_from_backbone_pth_with_a_new_class_count(trained_run, tmp_path):
    _, summary = trained_run
    overrides = [o for o in TINY if not o.startswith(("data.identities", "trainer.max_epochs"))]
    result = run_train(
        *overrides, "data.identities=12", "trainer.max_epochs=1", "invariance=off",
        f"model.weights={summary['backbone_pth']}", f"hydra.run.dir={tmp_path}",
    )
    assert Path(summary_of(result)["last_checkpoint"]).is_file()


def test_resume_from_last_checkpoint_continues_to_max_epochs(trained_run, tmp_path):
    _, summary = trained_run
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    result = run_train(
        *overrides, "attr=contrast", "trainer.max_epochs=3", "invariance=off",
        f"ckpt_path={summary['last_checkpoint']}", f"hydra.run.dir={tmp_path}",
    )
    before = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    after = torch.load(summary_of(result)["last_checkpoint"], map_location="cpu", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1  # two epochs restored, exactly one more trained
    assert after["global_step"] == before["global_step"] + 2  # 128 samples / batch 64 = 2 steps per epoch


def test_multirun_sweeps_two_jobs(tmp_path):
    result = run_train("-m", *TINY, "attr=contrast,hue", "trainer.max_epochs=1", "invariance=off",
                       f"hydra.sweep.dir={tmp_path}")
    checkpoints = sorted(tmp_path.glob("*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 2, result.stdout[-2000:]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("aug.strength=1.5", "aug.strength=1.5 is outside [0, 1]"),
        ("model.weights=/nonexistent/backbone.pth", "/nonexistent/backbone.pth"),
    ],
)
def test_user_errors_end_in_one_clear_line(override, message, tmp_path):
    result = run_train(*TINY, "invariance=off", override, f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_attribute_names_the_valid_options(tmp_path):
    result = run_train(*TINY, "invariance=off", "attr=nose_size", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "nose_size" in result.stderr and "contrast" in result.stderr

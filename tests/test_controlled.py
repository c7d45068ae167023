"""``experiment=controlled_smoke`` end to end (base, arms, sweep report, resume), warm start with the head
kept, the epoch −1 measurement and the epoch numbering shared by the callback and evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from fr_invariance.evaluation.checkpoints import load_model_source
from tests.entrypoints import run_entry_point, run_train, summary_of


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("controlled") / "sweep"
    run_train("experiment=controlled_smoke", f"hydra.run.dir={root}")
    return root


def test_controlled_smoke_writes_the_sweep_report(sweep):
    jobs = pd.read_csv(sweep / "jobs.csv")
    assert len(jobs) == 1 + 2 * (1 + 2)  # base + seeds × (control + 2 attributes × 1 strength)
    assert set(jobs["status"]) == {"done"}
    effects = pd.read_csv(sweep / "report" / "effects.csv")
    assert {"setting", "arm", "attribute", "family", "delta", "p_holm", "delta_mean", "delta_sd",
            "control_spread", "exceeds_control_spread", "ratio"} <= set(effects.columns)
    assert set(effects["setting"]) == {"ball 0.6", "knn k5", "magnitude"}
    targeted = effects[effects["family"] == "targeted"]
    assert set(targeted["arm"]) == {"head_angle@1", "contrast@1"}
    assert (targeted["n_seeds"] == 2).all()
    for name in ("report.md", "verification.csv", "curves.png", "side_effects_ball_0.6.png",
                 "dose_response_magnitude.png"):
        assert (sweep / "report" / name).exists(), name


def test_rerun_resumes_and_evaluate_rebuilds_the_report(sweep, tmp_path):
    result = run_train("experiment=controlled_smoke", f"hydra.run.dir={sweep}")
    assert set(pd.read_csv(sweep / "jobs.csv")["status"]) == {"done (kept)"}
    assert summary_of(result)["failed"] == []
    rebuilt = run_entry_point("evaluate.py", "analysis=sweep", f"sweep_dir={sweep}", f"output_dir={tmp_path}",
                              "analysis.n_bootstrap=200")
    assert summary_of(rebuilt)["analysis"] == "sweep"
    original = pd.read_csv(sweep / "report" / "effects.csv")
    again = pd.read_csv(tmp_path / "effects.csv")
    pd.testing.assert_frame_equal(original, again)


def test_arms_start_from_the_base_measurement_and_epochs_match_evaluate(sweep, tmp_path):
    arm = sweep / "arms" / "contrast_s1_seed1"
    rows = pd.read_csv(arm / "invariance.csv")
    assert sorted(rows["epoch"].unique()) == [-1, 0]
    assert set(rows["neighbourhood"]) == {"ball", "knn"}
    checkpoint = torch.load(arm / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["invariance_epoch"] == 0 and checkpoint["steps_into_epoch"] == 0  # saved at the epoch's end
    base = sweep / "base"
    control = pd.read_csv(sweep / "arms" / "none_s0_seed1" / "invariance.csv")
    before = control[control["epoch"] == -1].sort_values(["identity", "attribute", "neighbourhood"])
    again = rows[rows["epoch"] == -1].sort_values(["identity", "attribute", "neighbourhood"])
    # every arm's epoch -1 is the same base model on the same probe
    assert before["energy"].to_numpy() == pytest.approx(again["energy"].to_numpy(), abs=1e-5)
    evaluated = run_entry_point(
        "evaluate.py", f"checkpoint={arm / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}", "progress=false",
        "probe.n_identities=6", "probe.n_curves=12", "energy.n_pairs=500", "energy.params=[0.6]")
    energies = pd.read_csv(tmp_path / "energies.csv")
    assert set(energies["epoch"]) == {0}
    final = rows[rows["epoch"] == 0].set_index(["identity", "attribute", "neighbourhood"])["energy"]
    measured = energies.set_index(["identity", "attribute", "neighbourhood"])["energy"]
    assert measured.sort_index().to_numpy() == pytest.approx(final.sort_index().to_numpy(), abs=1e-4)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["analysis"] == "energy"
    assert (base / "summary.json").exists()


def _first_loss(run_dir: Path) -> float:
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return float(metrics["train/loss"].dropna().iloc[0])


def test_keep_head_continues_where_the_base_ended(sweep, tmp_path):
    base = sweep / "base" / "checkpoints" / "last.ckpt"
    common = ["experiment=quickstart", "data.image_size=32", "data.identities=40", "data.samples_per_epoch=128",
              "data.batch_size=64", "data.val_identities=20", "data.val_pairs=100", "invariance=off",
              "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "optim.lr=0.001", "scheduler=constant",
              f"model.weights={base}"]
    run_train(*common, "model.keep_head=true", f"hydra.run.dir={tmp_path / 'kept'}")
    run_train(*common, f"hydra.run.dir={tmp_path / 'fresh'}")
    assert _first_loss(tmp_path / "kept") < 0.5 * _first_loss(tmp_path / "fresh")


def test_keep_head_from_bare_weights_is_a_clear_error(sweep, tmp_path):
    result = run_train("experiment=quickstart", "data.image_size=32", "invariance=off", "model.keep_head=true",
                       f"model.weights={sweep / 'base' / 'backbone.pth'}", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert "holds no margin head" in result.stderr


def test_a_mid_epoch_checkpoint_is_reported_as_its_last_completed_epoch_with_a_warning(sweep, tmp_path):
    checkpoint = torch.load(sweep / "arms" / "contrast_s1_seed1" / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    checkpoint["steps_into_epoch"] = 3
    torch.save(checkpoint, tmp_path / "mid.ckpt")
    with pytest.warns(UserWarning, match=r"saved 3 steps into epoch 1 \(a mid-epoch checkpoint\); it is reported as epoch 0"):
        source = load_model_source(tmp_path / "mid.ckpt")
    assert source.epoch == 0

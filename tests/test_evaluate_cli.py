"""evaluate.py end to end (subprocess, tiny settings) and the checkpoint loaders' error cases."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from fr_invariance.evaluation.checkpoints import CheckpointError, load_model_source, source_names
from fr_invariance.evaluation.invariance import INVARIANCE_COLUMNS
from tests.calibrated import calibrated_tiny
from tests.entrypoints import run_entry_point

SIZE = 32
TINY_NODE = {
    "name": "tiny",
    "backbone": {"_target_": "fr_invariance.models.tiny.tiny", "input_size": SIZE, "dropout": 0.0,
                 "embedding_size": 64},
    "weights": None,
    "weights_format": "auto",
    "bgr_to_rgb": False,
}
TINY_ARGS = ["probe.n_identities=2", "probe.n_curves=8", "probe.attributes=[head_angle,contrast,hue]",
             "energy.params=[0.6,1.0]", "energy.knn=[4]", "energy.n_pairs=2000", "progress=false", f"data.image_size={SIZE}",
             "model.backbone.embedding_size=64"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """A Lightning checkpoint (the lead's LightningModule layout) and a bare insightface-style backbone.pth."""
    root = tmp_path_factory.mktemp("weights")
    run_dir = root / "run_a" / "checkpoints"
    run_dir.mkdir(parents=True)
    state = calibrated_tiny(SIZE, seed=0, embedding_size=64, n_images=32).state_dict()
    checkpoint = {
        "state_dict": {**{f"backbone.{k}": v for k, v in state.items()}, "head.weight": torch.randn(5, 64)},
        "hyper_parameters": {"cfg": {"model": {**TINY_NODE, "backbone": dict(TINY_NODE["backbone"])},
                                     "data": {"image_size": SIZE}}, "num_classes": 5},
        "epoch": 4,
    }
    torch.save(checkpoint, run_dir / "last.ckpt")
    bare_dir = root / "run_b"
    bare_dir.mkdir()
    torch.save(calibrated_tiny(SIZE, seed=1, embedding_size=64, n_images=32).state_dict(), bare_dir / "backbone.pth")
    return {"ckpt": run_dir / "last.ckpt", "pth": bare_dir / "backbone.pth"}


def run_evaluate(*overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_entry_point("evaluate.py", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides, check=False, timeout=300)


def test_single_lightning_checkpoint(weights, tmp_path):
    out = tmp_path / "report"
    result = run_evaluate(f"checkpoint={weights['ckpt']}", f"output_dir={out}", *TINY_ARGS[:-1], tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["output_dir"] == str(out) and summary["models"] == ["run_a/last"]
    assert set(summary["energy"]["run_a/last"]) == {"head_angle", "contrast", "hue"}
    assert str(out) in result.stdout
    assert {p.name for p in out.iterdir()} == {"energies.csv", "violin_ball.png", "violin_knn.png", "profile_ball.png",
                                               "report.md", "summary.json"}
    rows = pd.read_csv(out / "energies.csv")
    assert tuple(rows.columns) == INVARIANCE_COLUMNS
    assert len(rows) == 2 * 3 * 3 and (rows["epoch"] == 4).all() and (rows["n_points"] == 8).all()
    assert set(zip(rows["neighbourhood"], rows["param"])) == {("ball", 0.6), ("ball", 1.0), ("knn", 4.0)}


def test_checkpoint_and_bare_backbone_compared(weights, tmp_path):
    out = tmp_path / "report"
    result = run_evaluate(f"checkpoints=[{weights['ckpt']},{weights['pth']}]", "model=tiny", f"output_dir={out}",
                          *TINY_ARGS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["models"] == ["run_a/last", "run_b/backbone"]
    assert {"stats_ball.csv", "stats_knn.csv", "violin_ball.png", "report.md"} <= {p.name for p in out.iterdir()}
    stats = pd.read_csv(out / "stats_ball.csv")
    assert len(stats) == 3 * 2 and set(stats["run_b"]) == {"run_b/backbone"}
    assert "run_b/backbone" in (out / "report.md").read_text()


def test_named_control_compares_every_model_with_it_only(weights, tmp_path):
    out = tmp_path / "report"
    result = run_evaluate(f"checkpoints=[{weights['ckpt']},{weights['pth']}]", "model=tiny", "control=run_a/last",
                          f"output_dir={out}", *TINY_ARGS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    control = pd.read_csv(out / "control.csv")
    assert set(control["arm"]) == {"run_b/backbone"}
    assert set(control["setting"]) == {"ball 0.6", "ball 1", "knn k4", "magnitude"}
    assert set(control["family"]) == {"side effect"}  # a bare backbone targets no attribute
    assert not (out / "stats_ball.csv").exists()


def test_unknown_control_is_one_clear_line(weights, tmp_path):
    result = run_evaluate(f"checkpoint={weights['ckpt']}", "control=nope", f"output_dir={tmp_path / 'o'}",
                          *TINY_ARGS[:-1], tmp_path=tmp_path)
    assert result.returncode == 2 and "control=nope is not one of the evaluated models" in result.stderr


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run_evaluate(f"checkpoint={tmp_path / 'nope.ckpt'}", f"output_dir={tmp_path / 'out'}", *TINY_ARGS[:-1],
                          tmp_path=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0] and "nope.ckpt" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_bare_weights_need_a_model(weights):
    with pytest.raises(CheckpointError, match="model=<name>"):
        load_model_source(weights["pth"])


def test_mismatched_model_names_the_keys(weights):
    node = {**TINY_NODE, "backbone": {**TINY_NODE["backbone"], "embedding_size": 32}}
    with pytest.raises(CheckpointError, match="do not fit model 'tiny'") as error:
        load_model_source(weights["pth"], model_cfg=node)
    assert "projection" in str(error.value)


def test_checkpoint_model_override_must_agree(weights):
    with pytest.raises(CheckpointError, match="trained with model 'tiny'"):
        load_model_source(weights["ckpt"], model_cfg={**TINY_NODE, "name": "iresnet18"})


def test_lightning_checkpoint_loads_weights_and_epoch(weights):
    source = load_model_source(weights["ckpt"])
    assert source.epoch == 4 and source.image_size == SIZE and source.weights_format == "lightning"
    expected = calibrated_tiny(SIZE, seed=0, embedding_size=64, n_images=32).state_dict()
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(value, expected[key])


def test_source_names():
    assert source_names(["/x/run1/checkpoints/last.ckpt", "/x/run2/checkpoints/last.ckpt"]) == ["run1/last",
                                                                                                 "run2/last"]
    assert source_names(["/a/model_a.pth", "/b/model_b.pth"]) == ["model_a", "model_b"]
    assert source_names(["/a/x/m.pth", "/b/x/m.pth"]) == ["a/x/m", "b/x/m"]

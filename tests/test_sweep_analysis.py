"""The sweep report on constructed run folders (known effects), and through ``evaluate.py analysis=sweep``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fr_invariance.evaluation.analyses.base import write_result
from fr_invariance.evaluation.analyses.sweep import SweepAnalysis
from tests.entrypoints import run_entry_point, summary_of

ATTRIBUTES = ["head_angle", "contrast", "hue"]
IDENTITIES = [f"id_{k:05d}" for k in range(10)]


def _write_arm(root: Path, attr: str, strength: float, seed: int, rng: np.random.Generator,
               base: dict[tuple[str, str], float]) -> None:
    folder = root / "arms" / f"{attr}_s{strength:g}_seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"attr": {"name": attr}, "aug": {"strength": strength},
                                                        "seed": seed}))
    records = []
    for epoch in (-1, 0, 1):
        for identity in IDENTITIES:
            for attribute in ATTRIBUTES:
                targeted = attr == attribute and epoch >= 0
                energy = base[identity, attribute] + (0.25 * strength if targeted else 0.0) + rng.normal(0, 0.005)
                magnitude = (0.5 if targeted else 1.0) * (1.0 + rng.normal(0, 0.01))
                for neighbourhood, param in (("ball", 0.6), ("knn", 10.0)):
                    records.append({"run": folder.name, "epoch": epoch, "identity": identity, "attribute": attribute,
                                    "neighbourhood": neighbourhood, "param": param, "energy": energy,
                                    "magnitude": magnitude, "n_points": 48, "mean_degree": 5.0, "n_isolated": 0,
                                    "n_zero": 0})
    pd.DataFrame(records).to_csv(folder / "invariance.csv", index=False)
    accuracy = 0.95 - (0.02 if attr == "head_angle" else 0.0)
    metrics = {"val/ordinary/acc": accuracy, "val/ordinary/tar@far1e-3": 0.8}
    for vary in (["head_angle", "contrast"] if attr == "none" else [attr]):
        metrics[f"val/vary_{vary}/acc"] = 0.9 + (0.03 if attr == vary else 0.0)
        metrics[f"val/vary_{vary}/tar@far1e-3"] = 0.7
    (folder / "summary.json").write_text(json.dumps({**metrics, "energy": {}}))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    base = {(i, a): rng.uniform(0.3, 0.6) for i in IDENTITIES for a in ATTRIBUTES}
    for seed in (1, 2, 3):
        _write_arm(root, "none", 0.0, seed, rng, base)
        for attr in ("head_angle", "contrast"):
            for strength in (0.5, 1.0):
                _write_arm(root, attr, strength, seed, rng, base)
    return root


def test_sweep_report_finds_the_constructed_effects(sweep_dir, tmp_path):
    result = SweepAnalysis(str(sweep_dir), n_bootstrap=200).run_on_folder(sweep_dir)
    effects = result.tables["effects"]
    ball = effects[(effects["setting"] == "ball 0.6") & (effects["family"] == "targeted")].set_index("arm")
    assert set(ball.index) == {"head_angle@0.5", "head_angle@1", "contrast@0.5", "contrast@1"}
    assert ball.loc["contrast@1", "delta"] == pytest.approx(0.25, abs=0.01)
    assert ball.loc["contrast@0.5", "delta"] == pytest.approx(0.125, abs=0.01)
    assert (ball["p_holm"] < 0.01).all() and ball["exceeds_control_spread"].all()
    assert (ball["n_seeds"] == 3).all()
    magnitude = effects[(effects["setting"] == "magnitude") & (effects["family"] == "targeted")]
    assert magnitude["ratio"].to_numpy() == pytest.approx(0.5, abs=0.02)
    side = effects[(effects["setting"] == "ball 0.6") & (effects["family"] == "side effect")]
    assert side["delta"].abs().max() < 0.02
    assert not side["called"].any()
    verification = result.tables["verification"]
    head = verification[verification["attr"] == "head_angle"]
    assert head["delta_ordinary_acc"].to_numpy() == pytest.approx(-0.02)
    assert head["delta_targeted_acc"].to_numpy() == pytest.approx(0.03)  # vs the control's vary_head_angle pairs
    assert verification["delta_targeted_tar@far1e-3"].to_numpy() == pytest.approx(0.0)
    assert sorted(result.summary["targeted_significant"]["ball 0.6"]) == sorted(ball.index)
    written = write_result(result, tmp_path / "report", title="Controlled experiment")
    for stem in ("effects", "verification", "curves", "side_effects_ball_0.6", "dose_response_magnitude", "curves",
                 "report"):
        assert written[stem].exists()
    assert "## Targeted attribute: energy, ball 0.6" in written["report"].read_text()


def test_evaluate_rebuilds_the_sweep_report(sweep_dir, tmp_path):
    result = run_entry_point("evaluate.py", "analysis=sweep", f"sweep_dir={sweep_dir}", f"output_dir={tmp_path}",
                             "analysis.n_bootstrap=100")
    summary = summary_of(result)
    assert summary["analysis"] == "sweep" and summary["arms"] == 5
    assert (tmp_path / "effects.csv").exists() and (tmp_path / "side_effects_knn_k10.png").exists()


def test_sweep_without_arms_is_a_clear_error(tmp_path):
    result = run_entry_point("evaluate.py", "analysis=sweep", f"sweep_dir={tmp_path}", f"output_dir={tmp_path / 'o'}",
                             check=False)
    assert result.returncode == 2
    assert "no finished arm" in result.stderr and result.stderr.strip().startswith("error:")


def test_arms_without_epoch_minus_one_start_from_the_base(sweep_dir, tmp_path):
    from fr_invariance.evaluation.analyses.sweep import read_arms

    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    base_rows = None
    for csv in (copy / "arms").glob("*/invariance.csv"):
        rows = pd.read_csv(csv)
        if base_rows is None:
            base_rows = rows[rows["epoch"] == -1].assign(epoch=3, run="base")
        rows[rows["epoch"] >= 0].to_csv(csv, index=False)
    (copy / "base").mkdir()
    base_rows.to_csv(copy / "base" / "invariance.csv", index=False)
    rows, _, arms = read_arms(copy)
    starts = rows[rows["epoch"] == -1]
    assert len(starts) == len(base_rows) * len(arms)
    one = starts[(starts["arm"] == "contrast@1") & (starts["seed"] == 2)].sort_values(["identity", "attribute",
                                                                                       "neighbourhood"])
    expected = base_rows.sort_values(["identity", "attribute", "neighbourhood"])
    assert one["energy"].to_numpy() == pytest.approx(expected["energy"].to_numpy())


def test_unmatched_seeds_are_neither_paired_nor_called(tmp_path):
    """The control ran seeds 1 and 2 only; an arm without effect ran 1, 2 and 3, and every seed-3 run sits
    +0.05 higher: pairing must use seeds 1 and 2 only. An arm that shares no seed with the control is not
    compared at all, and one control seed leaves the spread unknown (–), never 'yes'."""
    rng = np.random.default_rng(1)
    base = {(i, a): rng.uniform(0.3, 0.6) for i in IDENTITIES for a in ATTRIBUTES}
    shifted = {key: value + 0.05 for key, value in base.items()}
    for seed in (1, 2):
        _write_arm(tmp_path, "none", 0.0, seed, rng, base)
        _write_arm(tmp_path, "hue", 0.0, seed, rng, base)  # strength 0: no effect
    _write_arm(tmp_path, "hue", 0.0, 3, rng, shifted)
    _write_arm(tmp_path, "contrast", 1.0, 7, rng, base)  # a real effect, but no control of seed 7
    result = SweepAnalysis(str(tmp_path), n_bootstrap=100).run_on_folder(tmp_path)
    effects = result.tables["effects"]
    hue = effects[(effects["setting"] == "ball 0.6") & (effects["arm"] == "hue@0")].set_index("attribute")
    assert hue["delta"].abs().max() < 0.006  # unmatched pairing: +0.05 / 3 ≈ +0.017 on every attribute
    assert hue["delta_mean"].abs().max() < 0.006 and (hue["n_seeds"] == 2).all()
    assert "contrast@1" not in set(effects["arm"])
    assert result.summary["targeted_significant"]["ball 0.6"] == []

    one_control = tmp_path / "one_control"
    _write_arm(one_control, "none", 0.0, 1, rng, base)
    _write_arm(one_control, "contrast", 1.0, 1, rng, base)
    single = SweepAnalysis(str(one_control), n_bootstrap=100).run_on_folder(one_control)
    targeted = single.tables["effects"]
    targeted = targeted[(targeted["family"] == "targeted") & (targeted["setting"] == "ball 0.6")].iloc[0]
    assert targeted["p_holm"] < 0.05 and pd.isna(targeted["exceeds_control_spread"]) and not targeted["called"]
    assert "| – |" in single.markdown and single.summary["targeted_significant"]["ball 0.6"] == []

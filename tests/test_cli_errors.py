"""Every user error ends in exactly one ``error:`` line on stderr with exit status 2; a bug keeps its traceback.

Each case runs the real entry point (subprocess) with tiny settings; validation fails before any work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.entrypoints import REPO, run_entry_point

TINY = ["experiment=quickstart", "model=tiny", "data.image_size=32", "data.identities=16", "data.samples_per_epoch=128",
        "data.batch_size=64", "data.val_identities=8", "data.val_pairs=40", "trainer.max_epochs=1", "invariance=off"]


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, stderr is one ``error:`` line containing every fragment, no traceback anywhere."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}\nSTDERR:\n{result.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_entry_point("train.py", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=300)


def evaluate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_entry_point("evaluate.py", *overrides, f"hydra.run.dir={tmp_path / 'eval'}", check=False, timeout=300)


@pytest.mark.parametrize(("group", "known"), [("attr", "contrast"), ("model", "iresnet50"), ("head", "arcface"),
                                              ("data", "synthetic")])
def test_unknown_option_of_a_group_lists_the_options(tmp_path, group, known):
    line = assert_one_error_line(train(tmp_path, f"{group}=nose_size"),
                                 f"{group}=nose_size is not an option of config group '{group}'", known)
    assert "Config search path" not in line


def test_unknown_analysis_lists_the_options(tmp_path):
    assert_one_error_line(evaluate(tmp_path, "analysis=nose_size"),
                          "analysis=nose_size is not an option of config group 'analysis'", "energy")


def test_strength_outside_unit_interval(tmp_path):
    assert_one_error_line(train(tmp_path, "aug.strength=1.5"), "aug.strength=1.5 is outside [0, 1]")


def test_epsilon_not_positive(tmp_path):
    assert_one_error_line(train(tmp_path, "energy.neighbourhood=ball", "energy.params=[0.6,0.0]"),
                          "energy.params: ε=0 must be > 0")


def test_k_below_one(tmp_path):
    assert_one_error_line(train(tmp_path, "energy.knn=[0]"), "energy.knn: k=0 must be >= 1")


def test_image_size_too_small_for_the_model(tmp_path):
    assert_one_error_line(train(tmp_path, "data.image_size=8"), "data.image_size=8 is too small for model 'tiny'",
                          ">= 16")


def test_missing_checkpoint_to_resume_from(tmp_path):
    missing = tmp_path / "gone" / "checkpoints" / "last.ckpt"
    assert_one_error_line(train(tmp_path, f"ckpt_path={missing}"), f"ckpt_path={missing}: not found")


def test_missing_warm_start_weights(tmp_path):
    assert_one_error_line(train(tmp_path, f"model.weights={tmp_path / 'nope.pth'}"), "model.weights=", "not found")


def test_missing_data_folder(tmp_path):
    assert_one_error_line(train(tmp_path, "data=image_folder", f"data.root={tmp_path / 'faces'}", "attr=contrast"),
                          f"data.root={tmp_path / 'faces'}: not found")


def test_semantic_attribute_on_real_data(tmp_path):
    (tmp_path / "faces").mkdir()
    assert_one_error_line(train(tmp_path, "data=image_folder", f"data.root={tmp_path / 'faces'}", "attr=age"),
                          "attr=age is a semantic attribute", "brightness, contrast, hue")


def test_unknown_config_key(tmp_path):
    assert_one_error_line(train(tmp_path, "optim.learning_rate=0.1"), "optim.learning_rate: unknown config key",
                          "+optim.learning_rate")


def test_added_key_that_the_object_does_not_take(tmp_path):
    assert_one_error_line(train(tmp_path, "+energy.radius=0.5"), "energy.radius: unknown config key",
                          "neighbourhood")


def test_wrong_type(tmp_path):
    assert_one_error_line(train(tmp_path, "data.batch_size=many"),
                          "data.batch_size='many' has the wrong type: expected an integer >= 1")


def test_missing_checkpoint_in_evaluate(tmp_path):
    missing = tmp_path / "nope.ckpt"
    assert_one_error_line(evaluate(tmp_path, f"checkpoint={missing}"), f"checkpoint={missing}: not found")


def test_hydra_append_error_in_evaluate_is_one_line(tmp_path):
    assert_one_error_line(evaluate(tmp_path, "+energy.exact_repro=true"), "energy.exact_repro")


def test_internal_value_error_keeps_its_traceback(tmp_path):
    """A bug (here a ValueError raised inside the training run) is not turned into a user error."""
    code = ("import runpy, sys\n"
            "import fr_invariance.training.run as run\n"
            "def broken(cfg, output_dir):\n"
            "    raise ValueError('deliberate internal bug')\n"
            "run.run_training = broken\n"
            "sys.argv[0] = 'train.py'\n"
            "runpy.run_path('train.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code, *TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: deliberate internal bug" in result.stderr
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())

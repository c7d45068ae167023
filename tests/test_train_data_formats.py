"""train.py on the data formats the field uses (subprocesses, tiny overrides): RecordIO with .bin validation
sets, generated images with controls, and bad data; ONNX export of the trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fr_invariance.data.datasets.recordio import pack_image_folder
from fr_invariance.data.datasets.verification_bin import write_verification_bin
from tests.entrypoints import run_entry_point, run_train, summary_of
from tests.test_generated import write_generated
from tests.test_train_image_folder import write_faces

COMMON = ["data.image_size=32", "data.batch_size=8", "data.num_workers=0", "model=tiny", "trainer=cpu",
          "trainer.max_epochs=1", "invariance=off"]


def _bin(path: Path, pairs: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = [cv2.imencode(".jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))[1].tobytes() for _ in range(2 * pairs)]
    return write_verification_bin(path, images, (np.arange(pairs) % 2 == 0).tolist())


def test_recordio_training_with_bin_sets_then_onnx_export(tmp_path):
    pack_image_folder(write_faces(tmp_path / "train_img", identities=6, images=6, seed=0), tmp_path / "rec")
    pack_image_folder(write_faces(tmp_path / "val_img", identities=5, images=3, seed=1), tmp_path / "val_rec")
    lfw = _bin(tmp_path / "rec" / "lfw.bin")
    run_dir = tmp_path / "run"
    summary = summary_of(run_train(
        *COMMON, "data=recordio", f"data.root={tmp_path / 'rec'}", f"data.val_root={tmp_path / 'val_rec'}",
        "data.val_pairs=20", f"data.val_bins=[{lfw}]", "attr=hue", f"hydra.run.dir={run_dir}",
    ))
    assert Path(summary["backbone_pth"]).is_file()
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    for name in ("val/held_out/acc", "val/lfw/acc", "val/lfw/tar@far1e-3", "val_verification_acc"):
        assert metrics[name].notna().sum() == 1, name
    assert metrics["data/bad_samples"].dropna().tolist() == [0.0]

    result = run_entry_point("-m", "fr_invariance.export", f"checkpoint={summary['last_checkpoint']}", "format=onnx",
                             "exporter=torchscript")
    export = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(export["output"]).is_file() and export["image_size"] == 32
    assert export["max_abs_diff"] < 1e-4 and export["min_cosine"] > 0.99999


def test_generated_images_with_controls_train_a_semantic_attribute(tmp_path):
    write_generated(tmp_path / "gen", identities=4, per_identity=6, size=32)
    summary = summary_of(run_train(*COMMON, "data=generated", f"data.root={tmp_path / 'gen'}", "attr=age",
                                   "aug.strength=1.0", f"hydra.run.dir={tmp_path / 'run'}"))
    assert Path(summary["last_checkpoint"]).is_file()
    result = run_train(*COMMON, "data=generated", f"data.root={tmp_path / 'gen'}", "attr=expression",
                       f"hydra.run.dir={tmp_path / 'run2'}", check=False)
    assert result.returncode == 2 and "'expression' is semantic" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_training_images_fail_past_the_limit_naming_the_file(tmp_path):
    root = write_faces(tmp_path / "img", identities=4, images=4, seed=2)
    (root / "id_001" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    overrides = [*COMMON, "data=image_folder", f"data.root={root}", "data.batch_size=17"]
    result = run_train(*overrides, "data.max_bad_fraction=0", f"hydra.run.dir={tmp_path / 'strict'}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "broken.jpg" in result.stderr and "data.max_bad_fraction" in result.stderr
    result = run_train(*overrides, "data.max_bad_fraction=0.1", f"hydra.run.dir={tmp_path / 'lenient'}")
    assert "Skipped a bad sample" in result.stderr and "broken.jpg" in result.stderr
    metrics = pd.read_csv(tmp_path / "lenient" / "csv" / "metrics.csv")
    assert metrics["data/bad_samples"].max() == 1.0  # the count is logged

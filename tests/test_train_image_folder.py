"""train.py on real-image folders: image-level attributes train, semantic ones are a clear error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.entrypoints import run_train, summary_of


def write_faces(root: Path, identities: int, images: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for identity in range(identities):
        folder = root / f"id_{identity:03d}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 255, size=3)
        for index in range(images):
            image = np.clip(colour + rng.normal(0, 20, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{index}.png"), image)
    return root


def folder_overrides(tmp_path: Path) -> list[str]:
    train_root = write_faces(tmp_path / "train", identities=6, images=6, seed=0)
    val_root = write_faces(tmp_path / "val", identities=5, images=3, seed=1)
    return [
        "data=image_folder", f"data.root={train_root}", f"data.val_root={val_root}", "data.image_size=32",
        "data.batch_size=8", "data.num_workers=0", "data.val_pairs=20", "model=tiny", "trainer=cpu",
        "trainer.max_epochs=1", "invariance=off", f"hydra.run.dir={tmp_path / 'run'}",
    ]


def test_image_folder_training_with_an_image_level_attribute(tmp_path):
    summary = summary_of(run_train(*folder_overrides(tmp_path), "attr=contrast"))
    assert Path(summary["backbone_pth"]).is_file()
    assert 0.0 <= summary["val_verification_acc"] <= 1.0


def test_semantic_attribute_on_real_images_is_a_configuration_error(tmp_path):
    result = run_train(*folder_overrides(tmp_path), "attr=age", check=False)
    assert result.returncode != 0
    assert "semantic" in result.stderr and "brightness" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_image_root_names_the_path(tmp_path):
    overrides = [o for o in folder_overrides(tmp_path) if not o.startswith("data.root=")]
    result = run_train(*overrides, f"data.root={tmp_path / 'nowhere'}", check=False)
    assert result.returncode != 0
    assert str(tmp_path / "nowhere") in result.stderr

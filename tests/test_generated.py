"""Generated images with their controls table (DESIGN §10): exact read-back, range restriction, bad tables."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.data.datasets.base import DataFormatError
from fr_invariance.data.datasets.generated import GeneratedFaces


def write_generated(root: Path, identities: int = 3, per_identity: int = 4, size: int = 16, seed: int = 0) -> pd.DataFrame:
    """Images in root/img/, table root/controls.csv with age and head_angle controls spread over [-1, 1]."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for identity in range(identities):
        colour = rng.integers(0, 256, size=3)
        for k in range(per_identity):
            image = np.clip(colour + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            name = f"img/p{identity}_{k}.png"
            cv2.imwrite(str(root / name), image)
            rows.append({"path": name, "identity": f"person{identity}", "age": float(np.linspace(-1, 1, per_identity)[k]),
                         "head_angle": float(rng.uniform(-0.1, 0.1))})
    table = pd.DataFrame(rows)
    table.to_csv(root / "controls.csv", index=False)
    return table


def test_reads_back_images_labels_and_controls_exactly(tmp_path):
    table = write_generated(tmp_path)
    dataset = GeneratedFaces(tmp_path, image_size=16)
    assert dataset.carried_attributes == ("head_angle", "age")  # registry order
    assert dataset.class_names == ["person0", "person1", "person2"]
    assert dataset.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_array_equal(dataset.controls, table[["head_angle", "age"]].to_numpy(np.float32))
    for index, name in enumerate(table["path"]):
        expected = cv2.cvtColor(cv2.imread(str(tmp_path / name)), cv2.COLOR_BGR2RGB)
        image, label, item, problem = dataset[index]
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1)) and problem == ""


def test_restrict_keeps_the_images_inside_the_run_ranges(tmp_path):
    write_generated(tmp_path)
    dataset = GeneratedFaces(tmp_path, image_size=16)
    kept = dataset.restrict({"age": 0.5, "head_angle": 0.15})  # ages -1, -1/3, 1/3, 1 -> the middle two
    assert kept == 6 and len(dataset) == 6
    assert np.all(np.abs(dataset.controls[:, 1]) <= 0.5)
    assert dataset.num_classes == 3  # identities keep their labels
    with pytest.raises(DataFormatError, match=r"No image of .*controls\.csv has its controls inside this run's ranges \(head_angle ±0\.01, age ±0\.2\)"):
        GeneratedFaces(tmp_path).restrict({"age": 0.2, "head_angle": 0.01})


def test_bad_tables_are_clear_errors(tmp_path):
    write_generated(tmp_path)
    table = pd.read_csv(tmp_path / "controls.csv")
    table.rename(columns={"age": "agee"}).to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(DataFormatError, match=r"typo\.csv: column\(s\) agee are not attributes"):
        GeneratedFaces(tmp_path, table="typo.csv").setup()
    table.assign(age=table["age"] * 3).to_csv(tmp_path / "scale.csv", index=False)
    with pytest.raises(DataFormatError, match=r"scale\.csv row 2: age = -3\.0 is outside \[-1, 1\]"):
        GeneratedFaces(tmp_path, table="scale.csv").setup()
    table.drop(columns="identity").to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(DataFormatError, match="lacks column"):
        GeneratedFaces(tmp_path, table="noid.csv").setup()
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        GeneratedFaces(tmp_path, table="missing.csv").setup()

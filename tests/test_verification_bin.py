"""insightface verification ``.bin`` sets: exact read-back, bad files, the 10-fold protocol on a ``.bin``,
and ``evaluate.py analysis=verification``."""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from fr_invariance.data.datasets.base import TooManyBadSamplesError
from fr_invariance.data.datasets.verification_bin import BinPairs, load_verification_bin, write_verification_bin
from fr_invariance.evaluation.analyses.verification import embed_pair_images
from fr_invariance.metrics.verification import verification_accuracy
from fr_invariance.models import create_backbone
from tests.entrypoints import run_entry_point, summary_of
from tests.test_verification import _straightforward_accuracy


def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = rgb[::-1]
    return cv2.imencode(".png", image)[1].tobytes()


def _angle_colour(angle: float) -> tuple[int, int, int]:
    """An image whose mean colour encodes a direction: (128 + 100 cos a, 128 + 100 sin a, 128)."""
    return (round(128 + 100 * math.cos(angle)), round(128 + 100 * math.sin(angle)), 128)


def _angle_bin(path: Path, pairs: int, seed: int) -> Path:
    """Genuine pairs: close angles (noise 0.6 rad); impostors: independent angles."""
    rng = np.random.default_rng(seed)
    issame = rng.random(pairs) < 0.5
    first = rng.uniform(0, 2 * np.pi, pairs)
    second = np.where(issame, first + rng.normal(0, 0.6, pairs), rng.uniform(0, 2 * np.pi, pairs))
    images = [_png(_angle_colour(a)) for pair in zip(first, second) for a in pair]
    return write_verification_bin(path, images, issame.tolist())


class MeanColour(nn.Module):
    """A stand-in backbone: the embedding of an image in [-1, 1] is its mean (red, green)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :2].mean(dim=(2, 3))


def test_bin_reads_back_exactly(tmp_path):
    colours = [(10, 20, 30), (200, 100, 0), (5, 250, 128), (90, 90, 90)]
    path = write_verification_bin(tmp_path / "lfw.bin", [_png(c) for c in colours], [True, False])
    images, issame = load_verification_bin(path, image_size=8)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    for image, colour in zip(images, colours):
        assert torch.equal(image, torch.tensor(colour, dtype=torch.uint8).reshape(3, 1, 1).expand(3, 8, 8))
    assert issame.tolist() == [True, False]
    (val_set,) = BinPairs(path).load(image_size=4)
    assert val_set.name == "lfw" and val_set.images.shape == (4, 3, 4, 4)


def test_odd_image_count_is_a_clear_error(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(([_png((1, 2, 3))] * 3, [True])))
    with pytest.raises(ValueError, match=r"odd\.bin has 3 images for 1 pairs; a verification \.bin holds two images per pair"):
        load_verification_bin(path)


def test_corrupt_pair_is_dropped_with_a_warning_then_fails_past_the_limit(tmp_path):
    images = [_png((k, k, k)) for k in range(8)]
    images[5] = b"\xff\xd8 broken"
    path = write_verification_bin(tmp_path / "agedb_30.bin", images, [True, False, True, False])
    with pytest.warns(UserWarning, match=r"Skipped a bad sample \(1 of 4 so far .*Cannot decode image 5 of .*agedb_30\.bin"):
        decoded, issame = load_verification_bin(path, image_size=8, max_bad_fraction=0.25)
    assert decoded.shape[0] == 6 and issame.tolist() == [True, False, False]
    with pytest.raises(TooManyBadSamplesError, match=r"1 of 4 samples .*agedb_30\.bin are unreadable.*data\.max_bad_fraction=0"):
        load_verification_bin(path, image_size=8, max_bad_fraction=0.0)


def test_ten_fold_protocol_on_a_bin_equals_a_straightforward_computation(tmp_path):
    path = _angle_bin(tmp_path / "angles.bin", pairs=120, seed=0)
    images, issame = load_verification_bin(path, image_size=8)
    result = verification_accuracy(embed_pair_images(MeanColour(), images, batch_size=7), issame.numpy())
    # reference: decode the pickle with PIL, embed with numpy (mean colour of image + mirror), python loops
    with open(path, "rb") as handle:
        encoded, flags = pickle.load(handle)
    embeddings = []
    for data in encoded:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 255.0 * 2.0 - 1.0
        embeddings.append(2.0 * pixels[:, :, :2].mean(axis=(0, 1)))
    mean, std = _straightforward_accuracy(np.array(embeddings), np.array(flags), 10)
    assert result.accuracy_mean == pytest.approx(mean, abs=1e-12)
    assert result.accuracy_std == pytest.approx(std, abs=1e-12)
    assert 0.6 < result.accuracy_mean < 0.99 and len(result.fold_accuracies) == 10


def test_evaluate_prints_the_insightface_table(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "backbone.pth"
    torch.save(create_backbone("tiny", input_size=32).state_dict(), weights)
    first = _angle_bin(tmp_path / "lfw.bin", pairs=40, seed=1)
    second = _angle_bin(tmp_path / "cfp_fp.bin", pairs=30, seed=2)
    out = tmp_path / "report"
    result = run_entry_point(
        "evaluate.py", "analysis=verification", f"checkpoint={weights}", "model=tiny", "data.image_size=32",
        f"bins=[{first},{second}]", f"output_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    lines = [line for line in result.stdout.splitlines() if "Accuracy-Flip" in line]
    assert len(lines) == 2
    assert re.match(r"\[lfw\]\[\S*backbone\] Accuracy-Flip: \d\.\d{5}\+-\d\.\d{5}  threshold \d\.\d{3}  TAR@FAR=1e-04: ", lines[0])
    assert lines[1].startswith("[cfp_fp][") and "TAR@FAR=1e-03" in lines[1]
    table = pd.read_csv(out / "verification.csv")
    assert table["set"].tolist() == ["lfw", "cfp_fp"] and table["n_pairs"].tolist() == [40, 30]
    assert set(table.columns) >= {"model", "accuracy_mean", "accuracy_std", "threshold", "tar@far1e-03"}
    assert "Verification (insightface protocol)" in (out / "report.md").read_text()
    assert sorted(key.rsplit("/", 1)[1] for key in summary_of(result)["verification"]) == ["cfp_fp", "lfw"]


def test_evaluate_without_bins_is_a_one_line_error(tmp_path):
    weights = tmp_path / "backbone.pth"
    torch.save(create_backbone("tiny", input_size=32).state_dict(), weights)
    result = run_entry_point("evaluate.py", "analysis=verification", f"checkpoint={weights}", "model=tiny",
                             "data.image_size=32", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2 and "bins=[" in result.stderr and "Traceback" not in result.stderr

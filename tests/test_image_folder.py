"""Image-folder datasets: labels, exact pixels, lazy scanning, and corrupt files."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fr_invariance.data.datasets.base import DataFormatError, collate_faces
from fr_invariance.data.datasets.image_folder import ImageFolderFaces
from fr_invariance.errors import ConfigurationError

# RGB colour of each identity's images; written to disk as BGR by cv2
COLOURS = {"carol": (200, 40, 10), "alice": (10, 220, 30), "bob": (60, 70, 250)}


def _write_tree(root: Path, size: tuple[int, int] = (20, 16)) -> None:
    for name, rgb in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i, extension in enumerate((".png", ".PNG")):
            image = np.zeros((*size, 3), dtype=np.uint8)
            image[:] = rgb[::-1]
            assert cv2.imwrite(str(folder / f"img{i}{extension}"), image)
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.png").write_bytes(b"ignored")
    (root / ".cache").mkdir()


def test_labels_samples_and_exact_pixels(tmp_path):
    _write_tree(tmp_path)
    dataset = ImageFolderFaces(tmp_path, image_size=8)
    assert dataset.class_names == ["alice", "bob", "carol"]
    assert len(dataset) == 6 and dataset.num_classes == 3
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(Path(path).parent.name == dataset.class_names[label] for path, label in dataset.samples)
    for item in range(len(dataset)):
        image, label, index, problem = dataset[item]
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
        assert (index, problem) == (item, "")
        expected = torch.tensor(COLOURS[dataset.class_names[label]], dtype=torch.uint8)
        assert torch.equal(image, expected.reshape(3, 1, 1).expand(3, 8, 8))


def test_nothing_is_read_before_setup(tmp_path):
    dataset = ImageFolderFaces(tmp_path / "not_yet")  # no error: the folder is scanned in setup()
    (tmp_path / "not_yet" / "x").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "not_yet" / "x" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    assert dataset.num_classes == 1


def test_no_resize_when_size_matches_and_grayscale_is_rgb(tmp_path):
    folder = tmp_path / "dave"
    folder.mkdir()
    gradient = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (12, 1))  # (12, 12) grayscale
    cv2.imwrite(str(folder / "g.png"), gradient)
    image, label, _, _ = ImageFolderFaces(tmp_path, image_size=12)[0]
    assert label == 0
    for channel in range(3):
        assert torch.equal(image[channel], torch.from_numpy(gradient))


def test_missing_root_and_empty_trees(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderFaces(tmp_path / "nowhere").setup()
    with pytest.raises(DataFormatError, match="No identity folders"):
        ImageFolderFaces(tmp_path).setup()
    (tmp_path / "erin").mkdir()
    (tmp_path / "erin" / "readme.txt").write_text("x")
    with pytest.raises(DataFormatError, match="erin"):
        ImageFolderFaces(tmp_path).setup()


def test_corrupt_image_is_reported_and_dropped_from_the_batch(tmp_path):
    _write_tree(tmp_path)
    broken = tmp_path / "bob" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    dataset = ImageFolderFaces(tmp_path, image_size=8)
    item = [path for path, _ in dataset.samples].index(str(broken))
    image, label, index, problem = dataset[item]
    assert image is None and label == 1 and index == item
    assert "broken.jpg" in problem and "Cannot decode" in problem
    batch = collate_faces([dataset[i] for i in range(len(dataset))])
    assert batch["images"].shape == (6, 3, 8, 8) and batch["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["bad"] == [(item, problem)]


def test_bad_image_size(tmp_path):
    with pytest.raises(ConfigurationError, match="image_size"):
        ImageFolderFaces(tmp_path, image_size=0)

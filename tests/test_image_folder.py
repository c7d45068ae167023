from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from fr_invariance.data.image_folder import CorruptImageError, ImageFolderFaces
from fr_invariance.data.image_transforms import ImageAttributeTransform

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


def test_labels_samples_and_pixels(tmp_path):
    _write_tree(tmp_path)
    dataset = ImageFolderFaces(tmp_path, image_size=8)
    assert dataset.classes == ["alice", "bob", "carol"]
    assert len(dataset) == 6
    assert [label for _, label in dataset.samples] == [0, 0, 1, 1, 2, 2]
    assert all(Path(path).parent.name == dataset.classes[label] for path, label in dataset.samples)
    for item in range(len(dataset)):
        image, label = dataset[item]
        assert image.dtype == torch.float32 and image.shape == (3, 8, 8)
        expected = torch.tensor(COLOURS[dataset.classes[label]], dtype=torch.float32) / 255.0
        torch.testing.assert_close(image, expected.reshape(3, 1, 1).expand(3, 8, 8), atol=1e-6, rtol=0)


def test_no_resize_when_size_matches_and_grayscale_is_rgb(tmp_path):
    folder = tmp_path / "dave"
    folder.mkdir()
    gradient = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (12, 1))  # (12, 12) grayscale
    cv2.imwrite(str(folder / "g.png"), gradient)
    image, label = ImageFolderFaces(tmp_path, image_size=12)[0]
    assert label == 0
    expected = torch.from_numpy(gradient).float() / 255.0
    for channel in range(3):
        torch.testing.assert_close(image[channel], expected)


def test_augmentation_is_applied(tmp_path):
    _write_tree(tmp_path)
    brighter = A.Compose([ImageAttributeTransform("brightness", t=0.5)])
    plain = ImageFolderFaces(tmp_path, image_size=8)[0][0]
    augmented = ImageFolderFaces(tmp_path, image_size=8, augmentation=brighter)[0][0]
    # +0.15 shift, rounded to uint8 levels
    torch.testing.assert_close(augmented, (plain + 0.15).clamp(0, 1), atol=1 / 255, rtol=0)


def test_missing_root_and_empty_trees(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderFaces(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="No identity folders"):
        ImageFolderFaces(tmp_path)
    (tmp_path / "erin").mkdir()
    (tmp_path / "erin" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="erin"):
        ImageFolderFaces(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    _write_tree(tmp_path)
    broken = tmp_path / "bob" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    dataset = ImageFolderFaces(tmp_path, image_size=8)
    item = [path for path, _ in dataset.samples].index(str(broken))
    with pytest.raises(CorruptImageError, match=r"broken\.jpg.*Remove it"):
        dataset[item]


def test_bad_image_size(tmp_path):
    _write_tree(tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderFaces(tmp_path, image_size=0)

"""FaceDataModule: configs, no disk access before setup, on-device augmentation, bad-sample accounting,
and the synthetic held-out pairs with room to fall."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fr_invariance.attributes import ATTRIBUTE_NAMES, attribute_index
from fr_invariance.data.datasets.base import TooManyBadSamplesError, collate_faces
from fr_invariance.data.datasets.generated import GeneratedFaces
from fr_invariance.data.datasets.image_folder import ImageFolderFaces
from fr_invariance.data.datasets.synthetic import SyntheticFaces, SyntheticPairs
from fr_invariance.data.datasets.verification_bin import write_verification_bin
from fr_invariance.data.factory import build_datamodule
from fr_invariance.data.module import FaceDataModule
from fr_invariance.data.verification_pairs import HeldOutPairs, nearest_neighbours
from fr_invariance.errors import ConfigurationError
from fr_invariance.image_ops import apply_image_attributes
from fr_invariance.synth.identity import sample_identities
from tests.test_generated import write_generated

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _faces(root: Path, identities: int = 3, images: int = 3, size: int = 12) -> Path:
    for identity in range(identities):
        (root / f"id{identity}").mkdir(parents=True)
        for k in range(images):
            cv2.imwrite(str(root / f"id{identity}" / f"{k}.png"), np.full((size, size, 3), 40 * identity + 10 * k, np.uint8))
    return root


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("data", ["image_folder", "recordio", "generated"])
def test_configs_build_without_reading_the_disk(tmp_path, data):
    missing = tmp_path / "nowhere"
    cfg = _compose(f"data={data}", f"data.root={missing}", f"data.val_root={missing}_val",
                   f"data.val_bins=[{missing}/lfw.bin]")
    module = build_datamodule(cfg)
    assert isinstance(module, FaceDataModule) and not missing.exists()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        module.setup("fit")


def test_synthetic_config_is_the_default_and_renders_on_the_device():
    cfg = _compose("data.identities=5", "data.val_identities=6", "data.val_pairs=20", "data.image_size=32", "attr=hue",
                   "data.val_hard_impostors=2")
    module = build_datamodule(cfg)
    assert module.rendered and module.num_classes == 5
    module.setup("fit")
    assert [s.name for s in module.val_sets] == ["ordinary", "vary_hue"] and module.val_sets[1].aliases == ("targeted",)
    assert module.val_sets[0].images.dtype == torch.uint8 and module.val_sets[0].images.shape == (40, 3, 32, 32)
    batch = next(iter(module.train_dataloader()))
    images, labels = module.on_after_batch_transfer(batch, 0)
    assert images.shape == (cfg.data.batch_size, 3, 32, 32) and labels.shape == (cfg.data.batch_size,)
    (pair_images,) = module.on_after_batch_transfer([module.val_sets[0].images[:4]], 0)
    assert pair_images.dtype == torch.float32 and float(pair_images.max()) <= 1.0


def test_semantic_attribute_needs_renders_or_carried_controls(tmp_path):
    with pytest.raises(ConfigurationError, match=r"'age' is semantic.*brightness, contrast, hue.*data=generated"):
        FaceDataModule(ImageFolderFaces(tmp_path), attr="age")
    write_generated(tmp_path / "gen")
    module = FaceDataModule(GeneratedFaces(tmp_path / "gen"), attr="expression", image_size=16)
    with pytest.raises(ConfigurationError, match="'expression' is semantic"):
        module.setup("fit")  # the table has no expression column
    module = FaceDataModule(GeneratedFaces(tmp_path / "gen"), attr="age", strength=0.5,
                            nuisance={"head_angle": 0.2}, image_size=16)
    module.setup("fit")
    assert len(module.train) == 6  # |age| <= 0.5 and |head_angle| <= 0.2


def test_real_images_get_the_renderers_image_level_attributes(tmp_path):
    _faces(tmp_path)
    module = FaceDataModule(ImageFolderFaces(tmp_path), attr="contrast", strength=1.0, image_size=12, batch_size=4,
                            nuisance={"brightness": 0.0, "hue": 0.2}, seed=3)
    module.setup("fit")
    batch = collate_faces([module.train[i] for i in range(4)])
    images, labels = module.on_after_batch_transfer(batch, 0)
    assert labels.tolist() == [0, 0, 0, 1]
    generator = torch.Generator().manual_seed(hash((3, 0, 0)) & 0x7FFF_FFFF_FFFF_FFFF)
    controls = (2.0 * torch.rand(4, len(ATTRIBUTE_NAMES), generator=generator) - 1.0) * module.half_widths
    semantic = [attribute_index(n) for n in ("head_angle", "age", "hair_color", "illumination", "expression", "brightness")]
    controls[:, semantic] = 0.0
    expected = apply_image_attributes(batch["images"].float() / 255.0, controls)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert not torch.equal(images, batch["images"].float() / 255.0)


def test_bad_samples_are_counted_then_fail_naming_the_file(tmp_path):
    _faces(tmp_path, identities=2, images=5)
    (tmp_path / "id1" / "zz_broken.jpg").write_bytes(b"not a jpeg")
    dataset = ImageFolderFaces(tmp_path)
    module = FaceDataModule(dataset, image_size=12, batch_size=11, max_bad_fraction=0.1)
    module.setup("fit")
    batch = collate_faces([dataset[i] for i in range(len(dataset))])
    with pytest.warns(UserWarning, match=r"1 of 11 so far.*zz_broken\.jpg"):
        images, labels = module.on_after_batch_transfer(batch, 0)
    assert images.shape[0] == 10 and module.bad_sample_count == 1
    strict = FaceDataModule(ImageFolderFaces(tmp_path), image_size=12, max_bad_fraction=0.0)
    strict.setup("fit")
    with pytest.raises(TooManyBadSamplesError, match=r"1 of 11 samples of ImageFolderFaces are unreadable.*zz_broken\.jpg.*data\.max_bad_fraction"):
        strict.on_after_batch_transfer(batch, 0)


def test_held_out_folder_and_bins_become_named_sets(tmp_path):
    _faces(tmp_path / "train")
    _faces(tmp_path / "val", identities=4, images=2)
    png = cv2.imencode(".png", np.zeros((12, 12, 3), np.uint8))[1].tobytes()
    write_verification_bin(tmp_path / "lfw.bin", [png] * 4, [True, False])
    module = FaceDataModule(ImageFolderFaces(tmp_path / "train"),
                            validation={"held_out": HeldOutPairs(ImageFolderFaces(tmp_path / "val"), pairs=20, seed=1)},
                            val_bins=[str(tmp_path / "lfw.bin")], image_size=10)
    module.setup("fit")
    assert [s.name for s in module.val_sets] == ["held_out", "lfw"]
    held_out = module.val_sets[0]
    assert held_out.images.shape == (40, 3, 10, 10) and held_out.issame.sum() == 10
    assert len(module.val_dataloader()) == 2
    duplicated = FaceDataModule(ImageFolderFaces(tmp_path / "train"), val_bins=[str(tmp_path / "lfw.bin")] * 2)
    with pytest.raises(ConfigurationError, match="share the name"):
        duplicated.setup("fit")


def test_synthetic_pairs_have_hard_impostors_and_a_widely_varying_set():
    source = SyntheticPairs(identities=30, identity_seed=7, pairs=40, hard_impostors=2, vary=["head_angle", "none"],
                            vary_pairs=30, targeted="head_angle", seed=0)
    people = sample_identities(30, 7)
    generator = torch.Generator().manual_seed(0)
    rows, controls, issame = source.pair_design(40, generator, people)
    neighbours = nearest_neighbours(people, 2)
    first, second = rows[0::2], rows[1::2]
    assert torch.equal(first[issame], second[issame])
    impostors = ~issame
    assert all(int(b) in neighbours[int(a)].tolist() for a, b in zip(first[impostors], second[impostors]))
    distances = torch.cdist(people, people)
    random_partner = distances[first[impostors], (first[impostors] + 7) % 30].mean()
    assert distances[first[impostors], second[impostors]].mean() < 0.9 * random_partner
    varied = SyntheticPairs.vary_widely(controls, "head_angle", generator)[:, attribute_index("head_angle")]
    assert torch.all(varied.abs() >= 0.5) and torch.all(varied[0::2] * varied[1::2] < 0)
    sets = source.load(image_size=32)
    assert [s.name for s in sets] == ["ordinary", "vary_head_angle"] and sets[1].aliases == ("targeted",)
    assert sets[0].issame.numel() == 40 and sets[1].issame.numel() == 30


def test_identity_seeds_must_differ():
    with pytest.raises(ConfigurationError, match="must differ"):
        FaceDataModule(SyntheticFaces(4, identity_seed=5), validation={"s": SyntheticPairs(identity_seed=5)})

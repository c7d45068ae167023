"""LightningDataModule over real images (``root/<identity>/<image>``), image-level attributes only."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset, get_worker_info

from fr_invariance.attributes import IMAGE_ATTRIBUTES, NO_ATTRIBUTE, attribute_index, validate_attributes
from fr_invariance.data.controls import training_ranges
from fr_invariance.data.image_folder import ImageFolderFaces
from fr_invariance.data.image_transforms import build_albumentations_augmentation
from fr_invariance.data.verification_pairs import VerificationPairs, sample_pair_indices


def _reseed_worker_augmentation(worker_id: int) -> None:
    """Give every loader worker (and every epoch) its own augmentation stream, derived from torch's seed."""
    dataset = get_worker_info().dataset
    if dataset.augmentation is not None:
        dataset.augmentation.set_random_seed(torch.initial_seed() % 2**32)


class ImageFolderDataModule(L.LightningDataModule):
    """Identities from ``root`` for training, optional held-out identities from ``val_root`` for verification.

    The targeted attribute (``attr``, image-level only) is drawn from ``U(-strength, strength)``, the other
    image-level attributes from their nuisance ranges; augmentation runs in the loader workers (albumentations).
    Validation pairs (half genuine, two different images of one identity where available) are decoded once.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        image_size: int = 112,
        batch_size: int = 128,
        num_workers: int = 2,
        attr: str = "none",
        strength: float = 0.5,
        nuisance: Mapping[str, float | None] | None = None,
        val_pairs: int = 600,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if attr != NO_ATTRIBUTE:
            validate_attributes([attr], allow_semantic=False)
        ranges = training_ranges(attr, strength, nuisance)
        strengths = {name: float(ranges[attribute_index(name)]) for name in IMAGE_ATTRIBUTES}
        augmentation = build_albumentations_augmentation(strengths, seed=seed)
        self.train_set = ImageFolderFaces(root, image_size=image_size, augmentation=augmentation)
        self.num_classes = len(self.train_set.classes)
        self.val_root = val_root
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_pairs = val_pairs
        self.seed = seed
        self.val_set: VerificationPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_root is not None and self.val_set is None:
            self.val_set = self._load_val_pairs()

    def _load_val_pairs(self) -> VerificationPairs:
        faces = ImageFolderFaces(self.val_root, image_size=self.image_size)
        by_identity: dict[int, list[int]] = {}
        for index, (_, label) in enumerate(faces.samples):
            by_identity.setdefault(label, []).append(index)
        generator = torch.Generator().manual_seed(self.seed + 1)
        first, second, issame = sample_pair_indices(len(faces.classes), self.val_pairs, generator)
        rows: list[int] = []
        for a, b, same in zip(first.tolist(), second.tolist(), issame.tolist()):
            images_a, images_b = by_identity[a], by_identity[b]
            pick_a = int(torch.randint(len(images_a), (1,), generator=generator))
            pick_b = int(torch.randint(len(images_b), (1,), generator=generator))
            if same and len(images_a) > 1 and pick_b == pick_a:
                pick_b = (pick_a + 1) % len(images_a)
            rows += [images_a[pick_a], images_b[pick_b]]
        images = torch.stack([faces[row][0] for row in rows])
        return VerificationPairs(images=images, issame=issame)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            worker_init_fn=_reseed_worker_augmentation,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(TensorDataset(self.val_set.images), batch_size=self.batch_size, shuffle=False)

"""The one LightningDataModule: a training dataset plus validation pair sets, all built with ``_target_``.

Training data is either rendered (:class:`~fr_invariance.data.datasets.synthetic.SyntheticFaces`: the
loader yields labels and controls, the renderer runs on the model's device) or a map-style dataset of
encoded images (:class:`~fr_invariance.data.datasets.base.FaceImageDataset`: image folder, RecordIO,
generated images with controls) decoded in the loader workers and shipped as uint8. On the device,
real images get the image-level attributes (brightness, contrast, hue) with the renderer's own
definition (:func:`fr_invariance.image_ops.apply_image_attributes`): the targeted attribute's control
from ``U(-strength, strength)``, the others from their nuisance ranges. Semantic attributes exist only
for rendered data, or for a dataset that carries their controls.

Validation: any number of :class:`~fr_invariance.data.verification_pairs.VerificationSource` s
(synthetic pairs, held-out images) plus one set per ``.bin`` in ``val_bins``; each set is one
validation dataloader, in order, and the LightningModule logs ``val/<name>/acc`` per set.

Nothing touches the disk before :meth:`setup` (reading :attr:`num_classes` of a dataset on disk reads
its index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
import torch
from torch.utils.data import DataLoader, TensorDataset

from fr_invariance.attributes import (
    IMAGE_ATTRIBUTES,
    NO_ATTRIBUTE,
    NUM_ATTRIBUTES,
    attribute_index,
    get_attribute,
)
from fr_invariance.data.controls import training_ranges
from fr_invariance.data.datasets.base import BadSampleCounter, FaceImageDataset, collate_faces
from fr_invariance.data.datasets.synthetic import SyntheticFaces, SyntheticPairs
from fr_invariance.data.datasets.verification_bin import BinPairs
from fr_invariance.data.resumable import ResumableLoader
from fr_invariance.data.verification_pairs import VerificationSet, VerificationSource
from fr_invariance.errors import ConfigurationError
from fr_invariance.image_ops import apply_image_attributes


def _semantic_attribute_error(attr: str, dataset: object) -> ConfigurationError:
    return ConfigurationError(
        f"Attribute {attr!r} is semantic: only the synthetic renderer can change it, and "
        f"{type(dataset).__name__} images do not carry its control. On real images use an image-level "
        f"attribute: {', '.join(IMAGE_ATTRIBUTES)}; or use data=generated with a {attr!r} column in its controls table."
    )


class FaceDataModule(L.LightningDataModule):
    """Training faces + named verification sets.

    Args:
        train: :class:`SyntheticFaces` (rendered) or a :class:`FaceImageDataset`.
        validation: verification sources by name (``conf/data/*.yaml``); ``None`` entries are skipped.
        val_bins: paths of insightface ``.bin`` sets, each a validation set named after its file stem.
        image_size: side of training and validation images in pixels.
        batch_size: training and validation batch size.
        num_workers: loader worker processes (decoding runs there).
        attr, strength, nuisance: targeted attribute (``none`` for none) with controls ``U(-strength, strength)``;
            other attributes ``U(-b, b)`` with ``b`` from ``nuisance`` (registry defaults for ``None``).
        seed: seed of the augmentation draws and the synthetic training stream.
        max_bad_fraction: fraction of unreadable samples (per dataset) tolerated before the run fails.
    """

    def __init__(
        self,
        train: SyntheticFaces | FaceImageDataset,
        validation: Mapping[str, VerificationSource | None] | None = None,
        val_bins: Sequence[str] = (),
        image_size: int = 112,
        batch_size: int = 128,
        num_workers: int = 0,
        attr: str = NO_ATTRIBUTE,
        strength: float = 0.5,
        nuisance: Mapping[str, float | None] | None = None,
        seed: int = 42,
        max_bad_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(max_bad_fraction) < 1.0:
            raise ConfigurationError(f"data.max_bad_fraction={max_bad_fraction} must lie in [0, 1).")
        self.train = train
        self.rendered = isinstance(train, SyntheticFaces)
        self.sources = [source for source in (validation or {}).values() if source is not None]
        self.sources += [BinPairs(path) for path in (val_bins or ())]
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.attr = attr
        self.half_widths = training_ranges(attr, strength, nuisance)
        self.seed = int(seed)
        self.max_bad_fraction = float(max_bad_fraction)
        if attr != NO_ATTRIBUTE and get_attribute(attr).kind == "semantic" and not self.rendered:
            if not getattr(type(train), "may_carry_controls", False):
                raise _semantic_attribute_error(attr, train)
        if self.rendered:
            for source in self.sources:
                if isinstance(source, SyntheticPairs) and source.identity_seed == train.identity_seed:
                    raise ConfigurationError(
                        "data.identity_seed and data.val_identity_seed must differ (held-out identities)."
                    )
        self.val_sets: list[VerificationSet] = []
        self.bad_samples: BadSampleCounter | None = None
        self._augmented = torch.zeros(NUM_ATTRIBUTES, dtype=torch.bool)
        self._is_setup = False

    @property
    def num_classes(self) -> int:
        """Identities of the training set (the margin head's class count)."""
        return int(self.train.num_classes)

    def setup(self, stage: str | None = None) -> None:
        """Read the training index, restrict carried controls to this run's ranges, load/render the pair sets."""
        if self._is_setup:
            return
        if not self.rendered:
            self._setup_images(self.train)
        sets = [item for source in self.sources for item in source.load(self.image_size, self.max_bad_fraction)]
        names = [name for item in sets for name in (item.name, *item.aliases)]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ConfigurationError(f"Two validation sets share the name(s) {', '.join(duplicated)}; rename one "
                                     "(.bin files are named after their file stem).")
        self.val_sets = sets
        self._is_setup = True

    def _setup_images(self, dataset: FaceImageDataset) -> None:
        dataset.image_size = self.image_size
        dataset.setup()
        carried = tuple(dataset.carried_attributes)
        if self.attr != NO_ATTRIBUTE and get_attribute(self.attr).kind == "semantic" and self.attr not in carried:
            raise _semantic_attribute_error(self.attr, dataset)
        if carried:
            kept = dataset.restrict({name: float(self.half_widths[attribute_index(name)]) for name in carried})
            rank_zero_info(f"data: {kept} of the generated images have controls inside this run's ranges")
        augmented = torch.zeros(NUM_ATTRIBUTES, dtype=torch.bool)
        for name in IMAGE_ATTRIBUTES:
            augmented[attribute_index(name)] = name not in carried and bool(self.half_widths[attribute_index(name)] > 0)
        self._augmented = augmented
        self.bad_samples = BadSampleCounter(type(dataset).__name__, len(dataset), self.max_bad_fraction)

    # --- loaders -------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        if self.rendered:
            trainer = self.trainer
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            batches, sampler = self.train.batches(self.batch_size, self.half_widths, self.seed, rank, world)
            return ResumableLoader(batches, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0, progress=self._training_progress)
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_faces,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _training_progress(self) -> tuple[int, int]:
        """``(epoch, batches trained in it)`` of the trainer: the state of the resumable training loader."""
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(TensorDataset(item.images), batch_size=self.batch_size, shuffle=False) for item in self.val_sets]

    # --- on the device -------------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Render synthetic batches; decode-count-augment real batches; uint8 pair images → float in [0, 1]."""
        if isinstance(batch, dict) and "controls" in batch:
            labels = batch["labels"]
            return self.train.render(labels, batch["controls"], self.image_size), labels
        if isinstance(batch, dict) and "images" in batch:
            if batch["bad"]:
                before = self.bad_samples.count
                for index, problem in batch["bad"]:
                    self.bad_samples.add(int(index), problem)
                if self.bad_samples.count > before and self.trainer is not None:
                    for logger in self.trainer.loggers:
                        logger.log_metrics({"data/bad_samples": float(self.bad_samples.count)}, step=self.trainer.global_step)
            images = batch["images"].float().div_(255.0)
            return self.augment(images), batch["labels"]
        if isinstance(batch, (list, tuple)) and len(batch) == 1 and batch[0].dtype == torch.uint8:
            return (batch[0].float().div_(255.0),)
        return batch

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Image-level attribute augmentation of ``(B, 3, H, W)`` images in ``[0, 1]`` on their device.

        Controls of the augmented attributes are drawn from ``U(-b, b)`` with a generator seeded by
        ``(seed, epoch, global step)``, so a resumed run draws the same controls.
        """
        if not bool(self._augmented.any()) or images.shape[0] == 0:
            return images
        trainer = self.trainer
        step = (trainer.current_epoch, trainer.global_step) if trainer is not None else (0, 0)
        generator = torch.Generator().manual_seed(hash((self.seed, *step)) & 0x7FFF_FFFF_FFFF_FFFF)
        half_widths = torch.where(self._augmented, self.half_widths, torch.zeros_like(self.half_widths))
        controls = (2.0 * torch.rand(images.shape[0], NUM_ATTRIBUTES, generator=generator) - 1.0) * half_widths
        return apply_image_attributes(images, controls.to(images.device))

    @property
    def bad_sample_count(self) -> int:
        """Distinct unreadable training samples seen so far."""
        return self.bad_samples.count if self.bad_samples is not None else 0


"""LightningDataModule over the procedural renderer.

Training batches are tiny ``{"labels", "controls"}`` tensors produced by the loader; the images are
rendered after the batch reaches the model's device (``on_after_batch_transfer``), so the renderer
runs on the GPU when there is one. Every batch is a pure function of ``(seed, epoch, batch index)``,
so runs are reproducible and a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from fr_invariance.data.controls import nuisance_ranges, sample_controls, training_ranges
from fr_invariance.data.verification_pairs import VerificationPairs, sample_pair_indices
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render


class EpochBatchSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, batch_index)`` keys; Lightning calls :meth:`set_epoch` at every epoch start."""

    def __init__(self, batches_per_epoch: int) -> None:
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in range(self.batches_per_epoch))

    def __len__(self) -> int:
        return self.batches_per_epoch


class SyntheticTrainingBatches(Dataset):
    """Maps ``(epoch, batch_index)`` to a batch of identity labels ``(B,)`` and controls ``(B, 8)``."""

    def __init__(self, num_identities: int, batch_size: int, half_widths: torch.Tensor, seed: int) -> None:
        self.num_identities = num_identities
        self.batch_size = batch_size
        self.half_widths = half_widths
        self.seed = seed

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        labels = torch.randint(self.num_identities, (self.batch_size,), generator=generator)
        controls = sample_controls(self.batch_size, self.half_widths, generator)
        return {"labels": labels, "controls": controls}


class SyntheticFaceDataModule(L.LightningDataModule):
    """Synthetic identities with targeted attribute augmentation, plus held-out verification pairs.

    Args:
        image_size: rendered side in pixels.
        identities: number of training identities (the head's class count).
        identity_seed / val_identity_seed: seeds of the training / held-out identity sets (must differ).
        samples_per_epoch: images per training epoch (rounded down to whole batches).
        attr, strength, nuisance: targeted attribute ``U(-strength, strength)``, others ``U(-b, b)``.
        val_identities, val_pairs: held-out identities and the number of verification pairs (half genuine).
        val_nuisance_scale: validation controls use the base nuisance ranges times this factor.
        seed: seed of the training stream and of the validation pairs.
    """

    def __init__(
        self,
        image_size: int = 112,
        identities: int = 2000,
        identity_seed: int = 0,
        samples_per_epoch: int = 64000,
        batch_size: int = 128,
        num_workers: int = 0,
        attr: str = "none",
        strength: float = 0.5,
        nuisance: Mapping[str, float | None] | None = None,
        val_identities: int = 200,
        val_identity_seed: int = 1000,
        val_pairs: int = 600,
        val_nuisance_scale: float = 1.0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if identity_seed == val_identity_seed:
            raise ValueError("data.identity_seed and data.val_identity_seed must differ (held-out identities).")
        if samples_per_epoch < batch_size:
            raise ValueError(f"data.samples_per_epoch={samples_per_epoch} is smaller than data.batch_size={batch_size}.")
        self.image_size = image_size
        self.num_classes = identities
        self.identity_seed = identity_seed
        self.batches_per_epoch = samples_per_epoch // batch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.half_widths = training_ranges(attr, strength, nuisance)
        self.val_half_widths = nuisance_ranges(nuisance) * val_nuisance_scale
        self.val_identities = val_identities
        self.val_identity_seed = val_identity_seed
        self.val_pairs = val_pairs
        self.seed = seed
        self.identities = sample_identities(identities, identity_seed)
        self._identities_on_device: dict[torch.device, torch.Tensor] = {}
        self.val_set: VerificationPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is None:
            self.val_set = self._render_val_pairs()

    def _render_val_pairs(self) -> VerificationPairs:
        generator = torch.Generator().manual_seed(self.seed + 1)
        first, second, issame = sample_pair_indices(self.val_identities, self.val_pairs, generator)
        identities = sample_identities(self.val_identities, self.val_identity_seed)
        order = torch.stack([first, second], dim=1).reshape(-1)  # rows 2i, 2i+1 form pair i
        controls = sample_controls(order.numel(), self.val_half_widths, generator)
        images = render(identities[order], controls, size=self.image_size)
        return VerificationPairs(images=images, issame=issame)

    def train_dataloader(self) -> DataLoader:
        batches = SyntheticTrainingBatches(self.num_classes, self.batch_size, self.half_widths, self.seed)
        return DataLoader(
            batches,
            sampler=EpochBatchSampler(self.batches_per_epoch),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() renders the validation pairs"
        return DataLoader(TensorDataset(self.val_set.images), batch_size=self.batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict):
            labels, controls = batch["labels"], batch["controls"]
            identities = self._identities_for(labels.device)
            return render(identities[labels], controls, size=self.image_size), labels
        return batch

    def _identities_for(self, device: torch.device) -> torch.Tensor:
        if device not in self._identities_on_device:
            self._identities_on_device[device] = self.identities.to(device)
        return self._identities_on_device[device]

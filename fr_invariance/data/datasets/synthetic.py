"""Synthetic faces from the procedural renderer: the training set (rendered on the model's device) and
held-out verification pairs with room to fall (hard impostors, pairs that vary an attribute widely).

Training batches are tiny ``{"labels", "controls"}`` tensors produced by the loader; the images are
rendered after the batch reaches the model's device, so the renderer runs on the GPU when there is one.
Every batch is a pure function of ``(seed, epoch, batch index)``, so runs are reproducible and a resumed
run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler

from fr_invariance.attributes import NO_ATTRIBUTE, attribute_index, get_attribute
from fr_invariance.data.controls import nuisance_ranges, sample_controls
from fr_invariance.data.verification_pairs import (
    VerificationSet,
    VerificationSource,
    nearest_neighbours,
    sample_pair_indices,
)
from fr_invariance.errors import ConfigurationError
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render

RENDER_BATCH = 512


class EpochBatchSampler(DistributedSampler):
    """Yields ``(epoch, batch_index)`` keys; Lightning calls :meth:`set_epoch` at every epoch start.

    Every process walks the same keys (each takes its own rows of a global batch, see
    :class:`SyntheticTrainingBatches`). It is a ``DistributedSampler`` only so that Lightning's DDP leaves it
    as it is instead of dealing whole batches out to the processes. :meth:`skip_next` makes the next pass
    over an epoch start after the batches a resumed run already trained on (mid-epoch checkpoints).
    """

    def __init__(self, batches_per_epoch: int) -> None:  # noqa: D107 - no process group needed
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, epoch: int, batches: int) -> None:
        """The next pass over ``epoch`` starts at batch ``batches`` (a pass over another epoch starts at 0)."""
        self._skip = (int(epoch), int(batches))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # a generator: the epoch and the skip are read at the first batch, after Lightning's set_epoch
        skip, self._skip = self._skip, None
        start = skip[1] if skip is not None and skip[0] == self.epoch and skip[1] < self.batches_per_epoch else 0
        for index in range(start, self.batches_per_epoch):
            yield self.epoch, index

    def __len__(self) -> int:
        return self.batches_per_epoch


class SyntheticTrainingBatches(Dataset):
    """Maps ``(epoch, batch_index)`` to this process's part of a global batch: identity labels ``(B,)`` and
    controls ``(B, 8)``, rows ``rank·B … (rank+1)·B`` of the ``B·world_size`` rows drawn for the key, so
    ``W`` DDP processes with batch ``B`` train on exactly the batches of one process with batch ``W·B``."""

    def __init__(self, num_identities: int, batch_size: int, half_widths: torch.Tensor, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.num_identities = num_identities
        self.batch_size = batch_size
        self.half_widths = half_widths
        self.seed = seed
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        rows = self.batch_size * self.world_size
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        labels = torch.randint(self.num_identities, (rows,), generator=generator)
        controls = sample_controls(rows, self.half_widths, generator)
        part = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return {"labels": labels[part], "controls": controls[part]}


class SyntheticFaces:
    """Training identities of the renderer: ``sample_identities(identities, identity_seed)``.

    Args:
        identities: number of identities (the head's class count).
        identity_seed: seed of the identity draw (must differ from the held-out pairs' seed).
        samples_per_epoch: images per training epoch (rounded down to whole batches).
    """

    rendered = True

    def __init__(self, identities: int = 2000, identity_seed: int = 0, samples_per_epoch: int = 64000) -> None:
        if identities < 2:
            raise ConfigurationError(f"data.identities={identities}: training needs at least 2 identities.")
        self.num_classes = int(identities)
        self.identity_seed = int(identity_seed)
        self.samples_per_epoch = int(samples_per_epoch)
        self._identities: torch.Tensor | None = None
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @property
    def identities(self) -> torch.Tensor:
        """Identity parameters ``(K, P)`` on the CPU."""
        if self._identities is None:
            self._identities = sample_identities(self.num_classes, self.identity_seed)
        return self._identities

    def batches(self, batch_size: int, half_widths: torch.Tensor, seed: int, rank: int = 0,
                world_size: int = 1) -> tuple[SyntheticTrainingBatches, EpochBatchSampler]:
        """The keyed batch dataset and its sampler for ``batch_size`` per process (``world_size`` processes, this
        one ``rank``) and controls ``U(-half_widths, half_widths)``; an epoch is ``samples_per_epoch`` images."""
        if self.samples_per_epoch < batch_size * world_size:
            raise ConfigurationError(
                f"data.samples_per_epoch={self.samples_per_epoch} is smaller than one global batch "
                f"(data.batch_size={batch_size} x {world_size} processes)."
            )
        return (SyntheticTrainingBatches(self.num_classes, batch_size, half_widths, seed, rank, world_size),
                EpochBatchSampler(self.samples_per_epoch // (batch_size * world_size)))

    def render(self, labels: torch.Tensor, controls: torch.Tensor, size: int) -> torch.Tensor:
        """Images ``(B, 3, size, size)`` in ``[0, 1]`` of identities ``labels`` ``(B,)`` with ``controls`` ``(B, 8)``,
        on the labels' device."""
        device = labels.device
        if device not in self._on_device:
            self._on_device[device] = self.identities.to(device)
        return render(self._on_device[device][labels], controls, size=size)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255.0).round_().clamp_(0, 255).to(torch.uint8)


class SyntheticPairs(VerificationSource):
    """Held-out synthetic verification sets, rendered once.

    ``ordinary``: ``pairs`` pairs of unseen identities, half genuine, half impostor; every attribute's
    control drawn from its nuisance range times ``nuisance_scale``. With ``hard_impostors = k > 0`` an
    impostor's partner is one of the ``k`` nearest identities in identity-parameter space (hard).
    ``vary_<a>`` for each attribute ``a`` in ``vary``: the same kind of pairs (``vary_pairs`` of them), but
    attribute ``a`` differs widely inside every pair: one image at ``t ∈ ±[0.5, 1]``, the other at the
    opposite sign, also ``|t| ∈ [0.5, 1]``. The set of the run's ``targeted`` attribute is also logged
    as ``targeted``.

    Args:
        identities, identity_seed: the held-out identities (seed must differ from the training one).
        pairs, vary_pairs: pairs in the ordinary / each varying set (2,000 makes one pair 0.05 points).
        nuisance, nuisance_scale: per-attribute nuisance half-widths (``aug.nuisance``) and their factor.
        hard_impostors: ``k`` nearest identities as impostor partners; 0 draws partners uniformly.
        vary: attributes with a varying set (``none`` entries are ignored).
        targeted: the run's targeted attribute (alias ``targeted`` for its set).
        seed: seed of pairs and controls.
    """

    def __init__(
        self,
        identities: int = 200,
        identity_seed: int = 1000,
        pairs: int = 2000,
        nuisance: Mapping[str, float | None] | None = None,
        nuisance_scale: float = 1.0,
        hard_impostors: int = 3,
        vary: Sequence[str] = (),
        vary_pairs: int = 2000,
        targeted: str = NO_ATTRIBUTE,
        seed: int = 43,
    ) -> None:
        self.identities = int(identities)
        self.identity_seed = int(identity_seed)
        self.pairs = int(pairs)
        self.half_widths = (nuisance_ranges(nuisance) * float(nuisance_scale)).clamp(max=1.0)
        self.hard_impostors = int(hard_impostors)
        self.vary = [name for name in dict.fromkeys(vary or ()) if name != NO_ATTRIBUTE]
        for name in self.vary:
            get_attribute(name)
        self.vary_pairs = int(vary_pairs)
        self.targeted = targeted
        self.seed = int(seed)

    def pair_design(self, num_pairs: int, generator: torch.Generator, people: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Identity rows ``(2P,)`` (rows ``2i``, ``2i+1`` = pair ``i``), controls ``(2P, 8)`` and ``issame`` ``(P,)``."""
        neighbours = nearest_neighbours(people, self.hard_impostors) if self.hard_impostors > 0 else None
        first, second, issame = sample_pair_indices(self.identities, num_pairs, generator, neighbours)
        rows = torch.stack([first, second], dim=1).reshape(-1)
        controls = sample_controls(rows.numel(), self.half_widths, generator)
        return rows, controls, issame

    @staticmethod
    def vary_widely(controls: torch.Tensor, attribute: str, generator: torch.Generator) -> torch.Tensor:
        """Set ``attribute``'s column so the two images of every pair sit at opposite signs, ``|t| ∈ [0.5, 1]``."""
        pairs = controls.shape[0] // 2
        sign = torch.where(torch.rand(pairs, generator=generator) < 0.5, -1.0, 1.0)
        magnitude = 0.5 + 0.5 * torch.rand(pairs, 2, generator=generator)
        column = torch.stack([sign * magnitude[:, 0], -sign * magnitude[:, 1]], dim=1).reshape(-1)
        varied = controls.clone()
        varied[:, attribute_index(attribute)] = column
        return varied

    def load(self, image_size: int, max_bad_fraction: float = 0.0) -> list[VerificationSet]:
        people = sample_identities(self.identities, self.identity_seed)
        generator = torch.Generator().manual_seed(self.seed)
        rows, controls, issame = self.pair_design(self.pairs, generator, people)
        sets = [VerificationSet("ordinary", self._render(people, rows, controls, image_size), issame)]
        for attribute in self.vary:
            rows, controls, issame = self.pair_design(self.vary_pairs, generator, people)
            controls = self.vary_widely(controls, attribute, generator)
            aliases = ("targeted",) if attribute == self.targeted else ()
            sets.append(VerificationSet(f"vary_{attribute}", self._render(people, rows, controls, image_size), issame, aliases))
        return sets

    @staticmethod
    def _render(people: torch.Tensor, rows: torch.Tensor, controls: torch.Tensor, size: int) -> torch.Tensor:
        chunks = [
            _to_uint8(render(people[rows[start : start + RENDER_BATCH]], controls[start : start + RENDER_BATCH], size=size))
            for start in range(0, rows.numel(), RENDER_BATCH)
        ]
        return torch.cat(chunks)

"""Held-out verification pairs: the one pair container and pair sampler every validation source uses.

A :class:`VerificationSet` holds images ``(2P, 3, S, S)`` uint8 where rows ``2i`` and ``2i+1`` form
pair ``i`` (the insightface ``.bin`` layout), and ``issame`` ``(P,)``. Sources (synthetic renders,
held-out image datasets, ``.bin`` files) implement :class:`VerificationSource`: ``load`` runs once, in
the data module's ``setup``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch

from fr_invariance.data.datasets.base import BadSampleCounter, CorruptImageError, FaceImageDataset, to_chw_tensor
from fr_invariance.errors import ConfigurationError


@dataclass
class VerificationSet:
    """One named pair set.

    Attributes:
        name: metric name part: the module logs ``val/<name>/acc``.
        images: ``(2P, 3, S, S)`` uint8 RGB; rows ``2i``, ``2i+1`` form pair ``i``.
        issame: ``(P,)`` bool, True for a genuine pair.
        aliases: further names logged with the same values (``targeted`` for the run's attribute).
    """

    name: str
    images: torch.Tensor
    issame: torch.Tensor
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[0] != 2 * self.issame.numel():
            raise ValueError(
                f"Verification set {self.name!r}: images {tuple(self.images.shape)} do not hold 2 x "
                f"{self.issame.numel()} pair images."
            )


class VerificationSource(ABC):
    """Something that yields verification sets (built with ``_target_`` from ``conf/data``)."""

    @abstractmethod
    def load(self, image_size: int, max_bad_fraction: float = 0.0) -> list[VerificationSet]:
        """Read or render the pairs at ``image_size`` pixels (called once, from ``setup``)."""


def sample_pair_indices(
    num_identities: int,
    num_pairs: int,
    generator: torch.Generator,
    impostor_neighbours: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Identity indices of ``num_pairs`` pairs, half genuine, half impostor (never the same id), shuffled so
    every fold of the 10-fold protocol holds both kinds.

    Args:
        impostor_neighbours: optional ``(K, k)`` candidate partners per identity (e.g. its k nearest
            identities); an impostor's second identity is then drawn among its first identity's candidates
            (hard impostors) instead of uniformly.

    Returns ``(first (P,), second (P,), issame (P,) bool)``.
    """
    if num_identities < 2:
        raise ConfigurationError("Verification needs at least 2 held-out identities (data.val_identities).")
    if num_pairs < 20:
        raise ConfigurationError(f"data.val_pairs={num_pairs}: the 10-fold protocol needs at least 20 pairs.")
    genuine = num_pairs // 2
    impostor = num_pairs - genuine
    same_ids = torch.randint(num_identities, (genuine,), generator=generator)
    first_ids = torch.randint(num_identities, (impostor,), generator=generator)
    if impostor_neighbours is None:
        offsets = torch.randint(1, num_identities, (impostor,), generator=generator)
        second_ids = (first_ids + offsets) % num_identities
    else:
        pick = torch.randint(impostor_neighbours.shape[1], (impostor,), generator=generator)
        second_ids = impostor_neighbours[first_ids, pick]
    first = torch.cat([same_ids, first_ids])
    second = torch.cat([same_ids, second_ids])
    issame = torch.cat([torch.ones(genuine, dtype=torch.bool), torch.zeros(impostor, dtype=torch.bool)])
    order = torch.randperm(num_pairs, generator=generator)
    return first[order], second[order], issame[order]


def nearest_neighbours(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(K, k)`` of each row's ``k`` nearest other rows of ``points`` ``(K, D)`` (euclidean)."""
    if not 1 <= k < points.shape[0]:
        raise ConfigurationError(f"hard impostors need 1 <= k < identities, got k={k} for {points.shape[0]}.")
    distances = torch.cdist(points.double(), points.double())
    distances.fill_diagonal_(float("inf"))
    return distances.topk(k, dim=1, largest=False).indices


class HeldOutPairs(VerificationSource):
    """Pairs drawn from a labelled held-out dataset (an image folder, a ``.rec``...) of unseen identities.

    Half genuine (two different images of one identity where it has more than one), half impostor.
    An unreadable image drops its pair (counted against ``max_bad_fraction`` of the pairs). A dataset
    whose ``root`` is None (``data.val_root=null``) gives no set.

    Args:
        dataset: any :class:`FaceImageDataset` (built with ``_target_``; its own ``image_size`` is used).
        pairs: number of pairs ``P``.
        seed: seed of the pair draw.
        name: metric name (``val/<name>/acc``); default ``held_out``.
    """

    def __init__(self, dataset: FaceImageDataset, pairs: int = 600, seed: int = 43, name: str = "held_out") -> None:
        self.dataset = dataset
        self.pairs = int(pairs)
        self.seed = int(seed)
        self.name = name

    def load(self, image_size: int, max_bad_fraction: float = 0.0) -> list[VerificationSet]:
        dataset = self.dataset
        if getattr(dataset, "root", "") is None:
            return []
        dataset.image_size = int(image_size)
        labels = dataset.labels
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(dataset.num_classes + 1))
        by_identity = [order[bounds[k] : bounds[k + 1]] for k in range(dataset.num_classes)]
        by_identity = [rows for rows in by_identity if len(rows)]
        generator = torch.Generator().manual_seed(self.seed)
        first, second, issame = sample_pair_indices(len(by_identity), self.pairs, generator)
        counter = BadSampleCounter(f"the pairs of validation set {self.name}", self.pairs, max_bad_fraction)
        images, kept = [], []
        for pair, (a, b, same) in enumerate(zip(first.tolist(), second.tolist(), issame.tolist())):
            rows_a, rows_b = by_identity[a], by_identity[b]
            pick_a = int(torch.randint(len(rows_a), (1,), generator=generator))
            pick_b = int(torch.randint(len(rows_b), (1,), generator=generator))
            if same and len(rows_a) > 1 and pick_b == pick_a:
                pick_b = (pick_a + 1) % len(rows_a)
            try:
                pair_images = [to_chw_tensor(dataset.load_image(int(rows_a[pick_a]))),
                               to_chw_tensor(dataset.load_image(int(rows_b[pick_b])))]
            except CorruptImageError as error:
                counter.add(pair, str(error))
                continue
            images += pair_images
            kept.append(pair)
        return [VerificationSet(self.name, torch.stack(images), issame[kept])]

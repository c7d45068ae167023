"""Held-out verification pairs: images ``(2P, 3, H, W)`` where rows ``2i`` and ``2i+1`` form pair ``i``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VerificationPairs:
    """Pair images in [0, 1] ``(2P, 3, H, W)`` and ``issame`` ``(P,)`` bool."""

    images: torch.Tensor
    issame: torch.Tensor


def sample_pair_indices(
    num_identities: int, num_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Identity indices of ``num_pairs`` pairs, half genuine, half impostor (never the same id), shuffled so
    every fold of the 10-fold protocol holds both kinds.

    Returns ``(first (P,), second (P,), issame (P,) bool)``.
    """
    if num_identities < 2:
        raise ValueError("Verification needs at least 2 held-out identities (data.val_identities).")
    if num_pairs < 20:
        raise ValueError(f"data.val_pairs={num_pairs}: the 10-fold protocol needs at least 20 pairs.")
    genuine = num_pairs // 2
    impostor = num_pairs - genuine
    same_ids = torch.randint(num_identities, (genuine,), generator=generator)
    first_ids = torch.randint(num_identities, (impostor,), generator=generator)
    offsets = torch.randint(1, num_identities, (impostor,), generator=generator)
    second_ids = (first_ids + offsets) % num_identities
    first = torch.cat([same_ids, first_ids])
    second = torch.cat([same_ids, second_ids])
    issame = torch.cat([torch.ones(genuine, dtype=torch.bool), torch.zeros(impostor, dtype=torch.bool)])
    order = torch.randperm(num_pairs, generator=generator)
    return first[order], second[order], issame[order]

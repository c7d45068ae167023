"""Imprinted margin-head initialisation (``head_init=imprint``): before the first step every class centre
is set to the mean unit embedding of that class's training images under the (pretrained) backbone, so a
fine-tune starts from a head that already agrees with the backbone instead of a random one whose
gradients disturb it (weight imprinting, Qi et al., CVPR 2018).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fr_invariance.evaluation.embed import evaluation_mode
from fr_invariance.models.preprocess import to_model_input

HEAD_INITS = ("random", "imprint")


def class_centres(
    backbone: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of unit embeddings ``(num_classes, E)`` float32 and image count ``(num_classes,)`` per class over
    ``batches`` of ``(images (B, 3, H, W) in [0, 1], labels (B,))``, summed over every process of a
    distributed run (eval mode, no gradients; the backbone's train/eval mode is restored)."""
    sums: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    with evaluation_mode(backbone):
        for images, labels in batches:
            embeddings = F.normalize(backbone(to_model_input(images)).float(), dim=1)
            if sums is None:
                sums = embeddings.new_zeros(num_classes, embeddings.shape[1])
                counts = embeddings.new_zeros(num_classes)
            sums.index_add_(0, labels, embeddings)
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
    if sums is None or counts is None:
        raise ValueError("head_init=imprint: the training loader yielded no batches.")
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts


@torch.no_grad()
def imprint_head(head: nn.Module, sums: torch.Tensor, counts: torch.Tensor) -> int:
    """Set ``head.weight`` rows ``(C, E)`` of classes with images to their mean unit embedding, rescaled to
    the norm of the existing rows (margin heads normalise rows; the scale keeps the optimiser's step size
    meaningful). Classes without images keep their initialisation. Returns the number imprinted."""
    weight = head.weight
    seen = counts > 0
    centres = F.normalize(sums[seen], dim=1).to(weight.dtype)
    scale = weight.norm(dim=1).mean()
    weight[seen.to(weight.device)] = (centres * scale).to(weight.device)
    return int(seen.sum())

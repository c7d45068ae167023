"""Embed images with a backbone: batched, eval mode, ``torch.inference_mode``, on the model's device.

Images enter in ``[0, 1]`` RGB and are mapped to the backbone's ``[-1, 1]`` input with
:func:`fr_invariance.models.preprocess.to_model_input`. Embeddings come back as float32 on the CPU.
The model's previous train/eval mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from fr_invariance.models.preprocess import to_model_input
from fr_invariance.synth.render import render


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a parameter-free module."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode under ``torch.inference_mode``; restore its train/eval mode on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")


def embed_images(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 256, progress: bool = False, description: str = "embed"
) -> torch.Tensor:
    """Embed ``images`` (N, 3, H, W) RGB in [0, 1] (any device) → (N, E) float32 on the CPU."""
    _check_batch_size(batch_size)
    device = model_device(model)
    chunks = []
    with evaluation_mode(model):
        for start in tqdm(range(0, images.shape[0], batch_size), desc=description, disable=not progress, leave=False):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            chunks.append(model(to_model_input(batch)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def iter_renders(
    identities: torch.Tensor, controls: torch.Tensor, *, image_size: int, batch_size: int, device: torch.device | str
) -> Iterator[torch.Tensor]:
    """Images of every (identity, controls) pair, identity-major, ``batch_size`` at a time, rendered on ``device``.

    Args:
        identities: (I, P) identity parameters from ``sample_identities``.
        controls: (N, 8) controls shared by every identity.

    Yields:
        (≤ batch_size, 3, image_size, image_size) RGB in [0, 1]; flat row ``i·N + n`` is identity ``i``
        under ``controls[n]``.
    """
    _check_batch_size(batch_size)
    n_controls = controls.shape[0]
    total = identities.shape[0] * n_controls
    identities, controls = identities.to(device), controls.to(device)
    for start in range(0, total, batch_size):
        flat = torch.arange(start, min(start + batch_size, total), device=device)
        yield render(identities[flat // n_controls], controls[flat % n_controls], size=image_size, device=device)


def embed_renders(
    model: nn.Module,
    identities: torch.Tensor,
    controls: torch.Tensor,
    *,
    image_size: int,
    batch_size: int = 256,
    progress: bool = False,
    description: str = "render+embed",
) -> torch.Tensor:
    """Render and embed every (identity, controls) pair without holding all images in memory.

    Args:
        identities: (I, P) identity parameters from ``sample_identities``.
        controls: (N, 8) controls shared by every identity.
        image_size: rendered side in pixels.

    Returns:
        (I, N, E) float32 embeddings on the CPU; row ``[i, n]`` is identity ``i`` under ``controls[n]``.
        Rendering happens on the model's device, ``batch_size`` images at a time.
    """
    _check_batch_size(batch_size)
    batches = iter_renders(identities, controls, image_size=image_size, batch_size=batch_size,
                           device=model_device(model))
    n_batches = -(-identities.shape[0] * controls.shape[0] // batch_size)
    chunks = []
    with evaluation_mode(model):
        for images in tqdm(batches, total=n_batches, desc=description, disable=not progress, leave=False):
            chunks.append(model(to_model_input(images)).float().cpu())
    return torch.cat(chunks).reshape(identities.shape[0], controls.shape[0], -1)

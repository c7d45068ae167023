"""A randomly initialised backbone with usable BatchNorm statistics, for tests that need varied embeddings."""

from __future__ import annotations

import torch

from fr_invariance.models import create_backbone
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render


def calibrated_tiny(size: int, seed: int = 0, embedding_size: int = 128, n_images: int = 64) -> torch.nn.Module:
    """A random ``tiny`` backbone whose BatchNorm statistics come from synthetic faces (eval mode).

    At default statistics a random network maps one identity's images to nearly the same direction
    (d̄ ~ 1e-6), which makes energies meaningless.
    """
    torch.manual_seed(seed)
    model = create_backbone("tiny", input_size=size, embedding_size=embedding_size)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        faces = render(sample_identities(n_images, 5), torch.rand(n_images, 8) * 0.6 - 0.3, size=size)
        model(to_model_input(faces))
    return model.eval()

"""Cost of the per-epoch InvarianceCallback relative to one training epoch of ``experiment=quickstart``.

Baseline in the same run: one quickstart epoch of training steps (render on the fly + forward/backward/SGD
step of the tiny backbone with the ArcFace head, 48 px, batch 128, 48 batches). Measured: the callback's
``measure`` with its default config (4 held-out identities × 20 curves × 8 attributes), the first call
(which also renders and caches the probe images) and the median of the following calls.

    python benchmarks/callback.py

Last line: JSON with callback_seconds, first_call_seconds, epoch_seconds, cost_pct_of_epoch.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fr_invariance.models import create_backbone
from fr_invariance.models.heads import ArcFace
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render

CONF = Path(__file__).resolve().parents[1] / "conf"
IMAGE_SIZE, BATCH, BATCHES, CLASSES = 48, 128, 48, 300


def quickstart_epoch_seconds(backbone: torch.nn.Module) -> float:
    """Wall time of one quickstart epoch of training steps (rendering included, validation excluded)."""
    head = ArcFace(CLASSES, backbone.embedding_size, s=32.0)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    identities = sample_identities(CLASSES, seed=0)
    generator = torch.Generator().manual_seed(0)
    backbone.train()
    start = time.perf_counter()
    for _ in range(BATCHES):
        labels = torch.randint(CLASSES, (BATCH,), generator=generator)
        controls = (torch.rand(BATCH, 8, generator=generator) * 2 - 1) * 0.15
        images = render(identities[labels], controls, size=IMAGE_SIZE)
        loss = F.cross_entropy(head(backbone(to_model_input(images)), labels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=quickstart"])
    callback = instantiate(cfg.invariance)
    torch.manual_seed(0)
    backbone = create_backbone("tiny", input_size=IMAGE_SIZE)
    epoch_seconds = quickstart_epoch_seconds(backbone)
    start = time.perf_counter()
    callback.measure(backbone, epoch=0)
    first = time.perf_counter() - start
    repeats = []
    for epoch in range(1, 4):
        start = time.perf_counter()
        callback.measure(backbone, epoch=epoch)
        repeats.append(time.perf_counter() - start)
    per_call = statistics.median(repeats)
    n_images = callback.n_identities * callback.design.controls.shape[0]
    print(f"quickstart epoch (training steps): {epoch_seconds:.2f} s; callback on {n_images} probe images: "
          f"first call {first:.2f} s, then {per_call:.2f} s per epoch = {100 * per_call / epoch_seconds:.1f} %")
    print(json.dumps({
        "callback_seconds": round(per_call, 3), "first_call_seconds": round(first, 3),
        "epoch_seconds": round(epoch_seconds, 3), "cost_pct_of_epoch": round(100 * per_call / epoch_seconds, 2),
        "probe_images": n_images,
    }))


if __name__ == "__main__":
    main()

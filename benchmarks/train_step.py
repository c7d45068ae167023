"""Training-step throughput: our LightningModule under Lightning's Trainer vs a bare PyTorch loop.

Both use the same backbone, margin head, SGD optimizer, polynomial schedule, gradient clipping and the same
pre-rendered batches (rendering is measured by benchmarks/render.py, not here). Runs alternate
(ours, bare, ours, bare, ...) and the median of each is reported, so machine noise hits both alike.

    python benchmarks/train_step.py                       # tiny backbone, 48 px, batch 128
    python benchmarks/train_step.py --model iresnet18 --image-size 112 --batch-size 32 --steps 12

Last line: JSON with ours_samples_per_s, bare_samples_per_s, overhead_pct.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from fr_invariance.models.preprocess import to_model_input
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render
from fr_invariance.training.callbacks import NaNGuard, batch_size_of
from fr_invariance.training.module import FaceRecognitionModule
from fr_invariance.training.optim import build_optimizer, build_scheduler

CONF = Path(__file__).resolve().parents[1] / "conf"


class CycledBatches(Dataset):
    """``steps`` batches cycling over a small pool of pre-rendered ``(images, labels)`` batches."""

    def __init__(self, pool: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
        self.pool, self.steps = pool, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool[index % len(self.pool)]


def training_config(model: str, image_size: int) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"data.image_size={image_size}", "head=arcface"])
    keys = ("model", "head", "optim", "scheduler", "head_lr_mult", "freeze_bn", "freeze_trunk")
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in keys}


class StepTimer(L.Callback):
    """Wall time of the training batches after ``warmup`` batches (forward, backward, step, logging)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def run_ours(cfg: dict, num_classes: int, loader: DataLoader, warmup: int, log_dir: str) -> float:
    torch.manual_seed(0)
    module = FaceRecognitionModule(cfg, num_classes)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=CSVLogger(log_dir), log_every_n_steps=10,
        callbacks=[timer, NaNGuard(), ThroughputMonitor(batch_size_fn=batch_size_of)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        gradient_clip_val=5.0, limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    measured = len(loader) - warmup
    return measured * loader.dataset.pool[0][1].numel() / (timer.end - timer.start)


def run_bare(cfg: dict, num_classes: int, loader: DataLoader, warmup: int) -> float:
    torch.manual_seed(0)
    module = FaceRecognitionModule(cfg, num_classes)  # same modules, driven by hand
    backbone, head = module.backbone.train(), module.head.train()
    lr = cfg["optim"]["lr"]
    optimizer = build_optimizer(
        [{"params": list(backbone.parameters()), "lr": lr}, {"params": list(head.parameters()), "lr": lr}], cfg["optim"]
    )
    scheduler = build_scheduler(optimizer, cfg["scheduler"], len(loader), len(loader))["scheduler"]
    start = 0.0
    for step, (images, labels) in enumerate(loader):
        if step == warmup:
            start = time.perf_counter()
        logits = head(backbone(to_model_input(images)).float(), labels)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(backbone.parameters()) + list(head.parameters()), 5.0)
        optimizer.step()
        scheduler.step()
    measured = len(loader) - warmup
    return measured * labels.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40, help="training steps per measured run")
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    parser.add_argument("--repeats", type=int, default=5, help="alternating ours/bare rounds")
    args = parser.parse_args()

    cfg = training_config(args.model, args.image_size)
    generator = torch.Generator().manual_seed(0)
    identities = sample_identities(args.classes, seed=0)
    pool = []
    for _ in range(4):
        labels = torch.randint(args.classes, (args.batch_size,), generator=generator)
        controls = (torch.rand(args.batch_size, 8, generator=generator) * 2 - 1) * 0.2
        pool.append((render(identities[labels], controls, size=args.image_size), labels))
    loader = DataLoader(CycledBatches(pool, args.steps), batch_size=None, shuffle=False)

    ours, bare = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for round_index in range(args.repeats):
            ours.append(run_ours(cfg, args.classes, loader, args.warmup, log_dir))
            bare.append(run_bare(cfg, args.classes, loader, args.warmup))
            print(f"round {round_index}: ours {ours[-1]:.1f} samples/s, bare {bare[-1]:.1f} samples/s", flush=True)
    ours_sps, bare_sps = statistics.median(ours), statistics.median(bare)
    overhead = (bare_sps / ours_sps - 1.0) * 100.0
    print(f"{args.model} @ {args.image_size}px, batch {args.batch_size}, {torch.get_num_threads()} threads: "
          f"ours {ours_sps:.1f} samples/s, bare loop {bare_sps:.1f} samples/s, overhead {overhead:+.1f} %")
    print(json.dumps({
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
        "ours_samples_per_s": round(ours_sps, 2), "bare_samples_per_s": round(bare_sps, 2),
        "overhead_pct": round(overhead, 2),
    }))


if __name__ == "__main__":
    main()

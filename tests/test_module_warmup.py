"""The LightningModule built from objects: head warm-up freezes the backbone (weights and BN statistics) for
N steps, then training reaches it; the head's learning rate follows ``head_lr_mult``."""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from fr_invariance.models.heads import ArcFace
from fr_invariance.models.tiny import tiny
from fr_invariance.training.module import FaceRecognitionModule
from fr_invariance.training.optim import constant


def _fit(head_warmup_steps: int, steps: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], FaceRecognitionModule]:
    torch.manual_seed(0)
    backbone = tiny(input_size=32, embedding_size=32)
    head = ArcFace(num_classes=4, embedding_size=32, s=16.0, m=0.2)
    module = FaceRecognitionModule(backbone, head, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                                   constant, head_lr_mult=2.0, head_warmup_steps=head_warmup_steps)
    before_backbone = {k: v.clone() for k, v in backbone.state_dict().items()}
    before_head = {k: v.clone() for k, v in head.state_dict().items()}
    data = TensorDataset(torch.rand(8 * steps, 3, 32, 32), torch.randint(0, 4, (8 * steps,)))
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(module, DataLoader(data, batch_size=8))
    changed_backbone = {k: not torch.equal(v, backbone.state_dict()[k]) for k, v in before_backbone.items()}
    changed_head = {k: not torch.equal(v, head.state_dict()[k]) for k, v in before_head.items()}
    return changed_backbone, changed_head, module


def test_head_warmup_freezes_backbone_weights_and_statistics():
    changed_backbone, changed_head, module = _fit(head_warmup_steps=3, steps=3)
    assert not any(changed_backbone.values())  # weights and BN running statistics
    assert all(changed_head.values())
    groups = {group["name"]: group["lr"] for group in module.optimizers().optimizer.param_groups}
    assert groups == {"backbone": 0.1, "head": 0.2}


def test_backbone_trains_after_the_warmup():
    changed_backbone, _, _ = _fit(head_warmup_steps=2, steps=4)
    assert any(changed_backbone.values())

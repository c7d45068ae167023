"""The LightningModule: backbone + margin head + cross-entropy, with held-out verification accuracy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from fr_invariance.metrics.verification import verification_accuracy
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.training.optim import build_optimizer, build_scheduler


def trunk_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """Parameters before the backbone's last ``nn.Linear`` (the embedding projection), in registration order."""
    modules = list(backbone.modules())
    last_linear = max(i for i, module in enumerate(modules) if isinstance(module, nn.Linear))
    head_params = {id(p) for module in modules[last_linear:] for p in module.parameters(recurse=False)}
    return [p for p in backbone.parameters() if id(p) not in head_params]


class FaceRecognitionModule(L.LightningModule):
    """Fine-tunes ``cfg["model"]["backbone"]`` with the margin head ``cfg["head"]``.

    Args:
        cfg: the full resolved training config as a plain dict (saved in every checkpoint under
            ``hyper_parameters["cfg"]``, so evaluation can rebuild the backbone).
        num_classes: number of training identities.

    Batches: ``(images (B, 3, H, W) in [0, 1], labels (B,))`` for training, ``(images,)`` for validation
    (verification pairs in consecutive rows).
    """

    def __init__(self, cfg: dict[str, Any], num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone: nn.Module = instantiate(cfg["model"]["backbone"])
        self.head: nn.Module = instantiate(
            cfg["head"], num_classes=num_classes, embedding_size=self.backbone.embedding_size
        )
        self.optim_cfg = cfg["optim"]
        self.scheduler_cfg = cfg["scheduler"]
        self.head_lr_mult = float(cfg.get("head_lr_mult", 1.0))
        self.freeze_bn = bool(cfg.get("freeze_bn", False))
        if cfg.get("freeze_trunk", False):
            for parameter in trunk_parameters(self.backbone):
                parameter.requires_grad_(False)
        if self.freeze_bn:
            for module in self._backbone_batchnorms():
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
        self._val_embeddings: list[torch.Tensor] = []

    def _backbone_batchnorms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "FaceRecognitionModule":
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self._backbone_batchnorms():
                module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, E)`` of images ``(B, 3, H, W)`` RGB in ``[0, 1]``."""
        return self.backbone(to_model_input(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.head(self(images).float(), labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log_dict({"train/loss": loss.detach(), "train/acc": accuracy}, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images = batch[0]
        embeddings = self(images) + self(images.flip(-1))  # insightface protocol: image + its mirror
        self._val_embeddings.append(embeddings.float())

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        embeddings = torch.cat(self._val_embeddings)
        self._val_embeddings.clear()
        if self.trainer.world_size > 1:
            embeddings = self._gather_in_dataset_order(embeddings)
        issame = self.trainer.datamodule.val_set.issame
        embeddings = embeddings[: 2 * issame.numel()]
        result = verification_accuracy(embeddings.cpu().numpy(), issame.cpu().numpy())
        self.log("val_verification_acc", result.accuracy_mean, prog_bar=True, rank_zero_only=True)
        self.log("val_verification_acc_std", result.accuracy_std, rank_zero_only=True)

    def _gather_in_dataset_order(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Undo DistributedSampler's round-robin split: rank r holds dataset rows r, r + W, r + 2W, ..."""
        gathered = self.all_gather(embeddings)  # (W, n, E)
        return gathered.transpose(0, 1).reshape(-1, embeddings.shape[-1])

    def configure_optimizers(self) -> dict[str, Any]:
        lr = float(self.optim_cfg["lr"])
        groups = [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr},
            {"params": list(self.head.parameters()), "lr": lr * self.head_lr_mult},
        ]
        optimizer = build_optimizer([g for g in groups if g["params"]], self.optim_cfg)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

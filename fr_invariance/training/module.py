"""The LightningModule: backbone + margin head + cross-entropy, with held-out verification accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from fr_invariance.metrics.verification import verification_accuracy
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.training.head_init import HEAD_INITS, class_centres, imprint_head

INVARIANCE_EPOCH_KEY = "invariance_epoch"
"""Checkpoint entry: the epoch of the weights as the invariance callback numbers it (see ``on_save_checkpoint``)."""
STEPS_INTO_EPOCH_KEY = "steps_into_epoch"
"""Checkpoint entry: optimizer steps past ``invariance_epoch``'s end (> 0: a mid-epoch checkpoint)."""
OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
"""``optimizer(param_groups)`` (a ``_partial_`` of ``conf/optim``)."""
SchedulerFactory = Callable[..., dict[str, Any]]
"""``scheduler(optimizer, total_steps=, steps_per_epoch=)`` → Lightning ``lr_scheduler`` dict (``conf/scheduler``)."""


def trunk_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """Parameters before the backbone's last ``nn.Linear`` (the embedding projection), in registration order."""
    modules = list(backbone.modules())
    last_linear = max(i for i, module in enumerate(modules) if isinstance(module, nn.Linear))
    head_params = {id(p) for module in modules[last_linear:] for p in module.parameters(recurse=False)}
    return [p for p in backbone.parameters() if id(p) not in head_params]


class FaceRecognitionModule(L.LightningModule):
    """Fine-tunes ``backbone`` with the margin ``head`` and cross-entropy.

    Args:
        backbone: embedding network (forward on ``[-1, 1]`` images; declares ``metric``, ``input_size``,
            ``embedding_size``).
        head: margin head, ``head(embeddings (B, E), labels (B,)) → logits (B, classes)``.
        optimizer: ``optimizer(param_groups)`` (``_partial_`` of ``conf/optim``); its ``lr`` is the backbone's.
        scheduler: ``scheduler(optimizer, total_steps=, steps_per_epoch=)`` or None for a constant rate.
        head_lr_mult: learning rate of the head = backbone lr × this.
        freeze_bn: keep the backbone's BatchNorm statistics and affine parameters fixed.
        freeze_trunk: train only the embedding projection (last Linear and what follows it).
        head_warmup_steps: the first N optimizer steps train the head only (backbone frozen, in eval
            mode), so a fresh head does not wreck a pretrained backbone.
        head_init: ``random`` (the head's own initialisation) or ``imprint``: before the first step, every
            class centre becomes the mean unit embedding of its images in one pass over the training loader
            (:mod:`fr_invariance.training.head_init`); skipped when a run resumes.
        config: the resolved training config (plain containers), saved in every checkpoint under
            ``hyper_parameters["cfg"]`` so evaluation can rebuild the backbone.

    Batches: ``(images (B, 3, H, W) in [0, 1], labels (B,))`` for training, ``(images,)`` for validation
    (verification pairs in consecutive rows).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        head_lr_mult: float = 1.0,
        freeze_bn: bool = False,
        freeze_trunk: bool = False,
        head_warmup_steps: int = 0,
        head_init: str = "random",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init={head_init!r}; use one of {HEAD_INITS}.")
        self.save_hyperparameters({"cfg": dict(config) if config is not None else None})
        self.backbone = backbone
        self.head = head
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.head_lr_mult = float(head_lr_mult)
        self.freeze_bn = bool(freeze_bn)
        self.head_warmup_steps = int(head_warmup_steps)
        self.head_init = head_init
        if freeze_trunk:
            for parameter in trunk_parameters(self.backbone):
                parameter.requires_grad_(False)
        if self.freeze_bn:
            for module in self._backbone_batchnorms():
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
        self._val_embeddings: dict[int, list[torch.Tensor]] = {}  # dataloader index -> batches
        self.verification_before_training: dict[str, float] = {}  # val/<set>/... of a full sanity check

    def _backbone_batchnorms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def warming_up_head(self) -> bool:
        """True while the head warm-up runs (the backbone is frozen)."""
        return self.global_step < self.head_warmup_steps

    def train(self, mode: bool = True) -> "FaceRecognitionModule":
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self._backbone_batchnorms():
                module.eval()
        return self

    def on_train_start(self) -> None:
        if self.head_init == "imprint" and self.global_step == 0:
            self.imprint_head()

    def imprint_head(self) -> int:
        """Imprint the head from one pass over the training loader (batches transferred and rendered or
        augmented exactly as in training). Returns the number of classes imprinted."""
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise ValueError("head_init=imprint reads the training data through the trainer's datamodule; fit with "
                             "datamodule=... (train.py always does).")
        batches = (datamodule.on_after_batch_transfer(move_data_to_device(batch, self.device), 0)
                   for batch in datamodule.train_dataloader())
        sums, counts = class_centres(self.backbone, batches, self.head.weight.shape[0])
        return imprint_head(self.head, sums, counts)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.freeze_bn and self.training and any(m.training for m in self._backbone_batchnorms()):
            self.train(True)  # Lightning never calls train() at fit start: apply the frozen BatchNorm now
        if self.warming_up_head:
            self.backbone.eval()
        elif self.head_warmup_steps and not self.backbone.training:
            self.train(True)  # warm-up just ended: back to train mode (freeze_bn respected)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``invariance_epoch``: the index of the last fully trained epoch (−1 before the first), the
        epoch number the invariance callback gives to a measurement of these weights, and ``steps_into_epoch``:
        optimizer steps of the next epoch already in these weights (0 at an epoch's end)."""
        trainer = self.trainer
        steps_per_epoch = max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))
        checkpoint[INVARIANCE_EPOCH_KEY] = trainer.global_step // steps_per_epoch - 1
        checkpoint[STEPS_INTO_EPOCH_KEY] = trainer.global_step % steps_per_epoch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, E)`` of images ``(B, 3, H, W)`` RGB in ``[0, 1]``."""
        return self.backbone(to_model_input(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        with torch.set_grad_enabled(not self.warming_up_head):
            embeddings = self(images)
        logits = self.head(embeddings.float(), labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log_dict({"train/loss": loss.detach(), "train/acc": accuracy}, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Embed one batch of pair images (consecutive rows form pairs) of validation set ``dataloader_idx``."""
        images = batch[0]
        both = self(torch.cat([images, images.flip(-1)]))  # insightface protocol: image + its mirror, one pass
        embeddings = both[: images.shape[0]] + both[images.shape[0] :]
        self._val_embeddings.setdefault(dataloader_idx, []).append(embeddings.float())

    def on_validation_epoch_end(self) -> None:
        """Per validation set ``name`` (the datamodule's ``val_sets``, in dataloader order) log DESIGN §11's
        ``val/<name>/acc``, ``acc_std``, ``threshold`` and ``tar@far1e-3`` (also under each alias, e.g.
        ``val/targeted/...``); ``val_verification_acc`` (``_std``) repeat the ``ordinary`` set (else the
        first one). Sets not embedded in full (sanity check, ``limit_val_batches``) are skipped. A full sanity
        check (before training) logs nothing and keeps its metrics in ``verification_before_training``."""
        outputs, self._val_embeddings = self._val_embeddings, {}
        datamodule = getattr(self.trainer, "datamodule", None)
        val_sets = getattr(datamodule, "val_sets", None) or []
        metrics: dict[str, float] = {}
        for index, val_set in enumerate(val_sets):
            if index not in outputs:
                continue
            embeddings = torch.cat(outputs[index])
            if self.trainer.world_size > 1:
                embeddings = self._gather_in_dataset_order(embeddings)
            pairs = val_set.issame.numel()
            if embeddings.shape[0] < 2 * pairs:
                continue
            result = verification_accuracy(embeddings[: 2 * pairs].cpu().numpy(), val_set.issame.cpu().numpy())
            for name in (val_set.name, *val_set.aliases):
                metrics[f"val/{name}/acc"] = result.accuracy_mean
                metrics[f"val/{name}/acc_std"] = result.accuracy_std
                metrics[f"val/{name}/threshold"] = result.threshold_mean
                metrics[f"val/{name}/tar@far1e-3"] = result.tar_at_far[1e-3]
        if not metrics:
            return
        if self.trainer.sanity_checking:
            self.verification_before_training = metrics
            return
        names = [val_set.name for val_set in val_sets if f"val/{val_set.name}/acc" in metrics]
        main = "ordinary" if "ordinary" in names else names[0]
        metrics["val_verification_acc"] = metrics[f"val/{main}/acc"]
        metrics["val_verification_acc_std"] = metrics[f"val/{main}/acc_std"]
        bad = getattr(datamodule, "bad_sample_count", None)
        if bad is not None and not getattr(datamodule, "rendered", True):
            metrics["data/bad_samples"] = float(bad)
        self.log("val_verification_acc", metrics.pop("val_verification_acc"), prog_bar=True, rank_zero_only=True)
        self.log_dict(metrics, rank_zero_only=True)

    def _gather_in_dataset_order(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Undo DistributedSampler's round-robin split: rank r holds dataset rows r, r + W, r + 2W, ..."""
        gathered = self.all_gather(embeddings)  # (W, n, E)
        return gathered.transpose(0, 1).reshape(-1, embeddings.shape[-1])

    def configure_optimizers(self) -> dict[str, Any]:
        groups = [
            {"name": "backbone", "params": [p for p in self.backbone.parameters() if p.requires_grad]},
            {"name": "head", "params": list(self.head.parameters())},
        ]
        optimizer = self.optimizer_factory([group for group in groups if group["params"]])
        for group in optimizer.param_groups:  # the head's rate is relative to the configured one
            if group["name"] == "head":
                group["lr"] *= self.head_lr_mult
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

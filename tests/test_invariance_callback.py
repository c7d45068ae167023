"""InvarianceCallback inside a real (tiny) Lightning fit, and its Hydra config group."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from fr_invariance.evaluation.invariance import INVARIANCE_COLUMNS
from fr_invariance.models import create_backbone
from fr_invariance.training.invariance_callback import InvarianceCallback

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE = 32
ATTRIBUTES = ["head_angle", "brightness", "contrast"]


class TinyModule(L.LightningModule):
    """``self.backbone`` = tiny CNN, a linear head, random images; optional validation loop."""

    def __init__(self, with_validation: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = create_backbone("tiny", input_size=SIZE, embedding_size=32)
        self.head = torch.nn.Linear(32, 4)
        self.with_validation = with_validation
        self.modes_seen: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.modes_seen.append(self.backbone.training)
        images, labels = batch
        return F.cross_entropy(self.head(self.backbone(images * 2 - 1)), labels)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.head(self.backbone(batch[0] * 2 - 1)).square().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def _loader(self, n: int) -> DataLoader:
        generator = torch.Generator().manual_seed(n)
        images = torch.rand(n, 3, SIZE, SIZE, generator=generator)
        data = TensorDataset(images, torch.randint(0, 4, (n,), generator=generator))
        return DataLoader(data, batch_size=8)

    def train_dataloader(self):
        return self._loader(16)

    def val_dataloader(self):
        return self._loader(8) if self.with_validation else []


def fit(tmp_path: Path, callback: InvarianceCallback, *, with_validation: bool) -> tuple[TinyModule, L.Trainer]:
    module = TinyModule(with_validation)
    trainer = L.Trainer(
        max_epochs=2, logger=CSVLogger(tmp_path, name="csv"), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=1, default_root_dir=tmp_path,
        num_sanity_val_steps=1 if with_validation else 0, callbacks=[callback],
        limit_val_batches=1 if with_validation else 0,
    )
    trainer.fit(module)
    return module, trainer


def small_callback(**kwargs) -> InvarianceCallback:
    return InvarianceCallback(n_identities=2, n_curves=8, attributes=ATTRIBUTES, params=[0.6, 1.0], n_pairs=2000,
                              **kwargs)


def test_logs_every_epoch_with_validation(tmp_path):
    callback = small_callback()
    module, trainer = fit(tmp_path, callback, with_validation=True)
    metrics = pd.read_csv(Path(trainer.logger.log_dir) / "metrics.csv")
    for attribute in ATTRIBUTES:
        for name in (f"invariance/{attribute}/energy@0.6", f"invariance/{attribute}/energy@1",
                     f"invariance/{attribute}/magnitude"):
            logged = metrics.dropna(subset=[name])
            assert sorted(logged["epoch"]) == [0, 1], name
    rows = pd.read_csv(Path(trainer.default_root_dir) / "invariance.csv")
    assert tuple(rows.columns) == INVARIANCE_COLUMNS
    assert sorted(rows["epoch"].unique()) == [0, 1]  # not during the sanity check, once per epoch
    assert len(rows) == 2 * 2 * len(ATTRIBUTES) * 2
    last = rows[rows["epoch"] == 1]
    for attribute in ATTRIBUTES:
        energies = last.loc[(last["attribute"] == attribute) & (last["param"] == 0.6), "energy"]
        assert callback.last_energies[attribute] == pytest.approx(energies.mean())
        logged = metrics.dropna(subset=[f"invariance/{attribute}/energy@0.6"])
        assert logged.loc[logged["epoch"] == 1, f"invariance/{attribute}/energy@0.6"].item() == pytest.approx(
            energies.mean(), rel=1e-5)
    assert all(module.modes_seen)  # train mode restored after every measurement


def test_without_validation_and_every_second_epoch(tmp_path):
    callback = small_callback(every_n_epochs=2)
    _, trainer = fit(tmp_path, callback, with_validation=False)
    rows = pd.read_csv(Path(trainer.default_root_dir) / "invariance.csv")
    assert sorted(rows["epoch"].unique()) == [1]
    assert set(callback.last_energies) == set(ATTRIBUTES)


def test_probe_images_are_fixed_and_cache_matches_rerendering():
    backbone = create_backbone("tiny", input_size=SIZE, embedding_size=32).eval()
    cached = small_callback(image_size=SIZE)
    rendered = small_callback(image_size=SIZE, image_cache_mb=0)
    first = cached.measure(backbone, run="r", epoch=0)
    again = cached.measure(backbone, run="r", epoch=0)
    pd.testing.assert_frame_equal(first, again)
    assert cached._images is not None and rendered._images is None
    pd.testing.assert_frame_equal(first, rendered.measure(backbone, run="r", epoch=0), check_exact=False,
                                  rtol=1e-4, atol=1e-5)


def test_config_group_default_and_off():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("train", overrides=["data.image_size=48"])
        callback = instantiate(default.invariance)
        assert isinstance(callback, InvarianceCallback) and callback.image_size == 48
        assert compose("train", overrides=["invariance=off"]).invariance is None


def test_wandb_gets_violin_images_and_energy_chart(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    module = TinyModule(with_validation=False)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="fr-invariance-test")
    trainer = L.Trainer(max_epochs=2, logger=[CSVLogger(tmp_path, name="csv"), logger], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        log_every_n_steps=1, default_root_dir=tmp_path, limit_val_batches=0,
                        callbacks=[small_callback()])
    try:
        trainer.fit(module)
        run_dir = Path(logger.experiment.dir)
    finally:
        wandb.finish()
    violins = sorted((run_dir / "media" / "images" / "invariance").glob("violin_*.png"))
    assert len(violins) == 2  # one per epoch
    assert list((run_dir / "media" / "table" / "invariance").glob("energy_vs_epoch*"))

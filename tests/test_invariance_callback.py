"""InvarianceCallback (thin hooks around EnergyProbe) inside a real tiny Lightning fit: epoch −1, per-epoch
means and standard errors, TensorBoard and W&B dashboards, and the Hydra config group."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from fr_invariance.evaluation.invariance import INVARIANCE_COLUMNS
from fr_invariance.evaluation.probe import EnergyProbe
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


def fit(tmp_path: Path, callback: InvarianceCallback, *, with_validation: bool,
        loggers: list | None = None) -> tuple[TinyModule, L.Trainer]:
    module = TinyModule(with_validation)
    trainer = L.Trainer(
        max_epochs=2, logger=loggers or CSVLogger(tmp_path, name="csv"), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=1, default_root_dir=tmp_path,
        num_sanity_val_steps=1 if with_validation else 0, callbacks=[callback],
        limit_val_batches=1 if with_validation else 0,
    )
    trainer.fit(module)
    return module, trainer


def small_probe(**kwargs) -> EnergyProbe:
    return EnergyProbe(n_identities=3, n_curves=8, attributes=ATTRIBUTES,
                       energy={"neighbourhood": "ball", "params": [0.6, 1.0], "knn": [4], "n_pairs": 2000}, **kwargs)


def test_measures_before_training_and_every_epoch_with_validation(tmp_path):
    callback = InvarianceCallback(small_probe())
    module, trainer = fit(tmp_path, callback, with_validation=True)
    metrics = pd.read_csv(Path(trainer.logger.log_dir) / "metrics.csv")
    for attribute in ATTRIBUTES:
        for name in (f"invariance/{attribute}/energy@0.6", f"invariance/{attribute}/energy@1",
                     f"invariance/{attribute}/energy@k4", f"invariance/{attribute}/energy@0.6_se",
                     f"invariance/{attribute}/magnitude", f"invariance/{attribute}/magnitude_se"):
            logged = metrics.dropna(subset=[name])
            assert sorted(logged["epoch"]) == [-1, 0, 1], name
    rows = pd.read_csv(Path(trainer.default_root_dir) / "invariance.csv")
    assert tuple(rows.columns) == INVARIANCE_COLUMNS
    assert sorted(rows["epoch"].unique()) == [-1, 0, 1]  # before training, then once per epoch (no sanity check)
    assert len(rows) == 3 * 3 * len(ATTRIBUTES) * 3  # epochs × identities × attributes × (2 ε + 1 k)
    last = rows[rows["epoch"] == 1]
    for attribute in ATTRIBUTES:
        energies = last.loc[(last["attribute"] == attribute) & (last["neighbourhood"] == "ball")
                            & (last["param"] == 0.6), "energy"]
        assert callback.last_energies[attribute] == pytest.approx(energies.mean())
        logged = metrics.dropna(subset=[f"invariance/{attribute}/energy@0.6"])
        row = logged.loc[logged["epoch"] == 1]
        assert row[f"invariance/{attribute}/energy@0.6"].item() == pytest.approx(energies.mean(), rel=1e-5)
        assert row[f"invariance/{attribute}/energy@0.6_se"].item() == pytest.approx(
            energies.std(ddof=1) / len(energies) ** 0.5, rel=1e-5)
    assert all(module.modes_seen)  # train mode restored after every measurement
    before = rows[rows["epoch"] == -1]
    assert not before.empty and (before["energy"] != last["energy"].to_numpy()).any()  # weights moved


def test_without_validation_and_every_second_epoch(tmp_path):
    callback = InvarianceCallback(small_probe(), every_n_epochs=2, before_training=False)
    _, trainer = fit(tmp_path, callback, with_validation=False)
    rows = pd.read_csv(Path(trainer.default_root_dir) / "invariance.csv")
    assert sorted(rows["epoch"].unique()) == [1]
    assert set(callback.last_energies) == set(ATTRIBUTES)


def test_probe_images_are_fixed_and_cache_matches_rerendering():
    backbone = create_backbone("tiny", input_size=SIZE, embedding_size=32).eval()
    cached = small_probe()
    rendered = small_probe(image_cache_mb=0)
    first = cached.measure(backbone, image_size=SIZE, run="r", epoch=0)
    again = cached.measure(backbone, image_size=SIZE, run="r", epoch=0)
    pd.testing.assert_frame_equal(first, again)
    assert cached.images(SIZE) is not None and rendered.images(SIZE) is None
    pd.testing.assert_frame_equal(first, rendered.measure(backbone, image_size=SIZE, run="r", epoch=0),
                                  check_exact=False, rtol=1e-4, atol=1e-5)


def test_a_failing_measurement_does_not_stop_training(tmp_path, monkeypatch):
    callback = InvarianceCallback(small_probe())
    monkeypatch.setattr(callback.probe, "measure", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.warns(UserWarning, match="boom"):
        _, trainer = fit(tmp_path, callback, with_validation=False)
    assert trainer.current_epoch == 2 and not (Path(trainer.default_root_dir) / "invariance.csv").exists()


def test_config_group_default_and_off():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("train", overrides=["data.image_size=48"])
        callback = instantiate(default.invariance)
        assert isinstance(callback, InvarianceCallback) and callback.image_size == 48
        assert [s.neighbourhood for s in callback.probe.settings] == ["ball", "knn"]
        assert compose("train", overrides=["invariance=off"]).invariance is None


def test_tensorboard_layout_and_epoch_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    board = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    fit(tmp_path, InvarianceCallback(small_probe()), with_validation=True, loggers=[board])

    def events(run: str) -> EventAccumulator:
        accumulator = EventAccumulator(str(tmp_path / "tb" / run), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        return accumulator

    main = events("")
    assert "hp_metric" not in main.Tags()["scalars"]
    layout = layout_pb2.Layout()
    layout.ParseFromString(main.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    assert set(charts) == {"energy vs epoch (0.6)", "energy vs epoch (1)", "energy vs epoch (k4)",
                           "magnitude vs epoch", "verification accuracy"}
    band = charts["energy vs epoch (0.6)"].margin.series[0]
    assert (band.value, band.lower, band.upper) == ("invariance/energy@0.6", "invariance/energy@0.6_lo",
                                                    "invariance/energy@0.6_hi")
    for attribute in ATTRIBUTES:  # one sub-run (one line) per attribute, x = epoch, not global step
        run = events(f"attr_{attribute}")
        for tag in ("invariance/energy@0.6", "invariance/energy@0.6_lo", "invariance/energy@k4",
                    "invariance/magnitude_hi"):
            assert [event.step for event in run.Scalars(tag)] == [-1, 0, 1], (attribute, tag)
        value, low = (run.Scalars(t)[-1].value for t in ("invariance/energy@0.6", "invariance/energy@0.6_lo"))
        assert low < value
    assert [e.value for e in events("reference_random_directions").Scalars("invariance/energy@0.6")] == [1.0] * 3
    assert [e.value for e in events("reference_zero").Scalars("invariance/energy@k4")] == [0.0] * 3


def test_wandb_defines_the_epoch_axis_once_and_logs_the_combined_charts_once(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="fr-invariance-test")
    try:
        fit(tmp_path, InvarianceCallback(small_probe()), with_validation=False,
            loggers=[CSVLogger(tmp_path, name="csv"), logger])
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    violins = sorted((run_dir / "files" / "media" / "images" / "invariance").glob("violin_*.png"))
    assert len(violins) == 3  # epoch -1, 0, 1
    tables = list((run_dir / "files" / "media" / "table" / "charts").glob("*.table.json"))
    assert len(tables) == 4  # energy@0.6, energy@1, energy@k4, magnitude: once each, not once per epoch
    log = _settled_bytes(next(run_dir.glob("*.wandb")))
    assert log.count(b"invariance/*") == 1  # the epoch axis is defined once


def _settled_bytes(path: Path, timeout: float = 60.0) -> bytes:
    """The file's bytes once its size has stopped changing (W&B's service may still be flushing it)."""
    import time

    deadline, size = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if path.stat().st_size == size:
            break
        size = path.stat().st_size
    return path.read_bytes()


def test_verification_metrics_per_validation_set():
    from fr_invariance.training.invariance_callback import verification_metrics

    logged = {"val/ordinary/acc": torch.tensor(0.9), "val/ordinary/threshold": torch.tensor(1.2),
              "val/vary_hue/tar@far1e-3": torch.tensor(0.5), "val_verification_acc": torch.tensor(0.9),
              "train/loss": torch.tensor(1.0)}
    assert verification_metrics(logged) == pytest.approx({"verification/ordinary/acc": 0.9,
                                                          "verification/vary_hue/tar@far1e-3": 0.5})
    assert verification_metrics({"val_verification_acc": torch.tensor(0.7)}) == pytest.approx(
        {"verification/main/acc": 0.7})

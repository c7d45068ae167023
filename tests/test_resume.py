"""Runs survive faults: kill-and-resume equality, atomic checkpoints, the NaN guard, the W&B run id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from fr_invariance.training.callbacks import checkpoint_callbacks
from tests.entrypoints import REPO, run_entry_point, summary_of

# 16 steps per epoch, 2 epochs, a checkpoint every 4 steps; deterministic; a small probe on 2 attributes.
RUN = ["experiment=quickstart", "model=tiny", "data.image_size=32", "data.identities=16", "data.samples_per_epoch=1024",
       "data.batch_size=64", "data.val_identities=8", "data.val_pairs=40", "trainer.max_epochs=2",
       "probe.n_identities=2", "probe.n_curves=4", "probe.attributes=[contrast,hue]", "energy.n_pairs=500",
       "energy.knn=[]", "checkpoint_every_n_steps=4", "trainer.deterministic=true", "threads=1"]
VOLATILE = ("time", "device", "batches", "samples")  # wall-clock throughput metrics differ between any two runs


def environment() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
           "FR_INVARIANCE_QUIET": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def checkpoint_step(path: Path) -> int | None:
    """``global_step`` of the checkpoint at ``path``, or None while it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # noqa: BLE001 - the file may not exist yet
        return None


def deterministic_metrics(run_dir: Path) -> pd.DataFrame:
    rows = pd.read_csv(run_dir / "metrics_tidy.csv")
    rows = rows[~rows["metric"].str.contains("|".join(VOLATILE))]
    return rows.sort_values(["step", "metric", "epoch"]).reset_index(drop=True)


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    first = run_entry_point("train.py", *RUN, f"hydra.run.dir={uninterrupted}")
    assert first.stdout.count("GPU available") == 1  # each log line once (it used to be printed twice)
    assert "Tip:" not in first.stdout + first.stderr and "LeafSpec" not in first.stderr

    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}"], cwd=REPO,
                               env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint, killed_at = run_dir / "checkpoints" / "last.ckpt", None
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        step = checkpoint_step(checkpoint) if checkpoint.exists() else None
        if step is not None and step >= 20:  # epoch 1 runs steps 16..31: mid-epoch
            process.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.05)
    process.wait()
    assert killed_at is not None and killed_at < 32, "the run ended before it could be killed mid-epoch"
    before = checkpoint_step(checkpoint)
    assert before is not None and 20 <= before < 32

    resumed = run_entry_point("train.py", *RUN, f"resume={run_dir}")  # resume=<run dir>: same directory
    summary = summary_of(resumed)
    assert summary["run_dir"] == str(run_dir.resolve()) and summary["global_step"] == 32
    expected = json.loads((uninterrupted / "summary.json").read_text())
    for key in ("val_verification_acc", "energy", "magnitude"):
        assert summary[key] == expected[key], key

    rows_a = pd.read_csv(uninterrupted / "invariance.csv").drop(columns="run")
    rows_b = pd.read_csv(run_dir / "invariance.csv").drop(columns="run")
    pd.testing.assert_frame_equal(rows_a, rows_b)  # epochs -1, 0, 1: every row once, identical
    pd.testing.assert_frame_equal(deterministic_metrics(uninterrupted), deterministic_metrics(run_dir))
    state_a = torch.load(uninterrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state_b = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key, value in state_a["state_dict"].items():
        torch.testing.assert_close(state_b["state_dict"][key], value, rtol=0, atol=0)


def test_kill_while_writing_a_checkpoint_leaves_a_loadable_last_ckpt(tmp_path):
    """A process that rewrites a large checkpoint in a loop is SIGKILLed at an arbitrary moment (almost all
    its time is spent writing); the checkpoint file is always a complete earlier version."""
    target = tmp_path / "last.ckpt"
    code = ("import sys, torch\n"
            "from fr_invariance.training.callbacks import AtomicCheckpointIO\n"
            "io = AtomicCheckpointIO()\n"
            "weights = torch.randn(8_000_000)\n"
            "step = 0\n"
            "while True:\n"
            "    step += 1\n"
            "    io.save_checkpoint({'global_step': step, 'weights': weights + step}, sys.argv[1])\n"
            "    print(step, flush=True)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for _ in range(2):  # at least two complete saves, then kill during a later one
        process.stdout.readline()
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = torch.load(target, map_location="cpu", weights_only=True)
    step = checkpoint["global_step"]
    assert step >= 2
    torch.testing.assert_close(checkpoint["weights"][:3] - step, checkpoint["weights"][:3] - step)
    assert float((checkpoint["weights"] - step).abs().max()) < 10  # the tensor is whole: randn + step


NAN_AT_STEP = ("import math, runpy, sys\n"
               "from fr_invariance.training.module import FaceRecognitionModule\n"
               "original = FaceRecognitionModule.training_step\n"
               "def training_step(self, batch, batch_idx):\n"
               "    loss = original(self, batch, batch_idx)\n"
               "    return loss * math.nan if self.global_step == 5 else loss\n"
               "FaceRecognitionModule.training_step = training_step\n"
               "sys.argv[0] = 'train.py'\n"
               "runpy.run_path('train.py', run_name='__main__')\n")


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in RUN if not o.startswith("checkpoint_every")] + ["checkpoint_every_n_steps=2",
                                                                              "invariance=off"]
    result = subprocess.run([sys.executable, "-c", NAN_AT_STEP, *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            env=environment(), capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: training loss is nan at epoch 0, step 6"), lines
    assert f"the last good checkpoint is kept: {run_dir / 'checkpoints' / 'last.ckpt'}" in lines[0]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 4  # the step-6 checkpoint (NaN weights) was never written
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_wandb_run_id_is_stored_in_the_run_directory_and_reused(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from fr_invariance.training.run import WANDB_ID_FILE, build_loggers

    node = OmegaConf.create({"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "save_dir": str(tmp_path),
                                       "project": "fr-invariance", "offline": True}})
    OmegaConf.set_struct(node, True)  # as Hydra composes it
    first = build_loggers(node, tmp_path)[0]
    again = build_loggers(node, tmp_path)[0]
    assert isinstance(first, WandbLogger) and isinstance(again, WandbLogger)
    run_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert first._wandb_init["id"] == again._wandb_init["id"] == run_id
    assert again._wandb_init["resume"] == "allow"


@pytest.mark.parametrize("rows", [0, 2])
def test_csv_logger_resumes_by_cutting_later_rows(tmp_path, rows):
    from fr_invariance.training.csv_logger import RunCSVLogger

    logger = RunCSVLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0}, step=step)
    logger.flush()
    resumed = RunCSVLogger(tmp_path)
    assert resumed.row_count == 4
    resumed.keep_first(rows, before_step=rows + 1)  # the checkpointed step's own row (step == rows) is kept
    resumed.log_metrics({"train/loss": 9.0, "epoch": 1}, step=10)
    resumed.flush()
    tidy = pd.read_csv(tmp_path / "metrics_tidy.csv")
    assert tidy["step"].tolist() == [*range(rows + 1), 10]
    assert set(tidy.columns) == {"step", "epoch", "metric", "value"}


class CountingValidations(BoringModel):
    validations = 0

    def on_validation_epoch_end(self) -> None:
        self.validations += 1


def test_last_ckpt_is_written_after_every_epochs_validation_and_mid_epoch_only_between(tmp_path, monkeypatch):
    """Every epoch ends with a checkpoint taken after its validation (and invariance measurement); a step
    checkpoint never falls on an epoch's last batch, where it would resume into the next epoch and lose this
    epoch's validation and measurement. (Lightning's ModelCheckpoint with save_top_k=0 wrote last.ckpt only when
    training ended.)"""
    saves: list[tuple[int, int]] = []
    save = L.Trainer.save_checkpoint
    model = CountingValidations()

    def recorded(trainer, *args, **kwargs):
        saves.append((trainer.global_step, model.validations))
        return save(trainer, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", recorded)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1, logger=False,
                        callbacks=checkpoint_callbacks(tmp_path, every_n_steps=2), enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(model)
    assert [(step, done) for step, done in saves if step % 4 == 0] == [(4, 1), (8, 2), (12, 3)]
    assert [step for step, _ in saves if step % 4] == [2, 6, 10]


def test_a_fresh_start_in_a_used_folder_does_not_append_to_its_old_rows(tmp_path):
    """An attempt that left rows but no checkpoint (killed before its first one), then the same command again."""
    run = [*RUN, "trainer.max_epochs=1", "checkpoint_every_n_steps=0", f"hydra.run.dir={tmp_path}"]
    run_entry_point("train.py", *run)
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        checkpoint.unlink()
    run_entry_point("train.py", *run)
    invariance = pd.read_csv(tmp_path / "invariance.csv")
    assert sorted(invariance["epoch"].unique()) == [-1, 0]
    assert not invariance.duplicated(["epoch", "identity", "attribute", "neighbourhood", "param"]).any()
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert not metrics.duplicated().any() and metrics["step"].is_monotonic_increasing

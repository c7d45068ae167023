"""DDP for real: ``trainer=ddp_cpu`` (2 CPU processes, gloo) trains on exactly the batches of one process with
the same global batch and reports the same numbers.

Tolerances: the weights agree to 1e-4 (they differ only by the order of float additions in the gradient
all-reduce), the held-out verification accuracy exactly, the invariance magnitudes to 1e-3. The alignment
energy is a discontinuous function of the embeddings (a neighbour enters or leaves a ball): on this 32-px tiny
model a random 3e-6 perturbation of the weights alone moves the per-attribute mean energy by up to 0.034, and
the two runs' weights differ by that much, so the mean energies are compared to 0.1. BatchNorm is frozen (``freeze_bn=true``): on CPUs each DDP process
normalises with its own half of the batch (SyncBatchNorm needs GPUs), which is a different computation.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.entrypoints import run_entry_point

RUN = ["experiment=quickstart", "model=tiny", "data.image_size=32", "data.identities=16", "data.samples_per_epoch=512",
       "data.val_identities=8", "data.val_pairs=40", "trainer.max_epochs=2", "probe.n_identities=2",
       "probe.n_curves=12", "probe.attributes=[contrast,hue]", "energy.n_pairs=500", "energy.knn=[]",
       "trainer.deterministic=true", "checkpoint_every_n_steps=0", "threads=1", "freeze_bn=true"]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_cpu_processes_agree_with_one_process_of_the_same_global_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_entry_point("train.py", *RUN, "data.batch_size=64", f"hydra.run.dir={single}")
    result = run_entry_point("train.py", *RUN, "data.batch_size=32", "trainer=ddp_cpu", "trainer.devices=2",
                             f"hydra.run.dir={ddp}")
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    assert result.stdout.count('"run_dir"') == 1  # one summary: the other process stays quiet

    summary_single = json.loads((single / "summary.json").read_text())
    summary_ddp = json.loads((ddp / "summary.json").read_text())
    assert summary_ddp["global_step"] == summary_single["global_step"] == 16  # 512 images / 64 per step x 2
    assert summary_ddp["val_verification_acc"] == summary_single["val_verification_acc"]
    for attribute, magnitude in summary_single["magnitude"].items():
        assert abs(summary_ddp["magnitude"][attribute] - magnitude) < 1e-3
    for attribute, energy in summary_single["energy"].items():
        assert abs(summary_ddp["energy"][attribute] - energy) < 0.1

    weights_single = torch.load(single / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    weights_ddp = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for key, value in weights_single["state_dict"].items():
        torch.testing.assert_close(weights_ddp["state_dict"][key], value, rtol=0, atol=1e-4)

    rows_single = pd.read_csv(single / "invariance.csv")
    rows_ddp = pd.read_csv(ddp / "invariance.csv")
    assert len(rows_ddp) == len(rows_single)  # measured once per epoch, by rank 0 only
    assert sorted(rows_ddp["epoch"].unique()) == [-1, 0, 1]

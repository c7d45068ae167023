"""``head_init=imprint``: class centres are the mean unit embeddings of each class's training images."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fr_invariance.models.heads import ArcFace
from fr_invariance.training.head_init import class_centres, imprint_head
from tests.entrypoints import summary_of
from tests.test_cli_errors import assert_one_error_line, train


class Flatten(nn.Module):
    """A parameter-free 'backbone': the input pixels themselves, mapped back from [-1, 1] to [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten((x + 1) / 2, 1)


def test_class_centres_and_imprint_match_hand_computed_means():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 2, 2, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0, 1, 2, 2])
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    sums, counts = class_centres(Flatten(), batches, num_classes=4)
    unit = F.normalize(images.flatten(1), dim=1)
    for label in range(3):
        torch.testing.assert_close(sums[label], unit[labels == label].sum(0))
    assert counts.tolist() == [3, 4, 3, 0]

    head = ArcFace(num_classes=4, embedding_size=12)
    before = head.weight.detach().clone()
    assert imprint_head(head, sums, counts) == 3
    after = head.weight.detach()
    for label in range(3):
        expected = F.normalize(unit[labels == label].mean(0), dim=0) * before.norm(dim=1).mean()
        torch.testing.assert_close(after[label], expected)
    torch.testing.assert_close(after[3], before[3])  # a class without images keeps its initialisation


def test_imprinted_run_trains_and_starts_from_a_lower_loss(tmp_path):
    steps = ["trainer.max_epochs=1", "data.samples_per_epoch=64", "logger=csv", "trainer.log_every_n_steps=1"]
    losses = {}
    for init in ("random", "imprint"):
        result = train(tmp_path / init, *steps, f"head_init={init}")
        assert result.returncode == 0, result.stderr[-3000:]
        run_dir = summary_of(result)["run_dir"]
        metrics = pd.read_csv(f"{run_dir}/csv/metrics.csv")
        losses[init] = float(metrics["train/loss"].dropna().iloc[0])
    assert losses["imprint"] < losses["random"]


def test_imprint_with_keep_head_is_one_error_line(tmp_path):
    assert_one_error_line(train(tmp_path, "head_init=imprint", "model.keep_head=true"), "head_init=imprint",
                          "model.keep_head")
    assert_one_error_line(train(tmp_path, "head_init=prototype"), "head_init", "imprint")

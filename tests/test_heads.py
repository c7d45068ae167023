"""Margin heads: hand-computed logits on 2-D examples, finite values/gradients at θ = 0 and π, AdaFace EMA."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fr_invariance.models.heads import AdaFace, ArcFace, CombinedMargin, CosFace, MarginHead

CONF = Path(__file__).resolve().parents[1] / "conf"
# class centres at 0°, 90°, 180° in the plane (deliberately not unit length)
CENTRES = torch.tensor([[2.0, 0.0], [0.0, 0.5], [-3.0, 0.0]])
CENTRE_ANGLES = np.radians([0.0, 90.0, 180.0])


def _with_centres(head: MarginHead) -> MarginHead:
    with torch.no_grad():
        head.weight.copy_(CENTRES)
    return head


def _embedding(degrees: float, norm: float = 3.0) -> torch.Tensor:
    angle = math.radians(degrees)
    return torch.tensor([[norm * math.cos(angle), norm * math.sin(angle)]])


def _plain_logits(degrees: float, s: float) -> np.ndarray:
    return s * np.cos(math.radians(degrees) - CENTRE_ANGLES)


def test_arcface_hand_computed() -> None:
    head = _with_centres(ArcFace(3, 2, s=2.0, m=0.5))
    logits = head(_embedding(30.0), torch.tensor([0]))[0].detach().numpy()
    expected = _plain_logits(30.0, 2.0)
    expected[0] = 2.0 * math.cos(math.radians(30.0) + 0.5)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_cosface_hand_computed() -> None:
    head = _with_centres(CosFace(3, 2, s=4.0, m=0.4))
    logits = head(_embedding(120.0), torch.tensor([1]))[0].detach().numpy()
    expected = _plain_logits(120.0, 4.0)
    expected[1] = 4.0 * (math.cos(math.radians(30.0)) - 0.4)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_combined_hand_computed() -> None:
    head = _with_centres(CombinedMargin(3, 2, s=3.0, m1=1.5, m2=0.2, m3=0.1))
    logits = head(_embedding(-40.0), torch.tensor([0]))[0].detach().numpy()
    expected = _plain_logits(-40.0, 3.0)
    expected[0] = 3.0 * (math.cos(1.5 * math.radians(40.0) + 0.2) - 0.1)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_combined_reduces_to_arcface_and_cosface() -> None:
    torch.manual_seed(0)
    embeddings, labels = torch.randn(6, 8), torch.randint(0, 5, (6,))
    arc, cos = ArcFace(5, 8, s=10.0, m=0.3), CosFace(5, 8, s=10.0, m=0.25)
    comb_arc, comb_cos = CombinedMargin(5, 8, 10.0, 1.0, 0.3, 0.0), CombinedMargin(5, 8, 10.0, 1.0, 0.0, 0.25)
    for a, b in ((arc, comb_arc), (cos, comb_cos)):
        b.weight.data.copy_(a.weight.data)
        torch.testing.assert_close(a(embeddings, labels), b(embeddings, labels), atol=1e-4, rtol=0)


def test_batch_of_labels_changes_only_label_column() -> None:
    torch.manual_seed(1)
    head = ArcFace(7, 16, s=8.0, m=0.4)
    embeddings, labels = torch.randn(5, 16), torch.tensor([0, 3, 3, 6, 1])
    logits = head(embeddings, labels)
    plain = 8.0 * F.normalize(embeddings) @ F.normalize(head.weight).t()
    changed = ~torch.isclose(logits, plain, atol=1e-5)
    assert torch.equal(changed, F.one_hot(labels, 7).bool())
    assert (logits.gather(1, labels[:, None]) < plain.gather(1, labels[:, None])).all()


def test_arcface_tail_is_continuous_and_monotone() -> None:
    """Past θ* = π − m the label logit continues as cos θ + cos m − 1 and keeps decreasing."""
    m = 0.5
    head = _with_centres(ArcFace(3, 2, s=1.0, m=m))
    degrees = np.linspace(0.5, 179.5, 400)
    embeddings = torch.cat([_embedding(d) for d in degrees])
    target = head(embeddings, torch.zeros(len(degrees), dtype=torch.long))[:, 0].detach().numpy()
    theta = np.radians(degrees)
    expected = np.where(theta + m <= math.pi, np.cos(theta + m), np.cos(theta) + math.cos(m) - 1.0)
    np.testing.assert_allclose(target, expected, atol=1e-5)
    assert np.all(np.diff(target) < 0)


@pytest.mark.parametrize(
    "head",
    [
        ArcFace(3, 2, s=64.0, m=0.5),
        CosFace(3, 2, s=64.0, m=0.4),
        CombinedMargin(3, 2, s=64.0, m1=1.0, m2=0.3, m3=0.2),
        AdaFace(3, 2, s=64.0, m=0.4),
    ],
    ids=["arcface", "cosface", "combined", "adaface"],
)
def test_finite_forward_and_backward_at_zero_and_pi(head: MarginHead) -> None:
    _with_centres(head)
    # θ = 0 (on its own centre) and θ = π (opposite its centre), for label 0 and label 2
    embeddings = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 2, 2])
    logits = head(embeddings, labels)
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(embeddings.grad).all()
    assert torch.isfinite(head.weight.grad).all()


def test_logits_are_float32_under_autocast() -> None:
    head = ArcFace(4, 8)
    embeddings = torch.randn(3, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(embeddings, torch.tensor([0, 1, 2]))
    assert logits.dtype == torch.float32


def test_shape_errors() -> None:
    head = CosFace(4, 8)
    with pytest.raises(ValueError, match="embeddings"):
        head(torch.randn(3, 7), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        head(torch.randn(3, 8), torch.tensor([0, 1]))


def _adaface_expected(degrees: float, norm: float, mean: float, std: float, s: float, m: float, h: float) -> float:
    quality = float(np.clip((norm - mean) / (std / h), -1.0, 1.0))
    g_angle, g_add = -m * quality, m * quality + m
    return s * (math.cos(math.radians(degrees) + g_angle) - g_add)


@pytest.mark.parametrize("norm", [0.5, 10.0, 11.0, 30.0])
def test_adaface_hand_computed(norm: float) -> None:
    head = _with_centres(AdaFace(3, 2, s=2.0, m=0.4, h=0.333)).eval()
    head.norm_mean.fill_(10.0)
    head.norm_std.fill_(3.0)
    head.num_updates.fill_(5)
    logits = head(_embedding(50.0, norm), torch.tensor([0]))[0].detach().numpy()
    expected = _plain_logits(50.0, 2.0)
    expected[0] = _adaface_expected(50.0, norm, 10.0, 3.0, 2.0, 0.4, 0.333)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_adaface_extremes_match_arcface_and_cosface() -> None:
    """ẑ = −1 (low norm) is ArcFace with margin m; ẑ = 0 (average norm) is CosFace with margin m."""
    head = _with_centres(AdaFace(3, 2, s=1.0, m=0.4)).eval()
    head.norm_mean.fill_(10.0)
    head.norm_std.fill_(1.0)
    low = head(_embedding(60.0, 1.0), torch.tensor([0]))[0, 0].item()
    mid = head(_embedding(60.0, 10.0), torch.tensor([0]))[0, 0].item()
    assert low == pytest.approx(math.cos(math.radians(60.0) + 0.4), abs=1e-5)
    assert mid == pytest.approx(math.cos(math.radians(60.0)) - 0.4, abs=1e-5)


def test_adaface_ema_statistics() -> None:
    torch.manual_seed(0)
    head = AdaFace(5, 4, t_alpha=0.01).train()
    first, second = torch.randn(8, 4) * 3, torch.randn(8, 4) * 7
    labels = torch.zeros(8, dtype=torch.long)
    head(first, labels)
    norms1, norms2 = first.norm(dim=1).numpy(), second.norm(dim=1).numpy()
    assert head.norm_mean.item() == pytest.approx(norms1.mean(), rel=1e-5)
    assert head.norm_std.item() == pytest.approx(norms1.std(), rel=1e-5)
    head(second, labels)
    assert head.norm_mean.item() == pytest.approx(0.99 * norms1.mean() + 0.01 * norms2.mean(), rel=1e-5)
    assert head.norm_std.item() == pytest.approx(0.99 * norms1.std() + 0.01 * norms2.std(), rel=1e-5)
    head.eval()
    head(torch.randn(8, 4) * 50, labels)
    assert head.num_updates.item() == 2
    assert head.norm_mean.item() == pytest.approx(0.99 * norms1.mean() + 0.01 * norms2.mean(), rel=1e-5)


def test_adaface_equal_norms_stay_finite() -> None:
    head = AdaFace(3, 2).train()
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    logits = head(embeddings, torch.tensor([0, 1, 2]))
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize(
    ("name", "cls"), [("arcface", ArcFace), ("cosface", CosFace), ("combined", CombinedMargin), ("adaface", AdaFace)]
)
def test_head_configs_instantiate(name: str, cls: type) -> None:
    cfg = OmegaConf.load(CONF / "head" / f"{name}.yaml")
    head = instantiate(cfg, num_classes=6, embedding_size=16)
    assert type(head) is cls
    assert head.weight.shape == (6, 16)
    assert head.s == cfg.s
    assert head(torch.randn(2, 16), torch.tensor([1, 5])).shape == (2, 6)

"""Backbones: registry, shapes, declared attributes, input conversion, configs, a tiny training run."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from fr_invariance.models import (
    ArcFace,
    UnknownBackboneError,
    available_backbones,
    create_backbone,
    to_model_input,
)
from fr_invariance.models.iresnet import stage_output_size

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_registry_lists_every_backbone() -> None:
    assert available_backbones() == sorted(
        ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "mobilefacenet", "tiny", "sface",
         "dlib_resnet"]
    )


def test_unknown_backbone_error_lists_names() -> None:
    with pytest.raises(UnknownBackboneError) as info:
        create_backbone("resnet9000")
    assert "resnet9000" in str(info.value) and "iresnet50" in str(info.value) and "tiny" in str(info.value)


@pytest.mark.parametrize(("size", "side"), [(112, 7), (64, 4), (48, 3), (32, 2), (33, 3), (16, 1)])
def test_stage_output_size_follows_strided_convs(size: int, side: int) -> None:
    assert stage_output_size(size) == side
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    x = torch.zeros(1, 1, size, size)
    for _ in range(4):
        x = conv(x)
    assert x.shape[-1] == side


@pytest.mark.parametrize(
    ("name", "embedding_size"), [("tiny", 128), ("mobilefacenet", 128), ("iresnet18", 512)]
)
@pytest.mark.parametrize("size", [32, 36])
def test_backbone_forward_shape_and_attributes(name: str, embedding_size: int, size: int) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, input_size=size)
    assert model.embedding_size == embedding_size
    assert model.metric == "cosine"
    assert model.input_size == size
    x = torch.rand(3, 3, size, size) * 2 - 1
    model.train()
    out_train = model(x)
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert out_train.shape == out_eval.shape == (3, embedding_size)
    assert torch.isfinite(out_eval).all()
    # raw embeddings: not L2-normalised
    assert not torch.allclose(out_eval.norm(dim=1), torch.ones(3), atol=1e-3)


def test_embedding_size_and_dropout_options() -> None:
    model = create_backbone("tiny", input_size=32, embedding_size=64, dropout=0.5)
    assert model.embedding_size == 64
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())


@pytest.mark.parametrize("size", [32, 48])
def test_tiny_parameter_budget(size: int) -> None:
    count = sum(p.numel() for p in create_backbone("tiny", input_size=size).parameters())
    assert 100_000 <= count <= 500_000


def test_mobilefacenet_parameter_count_near_paper() -> None:
    count = sum(p.numel() for p in create_backbone("mobilefacenet", input_size=112).parameters())
    assert 0.9e6 <= count <= 1.1e6  # paper: 0.99 M


def test_projection_is_last_linear() -> None:
    """The embedding projection is the last nn.Linear, followed only by the output BatchNorm1d."""
    for name in ("tiny", "mobilefacenet", "iresnet18"):
        modules = list(create_backbone(name, input_size=32).modules())
        last_linear = max(i for i, m in enumerate(modules) if isinstance(m, torch.nn.Linear))
        assert [type(m) for m in modules[last_linear + 1 :]] == [torch.nn.BatchNorm1d]


def test_bad_input_size_raises() -> None:
    with pytest.raises(ValueError, match="input_size"):
        create_backbone("tiny", input_size=8)


def test_to_model_input_maps_unit_range() -> None:
    images = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    out = to_model_input(images)
    assert torch.equal(out[0, 0].flatten(), torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    with pytest.raises(ValueError):
        to_model_input(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError):
        to_model_input(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


def test_tiny_learns_a_small_problem() -> None:
    """Twelve SGD steps on 4 identities (16 images, 32 px) drive ArcFace loss well down."""
    torch.manual_seed(0)
    images = torch.rand(4, 1, 3, 32, 32).expand(4, 4, 3, 32, 32) + 0.05 * torch.randn(4, 4, 3, 32, 32)
    images = to_model_input(images.reshape(16, 3, 32, 32).clamp(0, 1))
    labels = torch.arange(4).repeat_interleave(4)
    backbone = create_backbone("tiny", input_size=32)
    head = ArcFace(4, backbone.embedding_size, s=16.0, m=0.2)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(head(backbone(images), labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


MODEL_CONFIGS = ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "mobilefacenet", "tiny"]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_schema(name: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "model" / f"{name}.yaml"), {})
    assert set(cfg) == {"name", "backbone", "weights", "weights_format", "keep_head", "bgr_to_rgb"}
    assert cfg.name == name
    assert cfg.weights is None and cfg.weights_format == "auto"
    assert cfg.bgr_to_rgb == ("auto" if name.startswith("iresnet") else False)  # iresnets load AdaFace (BGR)
    assert cfg.keep_head is False
    factory = get_method(cfg.backbone._target_)
    accepted = inspect.signature(factory).parameters
    assert set(cfg.backbone) - {"_target_"} <= set(accepted)


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet", "tiny"])
def test_model_config_instantiates(name: str) -> None:
    root = OmegaConf.create({"data": {"image_size": 32}, "model": OmegaConf.load(CONF / "model" / f"{name}.yaml")})
    model = instantiate(root.model.backbone)
    assert model.input_size == 32
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, model.embedding_size)

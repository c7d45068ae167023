"""IResNet state_dict layout, weight loading (insightface / lightning / AdaFace IR), errors, export."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from fr_invariance.models import (
    WeightLoadingError,
    convert_adaface_state_dict,
    create_backbone,
    export_insightface,
    iresnet18,
    iresnet50,
    iresnet100,
    load_backbone_weights,
)

SIZE = 32  # small input: fc is 512·2·2 → 512


def _expected_iresnet_shapes(blocks: tuple[int, ...], side: int) -> dict[str, tuple[int, ...]]:
    """The arcface_torch key → shape table, written out from the layout description."""

    def bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
        return {
            f"{prefix}.weight": (channels,),
            f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": (),
        }

    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64), "prelu.weight": (64,)}
    in_channels = 64
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for index in range(count):
            p = f"layer{stage}.{index}"
            cin = in_channels if index == 0 else width
            shapes.update(bn(f"{p}.bn1", cin))
            shapes[f"{p}.conv1.weight"] = (width, cin, 3, 3)
            shapes.update(bn(f"{p}.bn2", width))
            shapes[f"{p}.prelu.weight"] = (width,)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            shapes.update(bn(f"{p}.bn3", width))
            if index == 0:
                shapes[f"{p}.downsample.0.weight"] = (width, cin, 1, 1)
                shapes.update(bn(f"{p}.downsample.1", width))
        in_channels = width
    shapes.update(bn("bn2", 512))
    shapes["fc.weight"] = (512, 512 * side * side)
    shapes["fc.bias"] = (512,)
    shapes.update(bn("features", 512))
    return shapes


@pytest.mark.parametrize(
    ("factory", "blocks", "num_keys", "num_params"),
    [
        (iresnet18, (2, 2, 2, 2), 187, 24_025_600),
        (iresnet50, (3, 4, 14, 3), 475, 43_590_848),
        (iresnet100, (3, 13, 30, 3), 925, 65_156_160),
    ],
    ids=["r18", "r50", "r100"],
)
def test_iresnet_layout_matches_arcface_torch(factory, blocks, num_keys: int, num_params: int) -> None:
    model = factory()
    state = model.state_dict()
    assert len(state) == num_keys
    assert sum(p.numel() for p in model.parameters()) == num_params
    assert {k: tuple(v.shape) for k, v in state.items()} == _expected_iresnet_shapes(blocks, 7)
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(512))
    assert model.bn2.eps == model.features.eps == model.layer1[0].bn1.eps == 1e-5


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine / PReLU parameters, then BN statistics calibrated on random images (eval mode).

    Calibration keeps the signal alive through the depth, so the eval-mode embedding depends on the input
    and on every tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches
            elif isinstance(module, nn.PReLU):
                module.weight.uniform_(0.0, 0.5, generator=generator)
        model.train()
        for _ in range(2):
            model(torch.rand(8, 3, SIZE, SIZE, generator=generator) * 2 - 1)
    return model.eval()


def _assert_same_embeddings(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 summation-order noise, relative to each embedding's norm."""
    relative = (actual - expected).norm(dim=1) / expected.norm(dim=1)
    assert relative.max().item() < 1e-5, relative
    between_inputs = (expected[0] - expected[1]).norm() / expected[0].norm()
    assert between_inputs > 0.05, "test inputs must give different embeddings"


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    return _randomise(iresnet18(input_size=SIZE))


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_export_and_reload_gives_identical_embeddings(r18, inputs, tmp_path: Path) -> None:
    export_insightface(r18, tmp_path / "sub" / "backbone.pth")
    saved = torch.load(tmp_path / "sub" / "backbone.pth", weights_only=True)
    assert list(saved) == list(r18.state_dict())
    fresh = iresnet18(input_size=SIZE).eval()
    assert load_backbone_weights(fresh, tmp_path / "sub" / "backbone.pth") == "insightface"
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs), r18(inputs), rtol=0, atol=0)
    assert not fresh.features.weight.requires_grad


def test_module_prefix_is_stripped(r18, inputs, tmp_path: Path) -> None:
    path = _save({"module." + k: v for k, v in r18.state_dict().items()}, tmp_path / "ddp.pth")
    fresh = iresnet18(input_size=SIZE).eval()
    assert load_backbone_weights(fresh, path, fmt="insightface") == "insightface"
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs), r18(inputs), rtol=0, atol=0)


def test_lightning_checkpoint_loads_backbone_and_ignores_head(r18, inputs, tmp_path: Path) -> None:
    state = {"backbone." + k: v for k, v in r18.state_dict().items()}
    state["head.weight"] = torch.randn(10, 512)
    path = _save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, tmp_path / "last.ckpt")
    fresh = iresnet18(input_size=SIZE).eval()
    assert load_backbone_weights(fresh, path) == "lightning"
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs), r18(inputs), rtol=0, atol=0)


def test_checkpoint_with_namespace_hparams_loads_tensors_only(tmp_path: Path) -> None:
    model = _randomise(create_backbone("tiny", input_size=SIZE))
    state = {"backbone." + k: v for k, v in model.state_dict().items()}
    path = _save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=0.1)}, tmp_path / "rich.ckpt")
    fresh = create_backbone("tiny", input_size=SIZE)
    assert load_backbone_weights(fresh, path, fmt="lightning") == "lightning"  # Namespace is allow-listed
    assert torch.equal(fresh.projection.weight, model.projection.weight)


def test_wrong_backbone_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    r18_path = _save(iresnet18(input_size=SIZE).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightLoadingError) as info:
        load_backbone_weights(iresnet50(input_size=SIZE), r18_path)
    message = str(info.value)
    assert "missing keys" in message and "layer1.2.bn1.weight" in message
    r50_path = _save(iresnet50(input_size=SIZE).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightLoadingError, match=r"unexpected keys \d+ \[layer1\.2\."):
        load_backbone_weights(iresnet18(input_size=SIZE), r50_path)


def test_wrong_input_size_names_misshaped_fc(tmp_path: Path) -> None:
    path = _save(iresnet18(input_size=SIZE).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightLoadingError, match=r"fc\.weight \(512, 2048\) vs \(512, 25088\)"):
        load_backbone_weights(iresnet18(input_size=112), path)


def test_missing_file_bad_format_and_garbage(tmp_path: Path) -> None:
    model = create_backbone("tiny", input_size=SIZE)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="onnx"):
        load_backbone_weights(model, garbage, fmt="onnx")
    with pytest.raises(WeightLoadingError, match="not a torch checkpoint"):
        load_backbone_weights(model, garbage)
    no_backbone = _save({"state_dict": {"head.weight": torch.zeros(2, 2)}}, tmp_path / "head_only.ckpt")
    with pytest.raises(WeightLoadingError, match="backbone"):
        load_backbone_weights(model, no_backbone)


def test_bgr_to_rgb_flips_stem_channels(r18, inputs, tmp_path: Path) -> None:
    path = _save(r18.state_dict(), tmp_path / "bgr.pth")
    fresh = iresnet18(input_size=SIZE).eval()
    load_backbone_weights(fresh, path, bgr_to_rgb=True)
    torch.testing.assert_close(fresh.conv1.weight, r18.conv1.weight[:, [2, 1, 0]], rtol=0, atol=0)
    assert torch.equal(fresh.layer1[0].conv1.weight, r18.layer1[0].conv1.weight)
    with torch.no_grad():  # the BGR-trained net on BGR input == the flipped net on RGB input
        _assert_same_embeddings(fresh(inputs), r18(inputs.flip(1)))


# --- AdaFace IR: a small reference network with AdaFace's module layout, written here from its description.


class ReferenceIRBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if in_channels == out_channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class ReferenceIR(nn.Module):
    def __init__(self, blocks: tuple[int, ...], side: int) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        body, in_channels = [], 64
        for width, count in zip((64, 128, 256, 512), blocks):
            body.append(ReferenceIRBlock(in_channels, width, 2))
            body += [ReferenceIRBlock(width, width, 1) for _ in range(count - 1)]
            in_channels = width
        self.body = nn.Sequential(*body)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(), nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


@pytest.fixture(scope="module")
def adaface_reference() -> nn.Module:
    return _randomise(ReferenceIR((2, 2, 2, 2), side=2), seed=3)


def test_adaface_checkpoint_gives_identical_embeddings(adaface_reference, inputs, tmp_path: Path) -> None:
    state = {"model." + k: v for k, v in adaface_reference.state_dict().items()}
    state["head.kernel"] = torch.randn(512, 10)
    path = _save({"state_dict": state, "epoch": 25}, tmp_path / "adaface_ir18.ckpt")
    ours = iresnet18(input_size=SIZE, first_stage_shortcut="subsample").eval()
    assert load_backbone_weights(ours, path) == "adaface"  # bgr_to_rgb="auto": AdaFace's stem is flipped
    with torch.no_grad():  # AdaFace sees BGR; ours sees RGB
        _assert_same_embeddings(ours(inputs), adaface_reference(inputs.flip(1)))
    as_saved = iresnet18(input_size=SIZE, first_stage_shortcut="subsample").eval()
    load_backbone_weights(as_saved, path, bgr_to_rgb=False)
    with torch.no_grad():
        _assert_same_embeddings(as_saved(inputs), adaface_reference(inputs))
    with pytest.raises(WeightLoadingError, match="bgr_to_rgb must be true, false or auto"):
        load_backbone_weights(as_saved, path, bgr_to_rgb="yes")


def test_arcface_torch_training_checkpoint_loads_its_backbone(r18, inputs, tmp_path: Path) -> None:
    """arcface_torch's ``checkpoint_gpu_<rank>.pt``: backbone under ``state_dict_backbone``, plus the
    partial-FC head, optimizer and scheduler states; an insightface file is never flipped by "auto"."""
    state = {"epoch": 3, "global_step": 900, "state_dict_backbone": r18.state_dict(),
             "state_dict_softmax_fc": {"weight_activated": torch.randn(10, 512)},
             "state_optimizer": {"param_groups": [{"lr": 0.1}]}, "state_lr_scheduler": {"last_epoch": 900}}
    path = _save(state, tmp_path / "checkpoint_gpu_0.pt")
    fresh = iresnet18(input_size=SIZE).eval()
    assert load_backbone_weights(fresh, path) == "insightface"
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs), r18(inputs), rtol=0, atol=0)


def test_adaface_into_conv_shortcut_model_says_what_to_change(adaface_reference, tmp_path: Path) -> None:
    state = {"model." + k: v for k, v in adaface_reference.state_dict().items()}
    path = _save({"state_dict": state}, tmp_path / "a.ckpt")
    with pytest.raises(WeightLoadingError, match="first_stage_shortcut='subsample'") as info:
        load_backbone_weights(iresnet18(input_size=SIZE), path, fmt="adaface")
    assert "layer1.0.downsample.0.weight" in str(info.value)


def test_convert_adaface_state_dict_key_mapping(adaface_reference) -> None:
    converted = convert_adaface_state_dict({"model." + k: v for k, v in adaface_reference.state_dict().items()})
    expected = iresnet18(input_size=SIZE, first_stage_shortcut="subsample").state_dict()
    assert set(converted) == set(expected)
    source = adaface_reference.state_dict()
    pairs = {
        "conv1.weight": "input_layer.0.weight",
        "prelu.weight": "input_layer.2.weight",
        "layer1.1.conv2.weight": "body.1.res_layer.4.weight",
        "layer2.0.downsample.0.weight": "body.2.shortcut_layer.0.weight",
        "layer3.1.bn3.running_var": "body.5.res_layer.5.running_var",
        "layer4.0.prelu.weight": "body.6.res_layer.3.weight",
        "fc.bias": "output_layer.3.bias",
        "features.running_mean": "output_layer.4.running_mean",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(converted[ours], source[theirs]), ours
    assert torch.equal(converted["features.weight"], torch.ones(512))
    assert torch.equal(converted["features.bias"], torch.zeros(512))

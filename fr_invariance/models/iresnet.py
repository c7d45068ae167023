"""IResNet backbones with the insightface ``arcface_torch`` state_dict layout.

Released ``backbone.pth`` files load with ``strict=True``: every key name and shape matches
(stem ``conv1/bn1/prelu``, ``layer1..layer4`` of :class:`IBasicBlock`, head ``bn2 → fc → features``).

Input: ``(N, 3, H, W)`` RGB in ``[-1, 1]`` with ``H = W = input_size``. Output: ``(N, embedding_size)``
raw embeddings (not L2-normalised). Every stage halves the resolution (3×3 convs with stride 2 and
padding 1 give ``ceil(H / 2)``), so the ``fc`` input is ``512 · s · s`` with ``s = ceil⁴(input_size / 2)``:
112 → 7, 64 → 4, 32 → 2.

``first_stage_shortcut`` chooses the shortcut of the first block of ``layer1`` (the only block whose
input and output widths are both 64): ``"conv"`` (insightface: conv1×1 stride 2 + BN as
``downsample.0/1``) or ``"subsample"`` (AdaFace IR: a parameter-free stride-2 subsample, no keys),
so AdaFace IR checkpoints load exactly after :func:`fr_invariance.models.weights.convert_adaface_state_dict`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ShortcutKind = Literal["conv", "subsample"]

BN_EPS = 1e-5
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_DEPTH = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def stage_output_size(input_size: int, num_stages: int = 4) -> int:
    """Spatial side after ``num_stages`` stride-2 3×3 convs (padding 1): ``ceil(input_size / 2)`` each time."""
    size = input_size
    for _ in range(num_stages):
        size = (size + 1) // 2
    return size


class Subsample(nn.Module):
    """Parameter-free stride-``s`` spatial subsample (keeps every ``s``-th row and column, from 0)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, plus shortcut.

    ``downsample`` is the shortcut module (``None`` means identity); its ``Sequential`` indices 0/1
    give the insightface key names ``downsample.0`` (conv1×1) and ``downsample.1`` (BN).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: ShortcutKind) -> nn.Module | None:
    if kind == "subsample" and in_channels == out_channels:
        return Subsample(stride)
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels, eps=BN_EPS),
    )


class IResNet(nn.Module):
    """The IResNet trunk + embedding head (insightface ``arcface_torch`` layout).

    Args:
        blocks: number of :class:`IBasicBlock` per stage (4 stages of widths 64, 128, 256, 512).
        input_size: square input side in pixels (≥ 16).
        dropout: dropout probability before ``fc``.
        embedding_size: output dimension.
        first_stage_shortcut: ``"conv"`` (insightface) or ``"subsample"`` (AdaFace IR), see module doc.
    """

    metric = "cosine"

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        input_size: int = 112,
        dropout: float = 0.0,
        embedding_size: int = 512,
        first_stage_shortcut: ShortcutKind = "conv",
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive stage depths, got {blocks}")
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels for the 4 stride-2 stages, got {input_size}")
        if first_stage_shortcut not in ("conv", "subsample"):
            raise ValueError(f"first_stage_shortcut must be 'conv' or 'subsample', got {first_stage_shortcut!r}")
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.first_stage_shortcut = first_stage_shortcut

        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks), start=1):
            shortcut_kind: ShortcutKind = first_stage_shortcut if index == 1 else "conv"
            stage = [IBasicBlock(in_channels, width, 2, _shortcut(in_channels, width, 2, shortcut_kind))]
            stage += [IBasicBlock(width, width, 1, None) for _ in range(count - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = width

        side = stage_output_size(input_size)
        self.bn2 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, input_size, input_size)`` in ``[-1, 1]`` → ``(N, embedding_size)`` raw embeddings."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _iresnet(
    depth: int, input_size: int, dropout: float, embedding_size: int, first_stage_shortcut: ShortcutKind
) -> IResNet:
    return IResNet(BLOCKS_PER_DEPTH[depth], input_size, dropout, embedding_size, first_stage_shortcut)


def iresnet18(
    input_size: int = 112, dropout: float = 0.0, embedding_size: int = 512, first_stage_shortcut: ShortcutKind = "conv"
) -> IResNet:
    """IResNet-18, blocks (2, 2, 2, 2)."""
    return _iresnet(18, input_size, dropout, embedding_size, first_stage_shortcut)


def iresnet34(
    input_size: int = 112, dropout: float = 0.0, embedding_size: int = 512, first_stage_shortcut: ShortcutKind = "conv"
) -> IResNet:
    """IResNet-34, blocks (3, 4, 6, 3)."""
    return _iresnet(34, input_size, dropout, embedding_size, first_stage_shortcut)


def iresnet50(
    input_size: int = 112, dropout: float = 0.0, embedding_size: int = 512, first_stage_shortcut: ShortcutKind = "conv"
) -> IResNet:
    """IResNet-50, blocks (3, 4, 14, 3)."""
    return _iresnet(50, input_size, dropout, embedding_size, first_stage_shortcut)


def iresnet100(
    input_size: int = 112, dropout: float = 0.0, embedding_size: int = 512, first_stage_shortcut: ShortcutKind = "conv"
) -> IResNet:
    """IResNet-100, blocks (3, 13, 30, 3)."""
    return _iresnet(100, input_size, dropout, embedding_size, first_stage_shortcut)


def iresnet200(
    input_size: int = 112, dropout: float = 0.0, embedding_size: int = 512, first_stage_shortcut: ShortcutKind = "conv"
) -> IResNet:
    """IResNet-200, blocks (6, 26, 60, 6)."""
    return _iresnet(200, input_size, dropout, embedding_size, first_stage_shortcut)

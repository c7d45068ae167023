"""MobileFaceNet (Chen et al., 2018): depthwise-separable inverted-residual bottlenecks and a GDC head.

Layout (paper Table 1, PReLU activations; sides for a 112 input):

| stage | operator | expansion t | channels | repeats | stride |
|---|---|---|---|---|---|
| 112 → 56 | conv3×3 | – | 64 | 1 | 2 |
| 56 | depthwise conv3×3 | – | 64 | 1 | 1 |
| 56 → 28 | bottleneck | 2 | 64 | 5 | 2 |
| 28 → 14 | bottleneck | 4 | 128 | 1 | 2 |
| 14 | bottleneck | 2 | 128 | 6 | 1 |
| 14 → 7 | bottleneck | 4 | 128 | 1 | 2 |
| 7 | bottleneck | 2 | 128 | 2 | 1 |
| 7 | conv1×1 | – | 512 | 1 | 1 |
| 7 → 1 | linear GDConv (depthwise, kernel = final side) | – | 512 | 1 | – |
| 1 | linear projection (``nn.Linear``) + BatchNorm1d | – | embedding_size | | |

Embedding size defaults to the paper's 128 (≈ 1.0 M parameters at 112 px). The GDConv kernel is the
final feature-map side, derived from ``input_size`` (four stride-2 stages: 112 → 7, 64 → 4, 32 → 2).
Input ``(N, 3, input_size, input_size)`` RGB in ``[-1, 1]``; output ``(N, embedding_size)`` raw embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from fr_invariance.models.iresnet import stage_output_size

# (expansion t, output channels c, repeats n, first stride s) for the bottleneck stages.
BOTTLENECK_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBNPReLU(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → PReLU (per channel); ``groups`` for depthwise convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
        )


class Bottleneck(nn.Module):
    """Inverted residual: 1×1 expand → depthwise 3×3 (stride) → linear 1×1 project; residual if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.block = nn.Sequential(
            ConvBNPReLU(in_channels, hidden, 1),
            ConvBNPReLU(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet backbone.

    Args:
        input_size: square input side in pixels (≥ 16).
        dropout: dropout probability before the linear projection.
        embedding_size: output dimension (paper: 128).
    """

    metric = "cosine"

    def __init__(self, input_size: int = 112, dropout: float = 0.0, embedding_size: int = 128) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels for the 4 stride-2 stages, got {input_size}")
        self.input_size = input_size
        self.embedding_size = embedding_size

        layers: list[nn.Module] = [ConvBNPReLU(3, 64, 3, 2), ConvBNPReLU(64, 64, 3, 1, groups=64)]
        in_channels = 64
        for expansion, channels, repeats, stride in BOTTLENECK_STAGES:
            for index in range(repeats):
                layers.append(Bottleneck(in_channels, channels, stride if index == 0 else 1, expansion))
                in_channels = channels
        layers.append(ConvBNPReLU(in_channels, 512, 1))
        self.trunk = nn.Sequential(*layers)

        side = stage_output_size(input_size)
        self.gdc = nn.Sequential(nn.Conv2d(512, 512, side, groups=512, bias=False), nn.BatchNorm2d(512))
        self.dropout = nn.Dropout(p=dropout)
        self.projection = nn.Linear(512, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, input_size, input_size)`` in ``[-1, 1]`` → ``(N, embedding_size)`` raw embeddings."""
        x = torch.flatten(self.gdc(self.trunk(x)), 1)
        return self.features(self.projection(self.dropout(x)))


def mobilefacenet(input_size: int = 112, dropout: float = 0.0, embedding_size: int = 128) -> MobileFaceNet:
    """MobileFaceNet with a 128-d (default) embedding."""
    return MobileFaceNet(input_size, dropout, embedding_size)

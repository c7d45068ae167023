"""A small, fast CNN for tests and quick CPU runs at 32–48 px (≈ 0.3–0.5 M parameters).

Stem conv3×3 (3 → 16) then four stages; each stage is conv3×3 stride 2 → BN → PReLU, and every stage
but the last adds a conv3×3 stride 1 → BN → PReLU. Head: flatten → dropout → ``nn.Linear`` →
BatchNorm1d. Input ``(N, 3, input_size, input_size)`` RGB in ``[-1, 1]`` with ``input_size ≥ 16``;
output ``(N, embedding_size)`` raw embeddings (metric ``"cosine"``, for margin heads).
"""

from __future__ import annotations

import torch
from torch import nn

from fr_invariance.models.iresnet import stage_output_size
from fr_invariance.models.mobilefacenet import ConvBNPReLU

STEM_WIDTH = 16


class TinyNet(nn.Module):
    """The tiny CNN.

    Args:
        input_size: square input side in pixels (≥ 16).
        dropout: dropout probability before the linear projection.
        embedding_size: output dimension.
        widths: channels of the four stages.
    """

    metric = "cosine"

    def __init__(
        self,
        input_size: int = 32,
        dropout: float = 0.0,
        embedding_size: int = 128,
        widths: tuple[int, int, int, int] = (32, 64, 96, 128),
    ) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels for the 4 stride-2 stages, got {input_size}")
        if len(widths) != 4:
            raise ValueError(f"widths must give 4 stage widths, got {widths}")
        self.input_size = input_size
        self.embedding_size = embedding_size

        layers: list[nn.Module] = [ConvBNPReLU(3, STEM_WIDTH, 3)]
        in_channels = STEM_WIDTH
        for index, width in enumerate(widths):
            layers.append(ConvBNPReLU(in_channels, width, 3, stride=2))
            if index < len(widths) - 1:
                layers.append(ConvBNPReLU(width, width, 3))
            in_channels = width
        self.trunk = nn.Sequential(*layers)

        side = stage_output_size(input_size)
        self.dropout = nn.Dropout(p=dropout)
        self.projection = nn.Linear(in_channels * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, input_size, input_size)`` in ``[-1, 1]`` → ``(N, embedding_size)`` raw embeddings."""
        x = torch.flatten(self.trunk(x), 1)
        return self.features(self.projection(self.dropout(x)))


def tiny(input_size: int = 32, dropout: float = 0.0, embedding_size: int = 128) -> TinyNet:
    """The tiny CNN with default widths (32, 64, 96, 128)."""
    return TinyNet(input_size, dropout, embedding_size)

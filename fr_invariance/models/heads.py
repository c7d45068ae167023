"""Margin heads: ArcFace, CosFace, the combined (m1, m2, m3) margin and AdaFace.

Every head holds class centres ``weight`` of shape ``(num_classes, embedding_size)`` and maps
``embeddings (N, E)`` and ``labels (N,)`` to logits ``(N, num_classes)`` in float32: ``s · cos θ_j``
for every class ``j``, with the label column replaced by a margin function of ``θ_y``. Centres and
embeddings are L2-normalised inside the head; the computation runs in fp32 with autocast disabled.

Angles: cosines are clamped to ``[-1 + COS_EPS, 1 - COS_EPS]`` before ``acos`` so value and gradient
stay finite at ``θ = 0`` and ``θ = π``. An angular margin ``cos(m1·θ + m2)`` is only monotone while
``m1·θ + m2 ∈ [0, π]``; outside that range this module continues it monotonically:

- ``m1·θ + m2 < 0`` (AdaFace's negative angular margin near θ = 0): the argument is clamped at 0;
- ``m1·θ + m2 > π``: ``cos θ − cos θ* − 1`` with ``θ* = (π − m2) / m1`` — continuous at ``θ*`` and
  decreasing in ``θ`` (this differs from insightface's ``cos θ − m·sin m`` fallback, which jumps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-6


def angular_margin_cosine(cos_theta: torch.Tensor, m1: float, m2: float | torch.Tensor) -> torch.Tensor:
    """``cos(m1·θ + m2)`` for ``θ = acos(cos_theta)``, continued monotonically outside ``[0, π]`` (see module doc).

    Args:
        cos_theta: cosines, any shape, float32.
        m1: multiplicative angular margin (> 0).
        m2: additive angular margin in radians, a float or a tensor broadcastable to ``cos_theta``.
    """
    cos_theta = cos_theta.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    theta = torch.acos(cos_theta)
    m2 = torch.as_tensor(m2, dtype=cos_theta.dtype, device=cos_theta.device)
    argument = m1 * theta + m2
    inside = torch.cos(argument.clamp(min=0.0, max=math.pi))
    theta_star = (math.pi - m2) / m1
    tail = cos_theta - torch.cos(theta_star) - 1.0
    return torch.where(argument > math.pi, tail, inside)


class MarginHead(nn.Module):
    """Shared part of the margin heads: centres, normalised cosines, label-column replacement, scale.

    Subclasses implement :meth:`target_logit`, the margin function of the label column's cosine.
    """

    def __init__(self, num_classes: int, embedding_size: int = 512, s: float = 64.0) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"num_classes and embedding_size must be positive, got {num_classes}, {embedding_size}")
        if s <= 0:
            raise ValueError(f"scale s must be positive, got {s}")
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.s = float(s)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` embeddings → ``(N, num_classes)`` fp32 cosines to the normalised centres."""
        return F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def target_logit(self, cos_target: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Margin function: ``(N,)`` label-column cosines (and the raw ``(N, E)`` embeddings) → ``(N,)`` values."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``embeddings (N, E)``, ``labels (N,)`` long → logits ``(N, num_classes)`` float32."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings must be (N, {self.embedding_size}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            cos = self.cosine(embeddings)
            index = labels.long().unsqueeze(1)
            target = self.target_logit(cos.gather(1, index).squeeze(1).clamp(-1.0, 1.0), embeddings)
            return self.s * cos.scatter(1, index, target.unsqueeze(1))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, s={self.s}"


class CombinedMargin(MarginHead):
    """Combined margin: label logit ``s·(cos(m1·θ_y + m2) − m3)`` (m1 = 1, m2 = 0.5, m3 = 0 is ArcFace)."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int = 512,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
    ) -> None:
        super().__init__(num_classes, embedding_size, s)
        if m1 <= 0:
            raise ValueError(f"m1 must be positive, got {m1}")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target_logit(self, cos_target: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return angular_margin_cosine(cos_target, self.m1, self.m2) - self.m3

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m1={self.m1}, m2={self.m2}, m3={self.m3}"


class ArcFace(CombinedMargin):
    """Additive angular margin: label logit ``s·cos(θ_y + m)``."""

    def __init__(self, num_classes: int, embedding_size: int = 512, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(num_classes, embedding_size, s, m1=1.0, m2=m, m3=0.0)
        self.m = float(m)


class CosFace(MarginHead):
    """Additive cosine margin: label logit ``s·(cos θ_y − m)``."""

    def __init__(self, num_classes: int, embedding_size: int = 512, s: float = 64.0, m: float = 0.4) -> None:
        super().__init__(num_classes, embedding_size, s)
        self.m = float(m)

    def target_logit(self, cos_target: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


class AdaFace(MarginHead):
    """Feature-norm adaptive margin (Kim et al., CVPR 2022).

    With ``‖z‖`` the raw embedding norm (a stop-gradient quality proxy) and ``μ, σ`` the EMA of the batch
    mean and standard deviation of the norms, ``ẑ = clip((‖z‖ − μ) / (σ / h), −1, 1)``; then
    ``g_angle = −m·ẑ``, ``g_add = m·ẑ + m`` and the label logit is ``s·(cos(θ_y + g_angle) − g_add)``:
    ArcFace-like for low norms (ẑ = −1), CosFace-like for average ones (ẑ = 0).

    The statistics update only in training mode: ``μ ← α·μ_batch + (1 − α)·μ`` (likewise σ, population
    std), initialised from the first training batch; eval mode uses the stored values. ``σ`` is
    floored at ``NORM_STD_FLOOR`` so a batch of equal norms cannot divide by zero.
    """

    NORM_STD_FLOOR = 1e-3

    def __init__(
        self,
        num_classes: int,
        embedding_size: int = 512,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
    ) -> None:
        super().__init__(num_classes, embedding_size, s)
        if h <= 0 or not 0 < t_alpha <= 1:
            raise ValueError(f"need h > 0 and 0 < t_alpha <= 1, got h={h}, t_alpha={t_alpha}")
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        self.register_buffer("norm_mean", torch.zeros(()))
        self.register_buffer("norm_std", torch.ones(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update_norm_statistics(self, norms: torch.Tensor) -> None:
        batch_mean = norms.mean()
        batch_std = norms.std(correction=0)
        alpha = torch.where(self.num_updates == 0, 1.0, self.t_alpha)
        self.norm_mean.lerp_(batch_mean, alpha)
        self.norm_std.lerp_(batch_std, alpha)
        self.num_updates += 1

    def normalised_norm(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` → ``(N,)`` ẑ in ``[-1, 1]``; updates the EMA statistics first when training."""
        norms = embeddings.detach().norm(dim=1)
        if self.training:
            self._update_norm_statistics(norms)
        scale = self.norm_std.clamp(min=self.NORM_STD_FLOOR) / self.h
        return ((norms - self.norm_mean) / scale).clamp(-1.0, 1.0)

    def target_logit(self, cos_target: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        quality = self.normalised_norm(embeddings)
        g_angle = -self.m * quality
        g_add = self.m * quality + self.m
        return angular_margin_cosine(cos_target, 1.0, g_angle) - g_add

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, h={self.h}, t_alpha={self.t_alpha}"

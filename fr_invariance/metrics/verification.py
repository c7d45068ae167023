"""Pair verification accuracy, insightface protocol (DESIGN §11), for comparison with published numbers.

The caller embeds each image and its horizontal flip and sums them; here rows are L2-normalised,
pairs scored by squared L2 distance (in [0, 4]), and accuracy measured by 10-fold cross-validation
of a distance threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

THRESHOLDS = np.arange(0.0, 4.0, 0.01)
"""Candidate thresholds on the squared distance: 0, 0.01, ..., 3.99 (insightface's grid)."""


@dataclass(frozen=True)
class VerificationResult:
    """Result of :func:`verification_accuracy`.

    Attributes:
        accuracy_mean, accuracy_std: mean and population std (ddof 0) of the held-out fold accuracies.
        threshold_mean: mean of the per-fold best thresholds (squared L2 distance).
        tar_at_far: FAR target -> TAR, on all pairs: the highest true-accept rate at a distance
            threshold whose false-accept rate is <= the target (nan without genuine or impostor pairs).
        n_pairs: P.
        fold_accuracies, fold_thresholds: per held-out fold, its accuracy and the threshold chosen on the
            other folds.
    """

    accuracy_mean: float
    accuracy_std: float
    threshold_mean: float
    tar_at_far: dict[float, float]
    n_pairs: int
    fold_accuracies: tuple[float, ...] = ()
    fold_thresholds: tuple[float, ...] = ()


def _accuracies(distances: np.ndarray, issame: np.ndarray) -> np.ndarray:
    """Accuracy of ``predict same iff distance < threshold`` for every threshold: ``(len(THRESHOLDS),)``."""
    predicted = distances[None, :] < THRESHOLDS[:, None]
    return (predicted == issame[None, :]).mean(axis=1)


def _tar_at_far(distances: np.ndarray, issame: np.ndarray, far_targets: Sequence[float]) -> dict[float, float]:
    if issame.all() or not issame.any():
        return {float(target): float("nan") for target in far_targets}
    far, tar, _ = roc_curve(issame, -distances, drop_intermediate=False)
    return {float(target): float(tar[far <= target].max()) for target in far_targets}


def verification_accuracy(
    embeddings: np.ndarray | torch.Tensor,
    issame: np.ndarray,
    n_folds: int = 10,
    far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1),
) -> VerificationResult:
    """Verification accuracy of consecutive-row pairs.

    Args:
        embeddings: ``(2P, E)``; rows ``2i`` and ``2i+1`` form pair ``i`` (already flip-summed).
        issame: ``(P,)`` bool, True for a genuine pair.
        n_folds: folds of ``KFold(n_folds, shuffle=False)``; on each split the best threshold on the
            training folds (first of equal maxima) is scored on the held-out fold.
        far_targets: FAR values for ``tar_at_far``.

    Raises:
        ValueError: odd row count, ``issame`` length != P, or fewer pairs than folds.
    """
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    embeddings = np.asarray(embeddings, dtype=np.float64)
    issame = np.asarray(issame).astype(bool)
    if embeddings.ndim != 2 or embeddings.shape[0] % 2:
        raise ValueError(
            f"embeddings must be (2P, E) with rows 2i, 2i+1 forming pair i; got shape {embeddings.shape}."
        )
    n_pairs = embeddings.shape[0] // 2
    if issame.shape != (n_pairs,):
        raise ValueError(f"issame has shape {issame.shape} but embeddings hold {n_pairs} pairs: give one flag per pair.")
    if n_folds < 2 or n_pairs < n_folds:
        raise ValueError(f"{n_pairs} pairs cannot be split into n_folds={n_folds} (need n_folds >= 2 and P >= n_folds).")

    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms == 0, 1.0, norms)
    distances = ((unit[0::2] - unit[1::2]) ** 2).sum(axis=1)

    accuracies, thresholds = [], []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(distances):
        best = THRESHOLDS[np.argmax(_accuracies(distances[train], issame[train]))]
        thresholds.append(best)
        accuracies.append(np.mean((distances[test] < best) == issame[test]))
    return VerificationResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        threshold_mean=float(np.mean(thresholds)),
        tar_at_far=_tar_at_far(distances, issame, far_targets),
        n_pairs=n_pairs,
        fold_accuracies=tuple(float(a) for a in accuracies),
        fold_thresholds=tuple(float(t) for t in thresholds),
    )

"""Verification accuracy (insightface protocol, DESIGN §11)."""

import numpy as np
import pytest
import torch

from fr_invariance.metrics.verification import verification_accuracy


def _pairs(n_pairs: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Genuine pairs: same direction plus noise; impostors: independent directions."""
    generator = np.random.default_rng(seed)
    issame = np.arange(n_pairs) % 2 == 0
    first = generator.normal(size=(n_pairs, 64))
    second = np.where(issame[:, None], first + noise * generator.normal(size=(n_pairs, 64)), generator.normal(size=(n_pairs, 64)))
    embeddings = np.empty((2 * n_pairs, 64))
    embeddings[0::2], embeddings[1::2] = first, second
    return embeddings, issame


def _straightforward_accuracy(embeddings, issame, n_folds):
    """Independent re-computation: python loops over folds and thresholds."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distances = [float(np.sum((unit[2 * i] - unit[2 * i + 1]) ** 2)) for i in range(len(issame))]
    fold_sizes = [len(issame) // n_folds + (1 if f < len(issame) % n_folds else 0) for f in range(n_folds)]
    starts = np.cumsum([0] + fold_sizes)
    accuracies = []
    for f in range(n_folds):
        test = set(range(starts[f], starts[f + 1]))
        train = [i for i in range(len(issame)) if i not in test]
        best_threshold, best_accuracy = None, -1.0
        for step in range(400):
            threshold = step * 0.01
            accuracy = np.mean([(distances[i] < threshold) == issame[i] for i in train])
            if accuracy > best_accuracy + 1e-12:
                best_threshold, best_accuracy = threshold, accuracy
        accuracies.append(np.mean([(distances[i] < best_threshold) == issame[i] for i in sorted(test)]))
    return np.mean(accuracies), np.std(accuracies)


def test_separable_pairs_score_one():
    embeddings, issame = _pairs(200, noise=0.05, seed=0)
    result = verification_accuracy(embeddings, issame)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    assert result.n_pairs == 200
    assert result.tar_at_far == {1e-3: 1.0, 1e-2: 1.0, 1e-1: 1.0}


def test_random_pairs_score_about_half():
    generator = np.random.default_rng(1)
    embeddings = generator.normal(size=(2000, 32))
    issame = generator.random(1000) < 0.5
    result = verification_accuracy(torch.from_numpy(embeddings), issame)
    assert result.accuracy_mean == pytest.approx(0.5, abs=0.06)


def test_small_case_matches_straightforward_computation():
    embeddings, issame = _pairs(47, noise=1.2, seed=2)  # overlapping classes, folds of unequal size
    result = verification_accuracy(embeddings, issame, n_folds=5)
    mean, std = _straightforward_accuracy(embeddings, issame, 5)
    assert result.accuracy_mean == pytest.approx(mean, abs=1e-12)
    assert result.accuracy_std == pytest.approx(std, abs=1e-12)
    assert 0.6 < result.accuracy_mean < 1.0
    # TAR@FAR by brute force over every threshold between observed distances
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distances = np.sum((unit[0::2] - unit[1::2]) ** 2, axis=1)
    for target, tar in result.tar_at_far.items():
        best = max(
            np.mean(distances[issame] <= t) for t in np.concatenate([[-1.0], distances])
            if np.mean(distances[~issame] <= t) <= target
        )
        assert tar == pytest.approx(best)


def test_errors():
    embeddings, issame = _pairs(20, noise=0.1, seed=3)
    with pytest.raises(ValueError, match="2P"):
        verification_accuracy(embeddings[:-1], issame)
    with pytest.raises(ValueError, match="issame"):
        verification_accuracy(embeddings, issame[:-1])
    with pytest.raises(ValueError, match="n_folds"):
        verification_accuracy(embeddings[:16], issame[:8])

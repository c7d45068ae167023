"""Clustering recoverability metrics (DESIGN §7) on constructed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fr_invariance.metrics import clustering as mc


def test_hungarian_accuracy_on_constructed_cases():
    labels = [0, 0, 0, 1, 1, 1]
    assert mc.hungarian_accuracy(labels, [1, 1, 1, 0, 0, 0]) == 1.0  # names of clusters do not matter
    assert mc.hungarian_accuracy(labels, [0, 0, 1, 1, 1, 1]) == pytest.approx(5 / 6)
    assert mc.hungarian_accuracy(labels, [0, 1, 0, 1, 0, 1]) == pytest.approx(4 / 6)
    # three clusters, two classes: one cluster stays unmatched and counts as errors
    assert mc.hungarian_accuracy(labels, [0, 0, 2, 1, 1, 1]) == pytest.approx(5 / 6)
    # three classes and clusters: the best of the 3! matchings
    labels3 = [0, 0, 1, 1, 2, 2, 2]
    clusters3 = [2, 2, 0, 1, 1, 1, 0]
    table = mc.contingency(labels3, clusters3)
    best = max(sum(table[c, p[c]] for c in range(3)) for p in itertools.permutations(range(3)))
    assert mc.hungarian_accuracy(labels3, clusters3) == pytest.approx(best / 7)


def test_purity_and_majority():
    labels = np.array([-1, -1, -1, 1, 1, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 1, 1, 1, 0])
    # cluster 0: {-1, -1, 1} → 2; cluster 1: {-1, 1, 1, 1, 1} → 4
    assert mc.purity(labels, clusters) == pytest.approx(6 / 8)
    assert mc.majority_baseline(labels) == pytest.approx(5 / 8)


def _brute_force_p(labels: np.ndarray, clusters: np.ndarray, n_permutations: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    permuted = rng.permuted(np.broadcast_to(labels, (n_permutations, labels.size)), axis=1)
    observed = mc.hungarian_accuracy(labels, clusters)
    count = 0
    for row in permuted:
        table = mc.contingency(row, clusters)
        r, c = linear_sum_assignment(table, maximize=True)
        count += table[r, c].sum() / labels.size >= observed - 1e-12
    return (1 + count) / (1 + n_permutations)


def test_permutation_p_value_on_constructed_cases():
    labels = np.repeat([0, 1], 20)
    accuracy, p = mc.permutation_p_value(labels, labels[::-1].copy(), n_permutations=500, seed=0)
    assert accuracy == 1.0 and p == pytest.approx(1 / 501)  # perfect clusters: no permutation does as well
    rng = np.random.default_rng(3)
    random_clusters = rng.integers(0, 2, size=40)
    accuracy, p = mc.permutation_p_value(labels, random_clusters, n_permutations=500, seed=1)
    assert p > 0.05
    assert p == pytest.approx(_brute_force_p(labels, random_clusters, 500, 1))
    three = rng.integers(0, 3, size=40)  # non-2×2 path (general assignment per permutation)
    _, p3 = mc.permutation_p_value(labels, three, n_permutations=200, seed=2)
    assert p3 == pytest.approx(_brute_force_p(labels, three, 200, 2))


def _blobs(seed: int = 0, n: int = 60, dim: int = 10, gap: float = 6.0):
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) < n // 3, 1, -1)
    x = rng.normal(size=(n, dim))
    x[:, 0] += gap * labels
    return x, labels


@pytest.mark.parametrize("method", mc.METHODS)
def test_every_method_recovers_separated_classes(method):
    x, labels = _blobs()
    scores = mc.cluster_and_score(mc.prepare(x, "euclidean"), labels, method, seed=0, n_permutations=200)
    assert scores.accuracy == 1.0 and scores.purity == 1.0 and scores.nmi == pytest.approx(1.0)
    assert scores.ari == pytest.approx(1.0) and scores.majority == pytest.approx(2 / 3)
    assert scores.p_value == pytest.approx(1 / 201) and scores.n == 60


def test_cluster_rejects_unknown_method():
    with pytest.raises(mc.ClusteringInputError, match="kmeans"):
        mc.cluster(np.zeros((4, 2)), "dbscan", 2)


def test_intra_class_scores_average_over_eligible_identities():
    rng = np.random.default_rng(0)
    rows, labels, identities = [], [], []
    for identity in range(5):
        centre = rng.normal(size=8) * 10
        for k in range(8):
            value = 1 if k % 2 else -1
            offset = np.zeros(8)
            offset[1] = 3.0 * value
            rows.append(centre + offset + rng.normal(scale=0.2, size=8))
            labels.append(value)
            identities.append(identity)
    for k in range(4):  # an identity showing one value only: not eligible
        rows.append(rng.normal(size=8))
        labels.append(1)
        identities.append(99)
    x, labels, identities = np.array(rows), np.array(labels), np.array(identities)
    assert set(mc.eligible_identities(labels, identities)) == {0, 1, 2, 3, 4}
    scores = mc.intra_class_scores(mc.prepare(x, "euclidean"), labels, identities, "kmeans", n_permutations=200)
    assert scores.accuracy == 1.0 and scores.accuracy_std == 0.0 and scores.n_identities == 5 and scores.n == 40
    assert scores.majority == 0.5 and scores.p_value == pytest.approx(1 / 201)
    assert mc.intra_class_scores(x, np.ones(len(labels), int), identities, "kmeans") is None


def test_fisher_scores_on_a_hand_case():
    x = np.array([[0.0, 1.0], [2.0, -1.0], [10.0, 1.0], [12.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    # dim 0: means 1 and 11 (overall 6): between = 2·25 + 2·25 = 100; within = 4·1 = 4 → 25
    # dim 1: means 0 and 0: between 0; within 4 → 0
    np.testing.assert_allclose(mc.fisher_scores(x, labels), [25.0, 0.0])
    np.testing.assert_array_equal(mc.fisher_ranking(x, labels), [0, 1])


def test_ablation_curve_drops_the_informative_dimension_first():
    x, labels = _blobs(gap=8.0)
    curve = dict(mc.ablation_curve(mc.prepare(x, "euclidean"), labels, [0, 1, 50], method="kmeans", seed=0,
                                   renormalise=False))
    assert curve[0] == 1.0 and curve[1] < 0.8 and 50 not in curve


def test_linear_probe_upper_bound():
    x, labels = _blobs(gap=4.0)
    assert mc.linear_probe_accuracy(x, labels, folds=5, seed=0) > 0.95
    assert np.isnan(mc.linear_probe_accuracy(x, np.ones(60, int)))

"""Clustering recoverability metrics (DESIGN §7) and the clustering analysis on constructed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from fr_invariance.data.embeddings_table import EmbeddingsTable
from fr_invariance.evaluation.analyses.clustering import (
    ABLATION_COLUMNS,
    SCORE_COLUMNS,
    ClusteringAnalysis,
)
from fr_invariance.evaluation.labelled_embeddings import NamedEmbeddings, frame_of
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


def _identity_level_noise(seed: int, n_identities: int = 40, per_identity: int = 10, dim: int = 64):
    """Tight identity clusters (cosine-prepared) and a random ±1 label per identity, independent of them."""
    rng = np.random.default_rng(seed)
    identities = np.repeat(np.arange(n_identities), per_identity)
    x = rng.normal(size=(n_identities, dim))[identities] + 0.3 * rng.normal(size=(identities.size, dim))
    return mc.prepare(x, "cosine"), np.where(rng.random(n_identities) < 0.5, 1, -1)[identities], identities


def test_linear_probe_folds_are_grouped_by_identity():
    # image folds put other images of each test identity in training: the probe memorises identity → label
    grouped, leaky = [], []
    for seed in range(3):
        x, labels, identities = _identity_level_noise(seed)
        grouped.append(mc.linear_probe_accuracy(x, labels, identities=identities, seed=0))
        leaky.append(mc.linear_probe_accuracy(x, labels, seed=0))
    assert np.mean(leaky) > 0.9
    assert np.mean(grouped) < 0.65  # chance: the label tells nothing about unseen identities
    x, labels, identities = _identity_level_noise(0, n_identities=4)
    assert np.isnan(mc.linear_probe_accuracy(x, np.where(identities == 0, 1, -1), identities=identities))


def test_linear_probe_chooses_its_regularisation():
    # one low-variance axis carries the label; after L2 row normalisation it is tiny, so C = 1 under-reads it
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(300) < 0.5, 1, -1)
    identities = np.repeat(np.arange(30), 10)
    x = rng.normal(size=(30, 16))[identities] + 0.5 * rng.normal(size=(300, 16))
    x[:, 0] = 0.2 * labels + 0.1 * rng.normal(size=300)
    x = mc.prepare(x, "cosine")
    fixed = cross_val_score(LogisticRegression(max_iter=1000), x, labels,
                            cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert fixed < 0.8
    assert mc.linear_probe_accuracy(x, labels, seed=0) > fixed + 0.15
    assert mc.linear_probe_accuracy(x, labels, identities=identities, seed=0) > 0.9


def test_permutation_p_value_permutes_identities_for_identity_level_labels():
    # true null: a random label per identity; images of one identity cluster together, so shuffling images one
    # by one (as if 320 independent draws) makes the null far too narrow
    image_level, identity_level = [], []
    for r in range(40):
        x, labels, identities = _identity_level_noise(100 + r, per_identity=8, dim=8)
        clusters = mc.cluster(x, "kmeans", 2, seed=0)
        image_level.append(mc.permutation_p_value(labels, clusters, n_permutations=200, seed=r)[1])
        identity_level.append(mc.permutation_p_value(labels, clusters, identities=identities, n_permutations=200,
                                                      seed=r)[1])
    assert np.mean(np.array(image_level) < 0.05) > 0.3
    assert np.mean(np.array(identity_level) < 0.05) <= 0.15
    # a real identity-level effect is still found
    rng = np.random.default_rng(7)
    identities = np.repeat(np.arange(40), 8)
    labels = np.where(identities % 2, 1, -1)
    x = rng.normal(size=(40, 8))[identities] + 0.3 * rng.normal(size=(320, 8))
    x[:, 0] += 3 * labels
    clusters = mc.cluster(mc.prepare(x, "euclidean"), "kmeans", 2, seed=0)
    assert mc.permutation_p_value(labels, clusters, identities=identities, n_permutations=200) == (1.0, 1 / 201)
    # a label varying within an identity keeps the image-level permutation
    varying = rng.permutation(labels)
    assert not mc.identity_level(varying, identities) and mc.identity_level(labels, identities)
    assert mc.permutation_p_value(varying, clusters, identities=identities, n_permutations=200, seed=3) == (
        mc.permutation_p_value(varying, clusters, n_permutations=200, seed=3))


# ------------------------------------------------------------------------------------------ the analysis


def _source(x: np.ndarray, identities: np.ndarray, **attributes: np.ndarray) -> NamedEmbeddings:
    """An in-memory cosine source; every attribute marked identity-level (no intra-class case is asked for)."""
    frame = pd.DataFrame({name: np.asarray(v, dtype=np.int8) for name, v in attributes.items()})
    table = EmbeddingsTable(np.asarray(x, dtype=np.float32), identities, frame, kinds={a: "identity" for a in frame})
    return NamedEmbeddings("toy", "cosine", table, origin="memory")


def _analysis(**settings) -> ClusteringAnalysis:
    """k-means, extra-class only, no ablation unless ``settings`` say otherwise."""
    return ClusteringAnalysis(**{"methods": ["kmeans"], "cases": ["extra"], "n_permutations": 200, "ablation": [],
                                 **settings})


def test_analysis_probe_and_p_value_treat_identities_as_units():
    x, labels, identities = _identity_level_noise(0)
    scores, _, _ = _analysis().measure(_source(x, identities, noise=labels), False)
    assert scores[0]["linear_probe"] < 0.75 and scores[0]["n_identities"] == 40  # image folds: ≈ 1
    # six identities in two tight groups of three, the label following the groups: accuracy 1, but only
    # 2 of the C(6, 3) = 20 ways to give three identities +1 fit the clusters that well, so p ≈ 0.1
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(6), 20)
    side = np.where(identities < 3, 1, -1)
    x = 5.0 * side[:, None] * np.eye(8)[1] + rng.normal(size=(6, 8))[identities] + 0.1 * rng.normal(size=(120, 8))
    row = _analysis(linear_probe=False).measure(_source(x, identities, group=side), False)[0][0]
    assert row["accuracy"] == 1.0 and 0.05 < row["p_value"] < 0.2  # image-level shuffling: 1 / 201


def test_identity_mean_leaves_out_tied_identities():
    identities = np.repeat(np.arange(6), 4)
    labels = np.concatenate([[1, 1, 1, -1]] * 2 + [[-1, -1, -1, 1]] * 2 + [[1, 1, -1, -1]] * 2)
    x = np.random.default_rng(0).normal(size=(24, 8))
    source = _source(x, identities, a=labels)
    analysis = _analysis(extra_sampling="identity_mean")
    _, y, ids, tied = analysis.extra_sample(source, labels, "a")
    assert tied == 2 and list(ids) == ["0", "1", "2", "3"] and list(y) == [1, 1, -1, -1]  # not +1 for 4 and 5
    scores, _, _ = analysis.measure(source, False)
    assert {(r["n"], r["n_identities"], r["note"]) for r in scores} == {
        (4, 4, "2 identities with a tied mean label left out")}


def test_ablation_uses_the_configured_mixture_covariance(monkeypatch):
    seen = []
    original = mc.cluster

    def spy(x, method, n_clusters, **kwargs):
        seen.append((method, kwargs.get("covariance_type")))
        return original(x, method, n_clusters, **kwargs)

    monkeypatch.setattr(mc, "cluster", spy)
    x, labels = _blobs()
    analysis = _analysis(methods=["gmm"], ablation=[0, 1], ablation_method="gmm", covariance_type="spherical",
                         linear_probe=False)
    analysis.measure(_source(x, np.arange(60), a=labels), False)
    assert len(seen) == 3 and set(seen) == {("gmm", "spherical")}  # one scored clustering, two ablation steps


def test_report_says_what_is_computed():
    x, labels = _blobs()
    source = _source(x, np.arange(60), a=labels)
    analysis = _analysis(folds=3, n_permutations=99)
    scores, _, ablation = analysis.measure(source, False)
    text = analysis.markdown(frame_of(scores, SCORE_COLUMNS), frame_of(ablation, ABLATION_COLUMNS), [source])
    assert "3-fold" in text and "5-fold" not in text and "grouped by identity" in text
    assert "(1 + number of label permutations whose accuracy is at least the observed one) / (1 + 99)" in text
    assert "identities' labels permuted" in text

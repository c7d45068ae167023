"""Macroscale metrics (DESIGN §6) against hand-computed values and the libraries they must agree with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist
from sklearn.neighbors import KernelDensity

from fr_invariance.metrics import macroscale as mm


def test_intra_entropy_on_a_hand_table():
    # identity a: two +1, two -1 → ln 2; identity b: three +1 → 0; identity c: +1, -1, -1 → H(1/3, 2/3)
    labels = [1, 1, -1, -1, 1, 1, 1, 1, -1, -1]
    identities = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
    h_c = -(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3)
    assert mm.intra_entropy(labels, identities) == pytest.approx((math.log(2) + 0.0 + h_c) / 3, abs=1e-12)


def test_intra_entropy_bounds():
    identities = np.repeat(np.arange(5), 4)
    constant = np.ones(20, dtype=int)
    half = np.tile([1, -1], 10)
    assert mm.intra_entropy(constant, identities) == 0.0
    assert mm.intra_entropy(half, identities) == pytest.approx(math.log(2))


def test_per_identity_means_on_a_hand_table():
    means = mm.per_identity_means([1, -1, -1, 1, 1, 1], [2, 2, 2, 1, 1, 0])
    np.testing.assert_allclose(means, [1.0, 1.0, -1 / 3])  # identities sorted: 0, 1, 2


def test_inter_entropy_uses_an_absolute_bandwidth_like_sklearn_kernel_density():
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(40), 7)
    labels = np.where(rng.random(identities.size) < np.repeat(rng.random(40), 7), 1, -1)
    means = mm.per_identity_means(labels, identities)
    grid = np.linspace(-1, 1, 101)
    density = np.exp(KernelDensity(bandwidth=0.1, kernel="gaussian").fit(means[:, None]).score_samples(grid[:, None]))
    expected_pmf = density / density.sum()
    np.testing.assert_allclose(mm.inter_entropy_pmf(means), expected_pmf, rtol=1e-9, atol=1e-15)
    assert mm.inter_entropy(labels, identities) == pytest.approx(stats.entropy(expected_pmf), rel=1e-9)
    # scipy's gaussian_kde takes a *factor* of the data's std: the same kernel needs bw_method = 0.1 / std
    kde = stats.gaussian_kde(means, bw_method=0.1 / means.std(ddof=1))
    scipy_pmf = kde(grid) / kde(grid).sum()
    np.testing.assert_allclose(mm.inter_entropy_pmf(means), scipy_pmf, rtol=1e-7)


def test_inter_entropy_grows_when_identities_spread_out():
    identities = np.repeat(np.arange(10), 4)
    all_positive = np.ones(40, dtype=int)
    split = np.where(np.repeat(np.arange(10) < 5, 4), 1, -1)  # half the identities +1, half -1
    mixed = np.tile([1, 1, -1, -1], 10)
    h_one, h_two, h_mid = (mm.inter_entropy(v, identities) for v in (all_positive, split, mixed))
    assert h_one < h_two and h_mid < h_two
    # one peak at +1 (truncated Gaussian) vs one in the middle (full Gaussian): the middle one has more mass
    assert h_one < h_mid


def test_labels_must_be_binary():
    with pytest.raises(mm.MacroscaleInputError, match="-1 / \\+1"):
        mm.intra_entropy([0, 1, 1], [0, 0, 1])


def _toy(seed: int = 0, n_ids: int = 30, per_id: int = 6, dim: int = 16):
    rng = np.random.default_rng(seed)
    identities = np.repeat(np.arange(n_ids), per_id)
    labels = np.where(rng.random(identities.size) < np.repeat(rng.random(n_ids), per_id), 1, -1)
    embeddings = rng.normal(size=(identities.size, dim)) + labels[:, None] * 0.8
    return embeddings, labels, identities


def test_sampling_is_one_image_per_identity_with_the_right_value():
    _, labels, identities = _toy()
    sets = mm.sample_attribute_sets(labels, identities, n_max=500, seed=3, attribute="x")
    n_pos = np.unique(identities[labels == 1]).size
    n_neg = np.unique(identities[labels == -1]).size
    assert sets.n == min(500, n_pos, n_neg)
    assert (labels[sets.positive] == 1).all() and (labels[sets.negative] == -1).all()
    assert np.unique(identities[sets.positive]).size == sets.n == np.unique(identities[sets.negative]).size
    np.testing.assert_array_equal(identities[sets.positive], sets.positive_identities)
    again = mm.sample_attribute_sets(labels, identities, n_max=500, seed=3, attribute="x")
    np.testing.assert_array_equal(sets.positive, again.positive)
    other = mm.sample_attribute_sets(labels, identities, n_max=500, seed=4, attribute="x")
    assert not np.array_equal(sets.positive, other.positive)
    capped = mm.sample_attribute_sets(labels, identities, n_max=5, seed=3, attribute="x")
    assert capped.n == 5


def test_sampling_favours_identities_with_many_images_of_the_value_as_the_authors_draw():
    """The authors shuffle the images and keep each identity's first, so an identity with 9 images of a
    value is drawn far more often than one with 1 (a uniform choice of identities would not differ)."""
    many = np.repeat(np.arange(50), 10)  # identities 0..49: 9 images +1, 1 image −1
    few = np.repeat(np.arange(50, 100), 10)  # identities 50..99: 1 image +1, 9 images −1
    identities = np.concatenate([many, few])
    labels = np.concatenate([np.tile([1] * 9 + [-1], 50), np.tile([1] + [-1] * 9, 50)])
    picked_positive = np.zeros(100)
    for seed in range(40):
        sets = mm.sample_attribute_sets(labels, identities, n_max=10, seed=seed, attribute="a")
        picked_positive[sets.positive_identities] += 1
    assert picked_positive[:50].sum() > 4 * picked_positive[50:].sum()


def test_ks_equals_scipy_ks_2samp_on_the_same_distance_samples():
    embeddings, labels, identities = _toy()
    result = mm.ks_statistics(embeddings, labels, identities, metric="cosine", seed=1, attribute="a")
    sets = mm.sample_attribute_sets(labels, identities, seed=1, attribute="a")
    xa, xb = embeddings[sets.positive], embeddings[sets.negative]
    upper = np.triu_indices(sets.n, k=1)
    d_a, d_b = cdist(xa, xa, "cosine")[upper], cdist(xb, xb, "cosine")[upper]
    d_cross = cdist(xa, xb, "cosine").ravel()
    plus, minus = stats.ks_2samp(d_a, d_cross), stats.ks_2samp(d_b, d_cross)
    assert result.ks_plus == pytest.approx(plus.statistic, abs=1e-12)
    assert result.p_plus == pytest.approx(plus.pvalue, rel=1e-6)
    assert result.ks_minus == pytest.approx(minus.statistic, abs=1e-12)
    assert result.p_minus == pytest.approx(minus.pvalue, rel=1e-6)
    assert (result.n_a, result.n_abar, result.n_cross) == (d_a.size, d_b.size, d_cross.size)
    assert result.ks_plus > 0.2  # the attribute shifts the embeddings: within-value pairs are closer


def test_ks_euclidean_and_same_identity_exclusion():
    embeddings, labels, identities = _toy(seed=2)
    sets = mm.sample_attribute_sets(labels, identities, seed=0, attribute="b")
    _, _, d_cross = mm.distance_samples(embeddings, sets, metric="euclidean")
    xa, xb = embeddings[sets.positive], embeddings[sets.negative]
    np.testing.assert_allclose(d_cross, cdist(xa, xb).ravel(), atol=1e-9)
    _, _, kept = mm.distance_samples(embeddings, sets, metric="euclidean", exclude_same_identity=True)
    shared = np.intersect1d(sets.positive_identities, sets.negative_identities).size
    assert shared > 0 and kept.size == d_cross.size - shared
    result = mm.ks_statistics(embeddings, labels, identities, metric="euclidean", seed=0, attribute="b",
                              exclude_same_identity=True)
    assert result.n_cross == kept.size


def test_ks_needs_two_identities_per_side():
    labels = np.array([1, 1, 1, -1])
    with pytest.raises(mm.MacroscaleInputError, match=">= 2 identities"):
        mm.ks_statistics(np.eye(4), labels, [0, 1, 2, 3])


def test_ks_aggregates():
    aggregates = mm.ks_aggregates(0.4, 0.1, count_plus=30, count_minus=10)
    assert aggregates == {"max": 0.4, "mean": pytest.approx(0.25), "weighted": pytest.approx((30 * 0.4 + 10 * 0.1) / 40)}


def test_spearman_with_bootstrap_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = -x + rng.normal(scale=0.5, size=12)
    result = mm.spearman_with_ci(x, y, n_bootstrap=500, seed=0)
    reference = stats.spearmanr(x, y)
    assert result.rho == pytest.approx(reference.statistic) and result.p_value == pytest.approx(reference.pvalue)
    assert result.ci_low <= result.rho <= result.ci_high < 0
    perfect = mm.spearman_with_ci(np.arange(6.0), np.arange(6.0) ** 2, n_bootstrap=200)
    assert perfect.rho == pytest.approx(1.0) and perfect.ci_low == pytest.approx(1.0)
    short = mm.spearman_with_ci([1.0, 2.0], [2.0, 1.0])
    assert np.isnan(short.ci_low) and short.n == 2


def test_logistic_recoverability():
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(200) < 0.3, 1, -1)
    separable = rng.normal(size=(200, 8)) + labels[:, None] * 3.0
    result = mm.logistic_recoverability(separable, labels, metric="euclidean", folds=5, seed=0)
    assert result.accuracy > 0.97 and result.balanced_accuracy > 0.97 and result.folds == 5
    assert result.majority == pytest.approx(max((labels == 1).mean(), (labels == -1).mean()))
    noise = mm.logistic_recoverability(rng.normal(size=(200, 8)), labels, metric="cosine", folds=5, seed=0)
    assert noise.balanced_accuracy < 0.65
    grouped = mm.logistic_recoverability(separable, labels, metric="euclidean", groups=np.arange(200) // 4)
    assert grouped.accuracy > 0.95

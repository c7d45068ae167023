"""Cross-model alignment metrics (DESIGN §8) against brute force, scikit-learn and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist
from scipy.stats import ortho_group
from sklearn.linear_model import Ridge
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fr_invariance.metrics import crossmodel as cm


def clustered(n_ids: int, per_id: int | np.ndarray, dim: int, *, spread: float = 0.15, seed: int = 0):
    """Identities as tight clusters around random centres: ``(N, dim)`` and ``(N,)`` labels."""
    rng = np.random.default_rng(seed)
    counts = np.full(n_ids, per_id) if np.isscalar(per_id) else np.asarray(per_id)
    identities = np.repeat(np.arange(n_ids), counts)
    centres = rng.normal(size=(n_ids, dim))
    return centres[identities] + spread * rng.normal(size=(identities.size, dim)), identities


def pipeline(x, y, identities, method, *, seed=42, protocol="paper_faithful", **kwargs):
    train, test = cm.identity_split(identities, seed=seed)
    p = cm.centre_and_pad(x[train], y[train], x[test], y[test])
    w = cm.fit_map(p.x_train, p.y_train, method)
    return w, cm.identification_metrics(p.x_test @ w, p.y_test, identities[test], identities[test],
                                        exclude_self=protocol == "strict", **kwargs)


def test_identity_split_is_disjoint_seeded_and_matches_numpy_global_shuffle():
    identities = np.repeat(np.array(["b", "a", "d", "c", "e", "f", "g", "h", "i", "j"]), 3)
    train, test = cm.identity_split(identities, seed=123)
    assert not set(identities[train]) & set(identities[test])
    assert np.unique(identities[train]).size == 7 and train.size + test.size == identities.size
    np.random.seed(123)  # the authors' stream: np.random.seed(seed); np.random.shuffle(sorted identities)
    order = sorted(set(identities))
    np.random.shuffle(order)
    assert set(identities[train]) == set(order[:7])
    again, _ = cm.identity_split(identities, seed=123)
    np.testing.assert_array_equal(train, again)
    with pytest.raises(cm.CrossModelInputError, match="more identities"):
        cm.identity_split(["a", "a", "a"], seed=0)


def test_numeric_identities_split_as_the_authors_folder_names_do():
    """meta.csv identities 1..60 read as integers; the authors shuffle their names sorted as text."""
    numbers = np.repeat(np.arange(1, 61), 2)
    train, test = cm.identity_split(numbers, seed=42)
    np.random.seed(42)
    names = sorted({str(n) for n in numbers})  # "1", "10", "11", ..., "2", "20", ...
    np.random.shuffle(names)
    assert {str(n) for n in numbers[train]} == set(names[:42])
    assert {str(n) for n in numbers[test]} == set(names[42:])


def test_centre_with_training_means_and_zero_pad():
    rng = np.random.default_rng(0)
    xt, yt, xs, ys = rng.normal(size=(20, 3)) + 5, rng.normal(size=(20, 5)), rng.normal(size=(4, 3)), rng.normal(size=(4, 5))
    p = cm.centre_and_pad(xt, yt, xs, ys)
    assert p.x_train.shape == (20, 5) and p.x_test.shape == (4, 5)
    np.testing.assert_allclose(p.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(p.x_test[:, :3], xs - xt.mean(0))
    assert (p.x_train[:, 3:] == 0).all()


def test_maps_agree_with_library_solutions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    ridge = Ridge(alpha=0.1, fit_intercept=False).fit(x, y)
    np.testing.assert_allclose(cm.fit_map(x, y, "ridge", alpha=0.1), ridge.coef_.T, atol=1e-10)
    np.testing.assert_allclose(cm.fit_map(x, y, "least_squares"), np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-10)
    w = cm.fit_map(x, y, "procrustes")
    np.testing.assert_allclose(w.T @ w, np.eye(6), atol=1e-10)
    np.testing.assert_array_equal(cm.fit_map(x, y, "unaligned"), np.eye(6))


def test_procrustes_recovers_a_random_rotation_exactly():
    x, identities = clustered(40, 3, 16, seed=2)
    rotation = ortho_group.rvs(16, random_state=3)
    y = x @ rotation + 0.7  # a rotation plus an offset (removed by the centring)
    w, faithful = pipeline(x, y, identities, "procrustes")
    np.testing.assert_allclose(w, rotation, atol=1e-8)
    assert faithful.rank[1] == 1.0 and faithful.mean_ap == pytest.approx(1.0) and faithful.n_without_mate == 0
    _, strict = pipeline(x, y, identities, "procrustes", protocol="strict")
    assert strict.rank[1] == 1.0 and strict.n_probes == faithful.n_probes


def test_strict_protocol_leaves_out_probes_without_another_image():
    counts = np.tile([1, 3], 20)  # half the identities have a single image
    x, identities = clustered(40, counts, 12, seed=4)
    y = x @ ortho_group.rvs(12, random_state=5)
    _, faithful = pipeline(x, y, identities, "procrustes")
    _, strict = pipeline(x, y, identities, "procrustes", protocol="strict")
    assert faithful.rank[1] == 1.0 and faithful.n_without_mate == 0
    assert strict.rank[1] == 1.0 and strict.n_without_mate > 0
    assert strict.n_probes + strict.n_without_mate == faithful.n_probes


def test_identity_map_gives_rank1_100():
    x, identities = clustered(30, 2, 8, seed=6)
    result = cm.identification_metrics(x, x, identities, identities)
    assert result.rank == {1: 1.0, 5: 1.0, 10: 1.0, 20: 1.0} and result.cmc[0] == 1.0
    _, unaligned = pipeline(x, x.copy(), identities, "unaligned", seed=7)
    assert unaligned.rank[1] == 1.0


def test_shuffled_pairing_gives_chance():
    x, identities = clustered(300, 2, 32, seed=8)
    rng = np.random.default_rng(9)
    y = x @ ortho_group.rvs(32, random_state=10)
    shuffled = y[rng.permutation(len(y))]  # pairs (x_i, y_i) no longer show the same image
    _, result = pipeline(x, shuffled, identities, "least_squares", protocol="strict", max_rank=50)
    chance_rank1 = 1 / (2 * 90 - 1)  # one relevant item among the other 179 test images
    assert result.rank[1] < 5 * chance_rank1 + 0.02
    assert result.rank[20] < 0.3


def brute_force(probes, gallery, pl, gl, exclude_self, max_rank=50):
    pu = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    gu = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = pu @ gu.T
    first_ranks, aps, aps50 = [], [], []
    for i in range(len(probes)):
        keep = np.ones(len(gallery), bool)
        if exclude_self:
            keep[i] = False
        relevant = (gl == pl[i])[keep]
        if not relevant.any():
            continue
        s = scores[i][keep]
        order = np.argsort(-s, kind="stable")
        hits = relevant[order]
        first_ranks.append(np.argmax(hits) + 1)
        aps.append(average_precision_score(relevant, s))
        top = hits[:max_rank].astype(float)
        if top.sum():
            aps50.append(((np.cumsum(top) / np.arange(1, top.size + 1)) * top).sum() / top.sum())
    first = np.array(first_ranks)
    return {k: (first <= k).mean() for k in (1, 5, 10, 20)}, np.mean(aps), np.mean(aps50), [
        (first <= k).mean() for k in range(1, max_rank + 1)]


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_identification_equals_brute_force_and_sklearn_average_precision(exclude_self, chunk_size):
    x, identities = clustered(40, np.tile([1, 2, 4, 6], 10), 8, spread=0.9, seed=11)
    rng = np.random.default_rng(12)
    probes = x + 0.6 * rng.normal(size=x.shape)
    result = cm.identification_metrics(probes, x, identities, identities, exclude_self=exclude_self,
                                       chunk_size=chunk_size)
    ranks, mean_ap, mean_ap50, cmc = brute_force(probes, x, identities, identities, exclude_self)
    for k in (1, 5, 10, 20):
        assert result.rank[k] == pytest.approx(ranks[k])
    assert 0.2 < result.rank[1] < 0.95  # a hard enough case
    assert result.mean_ap == pytest.approx(mean_ap, rel=1e-6)
    assert result.mean_ap_at_50 == pytest.approx(mean_ap50, rel=1e-6)
    np.testing.assert_allclose(result.cmc, cmc)


def test_ties_are_broken_against_the_probe():
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = cm.identification_metrics(np.array([[1.0, 0.0]]), gallery, ["a"], ["a", "b", "c"], max_rank=3, ranks=(1, 2))
    assert result.rank == {1: 0.0, 2: 1.0}  # the impostor "b" has the same score as the mate: ranked first
    assert result.mean_ap == pytest.approx(0.5)


def test_verification_pairs_cover_every_genuine_pair_and_as_many_impostors():
    identities = np.array([5, 5, 5, 7, 7, 9, 11, 11, 11, 11])
    first, second, genuine = cm.verification_pairs(identities, seed=0)
    assert genuine.sum() == 3 + 1 + 6 and (~genuine).sum() == genuine.sum()
    assert (identities[first[genuine]] == identities[second[genuine]]).all() and (first < second).all()
    assert (identities[first[~genuine]] != identities[second[~genuine]]).all()
    assert len(set(zip(first[~genuine], second[~genuine]))) == (~genuine).sum()
    again = cm.verification_pairs(identities, seed=0)
    np.testing.assert_array_equal(first, again[0])


def test_auc_and_eer_equal_sklearn_roc_on_the_same_scores():
    rng = np.random.default_rng(13)
    genuine = np.r_[np.ones(300, bool), np.zeros(500, bool)]
    scores = np.r_[rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 500)]
    result = cm.verification_metrics(scores, genuine)
    assert result.auc == pytest.approx(roc_auc_score(genuine, scores))
    fpr, tpr, _ = roc_curve(genuine, scores, drop_intermediate=False)
    fnr = 1 - tpr
    # independent EER: the crossing of FPR and FNR along the ROC, linear between the bracketing points
    k = np.flatnonzero(fnr - fpr <= 0)[0]
    t = (fnr[k - 1] - fpr[k - 1]) / ((fnr[k - 1] - fpr[k - 1]) - (fnr[k] - fpr[k]))
    assert result.eer == pytest.approx(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))
    assert abs(result.eer - fnr[k]) < 0.01 and 0.25 < result.eer < 0.4


def test_eer_on_separable_scores_is_zero():
    result = cm.verification_metrics([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
    assert result.eer == 0.0 and result.auc == 1.0 and result.tmr_at_fmr[1e-4] == 1.0


def test_tmr_at_fmr_is_the_highest_tpr_with_fpr_at_most_the_target():
    # 10 impostors, 4 genuine. Descending scores: g .95, i .9, g .85, g .8, i .7, i .6, g .5, then 7 impostors.
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1])
    genuine = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    result = cm.verification_metrics(scores, genuine, fmr_targets=(0.05, 0.1, 0.15, 0.28, 0.3))
    # FPR 0 → TPR .25; FPR .1 → TPR .75; FPR .2 → .75; FPR .3 → 1.0
    assert result.tmr_at_fmr == {0.05: 0.25, 0.1: 0.75, 0.15: 0.75, 0.28: 0.75, 0.3: 1.0}
    fpr, tpr, _ = roc_curve(genuine, scores, drop_intermediate=False)
    assert all(result.tmr_at_fmr[t] == tpr[fpr <= t].max() for t in result.tmr_at_fmr)
    # the ROC point nearest FMR 0.28 is at FPR 0.3 > target, where TPR reaches 1.0: never read above the target
    assert tpr[np.isclose(fpr, 0.3)].max() == 1.0


def test_rsa_and_linear_cka():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(60, 10))
    rotation = ortho_group.rvs(10, random_state=15)
    assert cm.rsa(x, x @ rotation) == pytest.approx(1.0)
    assert cm.linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0)
    y = rng.normal(size=(60, 10))
    expected = stats.spearmanr(pdist(x, "cosine"), pdist(y, "cosine")).statistic
    assert cm.rsa(x, y) == pytest.approx(expected)
    # kernel form of linear CKA on row-normalised inputs
    xu, yu = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (x, y))
    h = np.eye(60) - 1 / 60
    kx, ky = h @ xu @ xu.T @ h, h @ yu @ yu.T @ h
    assert cm.linear_cka(x, y) == pytest.approx((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))
    assert 0 < cm.linear_cka(x, y) < 0.5

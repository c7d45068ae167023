"""Attribute recoverability by unsupervised clustering of frozen embeddings (paper A, DESIGN §7).

All functions take plain arrays: ``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` (any hashable class codes;
binary attributes are {−1, +1}), cluster assignments ``(N,)`` ints.

- :func:`cluster` — k-means (seeded, ``n_init`` ≥ 10 restarts), Gaussian mixture, or agglomerative (Ward).
- :func:`hungarian_accuracy` — accuracy after the best one-to-one cluster → class matching
  (``scipy.optimize.linear_sum_assignment`` on the contingency table); :func:`purity`; NMI and ARI are
  scikit-learn's.
- :func:`permutation_p_value` — one-sided p-value of the matched accuracy against the null of labels
  independent of the clusters: ``(1 + #{perm ≥ observed}) / (1 + n_permutations)``; a label constant within
  every identity is permuted across identities (each identity's images keep one label), not image by image.
- :func:`intra_class_scores` — per identity (only identities showing every class), then averaged.
- :func:`linear_probe_accuracy` — cross-validated logistic regression (folds grouped by identity, C chosen
  by an inner cross-validation): the supervised upper bound.
- :func:`fisher_scores` / :func:`ablation_curve` — per-dimension Fisher score and the accuracy after
  dropping the top-m dimensions and re-clustering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from fr_invariance.errors import ConfigurationError

METHODS = ("kmeans", "gmm", "agglomerative")
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths the linear probe chooses from
PROBE_INNER_FOLDS = 3  # inner cross-validation folds choosing the probe's C


class ClusteringInputError(ConfigurationError):
    """Inputs that do not fit a clustering computation (unknown method, shape mismatch, ...)."""


def _codes(values: ArrayLike) -> tuple[np.ndarray, int]:
    """Integer codes 0..K−1 (sorted order of the values) and K."""
    unique, codes = np.unique(np.asarray(values).reshape(-1), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), int(unique.size)


def contingency(labels: ArrayLike, clusters: ArrayLike) -> np.ndarray:
    """``(K_clusters, K_classes)`` count table of cluster × class."""
    classes, n_classes = _codes(labels)
    groups, n_groups = _codes(clusters)
    if classes.shape != groups.shape:
        raise ClusteringInputError(f"labels and clusters differ in length: {classes.size} vs {groups.size}.")
    return np.bincount(groups * n_classes + classes, minlength=n_groups * n_classes).reshape(n_groups, n_classes)


def hungarian_accuracy(labels: ArrayLike, clusters: ArrayLike) -> float:
    """Share of samples whose cluster maps to their class under the best one-to-one cluster → class
    matching (clusters left unmatched when there are more clusters than classes count as errors)."""
    table = contingency(labels, clusters)
    if table.sum() == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(labels: ArrayLike, clusters: ArrayLike) -> float:
    """Σ over clusters of the size of its most frequent class, over N."""
    table = contingency(labels, clusters)
    return float(table.max(axis=1).sum() / table.sum()) if table.sum() else float("nan")


def majority_baseline(labels: ArrayLike) -> float:
    """Share of the most frequent class: the accuracy of putting everything in one cluster."""
    codes, _ = _codes(labels)
    return float(np.bincount(codes).max() / codes.size) if codes.size else float("nan")


def _matched_accuracies(classes: np.ndarray, groups: np.ndarray, n_classes: int, n_groups: int,
                        permuted: np.ndarray) -> np.ndarray:
    """Hungarian accuracy of every row of ``permuted`` ``(P, N)`` class codes against fixed ``groups``."""
    n_perm, n = permuted.shape
    flat = (np.arange(n_perm)[:, None] * (n_groups * n_classes) + groups[None, :] * n_classes + permuted).reshape(-1)
    tables = np.bincount(flat, minlength=n_perm * n_groups * n_classes).reshape(n_perm, n_groups, n_classes)
    if n_groups == 2 and n_classes == 2:  # closed form of the 2×2 assignment
        matched = np.maximum(tables[:, 0, 0] + tables[:, 1, 1], tables[:, 0, 1] + tables[:, 1, 0])
        return matched / n
    out = np.empty(n_perm)
    for k in range(n_perm):
        rows, cols = linear_sum_assignment(tables[k], maximize=True)
        out[k] = tables[k][rows, cols].sum() / n
    return out


def _identity_blocks(labels: ArrayLike, identities: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """``(identity code of each sample (N,), class code of each identity (I,))`` when ``labels`` ``(N,)`` is
    constant within every identity of ``identities`` ``(N,)``; None otherwise."""
    classes, _ = _codes(labels)
    ids, n_ids = _codes(identities)
    if classes.shape != ids.shape:
        raise ClusteringInputError(f"labels and identities differ in length: {classes.size} vs {ids.size}.")
    per_identity = np.zeros(n_ids, np.int64)
    per_identity[ids] = classes
    return (ids, per_identity) if (per_identity[ids] == classes).all() else None


def identity_level(labels: ArrayLike, identities: ArrayLike) -> bool:
    """Whether ``labels`` ``(N,)`` is constant within every identity of ``identities`` ``(N,)``."""
    return _identity_blocks(labels, identities) is not None


def permutation_p_value(
    labels: ArrayLike, clusters: ArrayLike, *, identities: ArrayLike | None = None, n_permutations: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """``(observed Hungarian accuracy, p-value)`` against labels shuffled across samples.

    p = ``(1 + #{permuted accuracy ≥ observed}) / (1 + n_permutations)`` (never 0; the smallest possible
    value is ``1 / (1 + n_permutations)``). With ``identities`` ``(N,)`` and a label constant within every
    identity, the identities' labels are shuffled across identities (all images of one identity keep one
    label): images of one identity are not independent draws of an identity-level attribute, and shuffling
    them one by one would make the null far too narrow. Otherwise labels are shuffled image by image.
    """
    classes, n_classes = _codes(labels)
    groups, n_groups = _codes(clusters)
    if classes.shape != groups.shape:
        raise ClusteringInputError(f"labels and clusters differ in length: {classes.size} vs {groups.size}.")
    observed = _matched_accuracies(classes, groups, n_classes, n_groups, classes[None, :])[0]
    rng = np.random.default_rng(seed)
    blocks = None if identities is None else _identity_blocks(classes, identities)
    if blocks is not None:
        ids, per_identity = blocks
        permuted = rng.permuted(np.broadcast_to(per_identity, (n_permutations, per_identity.size)), axis=1)[:, ids]
    else:
        permuted = rng.permuted(np.broadcast_to(classes, (n_permutations, classes.size)), axis=1)
    null = _matched_accuracies(classes, groups, n_classes, n_groups, permuted)
    return float(observed), float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + n_permutations))


def prepare(embeddings: ArrayLike, metric: str = "cosine") -> np.ndarray:
    """float64 copy of ``embeddings``; rows L2-normalised for a cosine model (k-means on the sphere)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ClusteringInputError(f"embeddings must be (N, D), got shape {x.shape}.")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif metric != "euclidean":
        raise ClusteringInputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    return x


def cluster(
    x: np.ndarray, method: str, n_clusters: int, *, seed: int = 0, n_init: int = 10, covariance_type: str = "diag"
) -> np.ndarray:
    """Cluster assignments ``(N,)`` of the rows of ``x``.

    Args:
        method: ``kmeans`` (``KMeans(n_init, random_state=seed)``), ``gmm`` (``GaussianMixture`` with
            ``covariance_type``, ``n_init`` restarts) or ``agglomerative`` (Ward linkage, deterministic).
        n_init: restarts of k-means / GMM (at least 10 for k-means).
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.mixture import GaussianMixture

    if method not in METHODS:
        raise ClusteringInputError(f"Unknown clustering method {method!r}; choose from {', '.join(METHODS)}.")
    if x.shape[0] < n_clusters:
        raise ClusteringInputError(f"cannot make {n_clusters} clusters from {x.shape[0]} samples.")
    if method == "kmeans":
        return KMeans(n_clusters, n_init=max(10, int(n_init)), random_state=seed).fit_predict(x)
    if method == "gmm":
        model = GaussianMixture(n_clusters, covariance_type=covariance_type, n_init=max(1, int(n_init)),
                                random_state=seed, reg_covar=1e-5)
        return model.fit(x).predict(x)
    return AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(x)


@dataclass(frozen=True)
class ClusterScores:
    """Agreement of one clustering with one attribute.

    Attributes:
        accuracy: Hungarian-matched accuracy; purity, nmi, ari: the usual scores.
        majority: majority-class baseline; p_value: label-permutation p-value of ``accuracy``.
        n: samples.
    """

    accuracy: float
    purity: float
    nmi: float
    ari: float
    majority: float
    p_value: float
    n: int


def score_clusters(
    labels: ArrayLike, clusters: ArrayLike, *, identities: ArrayLike | None = None, n_permutations: int = 1000,
    seed: int = 0,
) -> ClusterScores:
    """All scores of :class:`ClusterScores` for one clustering (``identities``: see :func:`permutation_p_value`)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels, clusters = np.asarray(labels).reshape(-1), np.asarray(clusters).reshape(-1)
    accuracy, p_value = permutation_p_value(labels, clusters, identities=identities, n_permutations=n_permutations,
                                            seed=seed)
    return ClusterScores(
        accuracy=accuracy,
        purity=purity(labels, clusters),
        nmi=float(normalized_mutual_info_score(labels, clusters)),
        ari=float(adjusted_rand_score(labels, clusters)),
        majority=majority_baseline(labels),
        p_value=p_value,
        n=int(labels.size),
    )


def cluster_and_score(
    x: np.ndarray, labels: ArrayLike, method: str, *, identities: ArrayLike | None = None, seed: int = 0,
    n_init: int = 10, n_permutations: int = 1000, covariance_type: str = "diag",
) -> ClusterScores:
    """Cluster ``x`` (already :func:`prepare`-d) into as many clusters as ``labels`` has classes and score
    (``identities`` ``(N,)``: the permutation unit of an identity-level label, see :func:`permutation_p_value`)."""
    _, n_classes = _codes(labels)
    clusters = cluster(x, method, n_clusters=max(n_classes, 2), seed=seed, n_init=n_init,
                       covariance_type=covariance_type)
    return score_clusters(labels, clusters, identities=identities, n_permutations=n_permutations, seed=seed)


@dataclass(frozen=True)
class IntraClassScores:
    """Per-identity clustering scores averaged over identities (each identity clustered on its own).

    Attributes:
        accuracy, accuracy_std: mean and std (ddof 1, 0 for one identity) of the per-identity accuracies;
            purity, nmi, ari, majority: means over identities.
        p_value: permutation p-value of the mean accuracy (labels shuffled inside each identity).
        n_identities: identities used (showing every class at least ``min_per_class`` times);
        n: images in those identities.
    """

    accuracy: float
    accuracy_std: float
    purity: float
    nmi: float
    ari: float
    majority: float
    p_value: float
    n_identities: int
    n: int


def eligible_identities(labels: ArrayLike, identities: ArrayLike, *, min_per_class: int = 2) -> np.ndarray:
    """Identity values (sorted) that show every class of ``labels`` at least ``min_per_class`` times (none when
    ``labels`` has a single class: there is nothing to separate)."""
    labels, identities = np.asarray(labels).reshape(-1), np.asarray(identities).reshape(-1)
    classes, n_classes = _codes(labels)
    ids, n_ids = _codes(identities)
    if n_classes < 2:
        return np.unique(identities)[:0]
    table = np.bincount(ids * n_classes + classes, minlength=n_ids * n_classes).reshape(n_ids, n_classes)
    return np.unique(identities)[(table >= min_per_class).all(axis=1)]


def intra_class_scores(
    x: np.ndarray, labels: ArrayLike, identities: ArrayLike, method: str, *, min_per_class: int = 2,
    seed: int = 0, n_init: int = 10, n_permutations: int = 1000, covariance_type: str = "diag",
) -> IntraClassScores | None:
    """Cluster each eligible identity's images separately; average the scores (None without any eligible
    identity). The p-value permutes labels within identities and compares mean accuracies."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels, identities = np.asarray(labels).reshape(-1), np.asarray(identities).reshape(-1)
    chosen = eligible_identities(labels, identities, min_per_class=min_per_class)
    if chosen.size == 0:
        return None
    _, n_classes = _codes(labels)
    rng = np.random.default_rng(seed)
    rows = []
    null_sum = np.zeros(n_permutations)
    n_total = 0
    for identity in chosen:
        mask = identities == identity
        y = labels[mask]
        clusters = cluster(x[mask], method, n_clusters=max(n_classes, 2), seed=seed, n_init=n_init,
                           covariance_type=covariance_type)
        classes, k_classes = _codes(y)
        groups, k_groups = _codes(clusters)
        observed = _matched_accuracies(classes, groups, k_classes, k_groups, classes[None, :])[0]
        permuted = rng.permuted(np.broadcast_to(classes, (n_permutations, classes.size)), axis=1)
        null_sum += _matched_accuracies(classes, groups, k_classes, k_groups, permuted)
        rows.append((observed, purity(y, clusters), normalized_mutual_info_score(y, clusters),
                     adjusted_rand_score(y, clusters), majority_baseline(y)))
        n_total += int(mask.sum())
    table = np.asarray(rows, dtype=np.float64)
    mean_accuracy = table[:, 0].mean()
    null_mean = null_sum / chosen.size
    p_value = (1 + np.count_nonzero(null_mean >= mean_accuracy - 1e-12)) / (1 + n_permutations)
    return IntraClassScores(
        accuracy=float(mean_accuracy),
        accuracy_std=float(table[:, 0].std(ddof=1)) if chosen.size > 1 else 0.0,
        purity=float(table[:, 1].mean()), nmi=float(table[:, 2].mean()), ari=float(table[:, 3].mean()),
        majority=float(table[:, 4].mean()), p_value=float(p_value), n_identities=int(chosen.size), n=n_total,
    )


def _folds(codes: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``(train, test)`` index pairs (shuffled, seeded), each group of ``groups`` ``(N,)`` in one fold
    (``StratifiedGroupKFold``; ``StratifiedKFold`` without groups). The number of folds shrinks to the fewest
    groups (samples without groups) of one class; none when that is below 2 or there is one class only."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if np.unique(codes).size < 2:
        return []
    shown = codes if groups is None else np.unique(np.stack([groups, codes], axis=1), axis=0)[:, 1]
    n_folds = int(min(folds, np.bincount(shown).min()))
    if n_folds < 2:
        return []
    if groups is None:
        return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(codes, codes))
    return list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(codes, codes, groups))


def linear_probe_accuracy(
    x: np.ndarray, labels: ArrayLike, *, identities: ArrayLike | None = None, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated accuracy of a logistic regression on ``x`` ``(N, D)``: the supervised upper bound.

    Outer folds are stratified and grouped by ``identities`` ``(N,)`` (no identity in both the training and
    the test part; plain stratified folds without identities). In each outer training part the L2 strength
    C is chosen from :data:`PROBE_CS` by an inner :data:`PROBE_INNER_FOLDS`-fold cross-validation grouped the
    same way, then refitted on the whole training part. Fold counts shrink to the fewest identities (samples)
    of one class; nan when that is below 2, outer or inner.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    codes, _ = _codes(labels)
    groups = None if identities is None else _codes(identities)[0]
    if groups is not None and groups.shape != codes.shape:
        raise ClusteringInputError(f"labels and identities differ in length: {codes.size} vs {groups.size}.")
    outer = _folds(codes, groups, folds, seed)
    if not outer:
        return float("nan")
    accuracies = []
    for train, test in outer:
        inner = _folds(codes[train], None if groups is None else groups[train], PROBE_INNER_FOLDS, seed)
        if not inner:
            return float("nan")
        search = GridSearchCV(LogisticRegression(max_iter=1000), {"C": list(PROBE_CS)}, cv=inner)
        accuracies.append(search.fit(x[train], codes[train]).score(x[test], codes[test]))
    return float(np.mean(accuracies))


def fisher_scores(x: np.ndarray, labels: ArrayLike) -> np.ndarray:
    """Per-dimension Fisher score ``Σ_c n_c (μ_c − μ)² / Σ_c n_c σ_c²`` (``(D,)``; 0 where the within-class
    variance is 0 and the classes do not differ, inf where it is 0 and they do)."""
    x = np.asarray(x, dtype=np.float64)
    codes, n_classes = _codes(labels)
    if codes.size != x.shape[0]:
        raise ClusteringInputError(f"labels ({codes.size}) and embeddings ({x.shape[0]}) differ in length.")
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, codes, x)
    means = sums / counts[:, None]
    overall = x.mean(axis=0)
    between = (counts[:, None] * (means - overall) ** 2).sum(axis=0)
    within = ((x - means[codes]) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(within > 0, between / np.where(within > 0, within, 1.0), np.where(between > 0, np.inf, 0.0))
    return score


def fisher_ranking(x: np.ndarray, labels: ArrayLike) -> np.ndarray:
    """Dimensions ordered by decreasing Fisher score (ties by dimension index)."""
    return np.argsort(-fisher_scores(x, labels), kind="stable")


def ablation_curve(
    x: np.ndarray, labels: ArrayLike, drops: Sequence[int], *, method: str = "kmeans", seed: int = 0,
    n_init: int = 10, covariance_type: str = "diag", renormalise: bool = True,
) -> list[tuple[int, float]]:
    """Hungarian accuracy after removing the top-``m`` Fisher dimensions and re-clustering, per ``m``.

    Args:
        x: ``(N, D)`` prepared embeddings (see :func:`prepare`).
        drops: numbers of dropped dimensions (values ≥ D are skipped).
        covariance_type: Gaussian-mixture covariance (``method="gmm"``).
        renormalise: re-normalise rows after dropping (keeps k-means on the sphere for cosine models).

    Returns:
        ``[(m, accuracy), ...]`` in the order of ``drops``.
    """
    order = fisher_ranking(x, labels)
    _, n_classes = _codes(labels)
    curve = []
    for m in drops:
        if m < 0 or m >= x.shape[1]:
            continue
        kept = np.sort(order[m:])
        reduced = x[:, kept]
        if renormalise:
            reduced = reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        clusters = cluster(reduced, method, n_clusters=max(n_classes, 2), seed=seed, n_init=n_init,
                           covariance_type=covariance_type)
        curve.append((int(m), hungarian_accuracy(labels, clusters)))
    return curve

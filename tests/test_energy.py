"""Alignment energy (DESIGN §5): hand-computed cases and a dense numpy reference."""

import math

import numpy as np
import pytest
import torch

from fr_invariance.metrics.energy import (
    alignment_energy,
    displacement_magnitude,
    field_correlation,
    gravity,
    mean_pair_distance,
    null_energy,
)

F64 = torch.float64


def _clustered(n_points: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit positions around 4 cluster centres and a partly coherent vector field."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=generator, dtype=F64)
    labels = torch.randint(0, 4, (n_points,), generator=generator)
    positions = centres[labels] + 0.6 * torch.randn(n_points, dim, generator=generator, dtype=F64)
    positions = positions / positions.norm(dim=1, keepdim=True)
    vectors = centres[(labels + 1) % 4] + torch.randn(n_points, dim, generator=generator, dtype=F64)
    return positions, vectors


def _dense_reference(positions, vectors, metric, neighbourhood, param, scale=1.0):
    """Direct dense numpy computation of DESIGN §5 (default mode, no zero vectors)."""
    x = positions.numpy()
    v = vectors.numpy()
    if metric == "cosine":
        unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
        distance = 1.0 - unit_x @ unit_x.T
    else:
        distance = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    unit_v = v / np.linalg.norm(v, axis=1, keepdims=True)
    dissimilarity = 1.0 - unit_v @ unit_v.T
    per_point = []
    for i in range(len(x)):
        others = np.array([j for j in range(len(x)) if j != i])
        if neighbourhood == "ball":
            chosen = others[distance[i, others] <= param * scale]
            weights = np.ones(len(chosen))
        elif neighbourhood == "knn":
            order = sorted(others, key=lambda j: (distance[i, j], j))
            chosen = np.array(order[:param])
            weights = np.ones(len(chosen))
        else:
            chosen = others
            weights = np.array([1.0 / distance[i, j] if distance[i, j] > 0 else 0.0 for j in others])
        if weights.sum() > 0:
            per_point.append(np.sum(weights * dissimilarity[i, chosen]) / weights.sum())
    return float(np.mean(per_point))


def test_perfectly_aligned_field_scores_zero():
    positions, _ = _clustered(60, 16, seed=1)
    direction = torch.randn(16, dtype=F64)
    vectors = direction * torch.linspace(0.5, 2.0, 60, dtype=F64)[:, None]  # same direction, varied length
    for result in alignment_energy(positions, vectors, scale=1.0, params=(0.5, 2.0)):
        assert result.energy == pytest.approx(0.0, abs=1e-6)
        assert result.n_isolated == 0 and result.n_zero == 0


def test_random_512d_field_scores_one():
    positions, _ = _clustered(300, 32, seed=2)
    vectors = torch.randn(300, 512, generator=torch.Generator().manual_seed(3))
    (result,) = alignment_energy(positions, vectors, scale=1.0, params=(0.5,))
    assert result.mean_degree > 10
    assert result.energy == pytest.approx(1.0, abs=0.05)


def test_opposite_vectors_of_close_pairs_score_two():
    positions = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]], dtype=F64)
    vectors = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [3.0, -1.0], [-3.0, 1.0]], dtype=F64)
    (result,) = alignment_energy(positions, vectors, scale=1.0, params=(0.01,))
    assert result.mean_degree == 1.0
    assert result.energy == pytest.approx(2.0, abs=1e-6)


def test_self_loop_and_isolated_point():
    # points 0, 1 close with orthogonal vectors (d_V = 1); point 2 far from both (isolated)
    positions = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]], dtype=F64)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)

    (default,) = alignment_energy(positions, vectors, scale=1.0, params=(0.01,))
    assert default.energy == pytest.approx(1.0)
    assert default.n_isolated == 1
    assert math.isnan(default.per_point[2])
    assert default.mean_degree == pytest.approx(2 / 3)

    (exact,) = alignment_energy(positions, vectors, scale=1.0, params=(0.01,), exact_repro=True)
    # each row holds itself (d_V 0): e_0 = e_1 = (0 + 1) / 2, the isolated point scores 0 and is included
    assert exact.per_point.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert exact.energy == pytest.approx(1 / 3)
    assert exact.n_isolated == 1
    assert exact.mean_degree == pytest.approx(5 / 3)


def test_zero_vectors_default_left_out_exact_half_rule():
    positions = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01]], dtype=F64)
    vectors = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]], dtype=F64)

    (default,) = alignment_energy(positions, vectors, scale=1.0, params=(0.01,))
    assert default.n_zero == 1 and default.n_isolated == 0
    assert default.energy == pytest.approx(0.0, abs=1e-6)  # float32 default path
    assert math.isnan(default.per_point[2])
    assert default.mean_degree == pytest.approx(1.0)  # over the two non-zero points, each sees only the other

    (exact,) = alignment_energy(positions, vectors, scale=1.0, params=(0.01,), exact_repro=True)
    # rows 0, 1: (self 0, aligned 0, zero 0.5) / 3; row 2: (0.5, 0.5, zero-to-zero 0) / 3
    assert exact.per_point.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 3])
    assert exact.energy == pytest.approx(2 / 9)
    assert exact.n_zero == 1


# Four points on a line (euclidean): x = 0, 1, 2, 4; vectors at 0°, 90°, 180°, 45°.
LINE_POSITIONS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0]], dtype=F64)
LINE_VECTORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]], dtype=F64)
R = 1.0 / math.sqrt(2.0)
# d_V: (0,1) 1, (0,2) 2, (0,3) 1 − R, (1,2) 1, (1,3) 1 − R, (2,3) 1 + R


def test_knn_hand_example_with_ties():
    k1, k2 = alignment_energy(LINE_POSITIONS, LINE_VECTORS, scale=1.0, neighbourhood="knn", params=(1, 2), metric="euclidean")
    # k=1: 0->1, 1->{0,2} tie -> 0, 2->1, 3->2
    assert k1.per_point.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0 + R])
    assert k1.energy == pytest.approx((3.0 + 1.0 + R) / 4)
    # k=2: 0->{1,2}, 1->{0,2}, 2->{1, then 0 or 3 tied at 2 -> 0}, 3->{2,1}
    assert k2.per_point.tolist() == pytest.approx([1.5, 1.0, 1.5, 1.0])
    assert k2.param == 2 and k2.mean_degree == 2.0


def test_inverse_distance_hand_example():
    (result,) = alignment_energy(LINE_POSITIONS, LINE_VECTORS, scale=1.0, neighbourhood="inverse_distance", metric="euclidean")
    expected = [
        (1 / 1 * 1 + 1 / 2 * 2 + 1 / 4 * (1 - R)) / (1 / 1 + 1 / 2 + 1 / 4),
        (1 / 1 * 1 + 1 / 1 * 1 + 1 / 3 * (1 - R)) / (1 / 1 + 1 / 1 + 1 / 3),
        (1 / 2 * 2 + 1 / 1 * 1 + 1 / 2 * (1 + R)) / (1 / 2 + 1 / 1 + 1 / 2),
        (1 / 4 * (1 - R) + 1 / 3 * (1 - R) + 1 / 2 * (1 + R)) / (1 / 4 + 1 / 3 + 1 / 2),
    ]
    assert result.param is None
    assert result.per_point.tolist() == pytest.approx(expected)
    assert result.energy == pytest.approx(np.mean(expected))


def test_inverse_distance_gives_zero_weight_to_coincident_points():
    positions = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=F64)
    vectors = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=F64)
    (result,) = alignment_energy(positions, vectors, scale=1.0, neighbourhood="inverse_distance", metric="euclidean")
    assert result.per_point.tolist() == pytest.approx([1.0, 1.0, 1.0])  # the opposite twin (d_V 2) weighs 0
    assert result.mean_degree == pytest.approx(4 / 3)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [1, 3, 50])
def test_chunked_equals_dense_reference(metric, chunk_size):
    positions, vectors = _clustered(50, 12, seed=4)
    scale = mean_pair_distance(positions, metric=metric, n_pairs=2000)
    kwargs = dict(scale=scale, metric=metric, chunk_size=chunk_size, dtype=F64)
    for result in alignment_energy(positions, vectors, params=(0.3, 0.6, 1.0), **kwargs):
        assert result.energy == pytest.approx(_dense_reference(positions, vectors, metric, "ball", result.param, scale), abs=1e-12)
    for result in alignment_energy(positions, vectors, neighbourhood="knn", params=(1, 5), **kwargs):
        assert result.energy == pytest.approx(_dense_reference(positions, vectors, metric, "knn", result.param), abs=1e-12)
    (result,) = alignment_energy(positions, vectors, neighbourhood="inverse_distance", **kwargs)
    assert result.energy == pytest.approx(_dense_reference(positions, vectors, metric, "inverse_distance", None), abs=1e-12)


def test_float32_default_path_close_to_float64():
    positions, vectors = _clustered(80, 32, seed=5)
    single = alignment_energy(positions.float(), vectors.float(), scale=1.0, params=(0.5, 1.0))
    double = alignment_energy(positions, vectors, scale=1.0, params=(0.5, 1.0), dtype=F64)
    for a, b in zip(single, double):
        assert a.energy == pytest.approx(b.energy, abs=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_exact_repro_with_zero_vectors_is_chunk_independent(chunk_size):
    positions, vectors = _clustered(9, 6, seed=11)
    vectors[[2, 5, 6]] = 0.0
    kwargs = dict(scale=1.0, params=(0.3, 0.8), exact_repro=True)
    whole = alignment_energy(positions, vectors, chunk_size=9, **kwargs)
    for a, b in zip(alignment_energy(positions, vectors, chunk_size=chunk_size, **kwargs), whole):
        assert a.n_zero == 3
        torch.testing.assert_close(a.per_point, b.per_point, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cap", [None, 4])
def test_several_epsilons_in_one_call_equal_separate_calls(cap):
    positions, vectors = _clustered(70, 16, seed=6)
    epsilons = (1.0, 0.4, 0.7)
    kwargs = dict(scale=0.8, max_neighbours=cap, seed=3, chunk_size=32)
    together = alignment_energy(positions, vectors, params=epsilons, **kwargs)
    assert [r.param for r in together] == list(epsilons)
    assert len({r.mean_degree for r in together}) == 3
    for result in together:
        (alone,) = alignment_energy(positions, vectors, params=(result.param,), **kwargs)
        assert alone.energy == pytest.approx(result.energy, abs=1e-6)
        assert alone.mean_degree == result.mean_degree
        assert torch.equal(alone.per_point.isnan(), result.per_point.isnan())


def test_max_neighbours_default_mode_matches_hand_subsampling():
    positions, vectors = _clustered(40, 8, seed=7)
    scale, eps, cap, seed = 1.0, 0.5, 3, 11
    (result,) = alignment_energy(positions, vectors, scale=scale, params=(eps,), max_neighbours=cap, seed=seed, dtype=F64)
    unit_x = (positions / positions.norm(dim=1, keepdim=True)).numpy()
    unit_v = (vectors / vectors.norm(dim=1, keepdim=True)).numpy()
    distance = 1.0 - unit_x @ unit_x.T
    generator = np.random.RandomState(seed)
    expected = []
    for i in range(40):
        row = np.array([j for j in range(40) if j != i and distance[i, j] <= eps * scale])
        if len(row) > cap:
            row = row[generator.choice(len(row), cap, replace=False)]
        if len(row):
            expected.append(np.mean(1.0 - unit_v[row] @ unit_v[i]))
    assert result.energy == pytest.approx(np.mean(expected), abs=1e-12)


def test_mean_pair_distance_is_seeded_numpy_computation():
    points = torch.randn(30, 8, generator=torch.Generator().manual_seed(8), dtype=F64)
    first, second = np.random.RandomState(5).randint(0, 30, (2, 1000))
    x = points.numpy()
    cosine = 1.0 - np.sum(x[first] * x[second], 1) / (np.linalg.norm(x[first], axis=1) * np.linalg.norm(x[second], axis=1))
    assert mean_pair_distance(points, n_pairs=1000, seed=5) == pytest.approx(cosine.mean(), abs=1e-12)
    euclidean = np.linalg.norm(x[first] - x[second], axis=1)
    assert mean_pair_distance(points, "euclidean", n_pairs=1000, seed=5) == pytest.approx(euclidean.mean(), abs=1e-12)
    assert mean_pair_distance(points, seed=5) == mean_pair_distance(points, seed=5)
    assert mean_pair_distance(points, seed=5) != mean_pair_distance(points, seed=6)


def test_null_energy_is_near_one_on_the_same_graph():
    positions, _ = _clustered(200, 64, seed=9)
    results = null_energy(positions, scale=1.0, params=(0.6, 1.0), seed=1)
    assert [r.param for r in results] == [0.6, 1.0]
    for result in results:
        assert result.energy == pytest.approx(1.0, abs=0.05)
    assert null_energy(positions, scale=1.0, params=(0.6,), seed=1)[0].energy == results[0].energy


def test_displacement_gravity_and_field_correlation():
    vectors = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=F64)
    assert displacement_magnitude(vectors, 2.0).tolist() == [2.5, 0.0]

    positions = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)  # barycentre at the origin
    inward = torch.tensor([[-2.0, 1.0], [2.0, 0.0]], dtype=F64)
    assert gravity(positions, inward) == pytest.approx(2.0)
    assert gravity(positions, inward, normalise_vectors=True) == pytest.approx((2 / math.sqrt(5) + 1) / 2)

    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=F64)
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0], [5.0, 0.0]], dtype=F64)
    assert field_correlation(a, b) == pytest.approx((R - 1.0) / 2)  # the zero row is left out


def test_clear_errors():
    positions, vectors = _clustered(10, 4, seed=10)
    with pytest.raises(ValueError, match="neighbourhood"):
        alignment_energy(positions, vectors, scale=1.0, neighbourhood="radius")
    with pytest.raises(ValueError, match="exact_repro"):
        alignment_energy(positions, vectors, scale=1.0, neighbourhood="knn", params=(3,), exact_repro=True)
    with pytest.raises(ValueError, match="rows"):
        alignment_energy(positions, vectors[:5], scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        alignment_energy(positions, vectors, scale=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        alignment_energy(positions, vectors, scale=1.0, neighbourhood="knn", params=(2.5,))
    with pytest.raises(ValueError, match="metric"):
        mean_pair_distance(positions, metric="manhattan")


def test_small_point_sets():
    positions, vectors = LINE_POSITIONS[:3], LINE_VECTORS[:3]
    (everyone,) = alignment_energy(positions, vectors, scale=1.0, neighbourhood="knn", params=(10,), metric="euclidean")
    assert everyone.mean_degree == 2.0  # k larger than C - 1 uses all the others
    assert everyone.per_point.tolist() == pytest.approx([1.5, 1.0, 1.5])
    for neighbourhood, params in (("ball", (1.0,)), ("knn", (1,)), ("inverse_distance", ())):
        (single,) = alignment_energy(positions[:1], vectors[:1], scale=1.0, neighbourhood=neighbourhood, params=params)
        assert math.isnan(single.energy) and single.n_isolated == 1 and single.n_points == 1

"""Alignment energy (DESIGN §5): hand-computed cases and a dense numpy reference."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.evaluation.invariance import EnergySettings, invariance_rows
from fr_invariance.metrics import neighbours
from fr_invariance.metrics.energy import (
    alignment_energy,
    displacement_magnitude,
    field_correlation,
    gravity,
    mean_pair_distance,
    null_energy,
)
from fr_invariance.metrics.neighbours import CAP_GROUP
from fr_invariance.synth.designs import sampled_design

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
    assert exact.per_point.tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)  # float32, as the script
    assert exact.per_point[2] == 0.0  # a self-loop scores exactly 0
    assert exact.energy == pytest.approx(1 / 3, abs=1e-6)
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
    assert exact.per_point.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 3], abs=1e-6)
    assert exact.energy == pytest.approx(2 / 9, abs=1e-6)
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
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_inverse_distance_ignores_identical_positions_away_from_the_origin(metric, dtype):
    """A copy of a position far from the origin: the Gram expansion of d_X leaves a rounding residue, not 0,
    and 1/residue would swamp the point's mean; the copy must weigh 0, as at the origin."""
    generator = torch.Generator().manual_seed(11)  # a seed whose residue is positive for both metrics and dtypes
    positions = (torch.randn(6, 16, generator=generator, dtype=F64) + 1.0) * 30.0
    vectors = torch.randn(6, 16, generator=generator, dtype=F64)
    positions[1] = positions[0]
    vectors[1] = -vectors[0]  # the opposite twin: d_V = 2 if it counted
    twin_free = alignment_energy(positions[1:], vectors[1:], scale=1.0, neighbourhood="inverse_distance",
                                 metric=metric, dtype=dtype)[0]
    (result,) = alignment_energy(positions, vectors, scale=1.0, neighbourhood="inverse_distance", metric=metric,
                                 dtype=dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert result.per_point[1].item() == pytest.approx(twin_free.per_point[0].item(), abs=tolerance)
    assert result.per_point[0].item() < 1.5 and result.mean_degree == pytest.approx((4 * 2 + 4 * 5) / 6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [1, 3, 50])
def test_chunked_equals_dense_reference(metric, chunk_size):
    positions, vectors = _clustered(50, 12, seed=4)
    scale = mean_pair_distance(positions, metric=metric, n_pairs=2000)
    kwargs = {"scale": scale, "metric": metric, "chunk_size": chunk_size, "dtype": F64}
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
@pytest.mark.parametrize("cap", [None, 2])
def test_exact_repro_with_zero_vectors_is_chunk_independent(chunk_size, cap):
    positions, vectors = _clustered(9, 6, seed=11)
    vectors[[2, 5, 6]] = 0.0
    kwargs = {"scale": 1.0, "params": (0.3, 0.8), "exact_repro": True, "max_neighbours": cap, "seed": 4}
    whole = alignment_energy(positions, vectors, chunk_size=9, **kwargs)
    for a, b in zip(alignment_energy(positions, vectors, chunk_size=chunk_size, **kwargs), whole):
        assert a.n_zero == 3 and a.mean_degree == b.mean_degree
        torch.testing.assert_close(a.per_point, b.per_point, rtol=0, atol=1e-6)  # float32 Gram rounding


@pytest.mark.parametrize("cap", [None, 4])
def test_several_epsilons_in_one_call_equal_separate_calls(cap):
    positions, vectors = _clustered(70, 16, seed=6)
    epsilons = (1.0, 0.4, 0.7)
    kwargs = {"scale": 0.8, "max_neighbours": cap, "seed": 3, "chunk_size": 32}
    together = alignment_energy(positions, vectors, params=epsilons, **kwargs)
    assert [r.param for r in together] == list(epsilons)
    assert len({r.mean_degree for r in together}) == 3
    for result in together:
        (alone,) = alignment_energy(positions, vectors, params=(result.param,), **kwargs)
        assert alone.energy == pytest.approx(result.energy, abs=1e-6)
        assert alone.mean_degree == result.mean_degree
        assert torch.equal(alone.per_point.isnan(), result.per_point.isnan())


def _documented_cap_reference(positions, vectors, radius, cap, seed):
    """The default-mode cap as documented in ``ball_means``, one row at a time."""
    n_points = len(positions)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_points, generator=generator).tolist()
    n_groups = math.ceil(n_points / CAP_GROUP)
    start_group = torch.randint(0, n_groups, (n_points,), generator=generator).tolist()
    unit_x = (positions / positions.norm(dim=1, keepdim=True)).numpy()
    unit_v = (vectors / vectors.norm(dim=1, keepdim=True)).numpy()
    distance = 1.0 - unit_x @ unit_x.T
    per_point = []
    for i in range(n_points):
        groups = [(start_group[i] + step) % n_groups for step in range(n_groups)]
        slots = [s for g in groups for s in range(g * CAP_GROUP, min((g + 1) * CAP_GROUP, n_points))]
        ball = [order[s] for s in slots if order[s] != i and distance[i, order[s]] <= radius]
        kept = ball[:cap]
        per_point.append(np.mean([1.0 - unit_v[i] @ unit_v[j] for j in kept]) if kept else np.nan)
    return np.array(per_point)


@pytest.mark.parametrize("n_points, cap", [(40, 3), (150, 7), (200, 40)])
@pytest.mark.parametrize("tables", [True, False])
def test_max_neighbours_default_mode_matches_documented_scan(n_points, cap, tables, monkeypatch):
    if not tables:  # the full-row pass used for large C
        monkeypatch.setattr(neighbours, "CAP_TABLE_BUDGET", 0)
    positions, vectors = _clustered(n_points, 8, seed=7)
    scale, eps, seed = 1.0, 0.5, 11
    expected = _documented_cap_reference(positions, vectors, eps * scale, cap, seed)
    for chunk_size in (1, 13, 4096):
        (result,) = alignment_energy(positions, vectors, scale=scale, params=(eps,), max_neighbours=cap, seed=seed,
                                     dtype=F64, chunk_size=chunk_size)
        np.testing.assert_allclose(result.per_point.numpy(), expected, rtol=0, atol=1e-12)
    assert result.mean_degree > cap  # the cap binds


def test_cap_at_least_the_degree_changes_nothing_and_is_unbiased():
    positions, vectors = _clustered(120, 8, seed=12)
    kwargs = {"scale": 1.0, "params": (0.4, 0.9), "dtype": F64}
    uncapped = alignment_energy(positions, vectors, **kwargs)
    for full, capped in zip(uncapped, alignment_energy(positions, vectors, max_neighbours=120, **kwargs)):
        torch.testing.assert_close(full.per_point, capped.per_point, rtol=0, atol=1e-12, equal_nan=True)
        assert full.mean_degree == capped.mean_degree
    # every row keeps a uniform random subset: averaged over seeds, each point's value is its uncapped mean
    runs = torch.stack([alignment_energy(positions, vectors, max_neighbours=5, seed=seed, **kwargs)[1].per_point
                        for seed in range(300)])
    assert (runs.std(0) > 0).sum() > 60  # most rows are capped at ε = 0.9
    np.testing.assert_allclose(runs.mean(0).numpy(), uncapped[1].per_point.numpy(), atol=0.04)
    assert float((runs.mean(0) - uncapped[1].per_point).abs().mean()) < 0.01


@pytest.mark.parametrize("n_pairs", [1000, 50])  # the full-matrix path (30² ≤ 8·1000) and the pair-gather path
def test_mean_pair_distance_is_seeded_numpy_computation(n_pairs):
    from sklearn.metrics.pairwise import paired_cosine_distances

    points = torch.randn(30, 8, generator=torch.Generator().manual_seed(8), dtype=F64)
    points[3] = 0.0  # a zero row: scikit-learn leaves it at zero, so its cosine distance to any row is 0.5
    first, second = np.random.RandomState(5).randint(0, 30, (2, n_pairs))
    x = points.numpy()
    cosine = paired_cosine_distances(x[first], x[second])
    assert mean_pair_distance(points, n_pairs=n_pairs, seed=5) == pytest.approx(cosine.mean(), abs=1e-12)
    euclidean = np.linalg.norm(x[first] - x[second], axis=1)
    assert mean_pair_distance(points, "euclidean", n_pairs=n_pairs, seed=5) == pytest.approx(euclidean.mean(), abs=1e-12)
    assert mean_pair_distance(points, seed=5) == mean_pair_distance(points, seed=5)
    assert mean_pair_distance(points, seed=5) != mean_pair_distance(points, seed=6)


def test_null_energy_is_near_one_on_the_same_graph():
    positions, _ = _clustered(200, 64, seed=9)
    results = null_energy(positions, scale=1.0, params=(0.6, 1.0), seed=1)
    assert [r.param for r in results] == [0.6, 1.0]
    for result in results:
        assert result.energy == pytest.approx(1.0, abs=0.05)
    assert null_energy(positions, scale=1.0, params=(0.6,), seed=1)[0].energy == results[0].energy


def test_displacement_magnitude_is_in_the_models_metric():
    start = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0]], dtype=F64)
    end = torch.tensor([[0.0, 5.0], [3.0, 4.0], [0.0, -1.0]], dtype=F64)
    # cosine: 1 − cos = 1, 0, 2; euclidean: √26, 0, 3
    assert displacement_magnitude(start, end, 2.0, "cosine").tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert displacement_magnitude(start, end, 2.0, "euclidean").tolist() == pytest.approx([math.sqrt(26) / 2, 0.0, 1.5])
    zero = torch.zeros(1, 2, dtype=F64)
    assert displacement_magnitude(zero, start[:1], 1.0).tolist() == [0.5]  # scikit-learn's paired rule
    with pytest.raises(ValueError, match="same shape"):
        displacement_magnitude(start, end[:2], 1.0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_scaling_embeddings_leaves_energy_and_magnitude_unchanged(metric):
    """A cosine model's embeddings times any constant, or a euclidean model's (d̄ scales too): same numbers,
    in every neighbourhood and with the cap."""
    design = sampled_design(40, step=0.25, nuisance=0.5, seed=0)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(design.controls.shape[0], 16, generator=generator) + design.controls[:, :1] * 2
    settings = [EnergySettings("ball", params=(0.6, 1.0), max_neighbours=8), EnergySettings("knn", params=(5,)),
                EnergySettings("inverse_distance", params=())]
    reference = None
    for factor in (1.0, 0.01, 100.0):
        rows = pd.concat([invariance_rows({"id": base * factor}, design.table, metric=metric, energy=energy,
                                          attributes=["head_angle", "hue"]) for energy in settings])
        if reference is None:
            reference = rows
            assert (rows["magnitude"] > 0).all()
            continue
        np.testing.assert_allclose(rows["energy"], reference["energy"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(rows["magnitude"], reference["magnitude"], rtol=1e-5)
        assert rows["mean_degree"].tolist() == reference["mean_degree"].tolist()


def test_gravity_and_field_correlation():
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
    with pytest.raises(ValueError, match="cosine"):
        alignment_energy(positions, vectors, scale=1.0, metric="euclidean", exact_repro=True)
    with pytest.raises(ValueError, match="max_neighbours"):
        alignment_energy(positions, vectors, scale=1.0, max_neighbours=0)
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

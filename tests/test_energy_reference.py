"""The building blocks of ``exact_repro`` against the scikit-learn calls the released script makes.

One field at a time (the whole script, with its streams across identities, is checked in
``test_energy_script_parity.py``): d̄ (:func:`script_scale`), the curve shuffle
(:func:`script_curve_selection`) and the ball energies (:func:`script_ball` through ``alignment_energy``)
against ``RadiusNeighborsTransformer`` + a row-by-row ``RandomState.choice`` cap + ``paired_cosine_distances``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_distances, paired_cosine_distances
from sklearn.neighbors import RadiusNeighborsTransformer

from fr_invariance.metrics.energy import alignment_energy
from fr_invariance.metrics.exact_repro import (
    SCRIPT_DIMENSIONS,
    ScriptStreams,
    script_ball,
    script_curve_selection,
    script_scale,
)

EPSILONS = (0.4, 0.6, 0.8, 1.0)


def _field(n_points: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 clustered centres (one of them zero) and a partly coherent field with zero vectors."""
    generator = np.random.default_rng(seed)
    clusters = generator.normal(size=(3, dim))
    positions = clusters[generator.integers(3, size=n_points)] + 0.5 * generator.normal(size=(n_points, dim))
    positions[4] = 0.0
    vectors = generator.normal(size=dim) + generator.normal(size=(n_points, dim))
    vectors[::9] = 0.0
    return positions.astype(np.float32), vectors.astype(np.float32)


def _sklearn_ball(positions, vectors, scale, cap, rng) -> list[np.ndarray]:
    """Per-point energies per ε with the script's library calls and its row-by-row cap."""
    out = []
    for eps in EPSILONS:
        graph = RadiusNeighborsTransformer(radius=eps * scale, mode="connectivity", metric="cosine").fit_transform(positions)
        per_point = np.zeros(len(positions))
        for row in range(len(positions)):
            columns = graph.indices[graph.indptr[row] : graph.indptr[row + 1]]
            if cap is not None and len(columns) > cap:
                columns = columns[rng.choice(len(columns), cap, replace=False)]
            per_point[row] = np.mean(paired_cosine_distances(vectors[np.full(len(columns), row)], vectors[columns]))
        out.append(per_point)
    return out


def test_script_scale_is_the_scripts_float32_mean():
    embeddings = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    embeddings[7] = 0.0
    ours = script_scale(embeddings, np.random.RandomState(5), 10_000)
    rng = np.random.RandomState(5)
    first, second = rng.randint(0, 500, 10_000), rng.randint(0, 500, 10_000)
    expected = np.mean(paired_cosine_distances(embeddings[first], embeddings[second]))
    assert ours.dtype == np.float32 and ours == expected


def test_curve_selection_replays_python_shuffles_in_the_scripts_order():
    curve_ids = {"0": np.array([5, 3, 3, 9, 1, 7]), "hue": np.arange(20, 40), "2": np.array([4])}
    streams = ScriptStreams.seeded(2)
    selected = script_curve_selection(curve_ids, streams, max_curves=3)
    python = random.Random(2)
    expected = {}
    for label in SCRIPT_DIMENSIONS:  # the script shuffles every dimension, present or not
        ids = np.unique(curve_ids.get(label, np.array([], dtype=int)))
        python.shuffle(ids)
        if label in curve_ids:
            expected[label] = np.sort(ids[:3])
    assert selected.keys() == expected.keys()
    for label, ids in expected.items():
        assert selected[label].tolist() == ids.tolist()
    assert streams.python.random() == python.random()  # the stream moved exactly as far
    assert script_curve_selection(curve_ids, ScriptStreams.seeded(2))["hue"].tolist() == list(range(20, 40))


@pytest.mark.parametrize("cap", [None, 5])
@pytest.mark.parametrize("chunk_size", [2, 3, 4096])
def test_script_ball_equals_the_library_calls(cap, chunk_size):
    positions, vectors = _field(90, 12, seed=1)
    scale = script_scale(positions, np.random.RandomState(0), 2000)
    reference_rng, ours_rng = np.random.RandomState(9), np.random.RandomState(9)
    expected = _sklearn_ball(positions, vectors, scale, cap, reference_rng)
    balls = script_ball(positions, vectors, scale, EPSILONS, max_neighbours=cap, rng=ours_rng, chunk_size=chunk_size)
    for ball, reference in zip(balls, expected):
        np.testing.assert_allclose(ball.per_point, reference, rtol=0, atol=2e-7)
    assert balls[0].degree[4] == 1  # the zero-norm centre holds only itself
    if cap is not None:
        assert (balls[-1].degree > cap).sum() > 10
    assert ours_rng.randint(1 << 30) == reference_rng.randint(1 << 30)  # both streams moved by the same draws


def test_alignment_energy_exact_mode_uses_the_given_stream():
    positions, vectors = _field(60, 8, seed=2)
    scale = float(script_scale(positions, np.random.RandomState(0), 2000))
    tensors = torch.from_numpy(positions), torch.from_numpy(vectors)
    fresh = alignment_energy(*tensors, scale=scale, exact_repro=True, max_neighbours=3, seed=4)
    stream = np.random.RandomState(4)
    shared = alignment_energy(*tensors, scale=scale, exact_repro=True, max_neighbours=3, random_state=stream)
    assert [r.energy for r in fresh] == [r.energy for r in shared]
    again = alignment_energy(*tensors, scale=scale, exact_repro=True, max_neighbours=3, random_state=stream)
    assert [r.energy for r in again] != [r.energy for r in shared]  # the stream continued
    expected = _sklearn_ball(positions, vectors, np.float32(scale), 3, np.random.RandomState(4))
    assert [r.energy for r in fresh] == pytest.approx([float(np.mean(e)) for e in expected], abs=1e-6)
    assert all(r.n_zero == 7 and r.n_points == 60 for r in fresh)


def test_ball_boundary_uses_the_scripts_float32_radius():
    """A centre at float32 distance exactly ε·d̄ (the script's float32 product) is in the ball, although the
    exact product ε × d̄ is below that distance: the radius is float32, as in the script."""
    angle = 0.9
    positions = np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)], [-1.0, 0.2]], dtype=np.float32)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    distance = cosine_distances(positions)[0, 1]  # float32 1 − cos, as the ball sees it
    eps = 0.6
    below = above = np.float32(distance / eps)
    candidates = [below]
    for _ in range(200):  # the float32 values around distance / ε
        below, above = np.nextafter(below, np.float32(0)), np.nextafter(above, np.float32(2))
        candidates += [below, above]
    boundary = [s for s in candidates if eps * s == distance and float(eps) * float(s) < float(distance)]
    assert boundary, "no float32 d̄ puts the exact product just below the distance"
    scale = boundary[0]
    graph = RadiusNeighborsTransformer(radius=eps * scale, mode="connectivity", metric="cosine").fit_transform(positions)
    (ball,) = script_ball(positions, vectors, scale, [eps], max_neighbours=None, rng=np.random.RandomState(0))
    assert ball.degree.tolist() == np.diff(graph.indptr).tolist()
    assert ball.degree[0] == 2  # itself and the centre on the boundary
    np.testing.assert_allclose(ball.per_point, [0.5, 0.5, 0.0], atol=1e-6)

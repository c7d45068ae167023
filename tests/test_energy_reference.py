"""exact_repro=True reproduces the authors' released ball-energy algorithm number for number.

The reference below re-implements that script's algorithm from its description (DESIGN §5, brief D):
per identity d̄ from ``paired_cosine_distances`` on random index pairs over all embedded images; per
attribute and ε a ``RadiusNeighborsTransformer`` refit on the centres (so each point is its own
neighbour), ``graph.nonzero()``, ``paired_cosine_distances`` of the unnormalised vectors, the per-point
mean over each row via a counts loop (optionally capped at m random entries), then a plain mean.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics.pairwise import paired_cosine_distances
from sklearn.neighbors import RadiusNeighborsTransformer

from fr_invariance.data.paper_format import read_paper_embeddings, write_paper_embeddings
from fr_invariance.metrics.energy import alignment_energy, mean_pair_distance
from fr_invariance.synth.designs import curve_indices

DIMENSIONS = (0, 3, 4)  # int labels, as in the paper's CSV
N_CURVES = 60
EPSILONS = (0.4, 0.6, 0.8, 1.0)
SEED = 7


def _paper_table(generator: np.random.Generator) -> pd.DataFrame:
    """3 dimensions × 60 curves × 3 steps, images at shuffled indices, rows in shuffled order."""
    n_rows = len(DIMENSIONS) * N_CURVES * 3
    table = pd.DataFrame(
        {
            "id_curve": np.repeat(np.arange(len(DIMENSIONS) * N_CURVES), 3),
            "moving_dimension": np.repeat(DIMENSIONS, N_CURVES * 3),
            "param_step": np.tile([0, 1, 2], len(DIMENSIONS) * N_CURVES),
            "index": generator.permutation(n_rows),
        }
    )
    return table.iloc[generator.permutation(n_rows)].reset_index(drop=True)


def _embeddings(table: pd.DataFrame, generator: np.random.Generator) -> np.ndarray:
    """Clustered D=32 centres; each dimension moves them along its own direction plus noise; every
    25th curve does not move (zero vector)."""
    dim = 32
    clusters = generator.normal(size=(5, dim))
    directions = {d: generator.normal(size=dim) for d in DIMENSIONS}
    embeddings = np.zeros((len(table), dim))
    for (curve, dimension), rows in table.groupby(["id_curve", "moving_dimension"]):
        centre = clusters[generator.integers(5)] + 0.5 * generator.normal(size=dim)
        step = 0.3 * (directions[dimension] + 0.8 * generator.normal(size=dim))
        if curve % 25 == 0:
            step[:] = 0.0  # a few zero vectors: scikit-learn's 0.5 rule
        for _, row in rows.iterrows():
            embeddings[row["index"]] = centre + (row["param_step"] - 1) * step
    return embeddings.astype(np.float32)


@pytest.fixture(scope="module")
def paper_directory(tmp_path_factory):
    generator = np.random.default_rng(0)
    table = _paper_table(generator)
    embeddings = {f"id{k:03d}": _embeddings(table, generator) for k in range(3)}
    return write_paper_embeddings(tmp_path_factory.mktemp("paper") / "embeddings", table, embeddings)


def _reference_energies(embeddings: np.ndarray, table: pd.DataFrame, cap: int | None) -> dict:
    """The released algorithm, re-implemented with scikit-learn; {(dimension, ε): energy}."""
    first, second = np.random.RandomState(SEED).randint(0, len(embeddings), (2, 10_000))
    scale = paired_cosine_distances(embeddings[first], embeddings[second]).mean()
    energies = {}
    for dimension in DIMENSIONS:
        rows = table[table["moving_dimension"] == dimension].sort_values("id_curve")
        index = {step: rows.loc[rows["param_step"] == step, "index"].to_numpy() for step in (0, 1, 2)}
        positions = embeddings[index[1]]
        vectors = embeddings[index[2]] - embeddings[index[0]]
        for eps in EPSILONS:
            graph = RadiusNeighborsTransformer(radius=eps * scale, mode="connectivity", metric="cosine").fit_transform(positions)
            a, b = graph.nonzero()
            distances = paired_cosine_distances(vectors[a], vectors[b])
            counts = np.bincount(a, minlength=len(positions))
            generator = np.random.RandomState(SEED)
            per_point, start = [], 0
            for count in counts:
                row = distances[start : start + count]
                start += count
                if cap is not None and count > cap:
                    row = row[generator.choice(count, cap, replace=False)]
                per_point.append(row.mean())
            energies[dimension, eps] = float(np.mean(per_point))
    return energies


def _our_energies(embeddings: np.ndarray, table: pd.DataFrame, cap: int | None) -> dict:
    points = torch.from_numpy(embeddings)
    scale = mean_pair_distance(points, "cosine", n_pairs=10_000, seed=SEED)
    energies = {}
    for dimension in DIMENSIONS:
        idx0, idx1, idx2 = curve_indices(table, str(dimension))
        results = alignment_energy(
            points[idx1], points[idx2] - points[idx0], scale=scale, params=EPSILONS,
            exact_repro=True, max_neighbours=cap, seed=SEED, chunk_size=17,
        )
        energies.update({(dimension, r.param): r.energy for r in results})
    return energies


@pytest.mark.parametrize("cap", [None, 4])
def test_exact_repro_matches_released_algorithm(paper_directory, cap):
    opened = read_paper_embeddings(paper_directory)
    assert opened.identities == ["id000", "id001", "id002"]
    for identity in opened.identities:
        embeddings = opened.load(identity).astype(np.float64)
        reference = _reference_energies(embeddings, pd.read_csv(paper_directory / "df_param_step.csv"), cap)
        ours = _our_energies(embeddings, opened.table, cap)
        assert set(ours) == set(reference)
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, abs=1e-9), key
        assert len({round(v, 6) for v in reference.values()}) > 6  # the ε really change the numbers


def test_exact_repro_float32_inputs_match_to_float32_precision(paper_directory):
    """scikit-learn computes in float32 on float32 arrays; ours stays float64, so they agree to ~1e-6."""
    opened = read_paper_embeddings(paper_directory)
    embeddings = opened.load(opened.identities[0])
    reference = _reference_energies(embeddings, opened.table.astype({"moving_dimension": int}), None)
    ours = _our_energies(embeddings, opened.table, None)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-5), key

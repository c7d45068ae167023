"""The invariance pipeline: EnergyProbe embeds → energies → tidy rows; paper-layout input; embedding cache;
report pieces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.data.paper_format import read_paper_embeddings, write_paper_embeddings
from fr_invariance.evaluation.embed import embed_images, embed_renders
from fr_invariance.evaluation.invariance import (
    INVARIANCE_COLUMNS,
    EnergySettings,
    InvarianceConfigError,
    identity_names,
    invariance_rows,
    measure_invariance_from_embeddings,
)
from fr_invariance.evaluation.plots import paired_model_comparisons
from fr_invariance.evaluation.probe import EnergyProbe
from fr_invariance.evaluation.report import render_markdown
from fr_invariance.metrics.energy import displacement_magnitude, mean_pair_distance, null_energy
from fr_invariance.metrics.stats import holm_correction
from fr_invariance.models import create_backbone
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.synth.designs import sampled_design
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render
from tests.calibrated import calibrated_tiny

SIZE = 32
N_IDENTITIES = 2
N_CURVES = 16
IDENTITY_SEED = 10_000
PARAMS = (0.6, 1.0)


class CountingBackbone(torch.nn.Module):
    """Wraps a backbone and counts the images it embeds."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.metric, self.input_size = inner.metric, inner.input_size
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += x.shape[0]
        return self.inner(x)


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    return calibrated_tiny(SIZE)


@pytest.fixture(scope="module")
def design():
    return sampled_design(N_CURVES, step=0.25, nuisance=0.5, seed=0)


def probe(n_identities: int, energy: EnergySettings) -> EnergyProbe:
    """The probe whose design is the ``design`` fixture's."""
    return EnergyProbe(n_identities=n_identities, identity_seed=IDENTITY_SEED, n_curves=N_CURVES, step=0.25,
                       nuisance=0.5, design_seed=0, energy=energy, batch_size=100)


@pytest.fixture(scope="module")
def energy() -> EnergySettings:
    return EnergySettings(neighbourhood="ball", params=PARAMS)


@pytest.fixture(scope="module")
def rendered_rows(backbone, design, energy) -> pd.DataFrame:
    return probe(N_IDENTITIES, energy).measure(backbone, image_size=SIZE, run="tiny", epoch=3)


@pytest.fixture(scope="module")
def direct_embeddings(backbone, design) -> np.ndarray:
    """(I, N, E) embeddings computed without the pipeline: one render call and one forward per identity."""
    identities = sample_identities(N_IDENTITIES, IDENTITY_SEED)
    n_images = design.controls.shape[0]
    out = []
    with torch.no_grad():
        for identity in identities:
            images = render(identity.expand(n_images, -1), design.controls, size=SIZE)
            out.append(backbone(images * 2 - 1).numpy())
    return np.stack(out)


def _dense_ball_energy(positions: np.ndarray, vectors: np.ndarray, radius: float) -> float:
    """DESIGN §5 ball energy on cosine distances, straight from the definition (float64, dense)."""
    unit = positions / np.linalg.norm(positions, axis=1, keepdims=True)
    distance = 1.0 - unit @ unit.T
    direction = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    vector_distance = 1.0 - direction @ direction.T
    per_point = []
    for c in range(len(positions)):
        neighbours = [k for k in range(len(positions)) if k != c and distance[c, k] <= radius]
        if neighbours:
            per_point.append(vector_distance[c, neighbours].mean())
    return float(np.mean(per_point)) if per_point else float("nan")


def test_tidy_columns_and_shape(rendered_rows, design):
    assert tuple(rendered_rows.columns) == INVARIANCE_COLUMNS
    assert len(rendered_rows) == N_IDENTITIES * 8 * len(PARAMS)
    assert set(rendered_rows["identity"]) == set(identity_names(N_IDENTITIES))
    assert list(rendered_rows["attribute"].unique()) == design.attributes()
    assert (rendered_rows["n_points"] == N_CURVES).all()
    assert (rendered_rows["run"] == "tiny").all() and (rendered_rows["epoch"] == 3).all()
    assert sorted(rendered_rows["param"].unique()) == list(PARAMS)
    assert (rendered_rows["magnitude"] > 0).all()
    finite = rendered_rows["energy"].dropna()
    assert len(finite) > 0 and ((finite >= 0) & (finite <= 2)).all()


def test_energies_match_definition(rendered_rows, direct_embeddings, design):
    for k, name in enumerate(identity_names(N_IDENTITIES)):
        embeddings = direct_embeddings[k]
        scale = mean_pair_distance(torch.from_numpy(embeddings), metric="cosine", n_pairs=10_000, seed=0)
        for attribute in ("head_angle", "contrast"):
            idx0, idx1, idx2 = design.curve_indices(attribute)
            positions = embeddings[idx1].astype(np.float64)
            vectors = (embeddings[idx2] - embeddings[idx0]).astype(np.float64)
            rows = rendered_rows[(rendered_rows["identity"] == name) & (rendered_rows["attribute"] == attribute)]
            for param in PARAMS:
                row = rows[rows["param"] == param].iloc[0]
                expected = _dense_ball_energy(positions, vectors, param * scale)
                np.testing.assert_allclose(row["energy"], expected, rtol=1e-3, atol=2e-4, equal_nan=True)
            start, end = torch.from_numpy(embeddings[idx0]), torch.from_numpy(embeddings[idx2])
            magnitude = float(displacement_magnitude(start, end, scale, "cosine").mean())
            cosine = (embeddings[idx0] * embeddings[idx2]).sum(1) / (
                np.linalg.norm(embeddings[idx0], axis=1) * np.linalg.norm(embeddings[idx2], axis=1))
            np.testing.assert_allclose(magnitude, (1 - cosine).mean() / scale, rtol=1e-5)
            np.testing.assert_allclose(rows["magnitude"].iloc[0], magnitude, rtol=1e-3)


def test_from_embeddings_equals_render_path(rendered_rows, direct_embeddings, design, energy, tmp_path):
    names = identity_names(N_IDENTITIES)
    write_paper_embeddings(tmp_path, design.table, dict(zip(names, direct_embeddings)))
    rows = measure_invariance_from_embeddings(read_paper_embeddings(tmp_path), metric="cosine", energy=energy,
                                              run="tiny", epoch=3)
    pd.testing.assert_frame_equal(rows, rendered_rows, check_exact=False, rtol=1e-4, atol=1e-5)


def test_cache_is_reused_without_embedding(backbone, design, energy, rendered_rows, tmp_path):
    counting = CountingBackbone(backbone)
    first = probe(1, energy).measure(counting, image_size=SIZE, cache_dir=tmp_path, run="tiny", epoch=3)
    n_images = design.controls.shape[0]
    assert counting.images_seen == n_images
    assert (tmp_path / "df_param_step.csv").is_file() and (tmp_path / "id_00000.npy").is_file()
    second = probe(N_IDENTITIES, energy).measure(counting, image_size=SIZE, cache_dir=tmp_path, run="tiny", epoch=3)
    assert counting.images_seen == 2 * n_images  # only the second identity was embedded
    again = probe(N_IDENTITIES, energy).measure(counting, image_size=SIZE, cache_dir=tmp_path, run="tiny", epoch=3)
    assert counting.images_seen == 2 * n_images  # fully cached: nothing embedded
    pd.testing.assert_frame_equal(again, second)
    pd.testing.assert_frame_equal(second.iloc[: len(first)], first)
    pd.testing.assert_frame_equal(second, rendered_rows, check_exact=False, rtol=1e-4, atol=1e-5)


def test_cache_of_another_model_is_refused(backbone, design, energy, tmp_path):
    probe(1, energy).measure(backbone, image_size=SIZE, cache_dir=tmp_path)
    other = create_backbone("tiny", input_size=SIZE)
    with pytest.raises(InvarianceConfigError, match="different model"):
        probe(1, energy).measure(other, image_size=SIZE, cache_dir=tmp_path)


def test_embed_images_restores_mode_and_is_batch_independent(backbone):
    images = torch.rand(10, 3, SIZE, SIZE)
    backbone.train()
    try:
        small = embed_images(backbone, images, batch_size=3)
        assert backbone.training
    finally:
        backbone.eval()
    with torch.no_grad():
        expected = backbone(to_model_input(images))
    torch.testing.assert_close(small, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(embed_images(backbone, images, batch_size=10), expected, rtol=1e-4, atol=1e-5)


def test_embed_renders_is_identity_major(backbone, design, direct_embeddings):
    identities = sample_identities(N_IDENTITIES, IDENTITY_SEED)
    embeddings = embed_renders(backbone, identities, design.controls[:40], image_size=SIZE, batch_size=33)
    assert embeddings.shape == (N_IDENTITIES, 40, backbone.embedding_size)
    np.testing.assert_allclose(embeddings.numpy(), direct_embeddings[:, :40], rtol=1e-4, atol=1e-5)


def test_other_neighbourhoods_and_null_baseline(direct_embeddings, design):
    embeddings = dict(zip(identity_names(N_IDENTITIES), direct_embeddings))
    knn = invariance_rows(embeddings, design.table, metric="cosine", attributes=["hue"],
                          energy=EnergySettings("knn", params=(3, 5), null_baseline=True))
    assert list(knn.columns) == list(INVARIANCE_COLUMNS) + ["null_energy"]
    assert sorted(knn["param"].unique()) == [3.0, 5.0]
    assert np.allclose(knn.loc[knn["param"] == 3, "mean_degree"], 3.0)
    assert ((knn["null_energy"] > 0.5) & (knn["null_energy"] < 1.5)).all()
    inverse = invariance_rows(embeddings, design.table, metric="cosine", attributes=["hue"],
                              energy=EnergySettings("inverse_distance", params=()))
    assert len(inverse) == N_IDENTITIES and inverse["param"].isna().all()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"neighbourhood": "sphere"}, "Unknown neighbourhood"), ({"params": ()}, "at least one positive"),
     ({"neighbourhood": "knn", "params": (2.5,)}, "integers"), ({"params": (-1,)}, "positive")],
)
def test_energy_settings_errors(kwargs, message):
    with pytest.raises(InvarianceConfigError, match=message):
        EnergySettings(**kwargs)


def test_missing_attribute_in_design_is_reported(direct_embeddings):
    small = sampled_design(4, attributes=["hue"], seed=0)
    with pytest.raises(InvarianceConfigError, match="No curves for attribute"):
        invariance_rows({"a": direct_embeddings[0][: small.controls.shape[0]]}, small.table, metric="cosine",
                        attributes=["age"])


def test_paired_comparisons_and_report(rendered_rows, tmp_path):
    shifted = rendered_rows.copy()
    shifted["run"] = "shifted"
    rng = np.random.default_rng(0)
    shifted["energy"] = shifted["energy"] + 0.05 + 0.01 * rng.random(len(shifted))
    both = pd.concat([rendered_rows, shifted], ignore_index=True)
    comparisons = paired_model_comparisons(both, n_bootstrap=200)
    assert len(comparisons) == 8 * len(PARAMS)
    for param in PARAMS:
        family = comparisons[comparisons["param"] == param]
        np.testing.assert_allclose(family["p_holm"], holm_correction(family["p_value"].to_numpy()))
    assert (comparisons["median_difference"] < 0).all()  # run_a ("tiny") − run_b ("shifted")
    text = render_markdown(both, comparisons)
    assert "shifted" in text and "Paired tests" in text and "ε = 0.6" in text
    assert "smallest attainable Wilcoxon p-value is 0.5" in text  # 2 identities


def test_null_baseline_is_measured_on_the_fields_own_points(direct_embeddings, design):
    """Curves whose step leaves the embedding unchanged (zero vectors) leave the field's point set; the null
    baseline must be drawn on that same set of positions, not on every curve centre."""
    still = direct_embeddings[0].copy()
    step0, centre, step2 = design.curve_indices("hue")
    still[step2[:5]] = still[step0[:5]]  # five hue curves that do not move
    settings = EnergySettings("ball", params=(0.6,), null_baseline=True)
    rows = invariance_rows({"id": still}, design.table, metric="cosine", attributes=["hue"], energy=settings)
    assert rows.loc[0, "n_zero"] == 5
    positions = torch.from_numpy(still[centre[5:]])
    scale = mean_pair_distance(torch.from_numpy(still), metric="cosine", n_pairs=settings.n_pairs, seed=settings.seed)
    expected = null_energy(positions, scale=scale, params=(0.6,), metric="cosine", seed=settings.seed)[0].energy
    assert rows.loc[0, "null_energy"] == pytest.approx(expected, abs=1e-12)

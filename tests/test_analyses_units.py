"""The macroscale / clustering / cross-model analysis classes called directly on precomputed-embeddings folders
(no subprocess): settings validation, zero-padding of different widths, degenerate attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.data.embeddings_table import write_embeddings_table
from fr_invariance.evaluation.analyses.base import (
    AnalysisContext,
    AnalysisInputError,
    write_result,
)
from fr_invariance.evaluation.analyses.clustering import ClusteringAnalysis
from fr_invariance.evaluation.analyses.crossmodel import CrossModelAnalysis
from fr_invariance.evaluation.analyses.macroscale import MacroscaleAnalysis
from fr_invariance.evaluation.labelled_embeddings import LabelledData, LabelledDataError


def context(*folders: Path, output: Path) -> AnalysisContext:
    return AnalysisContext(sources=[str(f) for f in folders], names=[f.name for f in folders], model_cfg=None,
                           device=torch.device("cpu"), progress=False, output_dir=output)


@pytest.fixture()
def folders(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(20), 4)
    centres = rng.normal(size=(20, 24))
    a = centres[identities] + 0.2 * rng.normal(size=(80, 24))
    embed, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    b = a @ embed[:24]  # the same space, written into 40 dimensions: a (24-D) must be zero-padded
    attributes = pd.DataFrame({
        "varies": np.where(rng.random(80) < 0.5, 1, -1),
        "per_identity": np.repeat(np.where(np.arange(20) < 9, 1, -1), 4),
        "lonely": np.where(identities == 3, 1, -1),  # only one identity has +1: no KS, no intra-class case
    })
    write_embeddings_table(tmp_path / "a", a, identities, attributes)
    write_embeddings_table(tmp_path / "b", b, identities, attributes)
    return {"a": tmp_path / "a", "b": tmp_path / "b"}


def test_labelled_data_settings_are_validated():
    with pytest.raises(LabelledDataError, match="Unknown data setting"):
        LabelledData.from_config({"n_ids": 3})
    with pytest.raises(LabelledDataError, match="celeba_root"):
        LabelledData.from_config({"source": "celeba"})
    with pytest.raises(LabelledDataError, match="synthetic, celeba"):
        LabelledData.from_config({"source": "lfw"})
    assert LabelledData.from_config({"control_range": [0.1, 0.9]}).control_range == (0.1, 0.9)


def test_crossmodel_zero_pads_different_widths(folders, tmp_path):
    analysis = CrossModelAnalysis(seeds=[42, 7], similarity=True)
    result = analysis.run(context(folders["a"], folders["b"], output=tmp_path / "out"))
    ident = result.tables["crossmodel_identification"]
    procrustes = ident[(ident["method"] == "procrustes") & (ident["source"] == "a")]
    assert (procrustes["rank1"] == 1.0).all() and len(procrustes) == 2 * 2
    residual = result.tables["crossmodel_similarity"]
    assert residual.loc[(residual["method"] == "procrustes") & (residual["source"] == "a"), "residual"].max() < 1e-6
    written = write_result(result, tmp_path / "out", title="crossmodel")
    assert {"crossmodel", "crossmodel_cmc", "crossmodel_rank1", "report"} <= set(written)


def test_crossmodel_settings_are_validated():
    with pytest.raises(AnalysisInputError, match="protocols"):
        CrossModelAnalysis(protocols=["lenient"])
    with pytest.raises(AnalysisInputError, match="ranks"):
        CrossModelAnalysis(ranks=[1, 100], max_rank=50)
    with pytest.raises(AnalysisInputError, match="unknown"):
        CrossModelAnalysis(methods=["cca"])


def test_macroscale_reports_attributes_it_cannot_test(folders, tmp_path):
    analysis = MacroscaleAnalysis(n_bootstrap=50, exclude_same_identity=True)
    result = analysis.run(context(folders["a"], output=tmp_path / "out"))
    rows = result.tables["macroscale"].set_index("attribute")
    assert np.isnan(rows.loc["lonely", "ks_plus"]) and "no KS" in rows.loc["lonely", "note"]
    assert rows.loc["per_identity", "intra_entropy"] == 0 and rows.loc["per_identity", "n_sampled"] == 9
    assert bool(rows.loc["varies", "exclude_same_identity"])
    assert "No KS for lonely" in result.markdown
    with pytest.raises(AnalysisInputError, match="n_max"):
        MacroscaleAnalysis(n_max=1)


@pytest.mark.parametrize("sampling", ["one_per_identity", "identity_mean"])
def test_clustering_extra_class_sampling(folders, tmp_path, sampling):
    analysis = ClusteringAnalysis(methods=["kmeans"], extra_sampling=sampling, n_permutations=50, ablation=[0, 2],
                                  attributes=["per_identity", "lonely"])
    result = analysis.run(context(folders["a"], output=tmp_path / "out"))
    scores = result.tables["clustering"]
    extra = scores[scores["case"] == "extra"].set_index("attribute")
    assert extra.loc["per_identity", "n"] == 20  # one row per identity
    assert set(scores["case"]) == {"extra"}  # per-identity and single-identity attributes have no intra case
    with pytest.raises(AnalysisInputError, match="at least 10 restarts"):
        ClusteringAnalysis(n_init=3)

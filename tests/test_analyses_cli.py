"""``evaluate.py analysis=macroscale|clustering|crossmodel`` end to end: a tiny model trained by ``train.py``
(then fine-tuned from its checkpoint with targeted augmentation, for the cross-model "before / after" case),
the embedded synthetic labelled set, and precomputed-embeddings folders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fr_invariance.data.embeddings_table import write_embeddings_table
from tests.entrypoints import run_entry_point, run_train, summary_of

TRAIN = [
    "experiment=quickstart", "data.image_size=32", "data.identities=16", "data.samples_per_epoch=128",
    "data.batch_size=64", "data.val_identities=8", "data.val_pairs=40", "trainer.max_epochs=1", "invariance=off",
]
DATA = ["analysis.data.n_identities=24", "analysis.data.images_per_identity=5"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``base``: trained from scratch; ``tuned``: fine-tuned from base's checkpoint with contrast augmentation."""
    root = tmp_path_factory.mktemp("runs")
    base = summary_of(run_train(*TRAIN, "attr=none", f"hydra.run.dir={root / 'base'}"))["last_checkpoint"]
    tuned = summary_of(run_train(*TRAIN, "attr=contrast", "aug.strength=1.0", f"model.weights={base}",
                                 f"hydra.run.dir={root / 'tuned'}"))["last_checkpoint"]
    return {"base": Path(base), "tuned": Path(tuned)}


def evaluate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_entry_point("evaluate.py", f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                           "progress=false", "device=cpu", *overrides, check=False, timeout=600)


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def embedding_folders(tmp_path_factory) -> dict[str, Path]:
    """Two precomputed-embeddings folders of the same 120 images: B is A rotated, plus noise."""
    root = tmp_path_factory.mktemp("embeddings")
    rng = np.random.default_rng(0)
    identities = np.repeat([f"person{k:02d}" for k in range(24)], 5)
    smile = np.where(rng.random(120) < 0.5, 1, -1)
    glasses = np.repeat(np.where(rng.random(24) < 0.4, 1, -1), 5)  # per identity: the extra-class case
    centres = 0.5 * rng.normal(size=(24, 32))
    a = centres[np.repeat(np.arange(24), 5)] + 0.1 * rng.normal(size=(120, 32)) + 1.0 * smile[:, None] * np.eye(32)[0]
    q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    b = a @ q + 0.05 * rng.normal(size=(120, 32))
    attributes = pd.DataFrame({"smiling": smile, "eyeglasses": glasses})
    names = [f"{k:04d}.jpg" for k in range(120)]
    write_embeddings_table(root / "model_a", a, identities, attributes, names=names)
    write_embeddings_table(root / "model_b", b, identities, attributes, names=names)
    write_embeddings_table(root / "shuffled", b[::-1], identities[::-1], attributes[::-1], names=names[::-1])
    return {"a": root / "model_a", "b": root / "model_b", "shuffled": root / "shuffled"}


def test_macroscale_on_a_trained_checkpoint(checkpoints, tmp_path):
    summary = last_json(evaluate(tmp_path, "analysis=macroscale", f"checkpoint={checkpoints['base']}", *DATA,
                                 "analysis.n_bootstrap=200"))
    out = tmp_path / "out"
    assert summary["analysis"] == "macroscale" and summary["output_dir"] == str(out)
    assert {"macroscale.csv", "macroscale_correlations.csv", "macroscale_ks_vs_entropy.png", "report.md",
            "summary.json"} <= {p.name for p in out.iterdir()}
    rows = pd.read_csv(out / "macroscale.csv")
    assert len(rows) == 13 and rows["intra_entropy"].between(0, np.log(2) + 1e-9).all()
    assert (rows.loc[rows["kind"] == "identity", "intra_entropy"] == 0).all()
    assert rows["ks_plus"].dropna().between(0, 1).all() and rows["ks_plus"].notna().sum() >= 10
    assert len(pd.read_csv(out / "macroscale_correlations.csv")) == 6
    assert "## Macroscale" in (out / "report.md").read_text()


def test_clustering_on_a_trained_checkpoint(checkpoints, tmp_path):
    summary = last_json(evaluate(tmp_path, "analysis=clustering", f"checkpoint={checkpoints['base']}", *DATA,
                                 "analysis.n_permutations=100", "analysis.max_intra_identities=4",
                                 "analysis.ablation=[0,4]", "analysis.attributes=[contrast,head_angle,dark_skin]"))
    out = tmp_path / "out"
    assert {"clustering.csv", "clustering_fisher.csv", "clustering_ablation.csv", "clustering_accuracy.png",
            "clustering_ablation.png", "report.md"} <= {p.name for p in out.iterdir()}
    rows = pd.read_csv(out / "clustering.csv")
    extra = rows[rows["case"] == "extra"]
    assert len(extra) == 3 * 3 and extra["accuracy"].between(0.5, 1).all()
    assert set(rows.loc[rows["case"] == "intra", "attribute"]) == {"contrast", "head_angle"}  # dark_skin: per identity
    assert set(summary["kmeans_accuracy"][next(iter(summary["kmeans_accuracy"]))]) == {"extra", "intra"}


def test_crossmodel_before_and_after_a_fine_tune(checkpoints, tmp_path):
    summary = last_json(evaluate(tmp_path, "analysis=crossmodel",
                                 f"checkpoints=[{checkpoints['base']},{checkpoints['tuned']}]", *DATA,
                                 "analysis.seeds=[42,123]"))
    out = tmp_path / "out"
    assert {"crossmodel.csv", "crossmodel_identification.csv", "crossmodel_verification.csv", "crossmodel_cmc.csv",
            "crossmodel_similarity.csv", "crossmodel_rank1.png", "crossmodel_cmc.png", "report.md"} <= {
        p.name for p in out.iterdir()}
    identification = pd.read_csv(out / "crossmodel_identification.csv")
    assert set(identification["seed"]) == {42, 123} and len(identification) == 2 * 2 * 5 * 2  # dirs × seeds × methods × protocols
    assert (identification.loc[(identification["method"] == "within_target")
                               & (identification["protocol"] == "paper_faithful"), "rank1"] == 1.0).all()
    assert len(summary["rank1"]) == 2  # both directions


def test_all_three_on_precomputed_embeddings(embedding_folders, tmp_path):
    macro = last_json(evaluate(tmp_path / "m", "analysis=macroscale", f"embeddings_dir={embedding_folders['a']}",
                               "analysis.n_bootstrap=100"))
    assert set(macro["ks_mean"]["model_a"]) == {"smiling", "eyeglasses"}
    assert macro["ks_mean"]["model_a"]["smiling"] > 0.2  # the constructed smile direction separates the space
    clusters = last_json(evaluate(tmp_path / "c", "analysis=clustering", f"embeddings_dir={embedding_folders['a']}",
                                  "analysis.n_permutations=100", "analysis.ablation=[0,1]", "analysis.methods=[kmeans]"))
    assert clusters["kmeans_accuracy"]["model_a"]["intra"]["smiling"] > 0.9
    cross = last_json(evaluate(tmp_path / "x", "analysis=crossmodel", "analysis.seeds=[42,7]",
                               f"checkpoints=[{embedding_folders['a']},{embedding_folders['b']}]"))
    assert cross["rank1"]["model_a→model_b"]["procrustes/paper_faithful"] == 1.0
    assert cross["rank1"]["model_a→model_b"]["unaligned/paper_faithful"] < 0.5


def test_crossmodel_errors_are_one_line(embedding_folders, tmp_path):
    one = evaluate(tmp_path / "one", "analysis=crossmodel", f"embeddings_dir={embedding_folders['a']}")
    assert one.returncode == 2 and "needs two sources" in one.stderr and "Traceback" not in one.stderr
    mismatch = evaluate(tmp_path / "two", "analysis=crossmodel",
                        f"checkpoints=[{embedding_folders['a']},{embedding_folders['shuffled']}]")
    assert mismatch.returncode == 2 and "same images in the same order" in mismatch.stderr

"""Attribute-labelled data: the embeddings table on disk, the CelebA reader, the labelled synthetic set."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.attributes import ATTRIBUTE_NAMES
from fr_invariance.data.datasets.base import DataFormatError
from fr_invariance.data.datasets.celeba import CelebAFaces, read_celeba_annotations
from fr_invariance.data.datasets.labelled_synthetic import (
    IDENTITY_ATTRIBUTES,
    LabelledSyntheticError,
    build_labelled_synthetic,
)
from fr_invariance.data.embeddings_table import (
    EmbeddingsTable,
    EmbeddingsTableError,
    read_embeddings_table,
    same_images,
    write_embeddings_table,
)
from fr_invariance.metrics.macroscale import intra_entropy

# ---------------------------------------------------------------------------------------------- table


def test_embeddings_table_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 4)).astype(np.float32)
    attributes = pd.DataFrame({"smile": [1, -1, 1, 1, -1, -1], "glasses": [-1] * 3 + [1] * 3})
    write_embeddings_table(tmp_path / "a", embeddings, ["x", "x", "y", "y", "z", "z"], attributes,
                           names=[f"{k}.jpg" for k in range(6)])
    table = read_embeddings_table(tmp_path / "a")
    np.testing.assert_array_equal(table.embeddings, embeddings)
    assert table.attribute_names == ["smile", "glasses"] and list(table.identities) == ["x", "x", "y", "y", "z", "z"]
    assert table.attributes["smile"].dtype == np.int8 and list(table.names) == [f"{k}.jpg" for k in range(6)]
    write_embeddings_table(tmp_path / "b", embeddings * 2, ["x", "x", "y", "y", "z", "z"], attributes,
                           names=[f"{k}.jpg" for k in range(6)])
    assert same_images(table, read_embeddings_table(tmp_path / "b"))
    write_embeddings_table(tmp_path / "c", embeddings, ["x", "y", "x", "y", "z", "z"], attributes)
    assert not same_images(table, read_embeddings_table(tmp_path / "c"))


def test_embeddings_table_accepts_zero_one_and_booleans(tmp_path):
    np.save(tmp_path / "embeddings.npy", np.zeros((3, 2), np.float32))
    pd.DataFrame({"identity": [1, 1, 2], "a": [0, 1, 1], "b": [True, False, True], "path": ["p", "q", "r"]}).to_csv(
        tmp_path / "meta.csv", index=False)
    table = read_embeddings_table(tmp_path)
    assert table.attributes["a"].tolist() == [-1, 1, 1] and table.attributes["b"].tolist() == [1, -1, 1]
    assert table.attribute_names == ["a", "b"]


def test_embeddings_table_keeps_identities_as_written(tmp_path):
    """'0001' must not become 1 (it would merge with '1' and change the cross-model split), nor 'NA' a gap."""
    np.save(tmp_path / "embeddings.npy", np.zeros((4, 2), np.float32))
    (tmp_path / "meta.csv").write_text("identity,path,a\n0001,0001/a.jpg,1\n1,1/b.jpg,-1\nNA,NA/c.jpg,1\n010,x,1\n")
    table = read_embeddings_table(tmp_path)
    assert list(table.identities) == ["0001", "1", "NA", "010"] and list(table.names)[0] == "0001/a.jpg"
    computed = EmbeddingsTable(np.zeros((2, 2), np.float32), np.array([7, 8]), pd.DataFrame({"a": [1, -1]}))
    assert list(computed.identities) == ["7", "8"]  # tables built in memory compare equal to ones read back


@pytest.mark.parametrize("problem, match", [
    ("missing", "embeddings.npy"),
    ("object", "plain float array"),
    ("rows", "one row per image"),
    ("binary", "not a binary attribute"),
    ("identity", "no 'identity' column"),
    ("nan", "NaN"),
])
def test_embeddings_table_errors(tmp_path, problem, match):
    meta = pd.DataFrame({"identity": [1, 1, 2], "a": [1, -1, 1]})
    embeddings = np.zeros((3, 2), np.float32)
    if problem == "object":
        np.save(tmp_path / "embeddings.npy", np.array([{"a": 1}, None, 3], dtype=object), allow_pickle=True)
    elif problem != "missing":
        np.save(tmp_path / "embeddings.npy", embeddings[:2] if problem == "rows" else
                np.full((3, 2), np.nan) if problem == "nan" else embeddings)
    if problem == "binary":
        meta["a"] = [0.5, 1, 1]
    if problem == "identity":
        meta = meta.rename(columns={"identity": "person"})
    meta.to_csv(tmp_path / "meta.csv", index=False)
    error = FileNotFoundError if problem == "missing" else EmbeddingsTableError
    with pytest.raises(error, match=match):
        read_embeddings_table(tmp_path)


# ---------------------------------------------------------------------------------------------- CelebA


def write_celeba(root, identities, values, names=("Smiling", "Male"), *, size=(20, 24)):
    """A tiny CelebA-format folder: both text files and small JPEG images."""
    (root / "img_align_celeba").mkdir(parents=True)
    images = [f"{k + 1:06d}.jpg" for k in range(len(identities))]
    lines = [str(len(images)), " ".join(names)]
    lines += [f"{image} " + " ".join(f"{v:2d}" for v in row) for image, row in zip(images, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "identity_CelebA.txt").write_text("\n".join(f"{i} {p}" for i, p in zip(images, identities)) + "\n")
    rng = np.random.default_rng(0)
    for image in images:
        cv2.imwrite(str(root / "img_align_celeba" / image), rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return images


def test_celeba_reader_filters_identities_by_image_count(tmp_path):
    identities = [7, 7, 7, 3, 3, 9, 9, 9, 9]
    values = [[1, -1], [1, -1], [-1, -1], [1, 1], [1, 1], [-1, 1], [-1, 1], [1, 1], [1, 1]]
    write_celeba(tmp_path, identities, values)
    table = read_celeba_annotations(tmp_path, min_images=3)
    assert list(table["identity"]) == ["7"] * 3 + ["9"] * 4
    assert list(table.columns) == ["image", "identity", "Smiling", "Male"]
    assert table["Smiling"].tolist() == [1, 1, -1, -1, -1, 1, 1]
    only_male = read_celeba_annotations(tmp_path, min_images=1, attributes=["Male"])
    assert list(only_male.columns) == ["image", "identity", "Male"] and len(only_male) == 9
    with pytest.raises(DataFormatError, match="no identity has >= 5"):
        read_celeba_annotations(tmp_path, min_images=5)
    with pytest.raises(DataFormatError, match="unknown attribute"):
        read_celeba_annotations(tmp_path, min_images=1, attributes=["Bald"])


def test_celeba_reader_format_errors(tmp_path):
    write_celeba(tmp_path, [1, 1], [[1, -1], [1, 1]])
    text = (tmp_path / "list_attr_celeba.txt").read_text().replace("2\n", "3\n", 1)
    (tmp_path / "list_attr_celeba.txt").write_text(text)
    with pytest.raises(DataFormatError, match="announces 3 images"):
        read_celeba_annotations(tmp_path, min_images=1)
    (tmp_path / "list_attr_celeba.txt").write_text(text.replace("3\n", "2\n", 1))
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    with pytest.raises(DataFormatError, match="the two files must list the same images"):
        read_celeba_annotations(tmp_path, min_images=1)
    (tmp_path / "identity_CelebA.txt").unlink()
    with pytest.raises(FileNotFoundError, match="identity_CelebA.txt"):
        read_celeba_annotations(tmp_path, min_images=1)


def test_celeba_faces_decode_square_crops(tmp_path):
    write_celeba(tmp_path, [4, 4, 5, 5], [[1, 1], [-1, 1], [1, -1], [-1, -1]])
    faces = CelebAFaces(tmp_path, image_size=16, min_images=2)
    image, label, _, problem = faces[2]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 1 and problem == ""
    assert faces.attributes.shape == (4, 2) and list(faces.identities) == ["4", "4", "5", "5"]
    (tmp_path / "img_align_celeba" / "000001.jpg").write_bytes(b"not a jpeg")
    assert faces[0][0] is None and "Cannot decode" in faces[0][3]


# ---------------------------------------------------------------------------------------------- synthetic


def test_labelled_synthetic_set_is_deterministic_and_labels_follow_the_controls():
    labelled = build_labelled_synthetic(12, 5, identity_seed=20000, seed=3)
    assert len(labelled) == 60 and labelled.controls.shape == (60, len(ATTRIBUTE_NAMES))
    assert list(labelled.attributes.columns) == [*ATTRIBUTE_NAMES, *IDENTITY_ATTRIBUTES]
    for column, name in enumerate(ATTRIBUTE_NAMES):
        t = labelled.controls[:, column].numpy()
        assert ((np.abs(t) >= 0.2 - 1e-6) & (np.abs(t) <= 0.8 + 1e-6)).all()
        np.testing.assert_array_equal(np.sign(t).astype(int), labelled.attributes[name].to_numpy())
    for name in IDENTITY_ATTRIBUTES:  # constant within an identity
        per_identity = labelled.attributes[name].groupby(labelled.identity_of_row).nunique()
        assert (per_identity == 1).all() and labelled.kinds[name] == "identity"
    again = build_labelled_synthetic(12, 5, identity_seed=20000, seed=3)
    pd.testing.assert_frame_equal(labelled.attributes, again.attributes)
    other = build_labelled_synthetic(12, 5, identity_seed=20000, seed=4)
    assert not labelled.attributes[list(ATTRIBUTE_NAMES)].equals(other.attributes[list(ATTRIBUTE_NAMES)])


def test_concentration_sets_how_identity_consistent_an_attribute_is():
    labelled = build_labelled_synthetic(120, 10, concentration={"age": 0.05, "head_angle": 200.0})
    ids = labelled.identity_labels
    assert intra_entropy(labelled.attributes["age"], ids) < 0.15
    assert intra_entropy(labelled.attributes["head_angle"], ids) > 0.6 * math.log(2)


def test_labelled_synthetic_renders_rows_in_order():
    labelled = build_labelled_synthetic(4, 2)
    batches = list(labelled.iter_images(image_size=32, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 2] and batches[0].shape[1:] == (3, 32, 32)
    assert 0.0 <= float(batches[0].min()) and float(batches[0].max()) <= 1.0


def test_labelled_synthetic_rejects_bad_settings():
    with pytest.raises(LabelledSyntheticError, match="at least 4 identities"):
        build_labelled_synthetic(2, 5)
    with pytest.raises(LabelledSyntheticError, match="unknown attributes"):
        build_labelled_synthetic(8, 5, concentration={"glasses": 1.0})
    with pytest.raises(LabelledSyntheticError, match="control_range"):
        build_labelled_synthetic(8, 5, control_range=(0.5, 0.2))


def test_unreadable_celeba_images_are_counted_and_the_image_rule_holds_for_what_is_embedded(tmp_path):
    from fr_invariance.evaluation.labelled_embeddings import LabelledData, LabelledDataError, embed_celeba
    from fr_invariance.models import create_backbone

    identities = ["7"] * 4 + ["9"] * 3 + ["11"] * 2
    values = [[1, -1], [-1, 1]] * 4 + [[1, 1]]
    images = write_celeba(tmp_path, identities, values)
    (tmp_path / "img_align_celeba" / images[5]).unlink()  # identity 9 keeps 2 readable images
    model = create_backbone("tiny", input_size=16).eval()
    settings = LabelledData(source="celeba", celeba_root=str(tmp_path), min_images=3, num_workers=0)
    with pytest.warns(UserWarning, match=r"1 of 7 CelebA images could not be read .* e\.g\. 000006\.jpg.* 1 identities"):
        table = embed_celeba(model, settings, image_size=16)
    assert list(table.identities) == ["7"] * 4 and list(table.names) == images[:4] and table.embeddings.shape == (4, 128)
    for image in images:
        (tmp_path / "img_align_celeba" / image).unlink(missing_ok=True)
    with pytest.raises(LabelledDataError, match=r"None of the 7 CelebA images listed could be read .* e\.g\. 000001\.jpg"):
        embed_celeba(model, settings, image_size=16)

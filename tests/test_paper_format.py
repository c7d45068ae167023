"""Paper-C lattice embeddings layout (DESIGN §4): round trip and clear errors."""

import numpy as np
import pandas as pd
import pytest

from fr_invariance.data.paper_format import PaperFormatError, read_paper_embeddings, write_paper_embeddings


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_curve": [0, 0, 0, 1, 1, 1],
            "moving_dimension": [2, 2, 2, 2, 2, 2],
            "param_step": [0, 1, 2, 0, 1, 2],
            "index": [0, 1, 2, 3, 1, 4],
        }
    )


def test_round_trip(tmp_path):
    embeddings = {"b": np.arange(10, dtype=np.float64).reshape(5, 2), "a": np.ones((6, 2), dtype=np.float32)}
    directory = write_paper_embeddings(tmp_path / "out", _table(), embeddings)
    opened = read_paper_embeddings(directory)
    assert opened.directory == directory
    assert opened.identities == ["a", "b"]
    assert list(opened.table.columns) == ["id_curve", "moving_dimension", "param_step", "index"]
    assert opened.table["moving_dimension"].tolist() == ["2"] * 6  # the paper's int labels become str
    assert opened.table["index"].tolist() == [0, 1, 2, 3, 1, 4]
    loaded = opened.load("b")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, embeddings["b"])
    np.testing.assert_array_equal(opened.load("a"), embeddings["a"])


def test_reads_a_csv_with_a_saved_pandas_index(tmp_path):
    _table().to_csv(tmp_path / "df_param_step.csv")  # index=True adds an unnamed first column
    np.save(tmp_path / "x.npy", np.zeros((5, 3), dtype=np.float32))
    assert list(read_paper_embeddings(tmp_path).table.columns) == ["id_curve", "moving_dimension", "param_step", "index"]


def test_missing_directory_csv_and_npy(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_paper_embeddings(tmp_path / "nowhere")
    np.save(tmp_path / "x.npy", np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="df_param_step.csv"):
        read_paper_embeddings(tmp_path)
    (tmp_path / "x.npy").unlink()
    _table().to_csv(tmp_path / "df_param_step.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"\.npy"):
        read_paper_embeddings(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="'y'"):
        read_paper_embeddings(tmp_path).load("y")


def test_index_out_of_range_and_bad_table(tmp_path):
    with pytest.raises(PaperFormatError, match="index 4"):
        write_paper_embeddings(tmp_path, _table(), {"x": np.zeros((4, 3))})
    _table().to_csv(tmp_path / "df_param_step.csv", index=False)
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(PaperFormatError, match="at least 5 rows"):
        read_paper_embeddings(tmp_path).load("x")
    with pytest.raises(PaperFormatError, match="param_step"):
        write_paper_embeddings(tmp_path, _table().drop(columns="param_step"), {"x": np.zeros((5, 3))})
    with pytest.raises(PaperFormatError, match=r"\(N, D\)"):
        write_paper_embeddings(tmp_path, _table(), {"x": np.zeros(5)})

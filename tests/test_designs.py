import time

import numpy as np
import pandas as pd
import pytest
import torch

from fr_invariance.attributes import (
    ATTRIBUTE_NAMES,
    IMAGE_ATTRIBUTES,
    SEMANTIC_ATTRIBUTES,
    UnknownAttributeError,
    attribute_index,
)
from fr_invariance.synth.designs import (
    MOVING_DIMENSION,
    TABLE_COLUMNS,
    CurveDesign,
    CurveDesignError,
    curve_indices,
    paper_lattice_design,
    sampled_design,
)


@pytest.fixture(scope="module")
def lattice() -> CurveDesign:
    return paper_lattice_design()


def _assert_curves_move_along(design: CurveDesign, attribute: str, grid_step: float, centre: float | None):
    """Every curve: steps differ only along ``attribute``, by exactly ``grid_step``, symmetric."""
    i0, i1, i2 = design.curve_indices(attribute)
    controls = design.controls.double()
    column = attribute_index(attribute)
    lower, middle, upper = controls[i0], controls[i1], controls[i2]
    others = [c for c in range(len(ATTRIBUTE_NAMES)) if c != column]
    torch.testing.assert_close(lower[:, others], middle[:, others], rtol=0, atol=0)
    torch.testing.assert_close(upper[:, others], middle[:, others], rtol=0, atol=0)
    expected_step = torch.full_like(middle[:, 0], grid_step)
    torch.testing.assert_close(middle[:, column] - lower[:, column], expected_step, rtol=0, atol=1e-6)
    torch.testing.assert_close(upper[:, column] - middle[:, column], expected_step, rtol=0, atol=1e-6)
    if centre is not None:
        torch.testing.assert_close(middle[:, column], torch.full_like(middle[:, 0], centre), rtol=0, atol=1e-7)


def test_moving_dimension_labels():
    assert [MOVING_DIMENSION[name] for name in ATTRIBUTE_NAMES] == [
        "0", "1", "2", "3", "4", "brightness", "contrast", "hue"
    ]


def test_paper_lattice_sizes(lattice):
    assert lattice.controls.shape == (121_875, 8) and lattice.controls.dtype == torch.float32
    assert tuple(lattice.table.columns) == TABLE_COLUMNS
    assert lattice.attributes() == list(ATTRIBUTE_NAMES)
    for name in SEMANTIC_ATTRIBUTES:
        assert len(lattice.curve_indices(name)[0]) == 21_125
    for name in IMAGE_ATTRIBUTES:
        assert len(lattice.curve_indices(name)[0]) == 9_375
    assert len(lattice.table) == 3 * (5 * 21_125 + 3 * 9_375)
    assert len(torch.unique(lattice.controls, dim=0)) == 121_875  # every image is a distinct control vector


def test_paper_lattice_values_and_image_order(lattice):
    semantic = lattice.controls[:, :5].double() * 3 + 3  # back to lattice values 0..6
    image = lattice.controls[:, 5:].double() * 2 + 2  # back to star values 0..4
    torch.testing.assert_close(semantic, semantic.round(), rtol=0, atol=1e-5)
    nodes = semantic.round().long()[::13]
    assert len(nodes) == 9_375
    core, padding = nodes[:3_125], nodes[3_125:]
    assert bool(((core >= 1) & (core <= 5)).all())
    assert bool((((padding == 0) | (padding == 6)).sum(1) == 1).all())
    # core nodes in lexicographic order: first (1,1,1,1,1), second (1,1,1,1,2), last (5,5,5,5,5)
    assert core[0].tolist() == [1, 1, 1, 1, 1] and core[1].tolist() == [1, 1, 1, 1, 2] and core[-1].tolist() == [5] * 5
    star = image.round().long()[:13].tolist()
    assert star[0] == [2, 2, 2]
    assert star[1:5] == [[0, 2, 2], [1, 2, 2], [3, 2, 2], [4, 2, 2]]
    assert star[5:9] == [[2, 0, 2], [2, 1, 2], [2, 3, 2], [2, 4, 2]]
    assert star[9:13] == [[2, 2, 0], [2, 2, 1], [2, 2, 3], [2, 2, 4]]
    # every node carries the same 13 semantic values across its star
    assert bool((semantic.round().long().reshape(9_375, 13, 5) == nodes[:, None, :]).all())


def test_paper_lattice_curves_are_centred_single_steps(lattice):
    for name in SEMANTIC_ATTRIBUTES:
        _assert_curves_move_along(lattice, name, grid_step=1 / 3, centre=0.0)
    for name in IMAGE_ATTRIBUTES:
        _assert_curves_move_along(lattice, name, grid_step=0.5, centre=0.0)
        # image-level curves are centred on the node's centre variant
        assert bool((lattice.curve_indices(name)[1] % 13 == 0).all())


def test_paper_lattice_semantic_curves_cover_core_and_padded_lines(lattice):
    i0, i1, i2 = lattice.curve_indices("age")
    middle_values = lattice.controls[i1][:, :5].double() * 3 + 3
    others = middle_values[:, [0, 2, 3, 4]].round().long()
    on_edge = ((others == 0) | (others == 6)).sum(1)
    assert int((on_edge == 0).sum()) == 625 * 13 and int((on_edge == 1).sum()) == 1_000 * 13
    # each (line, star variant) appears exactly once
    assert len(np.unique(i1)) == 21_125


def test_paper_lattice_table_order(lattice):
    table = lattice.table
    expected_labels = [MOVING_DIMENSION[n] for n in ATTRIBUTE_NAMES]
    assert list(dict.fromkeys(table["moving_dimension"])) == expected_labels
    assert bool((np.diff(table["id_curve"].to_numpy()) >= 0).all())
    assert table["param_step"].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    assert table["id_curve"].is_unique is False and table.groupby("id_curve").size().eq(3).all()


def test_paper_lattice_is_fast():
    start = time.perf_counter()
    paper_lattice_design()
    assert time.perf_counter() - start < 2.0


def test_sampled_design_shares_centres_and_respects_box():
    design = sampled_design(50, attributes=["hue", "age", "contrast"], step=0.3, nuisance=0.9, seed=3)
    assert design.attributes() == ["age", "contrast", "hue"]
    assert design.controls.shape == (50 + 2 * 50 * 3, 8)
    assert tuple(design.table.columns) == TABLE_COLUMNS
    centre_sets = [design.curve_indices(name)[1] for name in design.attributes()]
    for centres in centre_sets:
        np.testing.assert_array_equal(centres, np.arange(50))
    for name in design.attributes():
        _assert_curves_move_along(design, name, grid_step=0.3, centre=None)
    centres = design.controls[:50].double()
    for name in ("age", "contrast", "hue"):
        column = centres[:, attribute_index(name)]
        assert column.abs().max() <= 0.7 + 1e-6  # 0.9 clipped to 1 - step
        assert column.min() < -0.5 and column.max() > 0.5
    for name in ("head_angle", "brightness"):  # attributes without curves stay neutral
        assert bool((centres[:, attribute_index(name)] == 0).all())
    assert design.controls.abs().max() <= 1.0
    assert design.table["id_curve"].nunique() == 150


def test_sampled_design_is_seeded_and_mapping_nuisance():
    a = sampled_design(10, seed=1)
    b = sampled_design(10, seed=1)
    c = sampled_design(10, seed=2)
    torch.testing.assert_close(a.controls, b.controls)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not torch.allclose(a.controls, c.controls)
    assert a.attributes() == list(ATTRIBUTE_NAMES)
    design = sampled_design(20, attributes=["hue"], step=0.25, nuisance={"hue": 0.1, "age": 1.0}, seed=0)
    centres = design.controls[:20]
    assert centres[:, attribute_index("hue")].abs().max() <= 0.1
    assert centres[:, attribute_index("age")].abs().max() > 0.5  # non-curve attribute varied up to 1.0
    assert bool((centres[:, attribute_index("expression")] == 0).all())


@pytest.mark.filterwarnings("ignore::pandas.errors.DtypeWarning")
def test_curve_indices_csv_round_trip(tmp_path, lattice):
    small = sampled_design(7, attributes=["head_angle", "expression", "hue"], seed=4)
    semantic_only = sampled_design(5, attributes=["age", "illumination"], seed=4)  # column read back as int64
    for design in (small, semantic_only, lattice):
        path = tmp_path / "df_param_step.csv"
        design.table.to_csv(path, index=False)
        table = pd.read_csv(path)  # moving_dimension '0'..'4' comes back as int / mixed
        for name in design.attributes():
            for ours, read in zip(design.curve_indices(name), curve_indices(table, MOVING_DIMENSION[name])):
                np.testing.assert_array_equal(ours, read)
            for ours, read in zip(design.curve_indices(name), curve_indices(table, name)):
                np.testing.assert_array_equal(ours, read)


def test_curve_indices_sorted_by_id_curve():
    table = pd.DataFrame(
        {"id_curve": [5, 5, 5, 2, 2, 2], "moving_dimension": ["hue"] * 6,
         "param_step": [2, 0, 1, 1, 2, 0], "index": [10, 11, 12, 20, 21, 22]}
    )
    i0, i1, i2 = curve_indices(table, "hue")
    assert i0.tolist() == [22, 11] and i1.tolist() == [20, 12] and i2.tolist() == [21, 10]
    assert i0.dtype == np.int64


def test_curve_indices_errors():
    table = pd.DataFrame(
        {"id_curve": [0, 0, 1, 1, 1], "moving_dimension": ["1"] * 5,
         "param_step": [0, 2, 0, 1, 2], "index": [0, 1, 2, 3, 4]}
    )
    with pytest.raises(CurveDesignError, match=r"Curve 0 .* lacks param_step\(s\) \[1\]"):
        curve_indices(table, "1")
    with pytest.raises(CurveDesignError, match="No curve moves along dimension 'hue'"):
        curve_indices(table, "hue")
    with pytest.raises(CurveDesignError, match="listed twice"):
        curve_indices(pd.concat([table, table.iloc[[4]]]), "age")
    with pytest.raises(CurveDesignError, match="lacks column"):
        curve_indices(table.drop(columns="index"), "1")
    with pytest.raises(UnknownAttributeError):
        curve_indices(table, "sharpness")


def test_sampled_design_errors():
    with pytest.raises(ValueError, match="at least one curve"):
        sampled_design(0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sampled_design(4, step=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sampled_design(4, nuisance=1.5)
    with pytest.raises(ValueError, match="twice"):
        sampled_design(4, attributes=["hue", "hue"])
    with pytest.raises(UnknownAttributeError):
        sampled_design(4, attributes=["beard"])
    with pytest.raises(UnknownAttributeError):
        sampled_design(4, nuisance={"beard": 0.1})

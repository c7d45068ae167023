"""Arms vs a named control: paired Wilcoxon, Holm within the targeted / side-effect families, run-level
replicates — on constructed data where the answer is known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fr_invariance.metrics.stats import compare_to_control, holm_correction, replicate_effects

ATTRIBUTES = ["head_angle", "contrast", "hue", "age"]


def _values(n_identities: int = 12, effect: float = 0.2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    records = []
    for identity in range(n_identities):
        for attribute in ATTRIBUTES:
            base = rng.uniform(0.3, 0.7)
            for arm in ("none", "contrast@1", "hue@1"):
                shift = effect if (arm == "contrast@1" and attribute == "contrast") else 0.0
                noise = rng.normal(0, 0.01)
                records.append({"setting": "ball 0.6", "arm": arm, "identity": f"id{identity}",
                                "attribute": attribute, "value": base + shift + noise})
    return pd.DataFrame(records)


def test_targeted_effect_found_and_families_corrected_separately():
    values = _values()
    table = compare_to_control(values, control="none", targeted={"contrast@1": "contrast", "hue@1": "hue"})
    assert set(table["arm"]) == {"contrast@1", "hue@1"}
    targeted = table[table["family"] == "targeted"].set_index("arm")
    assert set(targeted.index) == {"contrast@1", "hue@1"}
    assert targeted.loc["contrast@1", "attribute"] == "contrast"
    assert targeted.loc["contrast@1", "delta"] == pytest.approx(0.2, abs=0.02)
    assert targeted.loc["contrast@1", "p_holm"] < 0.01
    assert targeted.loc["hue@1", "p_holm"] > 0.05
    # Holm within the targeted family only (2 tests), side effects separately (6 tests)
    assert np.allclose(targeted["p_holm"].to_numpy(), holm_correction(targeted["p_value"].to_numpy()))
    side = table[table["family"] == "side effect"]
    assert len(side) == 6
    assert np.allclose(side["p_holm"].to_numpy(), holm_correction(side["p_value"].to_numpy()))
    # p-values are scipy's paired Wilcoxon over identities
    pivot = values[values["attribute"] == "contrast"].pivot(index="identity", columns="arm", values="value")
    expected = stats.wilcoxon(pivot["contrast@1"], pivot["none"]).pvalue
    assert targeted.loc["contrast@1", "p_value"] == pytest.approx(expected)
    low, high = targeted.loc["contrast@1", ["ci_low", "ci_high"]]
    assert low < targeted.loc["contrast@1", "delta"] < high


def test_unknown_control_is_an_error():
    with pytest.raises(ValueError, match="control 'nope'"):
        compare_to_control(_values(), control="nope", targeted={})


def test_replicates_compare_with_control_spread():
    per_seed = pd.DataFrame({
        "setting": "ball 0.6", "arm": ["a@1"] * 3 + ["b@1"] * 3, "attribute": "contrast",
        "seed": [1, 2, 3] * 2, "delta": [0.10, 0.12, 0.08, 0.01, -0.02, 0.02],
    })
    controls = pd.DataFrame({"setting": "ball 0.6", "attribute": "contrast", "seed": [1, 2, 3],
                             "value": [0.50, 0.52, 0.49]})
    table = replicate_effects(per_seed, controls).set_index("arm")
    assert table.loc["a@1", "delta_mean"] == pytest.approx(0.10)
    assert table.loc["a@1", "delta_sd"] == pytest.approx(np.std([0.10, 0.12, 0.08], ddof=1))
    assert table.loc["a@1", "control_spread"] == pytest.approx(0.03)
    assert bool(table.loc["a@1", "exceeds_control_spread"]) is True
    assert bool(table.loc["b@1", "exceeds_control_spread"]) is False
    assert (table["n_seeds"] == 3).all()


def test_seeds_are_matched_and_a_missing_control_is_skipped():
    """Arm and control agree at the seeds both ran; the arm's extra seed (offset +0.05) must not pair with
    the control's other seeds. A setting whose control is all NaN yields no rows instead of failing."""
    rng = np.random.default_rng(2)
    records = []
    for identity in range(12):
        base = rng.uniform(0.3, 0.7)
        for arm, seeds in (("none", (1, 2)), ("hue@1", (1, 2, 3))):
            for seed in seeds:
                value = base + (0.05 if seed == 3 else 0.0) + rng.normal(0, 0.001)
                records.append({"setting": "ball 0.6", "arm": arm, "identity": f"id{identity}", "attribute": "hue",
                                "seed": seed, "value": value})
                records.append({"setting": "ball 0.1", "arm": arm, "identity": f"id{identity}", "attribute": "hue",
                                "seed": seed, "value": np.nan if arm == "none" else value})
    table = compare_to_control(pd.DataFrame(records), control="none", targeted={"hue@1": "hue"})
    assert list(table["setting"]) == ["ball 0.6"]
    row = table.iloc[0]
    assert abs(row["delta"]) < 0.002 and row["p_value"] > 0.05 and row["n"] == 12


def test_replicates_without_a_known_spread_are_not_called():
    per_seed = pd.DataFrame({"setting": "ball 0.6", "arm": "a@1", "attribute": "contrast", "seed": [1],
                             "delta": [0.2]})
    controls = pd.DataFrame({"setting": "ball 0.6", "attribute": "contrast", "seed": [1], "value": [0.5]})
    table = replicate_effects(per_seed, controls)
    assert pd.isna(table.loc[0, "control_spread"]) and pd.isna(table.loc[0, "exceeds_control_spread"])

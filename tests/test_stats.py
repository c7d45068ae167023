"""Paired statistics: Wilcoxon against scipy, Holm against a hand computation, seeded bootstrap CI."""

import numpy as np
import pytest
from scipy import stats

from fr_invariance.metrics.stats import holm_correction, paired_comparison


def test_wilcoxon_matches_scipy():
    generator = np.random.default_rng(0)
    a = generator.normal(size=25)
    b = a + generator.normal(0.3, 1.0, size=25)
    result = paired_comparison(a, b)
    expected = stats.wilcoxon(a, b, alternative="two-sided")
    assert result.n == 25
    assert result.statistic == expected.statistic
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.median_difference == pytest.approx(np.median(a - b))


def test_nan_pairs_dropped_and_all_equal_pairs():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    b = np.array([0.5, np.nan, 3.0, 3.0, 4.0])
    result = paired_comparison(a, b)
    assert result.n == 3
    assert result.p_value == pytest.approx(stats.wilcoxon([1.0, 4.0, 5.0], [0.5, 3.0, 4.0]).pvalue)
    same = paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.statistic, same.p_value, same.ci_low, same.ci_high) == (0.0, 1.0, 0.0, 0.0)


def test_bootstrap_ci_contains_true_shift_and_is_seeded():
    generator = np.random.default_rng(1)
    b = generator.normal(size=200)
    a = b + 0.5 + 0.2 * generator.normal(size=200)
    result = paired_comparison(a, b, seed=3)
    assert result.ci_low < 0.5 < result.ci_high
    assert result.ci_low > 0.0  # the shift is detected
    assert result.p_value < 1e-10
    assert paired_comparison(a, b, seed=3) == result
    assert paired_comparison(a, b, seed=4).ci_low != result.ci_low
    wider = paired_comparison(a, b, seed=3, confidence=0.99)
    assert wider.ci_low <= result.ci_low and wider.ci_high >= result.ci_high


def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    adjusted = holm_correction([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_correction([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm_correction([0.2]), [0.2])


def test_errors():
    with pytest.raises(ValueError, match="equal length"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_comparison([1.0, np.nan], [2.0, 3.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_correction([0.1, np.nan])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_correction([1.5])

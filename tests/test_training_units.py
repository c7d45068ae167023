"""Unit tests of the training plumbing: controls, schedules, verification pairs, batch streams, freezing."""

import pytest
import torch
from torch import nn

from fr_invariance.attributes import UnknownAttributeError, attribute_index
from fr_invariance.data.controls import nuisance_ranges, sample_controls, training_ranges, validate_strength
from fr_invariance.data.verification_pairs import sample_pair_indices
from fr_invariance.training.optim import polynomial_warmup_factor


def test_training_ranges_target_attribute_gets_strength():
    ranges = training_ranges("contrast", 0.75, {"hue": 0.05})
    assert ranges[attribute_index("contrast")] == pytest.approx(0.75)
    assert ranges[attribute_index("hue")] == pytest.approx(0.05)
    assert ranges[attribute_index("age")] == pytest.approx(nuisance_ranges()[attribute_index("age")])


def test_baseline_none_keeps_nuisance_ranges():
    assert torch.equal(training_ranges("none", 1.0), nuisance_ranges())


def test_sampled_controls_stay_in_their_ranges_and_fill_them():
    ranges = training_ranges("hue", 1.0)
    controls = sample_controls(20000, ranges, torch.Generator().manual_seed(0))
    assert controls.shape == (20000, 8)
    assert torch.all(controls.abs() <= ranges)
    spread = controls.abs().amax(dim=0)
    assert torch.all(spread > 0.98 * ranges)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_strength_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"aug.strength=.* outside \[0, 1\]"):
        validate_strength(bad)


def test_unknown_attribute_lists_valid_names():
    with pytest.raises(UnknownAttributeError, match="head_angle, age"):
        training_ranges("nose_size", 0.5)


def test_polynomial_schedule_warms_up_then_decays_to_zero():
    assert polynomial_warmup_factor(0, 10, 110, 2.0) == pytest.approx(0.1)
    assert polynomial_warmup_factor(9, 10, 110, 2.0) == pytest.approx(1.0)
    assert polynomial_warmup_factor(10, 10, 110, 2.0) == pytest.approx(1.0)
    assert polynomial_warmup_factor(60, 10, 110, 2.0) == pytest.approx(0.25)
    assert polynomial_warmup_factor(110, 10, 110, 2.0) == pytest.approx(0.0)


def test_verification_pairs_are_half_genuine_and_impostors_differ():
    first, second, issame = sample_pair_indices(7, 100, torch.Generator().manual_seed(1))
    assert issame.sum() == 50
    assert torch.all(first[issame] == second[issame])
    assert torch.all(first[~issame] != second[~issame])
    assert issame[:50].sum() not in (0, 50)  # shuffled: every fold holds both kinds


def test_too_few_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 20 pairs"):
        sample_pair_indices(5, 10, torch.Generator())


def test_freeze_trunk_keeps_only_the_embedding_projection_trainable():
    from fr_invariance.training.module import trunk_parameters

    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    trunk = {id(p) for p in trunk_parameters(backbone)}
    conv, bn2d, _, linear, bn1d = backbone
    assert all(id(p) in trunk for p in [*conv.parameters(), *bn2d.parameters()])
    assert not any(id(p) in trunk for p in [*linear.parameters(), *bn1d.parameters()])

"""Tests of the synthetic face renderer and identity sampler (small sizes, small batches)."""

from __future__ import annotations

import math

import pytest
import torch

from fr_invariance.attributes import ATTRIBUTE_NAMES, NUM_ATTRIBUTES
from fr_invariance.synth import arcface_template, landmarks
from fr_invariance.synth.contact_sheet import LEVELS, contact_sheet, sheet_controls
from fr_invariance.synth.face_geometry import PixelGrid, Profile, cast_profiled_ellipse
from fr_invariance.synth.face_params import (
    HAIR_COLOUR_PATH,
    colour_on_path,
    hair_path_position,
)
from fr_invariance.synth.identity import (
    IDENTITY_PARAM_NAMES,
    NUM_IDENTITY_PARAMS,
    sample_identities,
)
from fr_invariance.synth.render import RenderInputError, render, render_with_masks
from tests.render_helpers import controls_with

SIZE = 56

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread (tests/conftest.py)


def luma(images: torch.Tensor) -> torch.Tensor:
    return 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]


# --- identities ---------------------------------------------------------------------------------------------


def test_identity_parameters_are_named_and_many():
    assert NUM_IDENTITY_PARAMS >= 20
    assert len(IDENTITY_PARAM_NAMES) == NUM_IDENTITY_PARAMS == len(set(IDENTITY_PARAM_NAMES))


def test_sample_identities_shape_range_and_seeds():
    ids = sample_identities(50, seed=3)
    assert ids.shape == (50, NUM_IDENTITY_PARAMS) and ids.dtype == torch.float32
    assert float(ids.min()) >= -1.0 and float(ids.max()) <= 1.0
    assert torch.equal(ids, sample_identities(50, seed=3))
    assert (ids - sample_identities(50, seed=4)).abs().mean() > 0.3
    # every parameter actually varies across identities (roughly uniform: std of U(-1, 1) is 0.577)
    assert torch.all(ids.std(dim=0) > 0.3)


def test_sample_identities_is_prefix_stable_across_blocks():
    long = sample_identities(1100, seed=11)
    assert torch.equal(sample_identities(5, seed=11), long[:5])
    assert torch.equal(sample_identities(1030, seed=11), long[:1030])
    assert sample_identities(0, seed=11).shape == (0, NUM_IDENTITY_PARAMS)


def test_sample_identities_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        sample_identities(-1, seed=0)
    with pytest.raises(ValueError, match="seed must be"):
        sample_identities(3, seed=-2)


# --- hand-computed pieces -----------------------------------------------------------------------------------


def test_hair_path_endpoints_and_colours():
    own = torch.tensor([0.3, 0.7]).reshape(-1, 1, 1)
    assert torch.allclose(hair_path_position(own, torch.full_like(own, -1.0)), torch.zeros_like(own))
    assert torch.allclose(hair_path_position(own, torch.full_like(own, 1.0)), torch.ones_like(own))
    assert torch.allclose(hair_path_position(own, torch.zeros_like(own)), own)
    assert torch.allclose(hair_path_position(own, torch.full_like(own, -0.5)), own * 0.5)
    colours = colour_on_path(torch.tensor([0.0, 1.0, 0.5 / 6]).reshape(-1, 1, 1), HAIR_COLOUR_PATH).reshape(3, 3)
    expected_mid = [(a + b) / 2 for a, b in zip(HAIR_COLOUR_PATH[0], HAIR_COLOUR_PATH[1])]
    assert torch.allclose(colours, torch.tensor([HAIR_COLOUR_PATH[0], HAIR_COLOUR_PATH[-1], expected_mid]))


@pytest.mark.parametrize("yaw_degrees", [0.0, 30.0, -45.0])
def test_ray_cast_of_a_sphere_matches_hand_computation(yaw_degrees):
    """A constant profile with depth ratio 1 is a vertical cylinder of radius r: the hit depth is
    sqrt(r^2 - x^2) and the normal (x, 0, depth) / r whatever the yaw."""
    radius = 0.5
    yaw = math.radians(yaw_degrees)
    traits = {"yaw_sin": torch.tensor(math.sin(yaw)).reshape(1, 1, 1), "yaw_cos": torch.tensor(math.cos(yaw)).reshape(1, 1, 1)}
    x = torch.tensor([-0.4, -0.1, 0.0, 0.3, 0.45]).reshape(1, 1, 5)
    grid = PixelGrid(x, torch.zeros(1, 1, 1), 0.01)
    profile = Profile(torch.full((1, 1, 1), radius), torch.zeros(1, 1, 1))
    hit = cast_profiled_ellipse(grid, traits, profile, torch.ones(1, 1, 1))
    expected_depth = torch.sqrt(radius**2 - x**2)
    assert torch.allclose(hit.depth, expected_depth, atol=1e-5)
    assert torch.allclose(hit.normal[0], x / radius, atol=1e-4)
    assert torch.allclose(hit.normal[2], expected_depth / radius, atol=1e-4)
    assert torch.allclose(hit.coverage, torch.ones_like(hit.coverage))
    far = cast_profiled_ellipse(grid, traits, profile, torch.ones(1, 1, 1), far=True)
    assert torch.allclose(far.depth, -expected_depth, atol=1e-5)


# --- render: contract ---------------------------------------------------------------------------------------


def test_output_shape_dtype_range_and_small_sizes():
    ids = sample_identities(3, seed=0)
    for size in (32, 33, SIZE):
        images = render(ids, controls_with(3, head_angle=0.5, brightness=1.0, contrast=1.0), size)
        assert images.shape == (3, 3, size, size) and images.dtype == torch.float32
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert render(ids[:0], controls_with(0), 32).shape == (0, 3, 32, 32)


def test_deterministic_and_independent_of_batch_composition():
    ids = sample_identities(6, seed=1)
    controls = (torch.rand(6, NUM_ATTRIBUTES, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.8
    first = render(ids, controls, SIZE)
    assert torch.equal(first, render(ids, controls, SIZE))
    # Another batch gives the same pixels up to float rounding (torch's vectorised CPU kernels may
    # take a scalar path for a few elements at thread-chunk edges): far below one 8-bit grey level.
    order = torch.tensor([4, 1, 5, 0])
    alone = render(ids[order], controls[order], SIZE)
    assert torch.allclose(alone, first[order], rtol=0.0, atol=1e-4)
    single = render(ids[2:3], controls[2:3], SIZE)
    assert torch.allclose(single, first[2:3], rtol=0.0, atol=1e-4)


def test_different_identities_look_different():
    images = render(sample_identities(8, seed=5), controls_with(8), SIZE)
    distances = torch.cdist(images.flatten(1), images.flatten(1))
    off_diagonal = distances[~torch.eye(8, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 2.0


@pytest.mark.parametrize(
    "identities, controls, size, message",
    [
        (torch.zeros(2, 5), controls_with(2), SIZE, "identities must be"),
        (torch.zeros(2, NUM_IDENTITY_PARAMS), torch.zeros(2, 5), SIZE, "controls must be a"),
        (torch.zeros(2, NUM_IDENTITY_PARAMS), controls_with(3), SIZE, "same number of rows"),
        (torch.zeros(2, NUM_IDENTITY_PARAMS), controls_with(2), 31, "size must be"),
        (torch.zeros(2, NUM_IDENTITY_PARAMS), controls_with(2, age=1.5), SIZE, r"within \[-1, 1\]"),
        (torch.zeros(2, NUM_IDENTITY_PARAMS), controls_with(2, hue=float("nan")), SIZE, "finite"),
        (torch.full((2, NUM_IDENTITY_PARAMS), float("inf")), controls_with(2), SIZE, "NaN or inf"),
    ],
)
def test_bad_inputs_raise_value_error(identities, controls, size, message):
    with pytest.raises(ValueError, match=message):
        render(identities, controls, size)
    assert issubclass(RenderInputError, ValueError)


# --- render: attributes -------------------------------------------------------------------------------------


def test_every_attribute_changes_the_image_at_both_ends():
    ids = sample_identities(4, seed=2)
    neutral = render(ids, controls_with(4), SIZE)
    for name in ATTRIBUTE_NAMES:
        for value in (-1.0, 1.0):
            changed = render(ids, controls_with(4, **{name: value}), SIZE)
            # at least 1.5 % of the pixels move by more than 4 grey levels (a frown is the most local change)
            moved = ((changed - neutral).abs().amax(dim=1) > 4 / 255).float().mean(dim=(1, 2))
            assert float(moved.min()) > 0.015, (name, value, moved)


def test_hair_color_changes_mostly_hair_pixels():
    ids = sample_identities(6, seed=3)
    neutral, masks = render_with_masks(ids, controls_with(6), SIZE)
    for value in (-1.0, 1.0):
        changed = render(ids, controls_with(6, hair_color=value), SIZE)
        change = (changed - neutral).abs().sum(dim=1)
        in_hair = (change * masks["hair"]).sum(dim=(1, 2)) / change.sum(dim=(1, 2))
        assert float(in_hair.min()) > 0.85, in_hair


def test_expression_changes_mostly_the_face():
    ids = sample_identities(4, seed=4)
    neutral, masks = render_with_masks(ids, controls_with(4), SIZE)
    for value in (-1.0, 1.0):
        change = (render(ids, controls_with(4, expression=value), SIZE) - neutral).abs().sum(dim=1)
        in_skin = (change * masks["skin"]).sum(dim=(1, 2)) / change.sum(dim=(1, 2))
        assert float(in_skin.min()) > 0.8, in_skin


def test_brightness_changes_the_whole_image():
    ids = sample_identities(3, seed=6)
    neutral = render(ids, controls_with(3), SIZE)
    brighter = render(ids, controls_with(3, brightness=0.5), SIZE)
    changed = ((brighter - neutral).abs().amax(dim=1) > 0.01).float().mean(dim=(1, 2))
    assert float(changed.min()) > 0.95


def _centroid_x(weights: torch.Tensor) -> torch.Tensor:
    columns = torch.arange(weights.shape[-1], dtype=torch.float32)
    return (weights * columns).sum(dim=(1, 2)) / weights.sum(dim=(1, 2))


def test_head_angle_moves_the_eyes_with_the_sign_of_t():
    ids = sample_identities(4, seed=7)
    centroids = [_centroid_x(render_with_masks(ids, controls_with(4, head_angle=v), SIZE)[1]["eyes"]) for v in (-1.0, 0.0, 1.0)]
    left, middle, right = centroids
    assert torch.all(left < middle - 2.0) and torch.all(right > middle + 2.0), centroids
    assert torch.all((middle - (SIZE - 1) / 2).abs() < 1.5)  # neutral pose is centred


def test_illumination_shifts_the_left_right_shading_balance_not_a_global_gain():
    ids = sample_identities(4, seed=8)
    half = SIZE // 2

    def balance(value: float) -> torch.Tensor:
        images, masks = render_with_masks(ids, controls_with(4, illumination=value), SIZE)
        skin, y = masks["skin"], luma(images)
        left = (y * skin)[..., :half].sum(dim=(1, 2)) / skin[..., :half].sum(dim=(1, 2))
        right = (y * skin)[..., half:].sum(dim=(1, 2)) / skin[..., half:].sum(dim=(1, 2))
        return left - right

    # -1 = light from the face's right, i.e. from the viewer's left: the left half is brighter.
    assert torch.all(balance(-1.0) > 0.05) and torch.all(balance(1.0) < -0.05)
    assert torch.all(balance(0.0).abs() < balance(-1.0).abs())


def test_identities_differ_more_than_small_nuisance_changes():
    n, repeats = 10, 4
    ids = sample_identities(n, seed=9)
    neutral = render(ids, controls_with(n), SIZE).flatten(1)
    between = torch.pdist(neutral).mean()
    generator = torch.Generator().manual_seed(1)
    nuisance = torch.zeros(n * repeats, NUM_ATTRIBUTES)
    nuisance[:, :5] = (torch.rand(n * repeats, 5, generator=generator) * 2 - 1) * 0.1
    jittered = render(ids.repeat_interleave(repeats, dim=0), nuisance, SIZE).flatten(1)
    within = (jittered - neutral.repeat_interleave(repeats, dim=0)).norm(dim=1).mean()
    assert between > 3.0 * within, (float(between), float(within))


# --- alignment: landmarks on the ArcFace template, and where the features render ---------------------------


def _rms(points: torch.Tensor, reference: torch.Tensor) -> float:
    return float((points - reference).square().sum(dim=-1).mean().sqrt())


def test_mean_identity_landmarks_sit_on_the_arcface_template():
    mean_identity = torch.zeros(1, NUM_IDENTITY_PARAMS)
    at_112 = landmarks(mean_identity, controls_with(1), 112)[0]
    assert at_112.shape == (5, 2)
    assert _rms(at_112, arcface_template(112)) < 1.5, at_112
    for size in (56, 224):
        scaled = landmarks(mean_identity, controls_with(1), size)[0]
        assert _rms(scaled, arcface_template(size)) < 1.5 * size / 112, (size, scaled)
        assert torch.allclose(scaled, at_112 * size / 112, atol=1e-4)
    # Image-level attributes do not move features.
    assert torch.equal(landmarks(mean_identity, controls_with(1, brightness=1.0, hue=-0.5), 112)[0], at_112)


def test_identities_vary_around_the_template():
    points = landmarks(sample_identities(200, seed=12), controls_with(200), 112)
    spread = points.std(dim=0)
    assert torch.all(spread[:, 1] > 0.5) and torch.all(spread[[0, 1, 3, 4], 0] > 0.5), spread  # features move...
    assert float(spread[2, 0]) < 1e-4  # ...except that the nose tip stays on the face's mid-line
    assert _rms(points.mean(dim=0), arcface_template(112)) < 1.5  # ...around the template
    eye_spacing = points[:, 1, 0] - points[:, 0, 0]
    assert float(eye_spacing.min()) > 28.0 and float(eye_spacing.max()) < 43.0


def test_landmarks_follow_head_angle_and_expression():
    ids = sample_identities(3, seed=13)
    neutral = landmarks(ids, controls_with(3), 112)
    turned = landmarks(ids, controls_with(3, head_angle=1.0), 112)
    assert torch.all(turned[:, :, 0] > neutral[:, :, 0] + 3.0)  # t = +1 turns the face to the image's right
    assert torch.allclose(turned[:, :, 1], neutral[:, :, 1])  # yaw keeps rows
    smile = landmarks(ids, controls_with(3, expression=1.0), 112)
    width = lambda p: p[:, 4, 0] - p[:, 3, 0]
    assert torch.all(width(smile) > width(neutral) + 2.0) and torch.all(smile[:, 3:, 1] < neutral[:, 3:, 1] - 1.0)


def _dark_centroid_offsets(luma: torch.Tensor, points: torch.Tensor, window) -> torch.Tensor:
    """Per face and landmark: offset (dx, dy) from the landmark of the centroid of the darkest 30 % (by
    range) of pixels in a window around it. ``window(dx, dy)`` selects pixel-centre offsets."""
    size = luma.shape[-1]
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    offsets = torch.zeros(points.shape)
    for i in range(points.shape[0]):
        for k in range(points.shape[1]):
            dx, dy = xx - points[i, k, 0], yy - points[i, k, 1]
            inside = window(dx, dy)
            values = luma[i][inside]
            dark = values < values.min() + 0.3 * (values.max() - values.min())
            offsets[i, k] = torch.stack((dx[inside][dark].mean(), dy[inside][dark].mean()))
    return offsets


@pytest.mark.parametrize("head_angle", [-1.0, -0.5, 0.0, 0.5, 1.0])
def test_features_render_where_the_landmarks_say(head_angle):
    """Pupils are the darkest spot around the eye landmarks; the nostrils sit just under the nose tip; the
    dark mouth line ends at the mouth corners (centroid of the dark pixels in a 4 px disc)."""
    size = 112
    ids = torch.cat([torch.zeros(1, NUM_IDENTITY_PARAMS), sample_identities(7, seed=21)])
    controls = controls_with(8, head_angle=head_angle)
    images, masks = render_with_masks(ids, controls, size)
    points = landmarks(ids, controls, size)
    y = luma(images)
    eyes = _dark_centroid_offsets(y, points[:, :2], lambda dx, dy: dx * dx + dy * dy < 25.0)
    assert float(eyes.norm(dim=-1).max()) < 2.5, eyes
    pupil = torch.stack([y[i, points[i, k, 1].long(), points[i, k, 0].long()] for i in range(8) for k in range(2)])
    assert float(pupil.max()) < 0.2, pupil  # the landmark pixel itself is pupil / iris
    nose = _dark_centroid_offsets(y, points[:, 2:3], lambda dx, dy: (dx.abs() < 7) & (dy > -1) & (dy < 7))[:, 0]
    assert float(nose[:, 0].abs().max()) < 2.0 and float(nose[:, 1].min()) > 1.0 and float(nose[:, 1].max()) < 4.5, nose
    mouth = _dark_centroid_offsets(y, points[:, 3:], lambda dx, dy: dx * dx + dy * dy < 16.0)
    assert float(mouth.norm(dim=-1).max()) < 3.6, mouth  # of at most 4 px: the dark mouth line is around it
    # A landmark 6 px off would fail: the eye window moved right by 6 px does not centre on the pupil.
    shifted = _dark_centroid_offsets(y, points[:, :2] + torch.tensor([6.0, 0.0]), lambda dx, dy: dx * dx + dy * dy < 25.0)
    assert float(shifted.norm(dim=-1).max()) > 2.5
    # Nothing tested is hidden by hair.
    hair = torch.stack([masks["hair"][i, points[i, :, 1].long(), points[i, :, 0].long()] for i in range(8)])
    assert float(hair.max()) < 0.5


def test_no_hair_flap_across_the_face_at_full_yaw():
    """At yaw +-1 the side hair stops at the temples: the near cheek (beside and below the outer corner of the
    eye on the side turned towards the camera) shows skin, for every hairstyle."""
    ids = sample_identities(24, seed=22)
    for value in (-1.0, 1.0):
        controls = controls_with(24, head_angle=value)
        _, masks = render_with_masks(ids, controls, 112)
        points = landmarks(ids, controls, 112)
        # t = +1 turns the face to the image's right: the side of the head faces the camera on the left.
        eye, outward = (points[:, 0], -1.0) if value > 0 else (points[:, 1], 1.0)
        cheek = eye + torch.tensor([6.0 * outward, 10.0])
        for i in range(24):
            x, y = int(cheek[i, 0]), int(cheek[i, 1])
            assert float(masks["hair"][i, y - 2 : y + 3, x - 2 : x + 3].max()) < 0.05, (i, value)
            assert float(masks["skin"][i, y - 2 : y + 3, x - 2 : x + 3].min()) > 0.95, (i, value)


def _hard_steps(mask: torch.Tensor) -> torch.Tensor:
    """Per image: neighbouring pixel pairs (vertical or horizontal) that jump from < 0.05 to > 0.95 coverage."""
    def jumps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (((a < 0.05) & (b > 0.95)) | ((a > 0.95) & (b < 0.05))).sum(dim=(1, 2))

    return jumps(mask[:, 1:], mask[:, :-1]) + jumps(mask[:, :, 1:], mask[:, :, :-1])


@pytest.mark.parametrize("head_angle", [0.0, 1.0])
def test_silhouette_and_hair_edges_are_anti_aliased(head_angle):
    """Edges of any slope pass through partially covered pixels: few one-pixel jumps from background to
    head-or-hair, or from skin to hair (a stair-stepped outline has one per row or column it crosses; the
    renderer before analytic edge coverage had medians of 40 and 150 here)."""
    ids = sample_identities(8, seed=23)
    _, masks = render_with_masks(ids, controls_with(8, head_angle=head_angle), 112)
    foreground = (masks["skin"] + masks["hair"]).clamp(0.0, 1.0)
    assert float(_hard_steps(foreground).median()) < 25, _hard_steps(foreground)
    assert float(_hard_steps(masks["hair"]).median()) < 70, _hard_steps(masks["hair"])


# --- contact sheet and GPU ----------------------------------------------------------------------------------


def test_sheet_controls_layout():
    controls = sheet_controls(2).reshape(2, NUM_ATTRIBUTES, len(LEVELS), NUM_ATTRIBUTES)
    for attribute in range(NUM_ATTRIBUTES):
        for k, level in enumerate(LEVELS):
            expected = torch.zeros(NUM_ATTRIBUTES)
            expected[attribute] = level
            assert torch.equal(controls[1, attribute, k], expected)


def test_contact_sheet_renders_labelled_grid():
    picture = contact_sheet(num_identities=2, size=32)
    assert picture.size[1] > 2 * 32 and picture.size[0] >= NUM_ATTRIBUTES * 3 * 32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    ids = sample_identities(4, seed=10)
    controls = (torch.rand(4, NUM_ATTRIBUTES, generator=torch.Generator().manual_seed(2)) * 2 - 1) * 0.9
    cpu = render(ids, controls, SIZE)
    cuda = render(ids.cuda(), controls.cuda(), SIZE)
    assert cuda.device.type == "cuda"
    assert torch.allclose(cpu, cuda.cpu(), atol=1e-4)
    assert torch.allclose(render(ids, controls, SIZE, device="cuda").cpu(), cpu, atol=1e-4)

import albumentations as A
import numpy as np
import pytest
import torch

from fr_invariance.attributes import NUM_ATTRIBUTES, UnknownAttributeError, attribute_index
from fr_invariance.data.image_transforms import (
    ImageAttributeTransform,
    apply_attribute_to_numpy,
    augment_batch,
    build_albumentations_augmentation,
    random_image_controls,
)
from fr_invariance.image_ops import apply_image_attributes

IMAGE_NAMES = ("brightness", "contrast", "hue")


def _float_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 0.95, (12, 10, 3)).astype(np.float32)


def _uint8_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)


def _torch_path(image_hwc: np.ndarray, controls_by_name: dict[str, float]) -> np.ndarray:
    """The torch batch path on one float image: (H, W, 3) float in [0, 1] -> same."""
    controls = torch.zeros(1, NUM_ATTRIBUTES)
    for name, t in controls_by_name.items():
        controls[0, attribute_index(name)] = t
    batch = torch.from_numpy(image_hwc).permute(2, 0, 1).unsqueeze(0).float()
    return apply_image_attributes(batch, controls)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("attribute", IMAGE_NAMES)
@pytest.mark.parametrize("t", [-1.0, -0.37, 0.5, 1.0])
def test_albumentations_matches_torch_float32(attribute, t):
    image = _float_image()
    out = ImageAttributeTransform(attribute, t=t)(image=image)["image"]
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, _torch_path(image, {attribute: t}), atol=1e-5)
    assert not np.allclose(out, image, atol=1e-3)  # the control really changed the image


@pytest.mark.parametrize("attribute", IMAGE_NAMES)
@pytest.mark.parametrize("t", [-0.8, 0.3, 1.0])
def test_albumentations_matches_torch_uint8(attribute, t):
    image = _uint8_image()
    out = ImageAttributeTransform(attribute, t=t)(image=image)["image"]
    assert out.dtype == np.uint8 and out.shape == image.shape
    expected = _torch_path(image.astype(np.float32) / 255.0, {attribute: t}) * 255.0
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0


def test_composed_deterministic_pipeline_matches_apply_image_attributes():
    image = _float_image(1)
    controls = {"brightness": 0.2, "contrast": -0.6, "hue": 0.9}
    pipeline = A.Compose([ImageAttributeTransform(name, t=t) for name, t in controls.items()])
    np.testing.assert_allclose(pipeline(image=image)["image"], _torch_path(image, controls), atol=1e-5)


@pytest.mark.parametrize("attribute", IMAGE_NAMES)
def test_zero_control_is_identity(attribute):
    for image in (_uint8_image(2), _float_image(2)):
        out = ImageAttributeTransform(attribute, t=0.0)(image=image)["image"]
        np.testing.assert_array_equal(out, image)


def test_hand_computed_values():
    grey = np.full((2, 2, 3), 100, dtype=np.uint8)
    # brightness: +0.3 * 0.5 = +0.15 -> 100 + 38.25 = 138.25 -> 138
    assert np.all(apply_attribute_to_numpy(grey, "brightness", 0.5) == 138)
    # contrast: gain 2 ** (1.2 t) = 2 at t = 1/1.2; pixels 0.25 / 0.75 around mean luma 0.5 -> 0 / 1
    two_tone = np.array([[[0.25] * 3, [0.75] * 3]], dtype=np.float32)
    np.testing.assert_allclose(
        apply_attribute_to_numpy(two_tone, "contrast", 1 / 1.2), [[[0.0] * 3, [1.0] * 3]], atol=1e-6
    )
    # hue: a grey pixel has no chroma, so any rotation leaves it unchanged
    np.testing.assert_array_equal(apply_attribute_to_numpy(grey, "hue", 0.7), grey)


def test_albumentations_random_path_is_seeded_and_within_range():
    image = _uint8_image(3)
    strengths = {"brightness": 0.4, "contrast": 0.25, "hue": 1.0}

    def run(seed):
        pipeline = build_albumentations_augmentation(strengths, seed=seed)
        images, draws = [], []
        for _ in range(200):
            images.append(pipeline(image=image)["image"])
            draws.append([tr.get_applied_params()["t"] for tr in pipeline.transforms])
        return np.stack(images), np.array(draws)

    images_a, draws_a = run(7)
    images_b, draws_b = run(7)
    _, draws_c = run(8)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(draws_a, draws_b)
    assert not np.allclose(draws_a, draws_c)
    bounds = np.array([0.4, 0.25, 1.0])
    assert np.all(np.abs(draws_a) <= bounds)
    assert np.all(draws_a.min(0) < -0.8 * bounds) and np.all(draws_a.max(0) > 0.8 * bounds)
    # one seed for the whole Compose must not give every attribute the same draw sequence
    normalised = draws_a / bounds
    assert abs(np.corrcoef(normalised[:, 0], normalised[:, 1])[0, 1]) < 0.3


def test_builder_skips_zero_strength_and_keeps_registry_order():
    pipeline = build_albumentations_augmentation({"hue": 0.5, "brightness": 0.2, "contrast": 0.0})
    assert [tr.attribute for tr in pipeline.transforms] == ["brightness", "hue"]
    assert [tr.strength for tr in pipeline.transforms] == [0.2, 0.5]


def test_random_image_controls_seeded_and_within_range():
    strengths = {"brightness": 0.5, "hue": 0.1}
    a = random_image_controls(500, strengths, torch.Generator().manual_seed(0))
    b = random_image_controls(500, strengths, torch.Generator().manual_seed(0))
    assert a.shape == (500, 3) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert a[:, 0].abs().max() <= 0.5 and a[:, 0].min() < -0.4 and a[:, 0].max() > 0.4
    assert torch.all(a[:, 1] == 0)  # contrast not requested
    assert a[:, 2].abs().max() <= 0.1


def test_augment_batch_applies_the_drawn_controls():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    strengths = {"brightness": 0.3, "contrast": 0.6, "hue": 0.9}
    out = augment_batch(images, strengths, torch.Generator().manual_seed(5))
    drawn = random_image_controls(4, strengths, torch.Generator().manual_seed(5))
    controls = torch.zeros(4, NUM_ATTRIBUTES)
    for column, name in enumerate(IMAGE_NAMES):
        controls[:, attribute_index(name)] = drawn[:, column]
    torch.testing.assert_close(out, apply_image_attributes(images, controls))
    # and the per-image albumentations transforms give the same images
    for i in range(4):
        hwc = images[i].permute(1, 2, 0).numpy()
        pipeline = A.Compose([ImageAttributeTransform(n, t=float(drawn[i, c])) for c, n in enumerate(IMAGE_NAMES)])
        np.testing.assert_allclose(pipeline(image=hwc)["image"], out[i].permute(1, 2, 0).numpy(), atol=1e-5)


def test_errors():
    with pytest.raises(UnknownAttributeError, match="Valid attributes"):
        ImageAttributeTransform("sharpness", t=0.1)
    with pytest.raises(UnknownAttributeError, match="semantic"):
        ImageAttributeTransform("age", strength=0.5)
    with pytest.raises(UnknownAttributeError, match="semantic"):
        build_albumentations_augmentation({"head_angle": 0.5})
    with pytest.raises(UnknownAttributeError, match="semantic"):
        random_image_controls(3, {"expression": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_albumentations_augmentation({"hue": 1.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augment_batch(torch.rand(2, 3, 4, 4), {"contrast": -0.1})
    with pytest.raises(ValueError, match="exactly one"):
        ImageAttributeTransform("hue", t=0.1, strength=0.2)
    with pytest.raises(ValueError, match="exactly one"):
        ImageAttributeTransform("hue")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ImageAttributeTransform("hue", t=1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        apply_attribute_to_numpy(np.zeros((4, 4), np.uint8), "brightness", 0.1)
    with pytest.raises(ValueError, match="dtype"):
        apply_attribute_to_numpy(np.zeros((4, 4, 3), np.float64), "brightness", 0.1)

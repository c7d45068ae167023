"""Map identity parameters and semantic controls to the physical traits of one face.

All lengths are in head-frame units (the rendered image spans ``[-1, 1] / camera.ZOOM``
horizontally and vertically), ``y`` points up, ``z`` towards the camera, the head is centred on ``x = z = 0``. Every trait is a
``(N, 1, 1)`` float32 tensor so it broadcasts against ``(N, H, W)`` pixel fields.

Alignment (DESIGN §4): the mean identity (all-zeros parameter vector) at neutral controls has its pupils, nose
tip and mouth corners exactly on the ArcFace template (:data:`camera.TEMPLATE_HEAD_UNITS`); each identity
parameter moves its feature around that mean (:func:`around`), as real faces vary around the template.
"""

from __future__ import annotations

import math

import torch

from fr_invariance.attributes import attribute_index
from fr_invariance.synth.camera import TEMPLATE_HEAD_UNITS
from fr_invariance.synth.identity import IDENTITY_PARAM_NAMES

MAX_YAW_DEGREES = 45.0  # head_angle = +-1
MAX_LIGHT_AZIMUTH_DEGREES = 90.0  # illumination = +-1
HEAD_CENTRE_Y = 0.08
_T = TEMPLATE_HEAD_UNITS

Traits = dict[str, torch.Tensor]

# Natural hair colours from platinum blond (path position 0) to black (1), evenly spaced, RGB in [0, 1].
HAIR_COLOUR_PATH = (
    (0.93, 0.87, 0.70),  # platinum blond
    (0.80, 0.63, 0.36),  # golden blond
    (0.56, 0.40, 0.24),  # light brown
    (0.55, 0.23, 0.11),  # auburn / red
    (0.34, 0.20, 0.11),  # chestnut
    (0.17, 0.10, 0.06),  # dark brown
    (0.05, 0.045, 0.045),  # black
)
IRIS_COLOUR_PATH = (
    (0.20, 0.11, 0.05),  # dark brown
    (0.40, 0.23, 0.10),  # brown
    (0.46, 0.40, 0.17),  # hazel
    (0.28, 0.48, 0.30),  # green
    (0.25, 0.47, 0.72),  # blue
    (0.52, 0.60, 0.68),  # grey
)
SKIN_LIGHT = (0.97, 0.80, 0.69)
SKIN_DARK = (0.33, 0.21, 0.14)
GREY_HAIR = (0.78, 0.78, 0.77)


def lerp_range(p: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map a parameter in ``[-1, 1]`` linearly onto ``[low, high]``."""
    return low + (p + 1.0) * (0.5 * (high - low))


def around(p: torch.Tensor, mean: float, spread: float) -> torch.Tensor:
    """Map a parameter in ``[-1, 1]`` onto ``[mean - spread, mean + spread]`` (``p = 0`` gives ``mean``)."""
    return mean + spread * p


def colour_on_path(position: torch.Tensor, path: tuple[tuple[float, float, float], ...]) -> torch.Tensor:
    """Piecewise-linear colour at ``position`` in ``[0, 1]`` (shape ``(N, 1, 1)``) -> ``(N, 3, 1, 1)``."""
    stops = torch.tensor(path, dtype=torch.float32, device=position.device)
    scaled = position.reshape(-1).clamp(0.0, 1.0) * (len(path) - 1)
    lower = scaled.floor().clamp(max=len(path) - 2).long()
    frac = (scaled - lower).unsqueeze(1)
    colour = stops[lower] + frac * (stops[lower + 1] - stops[lower])
    return colour.reshape(-1, 3, 1, 1)


def own_hair_position(p: torch.Tensor) -> torch.Tensor:
    """Identity's own place on the hair path, in ``[0.12, 0.92]`` (skewed towards dark hair)."""
    return 0.12 + 0.80 * ((p + 1.0) * 0.5) ** 0.7


def hair_path_position(own: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``hair_color`` control: ``t = -1`` platinum (0), ``0`` own position, ``+1`` black (1), linear between."""
    return torch.where(t < 0, own * (1.0 + t), own + t * (1.0 - own))


def face_traits(identities: torch.Tensor, controls: torch.Tensor) -> Traits:
    """Physical traits of each face, every value ``(N, 1, 1)`` (colours ``(N, 3, 1, 1)``)."""
    p = {name: identities[:, i].reshape(-1, 1, 1) for i, name in enumerate(IDENTITY_PARAM_NAMES)}

    def control(name: str) -> torch.Tensor:
        return controls[:, attribute_index(name)].reshape(-1, 1, 1)

    yaw = control("head_angle") * math.radians(MAX_YAW_DEGREES)
    age = control("age")
    old, young = age.clamp(min=0.0), (-age).clamp(min=0.0)
    expression = control("expression")
    smile, frown = expression.clamp(min=0.0), (-expression).clamp(min=0.0)
    light_azimuth = control("illumination") * math.radians(MAX_LIGHT_AZIMUTH_DEGREES)

    t: Traits = {
        "yaw_sin": torch.sin(yaw),
        "yaw_cos": torch.cos(yaw),
        "light_sin": torch.sin(light_azimuth),
        "light_cos": torch.cos(light_azimuth),
        "age": age,
        "old": old,
        "young": young,
        "smile": smile,
        "frown": frown,
    }
    # Head outline: half-width, half-height, jaw squareness, chin taper, depth/width ratio.
    t["head_half_width"] = lerp_range(p["face_width"], 0.49, 0.60) * (1.0 + 0.03 * young)
    t["head_half_height"] = lerp_range(p["face_length"], 0.76, 0.86)
    t["jaw_exponent"] = lerp_range(p["jaw_width"], 1.7, 3.4) + 0.8 * old
    t["chin_taper"] = lerp_range(p["chin_shape"], 0.0, 0.30) * (1.0 - 0.5 * old)
    t["depth_ratio"] = lerp_range(p["cheek_fullness"], 0.95, 1.15)
    # Skin.
    tone = ((p["skin_tone"] + 1.0) * 0.5).reshape(-1, 1, 1, 1)
    light, dark = (torch.tensor(c, device=identities.device).reshape(1, 3, 1, 1) for c in (SKIN_LIGHT, SKIN_DARK))
    skin = light + tone**1.3 * (dark - light)
    undertone = torch.tensor((0.035, -0.012, -0.03), device=identities.device).reshape(1, 3, 1, 1)
    skin = skin + p["skin_undertone"].reshape(-1, 1, 1, 1) * undertone * (1.0 - 0.6 * tone)
    grey = skin.mean(dim=1, keepdim=True)
    t["skin_colour"] = (skin + 0.25 * old.unsqueeze(1) * (grey - skin) + 0.03 * young.unsqueeze(1)).clamp(0.0, 1.0)
    # Eyes: (eye_x, eye_y) is the pupil centre (the eye landmark); the lids open around a line slightly lower.
    t["eye_y"] = around(p["eye_height"], _T["eye_y"], 0.035)
    t["eye_x"] = around(p["eye_spacing"], _T["eye_x"], 0.022)
    t["eye_half_width"] = around(p["eye_size"], 0.103, 0.014) * (1.0 + 0.05 * young)
    t["eye_open"] = t["eye_half_width"] * 0.45 * (1.0 - 0.4 * smile - 0.3 * frown) * (1.0 - 0.12 * old)
    t["eye_tilt"] = lerp_range(p["eye_tilt"], -0.15, 0.22) - 0.08 * old
    t["iris_colour"] = colour_on_path((p["iris_color"] + 1.0) * 0.5, IRIS_COLOUR_PATH)
    # Brows.
    t["brow_y"] = t["eye_y"] + lerp_range(p["brow_height"], 0.105, 0.165) + 0.028 * smile - 0.055 * frown
    t["brow_thickness"] = lerp_range(p["brow_thickness"], 0.011, 0.027)
    t["brow_arch"] = lerp_range(p["brow_arch"], 0.0, 0.04)
    t["brow_inner_drop"] = 0.09 * frown - 0.012 * smile
    # Nose: (0, nose_tip_y) is the nose-tip landmark.
    t["nose_tip_y"] = t["eye_y"] - around(p["nose_length"], _T["eye_y"] - _T["nose_tip_y"], 0.03)
    t["nose_half_width"] = lerp_range(p["nose_width"], 0.055, 0.09) * (1.0 + 0.08 * smile)
    t["nose_height"] = lerp_range(p["nose_prominence"], 0.05, 0.10)
    # Mouth: the corners (+-mouth_half_width, mouth_y + mouth_curve) are the mouth landmarks.
    t["mouth_y"] = t["nose_tip_y"] - around(-p["mouth_height"], _T["nose_tip_y"] - _T["mouth_corner_y"], 0.03) - 0.01 * old
    t["mouth_half_width"] = around(p["mouth_width"], _T["mouth_half_width"], 0.025) * (1.0 + 0.2 * smile - 0.1 * frown)
    t["lip_thickness"] = lerp_range(p["lip_fullness"], 0.026, 0.05) * (1.0 - 0.3 * old - 0.35 * smile - 0.35 * frown)
    t["mouth_curve"] = 0.06 * smile - 0.075 * frown
    t["mouth_open"] = 0.065 * ((smile - 0.2).clamp(min=0.0) / 0.8)
    lip = colour_on_path((p["lip_color"] + 1.0) * 0.5, ((0.80, 0.45, 0.45), (0.66, 0.30, 0.30), (0.48, 0.22, 0.20)))
    t["lip_colour"] = 0.7 * lip + 0.3 * t["skin_colour"]
    # Hair.
    t["hairline_y"] = HEAD_CENTRE_Y + lerp_range(p["hairline_height"], 0.34, 0.54) + 0.08 * old
    t["hair_bottom_y"] = lerp_range(p["hair_length"], 0.02, -0.95)
    t["hair_volume"] = lerp_range(p["hair_volume"], 0.035, 0.13)
    t["hair_part"] = p["hair_part"]
    t["fringe"] = p["fringe"].clamp(min=0.0)
    own_hair = own_hair_position(p["hair_color"])
    hair = colour_on_path(hair_path_position(own_hair, control("hair_color")), HAIR_COLOUR_PATH)
    greying = (0.85 * ((old - 0.1) / 0.9).clamp(0.0, 1.0)).unsqueeze(1)
    grey_hair = torch.tensor(GREY_HAIR, device=identities.device).reshape(1, 3, 1, 1)
    t["hair_colour"] = hair + greying * (grey_hair - hair)
    brow = colour_on_path(own_hair.clamp(min=0.35), HAIR_COLOUR_PATH) * 0.8
    t["brow_colour"] = brow + 0.6 * greying * (grey_hair - brow)
    # Ears and skin marks.
    t["ear_scale"] = lerp_range(p["ear_size"], 0.95, 1.25)
    t["ear_y"] = t["eye_y"] + lerp_range(p["ear_height"], -0.14, -0.06)
    t["freckles"] = p["freckles"].clamp(min=0.0)
    t["facial_hair"] = p["facial_hair"].clamp(min=0.0)
    return t

"""The renderer's camera and the ArcFace 5-point template it is aligned to (DESIGN §4).

Camera: orthographic, looking down ``-z``; the image spans ``[-1, 1] / ZOOM`` head-frame units in ``x``
(right) and ``y`` (up), whatever its size. Pixel coordinates are continuous: the image covers
``[0, size] x [0, size]``, pixel ``(i, j)`` (column, row) covers ``[i, i + 1] x [j, j + 1]`` and has its
centre at ``(i + 0.5, j + 0.5)``; ``x`` grows to the right, ``y`` downwards. In that convention the
insightface ArcFace template below is centred on the 112 px image (its mean ``x`` is 56.03) and scales
to any size by ``size / 112``.
"""

from __future__ import annotations

import torch

ZOOM = 1.34  # the image shows head-frame coordinates [-1/ZOOM, 1/ZOOM]: a face-filling, ArcFace-like crop

TEMPLATE_SIZE = 112
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),  # eye centre on the image's left (the subject's right eye)
    (73.5318, 51.5014),  # eye centre on the image's right
    (56.0252, 71.7366),  # nose tip
    (41.5493, 92.3655),  # mouth corner on the image's left
    (70.7299, 92.2041),  # mouth corner on the image's right
)
"""insightface's ArcFace alignment template, ``(x, y)`` pixels of a 112 x 112 crop, in landmark order."""
LANDMARK_NAMES = ("left_eye", "right_eye", "nose_tip", "left_mouth_corner", "right_mouth_corner")
"""Landmark order (ArcFace's): "left" is the image's left, i.e. the subject's right."""


def arcface_template(size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """The ArcFace template scaled to a ``size`` px image: ``(5, 2)`` float32 pixel coordinates."""
    return torch.tensor(ARCFACE_TEMPLATE, dtype=torch.float32) * (size / TEMPLATE_SIZE)


def head_to_pixels(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Camera-frame head units ``(x, y)`` (any equal shapes) -> pixel coordinates ``(..., 2)`` of a ``size`` image."""
    half = size / 2.0
    return torch.stack(((x * ZOOM + 1.0) * half, (1.0 - y * ZOOM) * half), dim=-1)


def pixels_to_head(px: float, py: float, size: int = TEMPLATE_SIZE) -> tuple[float, float]:
    """Pixel coordinates of a ``size`` image -> camera-frame head units ``(x, y)`` (inverse of head_to_pixels)."""
    half = size / 2.0
    return (px / half - 1.0) / ZOOM, (1.0 - py / half) / ZOOM


def _template_in_head_units() -> dict[str, float]:
    """Where the template puts the features, in head units (symmetrised about ``x = 0``)."""
    points = [pixels_to_head(px, py) for px, py in ARCFACE_TEMPLATE]
    return {
        "eye_x": (points[1][0] - points[0][0]) / 2.0,
        "eye_y": (points[0][1] + points[1][1]) / 2.0,
        "nose_tip_y": points[2][1],
        "mouth_half_width": (points[4][0] - points[3][0]) / 2.0,
        "mouth_corner_y": (points[3][1] + points[4][1]) / 2.0,
    }


TEMPLATE_HEAD_UNITS: dict[str, float] = _template_in_head_units()
"""Feature positions of the mean identity at neutral controls, in head units (``face_params`` is built on them)."""

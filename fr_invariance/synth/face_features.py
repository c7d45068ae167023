"""Facial features painted on the head in decal coordinates, and the bump map of nose, lips and cheeks.

Decal coordinates are the head-frame ``(x, y)`` of the skin hit point (front projection onto the face):
they turn and foreshorten with the head. ``fx`` is ``(N, h, w)``, ``fy`` the rows' ``(1, h, 1)`` heights.
Features are signed-distance shapes; ``coverage(d) = clamp(0.5 - d / pixel, 0, 1)`` anti-aliases them.
Each painter works on a fixed band of rows (the same for every identity and control), which keeps the
cost down and makes every pixel independent of the batch composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from fr_invariance.synth.face_params import Traits

SCLERA = (0.90, 0.88, 0.86)
PUPIL = (0.03, 0.02, 0.02)
LASH = (0.07, 0.05, 0.05)
MOUTH_INSIDE = (0.16, 0.05, 0.05)
TEETH = (0.88, 0.86, 0.80)
BLUSH = (0.85, 0.35, 0.35)

# Row bands (head-frame y ranges) that contain each feature for every identity and control.
EYE_BAND = (-0.10, 0.20)
BROW_BAND = (0.02, 0.33)
FOREHEAD_BAND = (0.10, 0.72)
FACIAL_HAIR_BAND = (-0.82, 0.02)
NOSE_BAND = (-0.34, -0.10)
MOUTH_BAND = (-0.78, -0.09)


Number = float | torch.Tensor  # a constant or a per-face (N, 1, 1) trait
BumpPart = Callable[[torch.Tensor, torch.Tensor, Traits], tuple[torch.Tensor, torch.Tensor]]


class Bump(NamedTuple):
    """Gradient ``(dh/dx, dh/dy)`` of the height field over a row band, each ``(N, h, w)``."""

    dx: torch.Tensor
    dy: torch.Tensor


def coverage(distance: torch.Tensor, pixel: float) -> torch.Tensor:
    """Anti-aliased inside-ness of a signed distance (negative inside)."""
    return (0.5 - distance / pixel).clamp(0.0, 1.0)


def band_limit(wavenumber: float, pixel: float) -> float:
    """Amplitude left of a sinusoidal texture of ``wavenumber`` (radians per head unit) after a Gaussian
    pre-filter of one half pixel (sigma): ``exp(-(k pixel)^2 / 8)``. Textures finer than the pixels fade
    out instead of aliasing into moire."""
    return math.exp(-((wavenumber * pixel) ** 2) / 8.0)


def _rgb(colour: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(colour, dtype=like.dtype, device=like.device).reshape(1, 3, 1, 1)


def paint(albedo: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> None:
    """Blend ``colour`` (``(1|N, 3, 1, 1)`` or per pixel) over ``albedo`` ``(N, 3, h, w)`` with ``alpha`` ``(N, h, w)``."""
    albedo.addcmul_(alpha.unsqueeze(1), colour - albedo)


def darken(albedo: torch.Tensor, amount: torch.Tensor) -> None:
    """Multiply ``albedo`` by ``1 - amount`` (``amount`` ``(N, h, w)``)."""
    albedo.mul_(1.0 - amount.unsqueeze(1))


def _crease(distance: torch.Tensor, width: float) -> torch.Tensor:
    return torch.exp(-((distance / width) ** 2))


def paint_eyes(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits, pixel: float) -> torch.Tensor:
    """Sockets, sclera, iris, pupil, lashes, lid crease; age adds bags and crow's feet.
    The pupil centre is ``(+-eye_x, eye_y)``; the lids open around a line ``0.15 * eye_open`` lower.
    Returns the eye-opening coverage ``(N, h, w)``."""
    half_width, opening = t["eye_half_width"], t["eye_open"]
    dx = fx.abs() - t["eye_x"]  # positive towards the outer corner
    dy = fy - (t["eye_y"] - 0.15 * opening) - t["eye_tilt"] * dx
    along = (1.0 - (dx / half_width) ** 2).clamp(min=0.0)
    upper = opening * along.sqrt() * 1.05
    lower = opening * 0.7 * along
    socket = torch.exp(-((dx / (1.5 * half_width)) ** 2) - ((dy - 0.3 * opening) / (2.6 * opening + 0.02)) ** 2)
    darken(albedo, 0.13 * socket + 0.07 * t["old"] * socket)
    lid_crease = _crease(dy - upper - 0.45 * opening - 0.006, 0.006) * (dx.abs() < half_width)
    darken(albedo, 0.25 * lid_crease)
    bags = _crease(dy + lower + 0.018 + 0.01 * t["old"], 0.006) * (dx.abs() < 0.8 * half_width)
    darken(albedo, (0.28 * t["old"] + 0.08 * t["smile"]) * bags)
    corner_x = dx - half_width
    radius = torch.sqrt(corner_x**2 + dy**2)
    rays = torch.cos(7.0 * torch.atan2(dy, corner_x.clamp(min=1e-4))) ** 8
    crows_feet = rays * ((radius - 0.012) / 0.008).clamp(0.0, 1.0) * ((0.06 - radius) / 0.02).clamp(0.0, 1.0)
    darken(albedo, (0.3 * t["old"] + 0.12 * t["smile"]) * crows_feet * (corner_x > 0))
    inside = torch.maximum(torch.maximum(dy - upper, -lower - dy), dx.abs() - half_width)
    eye = coverage(inside, pixel)
    paint(albedo, eye, _rgb(SCLERA, albedo))
    iris_radius = 0.5 * half_width
    iris_distance = torch.sqrt(dx**2 + (dy - 0.15 * opening) ** 2)
    iris = coverage(iris_distance - iris_radius, pixel) * eye
    ring = ((iris_distance - 0.7 * iris_radius) / (0.3 * iris_radius)).clamp(0.0, 1.0)
    paint(albedo, iris, t["iris_colour"] * (1.0 - 0.45 * ring.unsqueeze(1)))
    paint(albedo, coverage(iris_distance - 0.42 * iris_radius, pixel) * eye, _rgb(PUPIL, albedo))
    lash = (dy - upper).abs() - (0.007 + 0.005 * (dx / half_width).clamp(min=0.0))
    lash = torch.maximum(lash, dx.abs() - 1.08 * half_width)
    paint(albedo, 0.9 * coverage(lash, pixel), _rgb(LASH, albedo))
    return eye


def paint_brows(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits, pixel: float) -> None:
    """Arched, tapering brows; a frown lowers their inner ends and adds glabella creases."""
    half_length = 1.3 * t["eye_half_width"]
    s = ((fx.abs() - t["eye_x"] - 0.012) / half_length).clamp(-1.0, 1.0)
    centre_line = t["brow_y"] + t["brow_arch"] * (1.0 - s * s) - t["brow_inner_drop"] * (1.0 - s) * 0.5
    centre_line = centre_line - 0.02 * s.clamp(min=0.0) ** 2
    thickness = t["brow_thickness"] * (1.0 - 0.5 * s.clamp(min=0.0))
    along = (fx.abs() - t["eye_x"] - 0.012).abs() - half_length
    distance = torch.maximum((fy - centre_line).abs() - thickness, along)
    paint(albedo, 0.92 * coverage(distance, pixel), t["brow_colour"])
    glabella = _crease(fx.abs() - 0.025, 0.005) * ((fy - t["eye_y"] - 0.03) / 0.03).clamp(0.0, 1.0)
    glabella = glabella * ((t["brow_y"] + 0.04 - fy) / 0.03).clamp(0.0, 1.0)
    darken(albedo, (0.5 * t["frown"] + 0.12 * t["old"]) * glabella)


def paint_forehead_wrinkles(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> None:
    """Horizontal forehead lines, growing with age."""
    phase = (fy - t["brow_y"] - 0.02 + 0.012 * torch.sin(9.0 * fx)) / 0.042
    lines = ((torch.cos(6.2832 * phase) - 0.8) * 5.0).clamp(min=0.0)
    band = ((fy - t["brow_y"] - 0.03) / 0.02).clamp(0.0, 1.0) * ((t["hairline_y"] - 0.04 - fy) / 0.03).clamp(0.0, 1.0)
    darken(albedo, 0.28 * t["old"] * lines * band * (1.0 - (fx / 0.3) ** 2).clamp(min=0.0))


def paint_nose(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits, pixel: float) -> None:
    """Nostrils and the shadow under the tip (the shape itself comes from the bump map)."""
    width = t["nose_half_width"]
    dx = (fx.abs() - 0.5 * width) / 0.022
    dy = (fy - t["nose_tip_y"] + 0.042) / 0.011
    nostril = coverage((torch.sqrt(dx * dx + dy * dy) - 1.0) * 0.011, pixel)
    darken(albedo, 0.62 * nostril)
    wing = _crease(torch.sqrt((fx.abs() - 0.9 * width) ** 2 + (fy - t["nose_tip_y"] + 0.02) ** 2) - 0.025, 0.006)
    darken(albedo, 0.18 * wing * (fy < t["nose_tip_y"] - 0.005))


def paint_facial_hair(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits, pixel: float) -> None:
    """Stubble (``facial_hair`` up to 0.5) growing into a full beard and moustache, in the identity's own
    brow colour (it greys with age; the ``hair_color`` control leaves it alone). Paint before the mouth."""
    amount = t["facial_hair"]
    ax = fx.abs()
    # Beard line: just above the mouth in the middle, rising along the cheeks towards the sideburns.
    top = t["mouth_y"] + 0.06 + 0.55 * (ax - 0.14).clamp(min=0.0) ** 1.5 * (1.0 + amount)
    beard = ((top - fy) / 0.03).clamp(0.0, 1.0)
    # Moustache: under the nose, widening down to the mouth corners (part of the beard once it is full).
    nose_base = t["nose_tip_y"] - 0.05
    drop = ((nose_base - fy) / (nose_base - t["mouth_y"])).clamp(0.0, 1.0)
    half_width = t["nose_half_width"] + drop * (t["mouth_half_width"] + 0.02 - t["nose_half_width"])
    moustache = ((nose_base - fy) / 0.015).clamp(0.0, 1.0) * ((half_width - ax) / 0.015).clamp(0.0, 1.0)
    region = torch.maximum(beard, moustache * (amount * 2.0 - 0.6).clamp(0.0, 1.0))
    density = (amount * 2.0).clamp(max=1.0) * (0.45 + 0.5 * (amount - 0.5).clamp(min=0.0) * 2.0)
    amplitude = 0.2 * band_limit(350.0, pixel)  # whiskers: only drawn where the pixels can resolve them
    if amplitude > 0.02:
        texture = torch.sin(350.0 * fx + 30.0 * torch.sin(70.0 * fy)) * torch.sin(290.0 * fy + 13.0 * fx)
        region = region * (0.8 + amplitude * texture)
    else:
        region = region * 0.8
    paint(albedo, region * density, t["brow_colour"])


def paint_mouth(albedo: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, t: Traits, pixel: float) -> None:
    """Lips, the mouth line, the open smile with teeth; nasolabial and marionette folds."""
    half_width = t["mouth_half_width"]
    s = fx / half_width
    along = (1.0 - s * s).clamp(min=0.0)
    line = t["mouth_y"] + t["mouth_curve"] * s * s
    root = along.sqrt()
    opening = t["mouth_open"] * root
    bow = 1.0 - 0.35 * torch.exp(-((fx / 0.02) ** 2))
    thickness = t["lip_thickness"]
    upper_top = line + 0.3 * opening + 0.8 * thickness * root * bow
    lower_bottom = line - 0.7 * opening - 1.1 * thickness * root
    width_edge = fx.abs() - half_width
    lips = torch.maximum(torch.maximum(fy - upper_top, lower_bottom - fy), width_edge)
    paint(albedo, coverage(lips, pixel), t["lip_colour"])
    inside = torch.maximum(torch.maximum(fy - line - 0.3 * opening, line - 0.7 * opening - fy), width_edge)
    paint(albedo, coverage(inside, pixel), _rgb(MOUTH_INSIDE, albedo))
    teeth = torch.maximum(torch.maximum(fy - line - 0.3 * opening, line - 0.1 * opening - fy), width_edge + 0.015)
    paint(albedo, coverage(teeth, pixel) * (opening > 0.004), _rgb(TEETH, albedo))
    parting = (fy - line).abs() - 0.0035
    darken(albedo, 0.55 * coverage(torch.maximum(parting, width_edge), pixel))
    # Folds: from the nose wing to beyond the mouth corner (smile, age), and down from the corner (age).
    corner_y = t["mouth_y"] + t["mouth_curve"]
    start_x, start_y = t["nose_half_width"] + 0.02, t["nose_tip_y"]
    end_x, end_y = half_width + 0.03, corner_y - 0.03
    fold = _crease(_curve_distance(fx.abs(), fy, start_x, start_y, end_x, end_y), 0.007)
    darken(albedo, (0.3 * t["smile"] + 0.3 * t["old"]) * fold)
    marionette = _segment_distance(fx.abs(), fy, half_width + 0.005, corner_y - 0.02, half_width + 0.025, corner_y - 0.085)
    darken(albedo, (0.25 * t["old"] + 0.3 * t["frown"]) * _crease(marionette, 0.006))
    blush = torch.exp(-(((fx.abs() - 0.28) / 0.09) ** 2)) * torch.exp(-(((fy - t["nose_tip_y"] + 0.07) / 0.06) ** 2))
    paint(albedo, 0.12 * t["smile"] * blush, _rgb(BLUSH, albedo))


def _curve_distance(
    px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
) -> torch.Tensor:
    """Approximate distance from ``(px, py)`` to the outward-bowed curve ``x = ax + (bx - ax) sqrt(u)``,
    ``u = (ay - y) / (ay - by)`` in ``[0, 1]`` (from ``a`` down to ``b``; a nasolabial fold): the horizontal gap
    scaled by the chord's slope factor, growing past the ends."""
    u = (ay - py) / (ay - by)
    inside = u.clamp(0.0, 1.0)
    gap = (px - ax - (bx - ax) * inside.sqrt()) * torch.rsqrt(1.0 + ((bx - ax) / (ay - by)) ** 2)
    beyond = (u - inside) * (ay - by)
    return torch.sqrt(gap * gap + beyond * beyond)


def _segment_distance(
    px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
) -> torch.Tensor:
    """Distance from points ``(px, py)`` to the segments ``a -> b`` (all broadcastable)."""
    ux, uy = bx - ax, by - ay
    h = (((px - ax) * ux + (py - ay) * uy) / (ux * ux + uy * uy)).clamp(0.0, 1.0)
    return torch.sqrt((px - ax - h * ux) ** 2 + (py - ay - h * uy) ** 2)


def _gaussian(
    fx: torch.Tensor, fy: torch.Tensor, cx: Number, cy: Number, sx: Number, sy: Number, amplitude: Number
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the height ``amplitude * exp(-(dx^2/sx^2 + dy^2/sy^2) / 2)``; separable, so the
    y factor is computed once per row."""
    dx, dy = (fx - cx) / sx, (fy - cy) / sy
    row = amplitude * torch.exp(-0.5 * dy * dy)
    h = torch.exp(-0.5 * dx * dx) * row
    return h * (-dx / sx), h * (-dy / sy)


def _nose_bridge(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    """A ridge rising linearly from between the eyes to the nose tip, fading out just below it."""
    tip_y = t["nose_tip_y"]
    length = t["eye_y"] - tip_y
    rise = ((t["eye_y"] - fy) / length).clamp(0.0, 1.0)
    d_rise = torch.where((rise > 0) & (rise < 1), -1.0 / length, torch.zeros_like(rise))
    fade = ((fy - tip_y + 0.05) / 0.05).clamp(0.0, 1.0)
    d_fade = torch.where((fade > 0) & (fade < 1), torch.full_like(fade, 20.0), torch.zeros_like(fade))
    sigma = 0.35 * t["nose_half_width"]
    ridge = torch.exp(-0.5 * (fx / sigma) ** 2) * (0.6 * t["nose_height"])
    return ridge * fx * (-rise * fade / (sigma * sigma)), ridge * (d_rise * fade + rise * d_fade)


def _mirrored(part: BumpPart) -> BumpPart:
    """A bump defined for ``x >= 0``, mirrored to both sides of the face."""

    def both_sides(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
        gx, gy = part(fx.abs(), fy, t)
        return gx * torch.sign(fx), gy

    return both_sides


def _nose_tip(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    return _gaussian(fx, fy, 0.0, t["nose_tip_y"], 0.8 * t["nose_half_width"], 0.05, 0.5 * t["nose_height"])


def _nose_wing(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    width = t["nose_half_width"]
    return _gaussian(fx, fy, 0.8 * width, t["nose_tip_y"] - 0.012, 0.3 * width, 0.028, 0.35 * t["nose_height"])


def _lower_lip(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    return _gaussian(fx, fy, 0.0, t["mouth_y"] - 0.035, t["mouth_half_width"] * 0.7, 0.02, 0.5 * t["lip_thickness"])


def _chin(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    return _gaussian(fx, fy, 0.0, t["mouth_y"] - 0.19, 0.08, 0.05, 0.022)


def _cheek(fx: torch.Tensor, fy: torch.Tensor, t: Traits) -> tuple[torch.Tensor, torch.Tensor]:
    """Cheeks, raised and rounded by a smile."""
    return _gaussian(fx, fy, 0.27, t["nose_tip_y"] - 0.03 + 0.03 * t["smile"], 0.09, 0.07, 0.035 * t["smile"] + 0.01)


# (row band that holds the bump for every identity and control, gradient function of (fx, fy, traits))
BUMP_PARTS: tuple[tuple[tuple[float, float], BumpPart], ...] = (
    ((-0.35, 0.10), _nose_bridge),
    ((-0.42, -0.02), _nose_tip),
    ((-0.38, -0.07), _mirrored(_nose_wing)),
    ((-0.72, -0.36), _lower_lip),
    ((-1.0, -0.45), _chin),
    ((-0.50, 0.08), _mirrored(_cheek)),
)
BUMP_BAND = (min(band[0] for band, _ in BUMP_PARTS), max(band[1] for band, _ in BUMP_PARTS))

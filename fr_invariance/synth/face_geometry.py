"""Ray casting of the analytic head: skull/face, hair shell, ears and neck, under a yaw rotation.

Camera (:mod:`fr_invariance.synth.camera`): orthographic, looking down ``-z``; the image spans
``[-1, 1] / ZOOM`` in ``x`` (right) and ``y`` (up).
The head yaws about the vertical axis, so a pixel row ``y`` stays the same row in the head frame and each
body part's horizontal cross-section at height ``y`` is an ellipse (half-width ``a(y)``, half-depth
``depth_ratio * a(y)``). The ray/ellipse intersection is then closed-form per pixel, with an arbitrary
outline profile ``a(y)`` (cranium, cheeks, jaw, chin). Ears are small ellipsoids, the neck an elliptic
cylinder. Every field is ``(N, H, W)`` (or broadcastable: per-row ``(N, H, 1)``), float32.
Silhouettes are anti-aliased analytically: coverage is ``0.5 +`` the signed distance of the pixel centre to
the outline (horizontal distance divided by the outline's slope factor ``sqrt(1 + a'(y)^2)``), in pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch

from fr_invariance.synth.camera import ZOOM, head_to_pixels
from fr_invariance.synth.face_params import HEAD_CENTRE_Y, Traits

_EPS = 1e-6
__all__ = ["ZOOM"]  # re-exported for the renderer


class PixelGrid(NamedTuple):
    """Pixel-centre coordinates (head-frame units): ``x`` ``(1, 1, W)``, ``y`` ``(1, H, 1)``; ``pixel`` = pixel width.
    A sub-window of the image is a grid with sliced ``x``/``y``."""

    x: torch.Tensor
    y: torch.Tensor
    pixel: float


@lru_cache(maxsize=16)
def pixel_grid(size: int, device: torch.device) -> PixelGrid:
    """Cached grid of a ``size x size`` image on ``device``."""
    centres = ((torch.arange(size, dtype=torch.float32, device=device) + 0.5) * (2.0 / size) - 1.0) / ZOOM
    return PixelGrid(centres.reshape(1, 1, size), (-centres).reshape(1, size, 1), 2.0 / size / ZOOM)


class SurfaceHit(NamedTuple):
    """Where each pixel's ray meets one surface.

    ``coverage`` in [0, 1] (anti-aliased silhouette), ``depth`` camera ``z`` of the hit (larger = nearer),
    ``x``/``z`` head-frame hit coordinates (the head-frame ``y`` is the pixel row's ``y``),
    ``normal`` unit normal in the camera frame, a tuple of its three ``(N, H, W)`` components.
    """

    coverage: torch.Tensor
    depth: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    normal: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Profile(NamedTuple):
    """Half-width ``a(y)`` ``(N, H, 1)`` and its log-derivative ``d log a / dy``."""

    half_width: torch.Tensor
    log_slope: torch.Tensor


def head_profile(y: torch.Tensor, traits: Traits, scale: torch.Tensor | float = 1.0) -> Profile:
    """Outline of the head (cranium + jaw) at heights ``y``, optionally inflated by ``scale`` about its centre.

    ``u = (y - centre) / half_height``; ``a = W sqrt(1 - |u|^n) (1 - taper * max(-u, 0)^2)`` with ``n = 2``
    above the centre (round cranium) and the identity's jaw exponent below (square vs. tapered jaw).
    """
    half_height = traits["head_half_height"] * scale
    u = ((y - HEAD_CENTRE_Y) / half_height).clamp(-0.9999, 0.9999)
    exponent = torch.where(u >= 0, torch.full_like(u, 2.0), traits["jaw_exponent"])
    abs_u = u.abs()
    power = abs_u**exponent
    inside = (1.0 - power).clamp(min=_EPS)
    below = (-u).clamp(min=0.0)
    taper = 1.0 - traits["chin_taper"] * below * below
    half_width = traits["head_half_width"] * scale * inside.sqrt() * taper * (abs_u < 0.9999)
    d_log_du = -0.5 * exponent * power / (abs_u.clamp(min=_EPS) * inside) * torch.sign(u)
    d_log_du = d_log_du + 2.0 * traits["chin_taper"] * below / taper
    return Profile(half_width, d_log_du / half_height)


def _rotate_to_camera(
    nx: torch.Tensor, ny: torch.Tensor, nz: torch.Tensor, traits: Traits
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, c = traits["yaw_sin"], traits["yaw_cos"]
    cam_x = nx * c + nz * s
    cam_z = nz * c - nx * s
    norm = torch.rsqrt(cam_x * cam_x + ny * ny + cam_z * cam_z + _EPS)
    return cam_x * norm, ny * norm, cam_z * norm


def cast_profiled_ellipse(
    grid: PixelGrid, traits: Traits, profile: Profile, depth_ratio: torch.Tensor, far: bool = False
) -> SurfaceHit:
    """Intersect camera rays with the yawed surface whose cross-section at ``y`` is the ellipse
    ``x^2 / a^2 + z^2 / (k a)^2 = 1`` (``a`` from ``profile``, ``k = depth_ratio``); nearest hit, or the
    far (back) hit with ``far=True``."""
    s, c = traits["yaw_sin"], traits["yaw_cos"]
    inv_k2 = 1.0 / (depth_ratio * depth_ratio)
    a = profile.half_width
    x_coeff = c * c + s * s * inv_k2  # quadratic in depth D: quad_a D^2 + quad_b D + x_coeff X^2 - a^2 = 0
    quad_a = s * s + c * c * inv_k2
    quad_b = (2.0 * s * c) * (inv_k2 - 1.0) * grid.x
    # Discriminant split into a per-column and a per-row term: one full-size add.
    per_column = quad_b * quad_b - 4.0 * quad_a * x_coeff * (grid.x * grid.x)
    root = (per_column + 4.0 * quad_a * a * a).clamp_(min=0.0).sqrt_()
    inv_2a = 0.5 / quad_a
    depth = (root if not far else root.neg_()).sub_(quad_b).mul_(inv_2a)
    silhouette = a * torch.sqrt(c * c + depth_ratio * depth_ratio * s * s)
    # Signed distance to the outline x = +-silhouette(y): horizontal gap over sqrt(1 + silhouette'(y)^2), per row.
    # Rows the surface does not reach (silhouette 0) get a hugely negative offset: no coverage anywhere.
    slope = silhouette * profile.log_slope
    per_pixel = torch.rsqrt(1.0 + slope * slope) * (1.0 / grid.pixel)
    offset = torch.where(silhouette > 0, 0.5 + silhouette * per_pixel, torch.full_like(silhouette, -1e3))
    coverage = torch.addcmul(offset, grid.x.abs(), per_pixel, value=-1.0).clamp_(0.0, 1.0)
    x = grid.x * c - depth * s
    z = torch.addcmul(grid.x * s, depth, c)
    # Head-frame normal (x, -a^2 dlog(a)/dy, z / k^2) rotated to the camera frame, written directly in
    # terms of the pixel x and the hit depth (both rotations are linear in them).
    cross = s * c * (inv_k2 - 1.0)
    cam_x = torch.addcmul(grid.x * x_coeff, depth, cross)
    cam_z = torch.addcmul(grid.x * cross, depth, c * c * inv_k2 + s * s)
    cam_y = -(a * a) * profile.log_slope
    norm = torch.addcmul(cam_y * cam_y + _EPS, cam_x, cam_x).addcmul_(cam_z, cam_z).rsqrt_()
    return SurfaceHit(coverage, depth, x, z, (cam_x.mul_(norm), norm * cam_y, cam_z.mul_(norm)))


def cast_ellipsoid(
    grid: PixelGrid, traits: Traits, centre: tuple[torch.Tensor, ...], radii: tuple[torch.Tensor, ...]
) -> SurfaceHit:
    """Nearest hit of the camera rays with a head-frame ellipsoid (e.g. an ear) under the head's yaw."""
    s, c = traits["yaw_sin"], traits["yaw_cos"]
    (cx, cy, cz), (rx, ry, rz) = centre, radii
    ix2, iz2 = 1.0 / (rx * rx), 1.0 / (rz * rz)
    px = grid.x * c - cx  # head-frame x of the ray at camera depth 0, relative to the centre
    pz = grid.x * s - cz
    dy = (grid.y - cy) / ry
    quad_a = s * s * ix2 + c * c * iz2
    quad_b = 2.0 * (pz * c * iz2 - px * s * ix2)
    quad_c = px * px * ix2 + pz * pz * iz2 + dy * dy - 1.0
    closest = quad_c - quad_b * quad_b / (4.0 * quad_a)  # min over the ray of the ellipsoid equation
    radius_ratio = (closest + 1.0).clamp(min=0.0).sqrt()
    coverage = (0.5 + (1.0 - radius_ratio) * torch.minimum(rx, ry) / grid.pixel).clamp(0.0, 1.0)
    depth = (-quad_b + (-4.0 * quad_a * closest).clamp(min=0.0).sqrt()) / (2.0 * quad_a)
    x = grid.x * c - depth * s
    z = grid.x * s + depth * c
    normal = _rotate_to_camera((x - cx) * ix2, (grid.y - cy) / (ry * ry), (z - cz) * iz2, traits)
    return SurfaceHit(coverage, depth, x, z, normal)


def cast_head(grid: PixelGrid, traits: Traits) -> SurfaceHit:
    """The skin surface of the head (cranium, face, jaw)."""
    return cast_profiled_ellipse(grid, traits, head_profile(grid.y, traits), traits["depth_ratio"])


def hair_shell_profile(grid: PixelGrid, traits: Traits) -> Profile:
    """The hair shell: the head inflated by the hair volume (full on the crown, tapering to a fifth of it
    towards the nape so short hair hugs the head), widened below into a curtain down to the hair's bottom
    edge (long hair falls past the jaw)."""
    volume = traits["hair_volume"]
    scaled = head_profile(grid.y, traits, 1.0 + volume)
    ramp = (grid.y - (HEAD_CENTRE_Y - 0.25)) / 0.35
    taper = ramp.clamp(0.2, 1.0)
    d_taper = ((ramp > 0.2) & (ramp < 1.0)) / 0.35
    factor = (1.0 + volume * taper) / (1.0 + volume)
    inflated = Profile(scaled.half_width * factor, scaled.log_slope + volume * d_taper / (1.0 + volume * taper))
    curtain_width = traits["head_half_width"] * (0.97 + traits["hair_volume"])
    drop = ((grid.y - traits["hair_bottom_y"]) / 0.15).clamp(min=1e-3, max=1.0)
    curtain = curtain_width * drop.sqrt()
    curtain_slope = torch.where(drop < 1.0, 0.5 / (drop * 0.15), torch.zeros_like(drop))
    use_curtain = (curtain > inflated.half_width) & (grid.y < HEAD_CENTRE_Y)
    return Profile(
        torch.where(use_curtain, curtain, inflated.half_width),
        torch.where(use_curtain, curtain_slope, inflated.log_slope),
    )


def surface_azimuth(hit: SurfaceHit, depth_ratio: torch.Tensor) -> torch.Tensor:
    """Azimuth around the vertical axis of a hit point: 0 = facing the camera at zero yaw, +-pi = back,
    positive towards the head's left (``+x``)."""
    return torch.atan2(hit.x, hit.z / depth_ratio)


def ear_centres(traits: Traits, side: float) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Centre and radii of the ear on ``side`` (+1 = head's left, ``+x``; -1 = right)."""
    ear_y = traits["ear_y"]
    head_width = head_profile(ear_y, traits).half_width
    scale = traits["ear_scale"]
    centre = (side * (head_width + 0.015), ear_y, torch.full_like(ear_y, -0.07))
    radii = (torch.full_like(ear_y, 0.045), 0.1 * scale, 0.07 * scale)
    return centre, radii


def cast_neck(grid: PixelGrid, traits: Traits) -> SurfaceHit:
    """An elliptic cylinder under the jaw, behind the chin."""
    width = traits["head_half_width"] * 0.58
    top = HEAD_CENTRE_Y - 0.35 * traits["head_half_height"]
    half_width = torch.where(grid.y < top, width, torch.zeros_like(width)).expand(-1, grid.y.shape[1], 1)
    s, c = traits["yaw_sin"], traits["yaw_cos"]
    offset_x, offset_z = -0.1 * s, -0.1 * c  # the neck's axis sits 0.1 behind the head centre
    shifted = PixelGrid(grid.x - offset_x, grid.y, grid.pixel)
    hit = cast_profiled_ellipse(
        shifted, traits, Profile(half_width, torch.zeros_like(half_width)), torch.full_like(width, 1.0)
    )
    return SurfaceHit(hit.coverage, hit.depth + offset_z, hit.x, hit.z, hit.normal)


def decal_to_pixels(fx: torch.Tensor, fy: torch.Tensor, traits: Traits, size: int) -> torch.Tensor:
    """Project decal points (head-frame ``x``, ``y`` on the front of the skin surface, as the feature painters
    see them; each ``(N, K)``) through the renderer's camera: ``(N, K, 2)`` pixel coordinates of a ``size`` image.

    The surface point is ``(fx, fy, k sqrt(a(fy)^2 - fx^2))`` (``a`` the head outline, ``k`` the depth ratio);
    the head yaw rotates it about the vertical axis: camera ``x = fx cos + z sin``.
    """
    profile = head_profile(fy.unsqueeze(-1), traits).half_width.squeeze(-1)
    k = traits["depth_ratio"].reshape(-1, 1)
    z = k * (profile * profile - fx * fx).clamp(min=0.0).sqrt()
    camera_x = fx * traits["yaw_cos"].reshape(-1, 1) + z * traits["yaw_sin"].reshape(-1, 1)
    return head_to_pixels(camera_x, fy, size)


def light_direction(traits: Traits, elevation_degrees: float = 25.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit key-light direction (towards the light) in the camera frame: three ``(N, 1, 1)`` components."""
    cos_e, sin_e = math.cos(math.radians(elevation_degrees)), math.sin(math.radians(elevation_degrees))
    lx = traits["light_sin"] * cos_e
    lz = traits["light_cos"] * cos_e
    return lx, torch.full_like(lx, sin_e), lz

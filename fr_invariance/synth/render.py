"""The procedural face renderer: ``render(identities, controls)`` -> RGB images in ``[0, 1]``.

Per pixel, camera rays are cast against an analytic head yawed by ``head_angle`` (face, hair shell, ears,
neck; :mod:`fr_invariance.synth.face_geometry`). Facial features are painted on the skin in decal
coordinates (:mod:`fr_invariance.synth.face_features`, :mod:`fr_invariance.synth.face_texture`); nose,
lips, chin and cheeks are a bump map perturbing the normals. Lighting is ambient + Lambertian + a weak
specular term from a key light whose azimuth is ``illumination``. Image-level attributes (brightness,
contrast, hue) are then applied with :func:`fr_invariance.image_ops.apply_image_attributes`.

Everything is batched elementwise torch over ``(N, H, W)``: the same code runs on CPU and GPU, and each
image depends only on its own identity, controls and size, never on the rest of the batch (a repeated
call is bit-identical; another batch composition agrees to float rounding, < 1e-4, because torch's
vectorised CPU kernels may take a scalar path for a few elements at thread-chunk edges).
"""

from __future__ import annotations

import numbers

import torch

from fr_invariance.attributes import ATTRIBUTE_NAMES, NUM_ATTRIBUTES
from fr_invariance.image_ops import apply_image_attributes
from fr_invariance.synth import face_features as features
from fr_invariance.synth.face_geometry import (
    ZOOM,
    PixelGrid,
    SurfaceHit,
    cast_ellipsoid,
    cast_head,
    cast_neck,
    cast_profiled_ellipse,
    ear_centres,
    hair_shell_profile,
    light_direction,
    pixel_grid,
    surface_azimuth,
)
from fr_invariance.synth.face_params import HEAD_CENTRE_Y, Traits, face_traits
from fr_invariance.synth.face_texture import paint_skin_marks
from fr_invariance.synth.identity import NUM_IDENTITY_PARAMS

MIN_SIZE = 32
Vector = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
BACKGROUND_TOP = (0.74, 0.76, 0.79)
BACKGROUND_BOTTOM = (0.60, 0.62, 0.66)
CLOTHING = (0.28, 0.30, 0.36)
AMBIENT = 0.34
DIFFUSE = 0.76

EAR_BAND = (-0.30, 0.19)
EAR_INNER_X = 0.15  # camera |x| below which no ear shows at any yaw (their centres stay beyond 0.29)
NECK_BAND = (-1.0 / ZOOM, -0.12)
SHOULDER_BAND = (-1.0 / ZOOM, -0.72)
INNER_HAIR_SHADE = 0.3
LONG_HAIR_BELOW = -0.3  # hair whose bottom edge is lower than this covers the ears
HAIR_FAR_BAND = (-1.0 / ZOOM, -0.15)  # above it, long hair hides the inside at any yaw
SKIN_MARK_BAND = (-0.44, 0.16)
HAIR_STRAND_WAVENUMBER = 90.0  # strands: sin(90 azimuth + 25 y); ~150 radians per head unit on the face
SIDE_HAIR_AZIMUTH = (1.0, 1.2)  # radians: the front hairline drops to the ear tops at the temples
LONG_HAIR_AZIMUTH = 1.25  # radians: long hair hangs from here backwards (over the ears, not the cheeks)
MAX_EDGE_GRADIENT = 25.0  # hair-edge steepness (per pixel) above which the field is treated as a jump


class RenderInputError(ValueError):
    """Raised for identities/controls/size that the renderer cannot take."""


def _validate(identities: torch.Tensor, controls: torch.Tensor, size: int) -> None:
    if not isinstance(identities, torch.Tensor) or identities.ndim != 2 or identities.shape[1] != NUM_IDENTITY_PARAMS:
        shape = tuple(identities.shape) if isinstance(identities, torch.Tensor) else type(identities).__name__
        raise RenderInputError(
            f"identities must be a (N, {NUM_IDENTITY_PARAMS}) tensor from sample_identities, got {shape}."
        )
    if not isinstance(controls, torch.Tensor) or controls.ndim != 2 or controls.shape[1] != NUM_ATTRIBUTES:
        shape = tuple(controls.shape) if isinstance(controls, torch.Tensor) else type(controls).__name__
        raise RenderInputError(
            f"controls must be a (N, {NUM_ATTRIBUTES}) tensor with columns {', '.join(ATTRIBUTE_NAMES)}, got {shape}."
        )
    if controls.shape[0] != identities.shape[0]:
        raise RenderInputError(
            f"identities and controls need the same number of rows, got {identities.shape[0]} and {controls.shape[0]}."
        )
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < MIN_SIZE:
        raise RenderInputError(f"size must be an integer >= {MIN_SIZE} (pixels), got {size!r}.")
    if not bool(torch.isfinite(identities).all()):
        raise RenderInputError("identities contain NaN or inf; draw them with sample_identities.")
    if not bool(torch.isfinite(controls).all()) or bool((controls.abs() > 1.0).any()):
        worst = controls.abs().nan_to_num(nan=float("inf")).max().item()
        raise RenderInputError(f"controls must be finite and within [-1, 1]; got a value of magnitude {worst:g}. Clamp them.")


def _rows(grid: PixelGrid, band: tuple[float, float]) -> slice:
    """Rows whose centre height lies in ``band`` (low, high), as a slice (row 0 is the top, y = +1)."""
    size = grid.y.shape[1]
    first = max(int((1.0 - band[1] * ZOOM) * size / 2.0), 0)
    last = min(int((1.0 - band[0] * ZOOM) * size / 2.0) + 1, size)
    return slice(first, last)


def _shade(albedo: torch.Tensor, normal: Vector, light: Vector, specular: float = 0.0) -> torch.Tensor:
    """Sky-weighted ambient + Lambertian (+ Blinn-Phong with exponent 8 if ``specular``).

    ``albedo`` ``(N, 3, h, w)`` (or broadcastable), ``normal`` unit camera-frame components ``(N, h, w)``,
    ``light`` unit direction components ``(N, 1, 1)``; returns ``(N, 3, h, w)``.
    """
    nx, ny, nz = normal
    lx, ly, lz = light
    n_dot_l = torch.addcmul(nx * lx, ny, ly).addcmul_(nz, lz).clamp_(min=0.0)
    diffuse = torch.addcmul(AMBIENT * 0.85 + AMBIENT * 0.15 * ny, n_dot_l, torch.full_like(lx, DIFFUSE))
    colour = albedo * diffuse.unsqueeze(1)
    if specular:
        hz = lz + 1.0
        inv = torch.rsqrt(lx * lx + ly * ly + hz * hz)
        highlight = torch.addcmul(nx * (lx * inv), ny, ly * inv).addcmul_(nz, hz * inv).clamp_(min=0.0)
        highlight = highlight.square_().square_()
        colour += (specular * highlight.square_()).unsqueeze(1)
    return colour


def _bump_normal(head: SurfaceHit, bump: features.Bump, rows: slice, traits: Traits) -> None:
    """Tilt the head normals on ``rows`` by the bump gradient, in place (head tangent x-axis = (cos, 0, -sin))."""
    nx, ny, nz = (component[:, rows] for component in head.normal)
    nx.sub_(bump.dx * traits["yaw_cos"])
    ny.sub_(bump.dy)
    nz.add_(bump.dx * traits["yaw_sin"])
    inv = torch.rsqrt(nx * nx + ny * ny + nz * nz)
    for component in (nx, ny, nz):
        component.mul_(inv)


def _head_colour(
    identities: torch.Tensor, traits: Traits, grid: PixelGrid, head: SurfaceHit, light: Vector
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shaded skin with all facial features ``(N, 3, H, W)``, and the eye-opening coverage ``(N, H, W)``.
    Applies the bump map to ``head.normal`` in place."""
    n, size = identities.shape[0], grid.y.shape[1]
    albedo = traits["skin_colour"].expand(n, 3, size, size).clone()
    fx, fy, pixel = head.x, grid.y, grid.pixel
    rows = _rows(grid, SKIN_MARK_BAND)
    paint_skin_marks(albedo[:, :, rows], fx[:, rows], fy[:, rows], identities, traits, pixel)
    rows = _rows(grid, features.FOREHEAD_BAND)
    features.paint_forehead_wrinkles(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits)
    rows = _rows(grid, features.BROW_BAND)
    features.paint_brows(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits, pixel)
    eyes = torch.zeros(n, size, size, device=albedo.device)
    rows = _rows(grid, features.EYE_BAND)
    eyes[:, rows] = features.paint_eyes(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits, pixel)
    rows = _rows(grid, features.NOSE_BAND)
    features.paint_nose(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits, pixel)
    rows = _rows(grid, features.FACIAL_HAIR_BAND)
    features.paint_facial_hair(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits, pixel)
    rows = _rows(grid, features.MOUTH_BAND)
    features.paint_mouth(albedo[:, :, rows], fx[:, rows], fy[:, rows], traits, pixel)
    bump_rows = _rows(grid, features.BUMP_BAND)
    bump = features.Bump(*(torch.zeros_like(fx[:, bump_rows]) for _ in range(2)))
    for band, part in features.BUMP_PARTS:  # each part only on its own rows
        rows = _rows(grid, band)
        within = slice(rows.start - bump_rows.start, rows.stop - bump_rows.start)
        gx, gy = part(fx[:, rows], fy[:, rows], traits)
        bump.dx[:, within] += gx
        bump.dy[:, within] += gy
    _bump_normal(head, bump, bump_rows, traits)
    return _shade(albedo, head.normal, light, specular=0.07), eyes


def _ramp(x: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """0 below ``start``, 1 above ``end``, linear between."""
    return (x * (1.0 / (end - start)) - start / (end - start)).clamp(0.0, 1.0)


def _edge_coverage(inside: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of ``inside > 0`` from a field ``(N, h, w)`` of the form ``(y - edge) / pixel``.

    Such a field rises by one per row, so ``inside / sqrt(1 + g^2)`` with ``g`` its change between horizontally
    neighbouring pixels is the signed distance in pixels to the edge whatever the edge's slope: steep edges
    get the same one-pixel ramp as flat ones. ``g`` above ``MAX_EDGE_GRADIENT`` (silhouettes, where the field
    jumps) is clipped."""
    gx = torch.diff(inside, dim=2, append=inside[:, :, -1:])
    norm = gx.square_().add_(1.0).clamp_(max=MAX_EDGE_GRADIENT**2).rsqrt_()
    return inside.mul_(norm).add_(0.5).clamp_(0.0, 1.0)


def _hair_region(azimuth: torch.Tensor, y: torch.Tensor, traits: Traits, pixel: float) -> torch.Tensor:
    """Coverage of hair on the hair shell at azimuth/height: above the hairline in front (lowered by a fringe,
    tilted by the parting), dropping steeply just in front of the ears (a near-vertical temple edge, so the
    side hair never reaches across the cheek when the head turns) to the ear tops (short hair) or the hair
    length (long hair), and to the hair length behind."""
    fringe_depth = (1.0 - 1.1 * azimuth * azimuth).clamp(min=0.0)
    front = traits["hairline_y"] + (0.05 * traits["hair_part"]) * azimuth - (0.17 * traits["fringe"]) * fringe_depth
    temple = traits["ear_y"] + 0.09  # the hairline clears the ears
    back = torch.minimum(torch.full_like(temple, HEAD_CENTRE_Y - 0.3), traits["hair_bottom_y"])
    a = azimuth.abs()
    edge = front + _ramp(a, *SIDE_HAIR_AZIMUTH) * (temple - front) + _ramp(a, 1.8, 2.25) * (back - temple)
    inside = y - edge
    # Long hair also hangs over the ears and behind them (azimuth beyond LONG_HAIR_AZIMUTH) down to its length;
    # the azimuth distance is scaled by a typical head radius to compare with heights.
    long_hair = traits["hair_bottom_y"] < LONG_HAIR_BELOW
    hanging = torch.minimum((a - LONG_HAIR_AZIMUTH) * 0.55, y - traits["hair_bottom_y"])
    inside = torch.where(long_hair, torch.maximum(inside, hanging), inside)
    return _edge_coverage(inside.mul_(1.0 / pixel))


def _hair_near(traits: Traits, grid: PixelGrid, light: Vector) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and shaded colour of the hair on the front of the hair shell."""
    profile = hair_shell_profile(grid, traits)
    hit = cast_profiled_ellipse(grid, traits, profile, traits["depth_ratio"])
    azimuth = surface_azimuth(hit, traits["depth_ratio"])
    alpha = hit.coverage * _hair_region(azimuth, grid.y, traits, grid.pixel)
    amplitude = 0.1 * features.band_limit(HAIR_STRAND_WAVENUMBER / 0.6, grid.pixel)
    strands = 0.9 + amplitude * torch.sin(HAIR_STRAND_WAVENUMBER * azimuth + 25.0 * grid.y)
    return alpha, _shade(traits["hair_colour"] * strands.unsqueeze(1), hit.normal, light)


def _hair_far(traits: Traits, grid: PixelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and colour of the inside of long hair (back hair seen past the jaw and neck; in shadow)."""
    profile = hair_shell_profile(grid, traits)
    hit = cast_profiled_ellipse(grid, traits, profile, traits["depth_ratio"], far=True)
    alpha = hit.coverage * _hair_region(surface_azimuth(hit, traits["depth_ratio"]), grid.y, traits, grid.pixel)
    long_hair = (traits["hair_bottom_y"] < LONG_HAIR_BELOW).to(alpha.dtype)  # short hair has no hanging inside
    return alpha * long_hair, INNER_HAIR_SHADE * traits["hair_colour"]


def _ear_columns(grid: PixelGrid, side: float) -> slice:
    """Columns that can show the ear on ``side`` at any yaw: camera ``x`` beyond ``EAR_INNER_X`` on that side."""
    count = int((grid.x.reshape(-1) < -EAR_INNER_X).sum())  # the grid is symmetric about x = 0
    size = grid.x.shape[-1]
    return slice(0, count) if side < 0 else slice(size - count, size)


def _ear_layers(traits: Traits, rows: PixelGrid, light: Vector) -> list[tuple[slice, torch.Tensor, ...]]:
    """[(columns, coverage, depth, colour)] of both ears on the rows of ``rows``, each on its side's columns."""
    ears = []
    for side in (-1.0, 1.0):
        columns = _ear_columns(rows, side)
        rows_here = PixelGrid(rows.x[..., columns], rows.y, rows.pixel)
        centre, radii = ear_centres(traits, side)
        hit = cast_ellipsoid(rows_here, traits, centre, radii)
        # Concha: the ear's outward-facing middle is darker.
        dy, dz = (rows.y - centre[1]) / radii[1], (hit.z - centre[2]) / radii[2]
        radius2 = dy * dy + dz * dz
        concha = torch.exp(-5.0 * radius2) * ((hit.x - centre[0]) * side > 0)
        rim = (1.0 - hit.coverage) + ((radius2 - 0.55) * 4.0).clamp(0.0, 1.0) * 0.5
        albedo = traits["skin_colour"] * (0.92 - 0.4 * concha - 0.25 * rim).unsqueeze(1)
        ears.append((columns, hit.coverage, hit.depth, _shade(albedo, hit.normal, light)))
    return ears


def _neck_layer(traits: Traits, rows: PixelGrid, light: Vector) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and colour of the neck (darker under the chin)."""
    hit = cast_neck(rows, traits)
    under_chin = ((HEAD_CENTRE_Y - traits["head_half_height"] + 0.02 - rows.y) / 0.15).clamp(0.0, 1.0)
    albedo = traits["skin_colour"] * (0.55 + 0.35 * under_chin).unsqueeze(1)
    return hit.coverage, _shade(albedo, hit.normal, light)


def _shoulder_layer(rows: PixelGrid, light: Vector, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and colour of the shoulders (a fixed, identity-independent garment)."""
    dx, dy = torch.broadcast_tensors(rows.x / 0.95, (rows.y + 1.3) / 0.55)
    radius2 = dx * dx + dy * dy
    alpha = (0.5 + (1.0 - radius2.sqrt()) * 0.6 / rows.pixel).clamp(0.0, 1.0).expand(n, -1, -1)
    nz = (1.0 - radius2).clamp(min=0.0).sqrt()
    albedo = torch.tensor(CLOTHING, device=alpha.device).reshape(1, 3, 1, 1)
    return alpha, _shade(albedo, (dx, dy, nz), light)


def _over(canvas: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> None:
    canvas.addcmul_(alpha.unsqueeze(1), colour - canvas)


@torch.no_grad()
def _render(
    identities: torch.Tensor, controls: torch.Tensor, size: int, device: torch.device | str | None, with_masks: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    _validate(identities, controls, size)
    size = int(size)
    device = torch.device(device) if device is not None else identities.device
    identities = identities.to(device=device, dtype=torch.float32)
    controls = controls.to(device=device, dtype=torch.float32)
    n = identities.shape[0]
    grid = pixel_grid(size, device)
    traits = face_traits(identities, controls)
    light = light_direction(traits)

    gradient = ((1.0 - grid.y * ZOOM) * 0.5).reshape(1, 1, size, 1)
    top, bottom = (torch.tensor(c, device=device).reshape(1, 3, 1, 1) for c in (BACKGROUND_TOP, BACKGROUND_BOTTOM))
    canvas = (top + gradient * (bottom - top)).expand(n, 3, size, size).contiguous()
    masks = {name: torch.zeros(n, size, size, device=device) for name in ("hair", "skin")} if with_masks else {}

    def over(
        rows: slice, alpha: torch.Tensor, colour: torch.Tensor, kind: str | None, columns: slice = slice(None)
    ) -> None:
        _over(canvas[:, :, rows, columns], alpha, colour)
        for name, mask in masks.items():
            band = mask[:, rows, columns]
            band.add_(alpha * (float(name == kind) - band))

    def band(limits: tuple[float, float]) -> tuple[slice, PixelGrid]:
        rows = _rows(grid, limits)
        return rows, PixelGrid(grid.x, grid.y[:, rows], grid.pixel)

    rows, sub = band(SHOULDER_BAND)
    over(rows, *_shoulder_layer(sub, light, n), None)
    rows, sub = band(HAIR_FAR_BAND)
    over(rows, *_hair_far(traits, sub), "hair")
    rows, sub = band(NECK_BAND)
    over(rows, *_neck_layer(traits, sub, light), "skin")
    ear_rows, sub = band(EAR_BAND)
    ears = _ear_layers(traits, sub, light)
    for columns, alpha, _, colour in ears:
        over(ear_rows, alpha, colour, "skin", columns)
    head = cast_head(grid, traits)
    head_colour, eyes = _head_colour(identities, traits, grid, head, light)
    everything = slice(0, size)
    over(everything, head.coverage, head_colour, "skin")
    for columns, alpha, depth, colour in ears:
        over(ear_rows, alpha * (depth > head.depth[:, ear_rows, columns]), colour, "skin", columns)
    hair_alpha, hair_colour = _hair_near(traits, grid, light)
    over(everything, hair_alpha, hair_colour, "hair")

    images = apply_image_attributes(canvas.clamp_(0.0, 1.0), controls)
    if with_masks:
        masks["eyes"] = eyes * head.coverage * (1.0 - hair_alpha)
    return images, masks


def render_with_masks(
    identities: torch.Tensor, controls: torch.Tensor, size: int = 112, device: torch.device | str | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Like :func:`render`, also returning visibility masks ``{"hair", "skin", "eyes"}``, each ``(N, size, size)``
    in ``[0, 1]``: how much of each pixel shows hair / skin (face, ears, neck) / the eye openings."""
    return _render(identities, controls, size, device, with_masks=True)


def render(
    identities: torch.Tensor, controls: torch.Tensor, size: int = 112, device: torch.device | str | None = None
) -> torch.Tensor:
    """Render faces: ``(N, 3, size, size)`` float32 RGB in ``[0, 1]`` on ``device`` (default: ``identities.device``).

    ``identities`` ``(N, NUM_IDENTITY_PARAMS)`` from :func:`~fr_invariance.synth.identity.sample_identities`;
    ``controls`` ``(N, 8)`` in :data:`~fr_invariance.attributes.ATTRIBUTE_NAMES` column order, each in ``[-1, 1]``.
    Deterministic; each image is independent of the batch it is rendered in (to float rounding, < 1e-4).
    Any ``size >= 32``.
    Raises :class:`RenderInputError` (a ValueError) for wrong shapes, ``size < 32`` or controls outside ``[-1, 1]``.
    """
    return _render(identities, controls, size, device, with_masks=False)[0]

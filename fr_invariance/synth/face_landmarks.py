"""The renderer's own 5-point landmarks, in ArcFace order, projected through the camera that renders the face.

The points are the features' defining positions in decal coordinates (see :mod:`face_features`): pupil
centres ``(-+eye_x, eye_y)``, nose tip ``(0, nose_tip_y)``, mouth corners ``(-+mouth_half_width, mouth_y +
mouth_curve)``; each is lifted onto the front of the head surface and projected with the head's yaw
(:func:`~fr_invariance.synth.face_geometry.decal_to_pixels`). So they follow identity, head angle,
expression and age exactly as the painted features do. Image-level attributes do not move them.
"""

from __future__ import annotations

import torch

from fr_invariance.synth.face_geometry import decal_to_pixels
from fr_invariance.synth.face_params import face_traits


@torch.no_grad()
def landmarks(identities: torch.Tensor, controls: torch.Tensor, size: int = 112) -> torch.Tensor:
    """Landmarks of the faces :func:`~fr_invariance.synth.render.render` draws for the same arguments.

    Args:
        identities: ``(N, NUM_IDENTITY_PARAMS)`` from :func:`~fr_invariance.synth.identity.sample_identities`.
        controls: ``(N, 8)`` attribute controls in ``[-1, 1]`` (``ATTRIBUTE_NAMES`` column order).
        size: image side in pixels.

    Returns:
        ``(N, 5, 2)`` float32 pixel coordinates ``(x right, y down)`` on ``identities.device``, image spanning
        ``[0, size]`` (pixel centres at ``i + 0.5``; :mod:`~fr_invariance.synth.camera`), in ArcFace order:
        image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
        The mean identity (all zeros) at neutral controls lies on :func:`~fr_invariance.synth.camera.arcface_template`.

    Raises:
        RenderInputError: the same input checks as ``render``.
    """
    from fr_invariance.synth.render import _validate  # the renderer's own input checks

    _validate(identities, controls, size)
    identities = identities.to(dtype=torch.float32)
    controls = controls.to(device=identities.device, dtype=torch.float32)
    t = face_traits(identities, controls)
    flat = {name: value.reshape(-1) for name, value in t.items() if value.dim() == 3}
    eye_x, eye_y = flat["eye_x"], flat["eye_y"]
    mouth_x, corner_y = flat["mouth_half_width"], flat["mouth_y"] + flat["mouth_curve"]
    fx = torch.stack((-eye_x, eye_x, torch.zeros_like(eye_x), -mouth_x, mouth_x), dim=1)
    fy = torch.stack((eye_y, eye_y, flat["nose_tip_y"], corner_y, corner_y), dim=1)
    return decal_to_pixels(fx, fy, t, int(size))

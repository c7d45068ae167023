"""Procedural face renderer (DESIGN §4): identities, rendering, the renderer's own landmarks, curve designs.

``fr_invariance.synth.render.render(identities, controls, size)`` draws faces aligned to the ArcFace 5-point
template; ``fr_invariance.synth.landmarks(identities, controls, size)`` says where their eyes, nose tip and
mouth corners are (``(N, 5, 2)`` pixels, ArcFace order).
"""

from fr_invariance.synth.camera import (
    ARCFACE_TEMPLATE,
    LANDMARK_NAMES,
    arcface_template,
)
from fr_invariance.synth.face_landmarks import landmarks

__all__ = ["ARCFACE_TEMPLATE", "LANDMARK_NAMES", "arcface_template", "landmarks"]

"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0) as an inference-only
embedder with the backbone interface (DESIGN §13).

The network runs inside dlib (the ``dlib-bin`` wheel; weights from the ``face-recognition-models`` wheel):
no gradients, so it can be evaluated but not trained (:meth:`DlibResNet.train` refuses). It takes 150×150
RGB ``uint8`` chips aligned the way ``dlib.get_face_chip`` aligns them (padding 0.25) and returns 128-D
descriptors compared with the euclidean distance (same person below ~0.6).

Alignment: dlib's 5-point landmarker finds both corners of each eye and the bottom of the nose;
``get_face_chip`` maps them onto its 5-point template (normalised coordinates, below) with a least-squares
similarity transform, pads by 0.25 on each side and samples a 150 px chip. Our renderer's landmarks are the
ArcFace points (pupils, nose tip, mouth corners). :func:`chip_transforms` fits the similarity from three
correspondences: each pupil to the midpoint of that eye's two template corners, and the nose tip to the
template's nose point (dlib's point is under the nose, ~2 % of the chip lower than the tip; the mouth has
no counterpart). Measured on renders: chips from our landmarks give descriptors within ~0.2 (euclidean) of
dlib's own landmarker + ``get_face_chip`` on the same images (``tests/test_pretrained_models.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fr_invariance.models.pretrained import (
    InferenceOnlyModelError,
    package_file,
    require_module,
)
from fr_invariance.synth.camera import arcface_template

DLIB_MODEL_PACKAGE = "face_recognition_models"
DLIB_MODEL_FILE = "models/dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's 5-point template (``get_face_chip_details``, normalised): image-right eye outer and inner corner,
# image-left eye outer and inner corner, bottom of the nose.
DLIB_5_POINT_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """Where our image-left pupil, image-right pupil and nose tip go in a dlib chip: ``(3, 2)`` pixel-index
    coordinates (``(padding + p) / (1 + 2 padding) * size`` of the eye-corner midpoints and the nose point)."""
    t = torch.tensor(DLIB_5_POINT_TEMPLATE, dtype=torch.float64)
    points = torch.stack(((t[2] + t[3]) / 2.0, (t[0] + t[1]) / 2.0, t[4]))
    return ((padding + points) / (1.0 + 2.0 * padding) * size).to(torch.float32)


def similarity_fit(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``source``
    ``(K, 2)`` or ``(N, K, 2)`` onto ``target`` ``(N, K, 2)``: ``(A (N, 2, 2), t (N, 2))`` with ``target ≈ A p + t``."""
    source = source.to(torch.float64).expand_as(target)
    target = target.to(torch.float64)
    source_mean, target_mean = source.mean(dim=1, keepdim=True), target.mean(dim=1, keepdim=True)
    p, q = source - source_mean, target - target_mean
    norm = p.square().sum(dim=(1, 2))
    a = (p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]).sum(dim=1) / norm
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(dim=1) / norm
    matrix = torch.stack((torch.stack((a, -b), -1), torch.stack((b, a), -1)), dim=1)
    shift = target_mean[:, 0] - (matrix @ source_mean[:, 0].unsqueeze(-1)).squeeze(-1)
    return matrix, shift


def chip_transforms(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chip pixel index ``q`` → image position ``A q + t`` (pixel-index coordinates, centre of pixel 0 at 0)
    for faces with ``landmarks`` ``(N, 5, 2)`` (continuous pixel coordinates of the renderer, ArcFace order;
    the eyes and the nose tip are used)."""
    return similarity_fit(chip_template(), landmarks[:, :3] - 0.5)


def extract_chips(images: torch.Tensor, landmarks: torch.Tensor, size: int = CHIP_SIZE) -> torch.Tensor:
    """Aligned dlib chips ``(N, 3, size, size)`` (bilinear, zeros outside) from ``images`` ``(N, 3, H, W)``."""
    matrix, shift = chip_transforms(landmarks)
    index = torch.arange(size, dtype=torch.float64, device=matrix.device)
    qy, qx = torch.meshgrid(index, index, indexing="ij")
    chip = torch.stack((qx, qy), dim=-1).reshape(1, -1, 2)  # (1, size*size, 2) as (x, y)
    position = chip @ matrix.transpose(1, 2) + shift[:, None, :]  # (N, size*size, 2) pixel-index coordinates
    height, width = images.shape[-2:]
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64, device=matrix.device)
    grid = ((position + 0.5) * scale - 1.0).reshape(-1, size, size, 2).to(images.dtype)
    return F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="zeros", align_corners=False)


class DlibResNet(nn.Module):
    """dlib's ResNet embedder behind the backbone interface (inference only).

    Args:
        input_size: side of the images it is given (renders are drawn at this size; default 150, dlib's chip).
        model_path: the ``.dat`` file (default: the one in the installed ``face-recognition-models`` wheel).

    Attributes: ``metric`` ``"euclidean"``, ``embedding_size`` 128, ``input_size``, ``input_colour`` ``"RGB"``,
    ``input_range`` ``(-1, 1)``, ``native_input`` (150x150 RGB uint8 dlib chip), ``inference_only`` ``True``.

    Raises:
        PretrainedPackageMissing: ``dlib`` (``dlib-bin``) or ``face-recognition-models`` is not installed.
    """

    metric = "euclidean"
    embedding_size = 128
    input_colour = "RGB"
    input_range = (-1.0, 1.0)
    native_input = "150x150 RGB uint8 chip aligned like dlib.get_face_chip (padding 0.25)"
    inference_only = True

    def __init__(self, input_size: int = CHIP_SIZE, model_path: str | None = None) -> None:
        super().__init__()
        dlib = require_module("dlib", "dlib_resnet", "dlib-bin")
        path = model_path or str(package_file(DLIB_MODEL_PACKAGE, DLIB_MODEL_FILE, "dlib_resnet"))
        self._network = dlib.face_recognition_model_v1(str(path))
        self.input_size = int(input_size)
        self.training = False  # never in training mode (see train)

    @staticmethod
    def _refuse(why: str) -> InferenceOnlyModelError:
        return InferenceOnlyModelError(
            f"model=dlib_resnet can only embed (dlib runs it; it has no gradients), so it cannot be trained ({why}); "
            "evaluate it with evaluate.py, or fine-tune model=sface (a pretrained model with torch weights)"
        )

    def train(self, mode: bool = True) -> DlibResNet:
        """Only ``train(False)`` (eval) is allowed: the network runs in dlib and has no gradients."""
        if mode:
            raise self._refuse("train() was called")
        return super().train(False)

    def chips(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> np.ndarray:
        """``(N, 150, 150, 3)`` uint8 RGB chips from ``x`` ``(N, 3, H, W)`` in ``[-1, 1]``; ``landmarks``
        ``(N, 5, 2)`` (default: the ArcFace template at ``H``, where the renderer puts the mean face)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images in [-1, 1], got {tuple(x.shape)}")
        if landmarks is None:
            landmarks = arcface_template(x.shape[-1]).expand(x.shape[0], 5, 2)
        images = (x.detach().float().cpu() + 1.0) * 0.5
        chips = extract_chips(images, landmarks.detach().float().cpu())
        return (chips.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB in ``[-1, 1]`` (ArcFace-aligned renders) → ``(N, 128)`` float32 descriptors on
        ``x.device``; ``landmarks`` ``(N, 5, 2)`` align each image by its own points instead of the template.
        Call it under ``torch.no_grad()`` / ``torch.inference_mode()`` (as evaluation does): with autograd on it
        raises :class:`InferenceOnlyModelError`, since a caller wanting gradients wants to train it."""
        if x.shape[0] == 0 or x.is_meta:  # meta: shape checks build models without data
            return torch.zeros(x.shape[0], self.embedding_size, device=x.device)
        if torch.is_grad_enabled():  # a training step: embedding happens under no_grad / inference_mode
            raise self._refuse("it was called with autograd enabled; embed under torch.no_grad()")
        chips = self.chips(x, landmarks)
        descriptors = self._network.compute_face_descriptor(list(chips))
        return torch.tensor(np.asarray([list(d) for d in descriptors]), dtype=torch.float32, device=x.device)


def dlib_resnet(input_size: int = CHIP_SIZE, model_path: str | None = None) -> DlibResNet:
    """dlib's ResNet embedder (see :class:`DlibResNet`)."""
    return DlibResNet(input_size, model_path)

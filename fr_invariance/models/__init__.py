"""Backbones (iresnet family, MobileFaceNet, a tiny CNN, the pretrained SFace and dlib ResNet of DESIGN §13),
margin heads, weight loading and export.

``create_backbone(name, **kwargs)`` builds a backbone by registry name (timm-style); every backbone
exposes ``embedding_size``, ``metric`` (``"cosine"``; ``"euclidean"`` for dlib) and ``input_size`` and maps
``(N, 3, H, W)`` RGB in ``[-1, 1]`` to raw ``(N, embedding_size)`` embeddings. ``dlib_resnet`` is
inference-only (``inference_only = True``: it refuses ``train()`` and autograd); ``sface`` and ``dlib_resnet`` need the
``pretrained`` extra for their weights.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fr_invariance.errors import ConfigurationError

from fr_invariance.models.dlib_resnet import DlibResNet
from fr_invariance.models.dlib_resnet import dlib_resnet as _dlib_resnet
from fr_invariance.models.heads import (
    AdaFace,
    ArcFace,
    CombinedMargin,
    CosFace,
    MarginHead,
)
from fr_invariance.models.iresnet import (
    IResNet,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
    iresnet200,
)

# the factories `mobilefacenet` and `tiny` are not re-exported: those names are the submodules (config targets)
from fr_invariance.models.mobilefacenet import MobileFaceNet
from fr_invariance.models.mobilefacenet import mobilefacenet as _mobilefacenet
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.models.pretrained import (
    InferenceOnlyModelError,
    PretrainedPackageMissing,
)
from fr_invariance.models.sface import SFace
from fr_invariance.models.sface import sface as _sface
from fr_invariance.models.tiny import TinyNet
from fr_invariance.models.tiny import tiny as _tiny
from fr_invariance.models.weights import (
    WeightLoadingError,
    convert_adaface_state_dict,
    export_insightface,
    load_backbone_weights,
)

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "iresnet18": iresnet18,
    "iresnet34": iresnet34,
    "iresnet50": iresnet50,
    "iresnet100": iresnet100,
    "iresnet200": iresnet200,
    "mobilefacenet": _mobilefacenet,
    "tiny": _tiny,
    "sface": _sface,
    "dlib_resnet": _dlib_resnet,
}


class UnknownBackboneError(ConfigurationError):
    """Raised by :func:`create_backbone` for a name that is not registered."""


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_BACKBONES)


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build the backbone registered as ``name`` with its factory's keyword arguments (``input_size``, ...)."""
    if name not in _BACKBONES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    return _BACKBONES[name](**kwargs)


__all__ = [
    "AdaFace",
    "ArcFace",
    "CombinedMargin",
    "CosFace",
    "DlibResNet",
    "IResNet",
    "InferenceOnlyModelError",
    "MarginHead",
    "MobileFaceNet",
    "PretrainedPackageMissing",
    "SFace",
    "TinyNet",
    "UnknownBackboneError",
    "WeightLoadingError",
    "available_backbones",
    "convert_adaface_state_dict",
    "create_backbone",
    "export_insightface",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "load_backbone_weights",
    "to_model_input",
]

"""Backbones (iresnet family, MobileFaceNet, a tiny CNN, the pretrained SFace and dlib ResNet of DESIGN §13),
margin heads, weight loading and export.

``create_backbone(name, **kwargs)`` builds a backbone by name (timm-style) from ``conf/model/<name>.yaml``, the
one registry (a new backbone = a class + a YAML file); every backbone
exposes ``embedding_size``, ``metric`` (``"cosine"``; ``"euclidean"`` for dlib) and ``input_size`` and maps
``(N, 3, H, W)`` RGB in ``[-1, 1]`` to raw ``(N, embedding_size)`` embeddings. ``dlib_resnet`` is
inference-only (``inference_only = True``: it refuses ``train()`` and autograd); ``sface`` and ``dlib_resnet`` need the
``pretrained`` extra for their weights.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_method
from omegaconf import OmegaConf
from torch import nn

from fr_invariance.errors import ConfigurationError

from fr_invariance.models.dlib_resnet import DlibResNet
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
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.models.pretrained import (
    InferenceOnlyModelError,
    PretrainedPackageMissing,
)
from fr_invariance.models.sface import SFace
from fr_invariance.models.tiny import TinyNet
from fr_invariance.models.weights import (
    WeightLoadingError,
    convert_adaface_state_dict,
    export_insightface,
    load_backbone_weights,
)

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "model"
"""The one backbone registry: ``conf/model/<name>.yaml`` (its ``backbone`` node, built with ``_target_``)."""


class UnknownBackboneError(ConfigurationError):
    """Raised by :func:`create_backbone` for a name that has no ``conf/model/<name>.yaml``."""


def available_backbones() -> list[str]:
    """Names of the model configs, sorted."""
    return sorted(path.stem for path in MODEL_CONFIGS.glob("*.yaml"))


def backbone_targets() -> dict[str, str]:
    """Model config name → the ``_target_`` of its backbone."""
    return {name: str(OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml").backbone._target_)
            for name in available_backbones()}


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build the backbone of ``conf/model/<name>.yaml``, its arguments overridden by ``kwargs`` (``input_size``,
    ``embedding_size``...; the config's ``${data.image_size}`` defaults to ``input_size`` or 112)."""
    if name not in available_backbones():
        raise UnknownBackboneError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    root = OmegaConf.create({"data": {"image_size": kwargs.get("input_size", 112)},
                             "model": OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")})
    root.model.backbone = OmegaConf.merge(root.model.backbone, kwargs)
    node = OmegaConf.to_container(root, resolve=True)["model"]["backbone"]
    return get_method(node.pop("_target_"))(**node)  # called directly: its own errors surface unwrapped


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

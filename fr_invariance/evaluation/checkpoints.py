"""Load what ``evaluate.py`` measures: a trained backbone or a folder of precomputed embeddings.

Three sources:

(a) our Lightning ``.ckpt``: ``checkpoint["hyper_parameters"]["cfg"]`` is the full training config; the
    backbone is rebuilt from ``cfg["model"]["backbone"]`` and loaded from ``state_dict`` (``backbone.*``);
(b) bare backbone weights (insightface ``backbone.pth``, an AdaFace ``.ckpt``, ...): the model config node
    (``model=<name>`` in the evaluate config, schema of ``conf/model/*.yaml``) says what to build;
(c) a directory of embeddings in the paper layout (``df_param_step.csv`` + one ``.npy`` per identity).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from fr_invariance.data.paper_format import PaperEmbeddings, read_paper_embeddings
from fr_invariance.errors import ConfigurationError, MissingPathError
from fr_invariance.models import available_backbones, backbone_targets, create_backbone
from fr_invariance.models.checkpoint_io import OPT_IN, load_checkpoint
from fr_invariance.models.weights import WeightLoadingError, load_backbone_weights

_GENERIC_STEMS = {"last", "backbone", "model", "best"}


class CheckpointError(ConfigurationError):
    """A checkpoint that cannot be evaluated as given (no model config, model mismatch...)."""


@dataclass
class ModelSource:
    """A backbone ready for evaluation (already on its device).

    Attributes:
        name: short name used in tables and plots.
        image_size: side in pixels the backbone was trained at.
        epoch: training epoch stored in the checkpoint (None if unknown).
        weights_format: format the weights were read as (``lightning``, ``insightface``, ``adaface``,
            ``shipped`` for a pretrained model that brings its own weights).
        config: the training config stored in our ``.ckpt`` (None for other files).
    """

    name: str
    path: Path | None
    backbone: nn.Module
    image_size: int
    epoch: int | None
    weights_format: str
    config: Mapping[str, Any] | None = None

    @property
    def targeted_attribute(self) -> str | None:
        """The attribute this model was fine-tuned to be invariant to (``attr.name`` of its training config)."""
        name = ((self.config or {}).get("attr") or {}).get("name")
        return None if name in (None, "none") else str(name)


@dataclass
class EmbeddingSource:
    """Precomputed embeddings in the paper layout; ``metric`` is the position metric d_X to use."""

    name: str
    path: Path
    embeddings: PaperEmbeddings
    metric: str


def source_names(paths: Sequence[str | Path]) -> list[str]:
    """Short unique names: the file stem, prefixed by parent folders (``checkpoints/`` skipped) when the
    stem is generic (``last``, ``backbone``, ``epoch=3-step=90``...) or shared by several paths."""
    parts = []
    for path in paths:
        path = Path(path).resolve()
        stem = path.name if path.is_dir() else path.stem
        parts.append([p for p in path.parent.parts[1:] if p != "checkpoints"] + [stem])
    depths = [1] * len(parts)
    for k, chain in enumerate(parts):
        if chain[-1] in _GENERIC_STEMS or chain[-1].startswith("epoch="):
            depths[k] = min(2, len(chain))
    while True:
        names = ["/".join(chain[-depth:]) for chain, depth in zip(parts, depths)]
        clashing = [k for k, name in enumerate(names) if names.count(name) > 1 and depths[k] < len(parts[k])]
        if not clashing:
            return names
        for k in clashing:
            depths[k] += 1


def _plain(value: Any, where: str, path: Path) -> Any:
    """``value`` as plain containers of JSON scalars, or CheckpointError naming the first other object."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{k}]", path) for k, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _plain(item, f"{where}.{key}", path) for key, item in value.items()}
    raise CheckpointError(
        f"{path}: the model config stored in the checkpoint holds a {type(value).__name__} at {where}, "
        f"not a plain value; if you trust this file's source, rerun with {OPT_IN}."
    )


def _checkpoint_backbone(node: Any, path: Path, trust: bool) -> nn.Module:
    """Build the backbone a checkpoint's stored config describes.

    The stored config comes with the file, so (unless trusted) it may only name a registered backbone factory
    with plain keyword arguments: nothing else is imported or called (``hydra.utils.instantiate`` would call any
    ``_target_``, also nested ones).
    """
    if trust:
        return instantiate(node)
    node = _plain(node, "model.backbone", path)
    target = node.get("_target_") if isinstance(node, dict) else None
    names = {target_of: name for name, target_of in backbone_targets().items()}
    special = [key for key in node if key.startswith("_") and key != "_target_"] if isinstance(node, dict) else []
    nested = [key for key, value in node.items() if isinstance(value, (dict, list))] if isinstance(node, dict) else []
    if str(target) not in names or special or nested:
        raise CheckpointError(
            f"{path}: the model config stored in the checkpoint is not a registered backbone with plain arguments "
            f"(_target_={target!r}{', keys ' + str(special + nested) if special or nested else ''}); "
            f"if you trust this file's source, rerun with {OPT_IN}."
        )
    kwargs = {key: value for key, value in node.items() if key != "_target_"}
    try:
        return create_backbone(names[str(target)], **kwargs)
    except TypeError as error:
        raise CheckpointError(f"{path}: the model config stored in the checkpoint does not fit {target}: {error}.") \
            from error


def _training_config(checkpoint: Any) -> Mapping[str, Any] | None:
    if not isinstance(checkpoint, Mapping):
        return None
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, Mapping):
        return None
    cfg = hyper_parameters.get("cfg")
    return cfg if isinstance(cfg, Mapping) and "model" in cfg else None


def load_model_source(
    path: str | Path,
    *,
    model_cfg: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    name: str | None = None,
    trust_checkpoint: bool = False,
) -> ModelSource:
    """Build and load a backbone for evaluation.

    Args:
        path: our Lightning ``.ckpt`` (training config inside) or bare backbone weights.
        model_cfg: model config node (``name``, ``backbone`` with ``_target_``, ``weights_format``,
            ``bgr_to_rgb``); required for bare weights, optional for our ``.ckpt`` (then its ``name``
            must equal the checkpoint's model).
        device: where the backbone is moved.
        name: display name (default: :func:`source_names` of ``path``).
        trust_checkpoint: full unpickling of the file and ``instantiate`` of its stored model config, which can
            run code the file carries; only for a file you trust. Otherwise the file is read tensors-only
            (:func:`~fr_invariance.models.checkpoint_io.load_checkpoint`) and its config may only name a
            registered backbone.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedCheckpointError: the file holds a type outside the tensors-only allow-list.
        NotACheckpointError: the file is not a torch checkpoint.
        CheckpointError: no way to know the model, a model name mismatch, or weights that do not fit the
            model (the message lists missing / unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(
            f"Checkpoint not found: {path}. Pass checkpoint=PATH to an existing Lightning .ckpt or backbone .pth."
        )
    checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    cfg = _training_config(checkpoint)
    # our checkpoints say which epoch the weights are, numbered as the invariance callback does
    epoch = checkpoint.get("invariance_epoch", checkpoint.get("epoch")) if isinstance(checkpoint, Mapping) else None
    steps_into_epoch = checkpoint.get("steps_into_epoch", 0) if isinstance(checkpoint, Mapping) else 0
    if isinstance(epoch, int) and steps_into_epoch:
        warnings.warn(f"{path} was saved {steps_into_epoch} steps into epoch {epoch + 1} (a mid-epoch checkpoint); "
                      f"it is reported as epoch {epoch}, the last completed one, but its weights are later.",
                      stacklevel=2)
    del checkpoint  # load_backbone_weights reads the file again; do not hold two copies
    if cfg is not None:
        trained = cfg["model"].get("name")
        if model_cfg is not None and model_cfg.get("name") != trained:
            raise CheckpointError(
                f"{path} was trained with model {trained!r} but model={model_cfg.get('name')} was given; "
                "drop the model= override (our .ckpt files carry their own model config)."
            )
        node, fmt, bgr_to_rgb = cfg["model"], "lightning", False
        image_size = int(cfg["data"]["image_size"])
    elif model_cfg is not None:
        node, fmt, bgr_to_rgb = model_cfg, model_cfg.get("weights_format", "auto"), model_cfg.get("bgr_to_rgb", "auto")
        image_size = None
    else:
        raise CheckpointError(
            f"{path} holds bare backbone weights without a training config; say which model they belong to "
            f"with model=<name> (one of {', '.join(available_backbones())})."
        )
    if cfg is not None:
        backbone = _checkpoint_backbone(node["backbone"], path, trust_checkpoint)
    else:
        backbone = instantiate(node["backbone"])  # the user's own model config (model=<name>)
    try:
        detected = load_backbone_weights(backbone, path, fmt=fmt, bgr_to_rgb=bgr_to_rgb,
                                         trust_checkpoint=trust_checkpoint)
    except WeightLoadingError as error:
        raise CheckpointError(
            f"{error}\nHint: the weights in {path} do not fit model {node.get('name')!r}; "
            "pick the model they were trained with (model=<name>) and the same image size (data.image_size)."
        ) from error
    return ModelSource(
        name=name or source_names([path])[0],
        path=path,
        backbone=backbone.to(device).eval(),
        image_size=image_size or int(backbone.input_size),
        epoch=int(epoch) if isinstance(epoch, int) else None,
        weights_format=detected,
        config=cfg,
    )


def load_shipped_model(model_cfg: Mapping[str, Any], *, device: torch.device | str = "cpu") -> ModelSource:
    """A pretrained model that brings its own weights (``model=sface``): built from its config alone."""
    backbone: nn.Module = instantiate(model_cfg["backbone"])
    return ModelSource(name=str(model_cfg.get("name", type(backbone).__name__)), path=None,
                       backbone=backbone.to(device).eval(), image_size=int(backbone.input_size), epoch=None,
                       weights_format="shipped")


def open_embedding_source(path: str | Path, *, metric: str = "cosine", name: str | None = None) -> EmbeddingSource:
    """A folder of paper-layout embeddings (FileNotFoundError naming what is missing)."""
    if metric not in ("cosine", "euclidean"):
        raise CheckpointError(f"metric must be 'cosine' or 'euclidean' for precomputed embeddings, got {metric!r}.")
    path = Path(path)
    if not path.is_dir():
        raise MissingPathError(
            f"Embeddings folder not found: {path}. Pass embeddings_dir=DIR holding df_param_step.csv and one .npy "
            "per identity."
        )
    return EmbeddingSource(name=name or source_names([path])[0], path=path,
                           embeddings=read_paper_embeddings(path), metric=metric)

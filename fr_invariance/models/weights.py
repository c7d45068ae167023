"""Loading backbone weights (insightface ``.pth``, our Lightning ``.ckpt``, AdaFace IR ``.ckpt``) and exporting them.

Formats:

- ``insightface``: a plain state_dict as saved by ``arcface_torch`` (a leading ``module.`` from
  DataParallel/DDP is stripped), or its full training checkpoint ``checkpoint_gpu_<rank>.pt`` (the backbone
  under ``state_dict_backbone``).
- ``lightning``: ``checkpoint["state_dict"]`` with keys ``backbone.<key>``; every other key (margin head,
  ...) is ignored.
- ``adaface``: an AdaFace IR checkpoint (``checkpoint["state_dict"]``, prefix ``model.``), converted with
  :func:`convert_adaface_state_dict`. The first block of an AdaFace IR has a parameter-free shortcut, so
  the iresnet must be built with ``first_stage_shortcut="subsample"``; AdaFace was trained on BGR input,
  so ``bgr_to_rgb="auto"`` (the default) flips its stem to RGB.

Files are read by :func:`~fr_invariance.models.checkpoint_io.load_checkpoint` (tensors-only unpickling unless
``trust_checkpoint``). Loading is strict: any missing, unexpected or mis-shaped key raises :class:`WeightLoadingError`.
A ``_orig_mod.`` segment (left by ``torch.compile``) is removed from every key before matching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from fr_invariance.errors import FrInvarianceError, MissingPathError, NotACheckpointError
from fr_invariance.models.checkpoint_io import load_checkpoint

FORMATS = ("auto", "insightface", "lightning", "adaface")
MAX_LISTED_KEYS = 8

_ADAFACE_STEM = {"input_layer.0": "conv1", "input_layer.1": "bn1", "input_layer.2": "prelu"}
_ADAFACE_OUTPUT = {"output_layer.0": "bn2", "output_layer.3": "fc", "output_layer.4": "features"}
_ADAFACE_BLOCK = {
    "res_layer.0": "bn1",
    "res_layer.1": "conv1",
    "res_layer.2": "bn2",
    "res_layer.3": "prelu",
    "res_layer.4": "conv2",
    "res_layer.5": "bn3",
    "shortcut_layer.0": "downsample.0",
    "shortcut_layer.1": "downsample.1",
}
_ADAFACE_BODY_KEY = re.compile(r"^body\.(\d+)\.(\w+\.\d+)\.(\w+)$")


class WeightLoadingError(FrInvarianceError, RuntimeError):
    """A checkpoint does not match the backbone; the message lists missing, unexpected and mis-shaped keys."""


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f", ... (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return f"{len(keys)} [{shown}{more}]"


def _detect_format(checkpoint: object) -> str:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        keys = list(checkpoint["state_dict"])
        if any(key.startswith("model.input_layer.") or key.startswith("input_layer.") for key in keys):
            return "adaface"
        return "lightning"
    if isinstance(checkpoint, Mapping) and any(".input_layer." in f".{key}" for key in checkpoint):
        return "adaface"
    return "insightface"


def _tensors(mapping: object, what: str) -> dict[str, Tensor]:
    if not isinstance(mapping, Mapping) or not all(isinstance(v, Tensor) for v in mapping.values()):
        raise WeightLoadingError(f"{what} is not a state_dict (a mapping of parameter names to tensors)")
    return dict(mapping)


def _strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}


def convert_adaface_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an AdaFace IR state_dict (``model.`` prefix optional) to the iresnet layout.

    ``input_layer.{0,1,2}`` → ``conv1/bn1/prelu``; ``body.N.res_layer.{0..5}`` → ``layerS.B.{bn1, conv1, bn2,
    prelu, conv2, bn3}`` and ``body.N.shortcut_layer.{0,1}`` → ``layerS.B.downsample.{0,1}``, where body blocks
    fill the stages in order and a stage ends where the output width (``res_layer.1`` out-channels) changes;
    ``output_layer.{0,3,4}`` → ``bn2/fc/features``. AdaFace's final BatchNorm1d has no affine parameters, so
    ``features.weight = 1`` and ``features.bias = 0`` are added when absent. ``head.*`` keys (the margin head)
    are dropped; keys that fit none of these patterns are kept unchanged so strict loading reports them.
    """
    state = {k: v for k, v in _strip_prefix(state, "model.").items() if not k.startswith("head.")}
    block_widths = {
        int(match.group(1)): state[key].shape[0]
        for key in state
        if (match := _ADAFACE_BODY_KEY.match(key)) and match.group(2) == "res_layer.1" and match.group(3) == "weight"
    }
    block_names: dict[int, str] = {}
    stage, index_in_stage, previous_width = 0, 0, None
    for block in sorted(block_widths):
        width = block_widths[block]
        if width != previous_width:
            stage, index_in_stage, previous_width = stage + 1, 0, width
        block_names[block] = f"layer{stage}.{index_in_stage}"
        index_in_stage += 1

    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        body = _ADAFACE_BODY_KEY.match(key)
        if module in _ADAFACE_STEM:
            new_key = f"{_ADAFACE_STEM[module]}.{leaf}"
        elif module in _ADAFACE_OUTPUT:
            new_key = f"{_ADAFACE_OUTPUT[module]}.{leaf}"
        elif body and int(body.group(1)) in block_names and body.group(2) in _ADAFACE_BLOCK:
            new_key = f"{block_names[int(body.group(1))]}.{_ADAFACE_BLOCK[body.group(2)]}.{body.group(3)}"
        else:
            new_key = key
        converted[new_key] = value
    if "features.running_mean" in converted:
        width = converted["features.running_mean"].shape
        converted.setdefault("features.weight", torch.ones(width, dtype=converted["features.running_mean"].dtype))
        converted.setdefault("features.bias", torch.zeros(width, dtype=converted["features.running_mean"].dtype))
    return converted


def _backbone_state(checkpoint: object, fmt: str, path: Path) -> dict[str, Tensor]:
    if fmt == "insightface":
        if isinstance(checkpoint, Mapping) and "state_dict_backbone" in checkpoint:  # arcface_torch's training state
            checkpoint = checkpoint["state_dict_backbone"]
        return _strip_prefix(_tensors(checkpoint, f"{path} (insightface format)"), "module.")
    has_state_dict = isinstance(checkpoint, Mapping) and "state_dict" in checkpoint
    if fmt == "adaface":
        state = checkpoint["state_dict"] if has_state_dict else checkpoint
        return convert_adaface_state_dict(_tensors(state, f"{path} (adaface format)"))
    if not has_state_dict:
        raise WeightLoadingError(f"{path} has no 'state_dict' entry, so it is not a lightning checkpoint")
    state = _tensors(checkpoint["state_dict"], f"{path}['state_dict']")
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone_state:
        raise WeightLoadingError(f"{path}['state_dict'] has no 'backbone.*' keys, so it is not a lightning checkpoint")
    return backbone_state


def _flip_stem_channels(state: dict[str, Tensor]) -> None:
    stems = [key for key, value in state.items() if value.ndim == 4 and value.shape[1] == 3]
    if len(stems) != 1:
        raise WeightLoadingError(f"bgr_to_rgb needs exactly one conv weight with 3 input channels, found {stems}")
    state[stems[0]] = state[stems[0]].flip(1)


def _check_keys(backbone: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    expected = backbone.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    # AdaFace IR's first stage has a parameter-free shortcut: exactly the layer1 downsample keys are missing
    needs_subsample = bool(missing) and not unexpected and all(key.startswith("layer1.0.downsample.") for key in missing)
    if missing or unexpected or misshaped:
        raise WeightLoadingError(
            f"weights in {path} do not fit {type(backbone).__name__}: "
            f"missing keys {_listed(missing)}; unexpected keys {_listed(unexpected)}; "
            f"mis-shaped keys (file vs model) {_listed(misshaped)}. "
            "Check the model name/size, input_size (it sets the fc shape) and weights_format"
            + (" (AdaFace IR needs first_stage_shortcut='subsample')" if needs_subsample else "")
        )


def load_backbone_weights(
    backbone: nn.Module,
    path: str | Path,
    fmt: str = "auto",
    bgr_to_rgb: bool | str = "auto",
    *,
    trust_checkpoint: bool = False,
) -> str:
    """Load backbone weights from ``path`` into ``backbone`` in place (strict), and return the format used.

    Args:
        backbone: the model to fill.
        path: checkpoint file.
        fmt: ``"auto"`` | ``"insightface"`` | ``"lightning"`` | ``"adaface"`` (see module doc).
        bgr_to_rgb: reverse the input-channel order of the stem conv (the only conv weight with 3 input
            channels), for checkpoints trained on BGR images: ``True``, ``False`` or ``"auto"`` (only for the
            ``adaface`` format, whose models are trained on BGR).
        trust_checkpoint: read the file with full unpickling, which can run code it carries (see
            :func:`~fr_invariance.models.checkpoint_io.load_checkpoint`); only for a file you trust.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown ``fmt``.
        UntrustedCheckpointError: the file holds a type outside the tensors-only allow-list.
        WeightLoadingError: the file is not a torch checkpoint, or its keys or shapes do not match ``backbone``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if bgr_to_rgb not in (True, False, "auto"):
        raise WeightLoadingError(f"model.bgr_to_rgb must be true, false or auto, got {bgr_to_rgb!r}")
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"backbone weights file not found: {path} (set model.weights to an existing file)")
    try:
        checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    except NotACheckpointError as error:
        raise WeightLoadingError(str(error)) from error
    detected = _detect_format(checkpoint) if fmt == "auto" else fmt
    state = {key.replace("_orig_mod.", ""): value for key, value in _backbone_state(checkpoint, detected, path).items()}
    flip_stem = detected == "adaface" if bgr_to_rgb == "auto" else bgr_to_rgb
    if flip_stem:
        _flip_stem_channels(state)
    _check_keys(backbone, state, path)
    backbone.load_state_dict(state, strict=True)
    return detected


def export_insightface(backbone: nn.Module, path: str | Path) -> None:
    """Save ``backbone``'s state_dict (CPU tensors, arcface_torch key names) with ``torch.save`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key.replace("_orig_mod.", ""): tensor.detach().cpu().clone()
             for key, tensor in backbone.state_dict().items()}
    torch.save(state, path)

"""Validate every user-facing config value before any work starts (DESIGN §2).

:func:`validate_train_config` and :func:`validate_evaluate_config` raise one
:class:`~fr_invariance.errors.ConfigurationError` (or :class:`~fr_invariance.errors.MissingPathError`) whose
message names the key, the value and what is allowed, e.g.::

    aug.strength=1.5 is outside [0, 1] (augmentation strength: the targeted attribute's control ~ U(-s, s))

Checked: types and ranges of the numeric keys; attribute names; ε > 0 and k >= 1 of the energy settings;
paths that must exist; a semantic attribute on real images; the image size against the model (the backbone is
built on the ``meta`` device and run on an empty image, so nothing is allocated); config keys that the
object a node builds does not take (``+probe.typo=1``). Unknown options of a config group and unknown keys
without ``+`` are Hydra's own errors (shortened by :mod:`fr_invariance.cli`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from fr_invariance.attributes import ATTRIBUTE_NAMES, IMAGE_ATTRIBUTES, NO_ATTRIBUTE, get_attribute
from fr_invariance.errors import ConfigurationError, MissingPathError
from fr_invariance.training.head_init import HEAD_INITS

_ABSENT = object()
_SPECIAL_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
NEIGHBOURHOODS = ("ball", "knn", "inverse_distance")
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
SCHEMAS: dict[str, tuple[str, frozenset[str]]] = {
    "energy": ("fr_invariance.evaluation.invariance.EnergySettings", frozenset({"knn"})),
}
"""Config nodes without ``_target_`` passed whole to a class: their keys must be its fields (or the extras,
read by the caller: ``energy.knn`` is read by ``fr_invariance.evaluation.probe.energy_settings``)."""


@dataclass(frozen=True)
class Number:
    """A numeric key: ``low``/``high`` bounds (None = open), inclusive unless ``*_open``."""

    key: str
    what: str
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def range_text(self) -> str:
        """``[0, 1]``, ``(0, 1]``, ``> 0``, ``>= 1``, ... (empty without bounds)."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
        return ""

    def allowed(self) -> str:
        """E.g. ``a number in [0, 1]``, ``an integer >= 1 or null``."""
        kind = "an integer" if self.integer else "a number"
        bounds = self.range_text()
        text = f"{kind} in {bounds}" if bounds.startswith(("[", "(")) else f"{kind} {bounds}".strip()
        return text + (" or null" if self.optional else "")

    def inside(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _shown(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return repr(value) if isinstance(value, str) else str(value)


def select(cfg: DictConfig, key: str) -> Any:
    """The value at dotted ``key`` (``_ABSENT`` when the key does not exist); mandatory ``???`` values and
    broken interpolations become a :class:`ConfigurationError` naming the key."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigurationError(f"{key} is required (it is ??? in the config): set {key}=... on the command line.") from None
    except InterpolationResolutionError as error:
        raise ConfigurationError(f"{key}: cannot resolve its value: {str(error).splitlines()[0]}") from None


# --- single checks -----------------------------------------------------------------------------------


def check_number(cfg: DictConfig, rule: Number) -> None:
    """Raise unless the value at ``rule.key`` (when present) has the rule's type and lies in its range."""
    value = select(cfg, rule.key)
    if value is _ABSENT or (value is None and rule.optional):
        return
    integer_ok = isinstance(value, int) and not isinstance(value, bool)
    number_ok = integer_ok or (isinstance(value, float) and not rule.integer)
    if not number_ok:
        raise ConfigurationError(f"{rule.key}={_shown(value)} has the wrong type: expected {rule.allowed()} "
                                 f"({rule.key}: {rule.what}).")
    if not rule.inside(float(value)):
        bounds = rule.range_text()
        verb = "is outside" if bounds.startswith(("[", "(")) else "must be"
        raise ConfigurationError(f"{rule.key}={_fmt(value)} {verb} {bounds} ({rule.key}: {rule.what}).")


def check_bool(cfg: DictConfig, key: str, what: str) -> None:
    """Raise unless the value at ``key`` (when present) is true or false."""
    value = select(cfg, key)
    if value is not _ABSENT and not isinstance(value, bool):
        raise ConfigurationError(f"{key}={_shown(value)} has the wrong type: expected true or false ({key}: {what}).")


def check_choice(cfg: DictConfig, key: str, choices: Iterable[str], what: str, *, optional: bool = False) -> None:
    """Raise unless the value at ``key`` (when present) is one of ``choices``."""
    value = select(cfg, key)
    if value is _ABSENT or (value is None and optional):
        return
    choices = tuple(choices)
    if str(value) not in choices or not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigurationError(f"{key}={_shown(value)} is not allowed: {key} ({what}) takes one of "
                                 f"{', '.join(choices)}.")


def check_path(cfg: DictConfig, key: str, what: str, *, kind: str = "any") -> None:
    """Raise :class:`MissingPathError` unless the path(s) at ``key`` (when set) exist (``kind``: file/dir/any)."""
    value = select(cfg, key)
    if value is _ABSENT or value is None or value == "":
        return
    paths = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    for path in paths:
        if not isinstance(path, str):
            raise ConfigurationError(f"{key}={_shown(path)} has the wrong type: expected a path ({key}: {what}).")
        target = Path(path).expanduser()
        if not target.exists():
            raise MissingPathError(f"{key}={path}: not found ({what}; give an existing "
                                   f"{'file' if kind == 'file' else 'folder' if kind == 'dir' else 'file or folder'}).")
        if kind == "file" and not target.is_file():
            raise MissingPathError(f"{key}={path} is a folder; {key} ({what}) takes a file.")
        if kind == "dir" and not target.is_dir():
            raise MissingPathError(f"{key}={path} is a file; {key} ({what}) takes a folder.")


def check_attribute_list(cfg: DictConfig, key: str, what: str, *, allow_none: bool = False) -> None:
    """Raise unless ``key`` (when set) lists known attribute names (and ``none`` with ``allow_none``)."""
    value = select(cfg, key)
    if value is _ABSENT or value is None:
        return
    names = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    for name in names:
        if str(name) not in ATTRIBUTE_NAMES and not (allow_none and str(name) == NO_ATTRIBUTE):
            raise ConfigurationError(f"{key}: unknown attribute {_shown(name)} ({what}); known attributes: "
                                     f"{', '.join(ATTRIBUTE_NAMES)}.")


def check_threads(cfg: DictConfig) -> None:
    """``threads``: ``auto`` or an integer from 1 to the cores available to this process."""
    from fr_invariance.cli import available_cores

    value = select(cfg, "threads")
    if value is _ABSENT or value in (None, "auto"):
        return
    cores = available_cores()
    check_number(cfg, Number("threads", "torch threads of this process; auto = the available cores divided by "
                             "the parallel jobs", integer=True, low=1, high=cores))


def check_energy(cfg: DictConfig, prefix: str = "energy") -> None:
    """Energy settings (DESIGN §5): neighbourhood, ε > 0 (ball), integer k >= 1 (knn), the kNN list, counts."""
    if select(cfg, prefix) in (_ABSENT, None):
        return
    check_choice(cfg, f"{prefix}.neighbourhood", NEIGHBOURHOODS, "neighbourhood of the alignment energy")
    neighbourhood = select(cfg, f"{prefix}.neighbourhood")
    params = select(cfg, f"{prefix}.params")
    if params is not _ABSENT and neighbourhood != "inverse_distance":
        values = list(params) if isinstance(params, (ListConfig, list, tuple)) else [params]
        for value in values:
            if neighbourhood == "knn":
                _check_k(f"{prefix}.params", value, "k of the kNN neighbourhood")
            else:
                _check_epsilon(f"{prefix}.params", value)
    knn = select(cfg, f"{prefix}.knn")
    if knn not in (_ABSENT, None):
        for value in (list(knn) if isinstance(knn, (ListConfig, list, tuple)) else [knn]):
            _check_k(f"{prefix}.knn", value, "k of the kNN energy measured beside the main neighbourhood")
    check_number(cfg, Number(f"{prefix}.n_pairs", "random pairs for the scale d̄", integer=True, low=1))
    check_number(cfg, Number(f"{prefix}.max_neighbours", "neighbour cap per point", integer=True, low=1,
                             optional=True))
    check_number(cfg, Number(f"{prefix}.seed", "seed of the energy's random draws", integer=True))
    check_bool(cfg, f"{prefix}.exact_repro", "reproduce the authors' script")
    check_bool(cfg, f"{prefix}.null_baseline", "also the energy of random vectors")


def _check_epsilon(key: str, value: Any) -> None:
    what = "ball radius in multiples of the identity's mean distance d̄"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key}: ε={_shown(value)} has the wrong type: expected a number > 0 ({key}: {what}).")
    if value <= 0:
        raise ConfigurationError(f"{key}: ε={_fmt(value)} must be > 0 ({key}: {what}).")


def _check_k(key: str, value: Any, what: str) -> None:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not integral:
        raise ConfigurationError(f"{key}: k={_shown(value)} has the wrong type: expected an integer >= 1 ({key}: {what}).")
    if value < 1:
        raise ConfigurationError(f"{key}: k={_fmt(value)} must be >= 1 ({key}: {what}).")


def check_probe(cfg: DictConfig, prefix: str = "probe") -> None:
    """The invariance probe (conf/probe): identities, curves, step, nuisance, attributes, batch size."""
    if select(cfg, prefix) in (_ABSENT, None):
        return
    for rule in (
        Number(f"{prefix}.n_identities", "held-out probe identities", integer=True, low=1),
        Number(f"{prefix}.n_curves", "curve centres per attribute", integer=True, low=1),
        Number(f"{prefix}.step", "curve half-step in control units", low=0, high=1, low_open=True),
        Number(f"{prefix}.nuisance", "half-width of the curve-centre box", low=0, high=1),
        Number(f"{prefix}.batch_size", "images per forward pass", integer=True, low=1),
        Number(f"{prefix}.render_batch_size", "images per rendering call", integer=True, low=1),
        Number(f"{prefix}.image_cache_mb", "memory for cached probe images", low=0),
        Number(f"{prefix}.identity_seed", "seed of the probe identities", integer=True),
        Number(f"{prefix}.design_seed", "seed of the curve design", integer=True),
    ):
        check_number(cfg, rule)
    check_attribute_list(cfg, f"{prefix}.attributes", "attributes the probe measures")


# --- structure ---------------------------------------------------------------------------------------


def _accepted_keys(target: str) -> set[str] | None:
    """Keyword arguments ``target`` takes (None: it takes ``**kwargs`` or cannot be inspected)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - an unimportable target is reported when it is instantiated
        return None
    if is_dataclass(obj):
        return {field.name for field in fields(obj)}
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return {name for name, p in signature.parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def check_keys(cfg: DictConfig, prefix: str = "", node: Any = None) -> None:
    """Raise for a key that the object its node builds does not take (``_target_`` nodes, :data:`SCHEMAS`)."""
    node = cfg if node is None else node
    if not isinstance(node, DictConfig):
        return
    raw = OmegaConf.to_container(node, resolve=False)
    assert isinstance(raw, dict)
    target, extra = (raw["_target_"], frozenset()) if isinstance(raw.get("_target_"), str) else SCHEMAS.get(prefix, (None, frozenset()))
    if target is not None:
        accepted = _accepted_keys(target)
        if accepted is not None:
            accepted |= extra
            for key in raw:
                if key not in accepted and key not in _SPECIAL_KEYS:
                    name = f"{prefix}.{key}" if prefix else key
                    raise ConfigurationError(f"{name}: unknown config key; {target.rsplit('.', 1)[-1]} ({prefix or 'the config'}) "
                                             f"takes: {', '.join(sorted(accepted))}.")
    for key in raw:
        value = raw[key]
        if isinstance(value, dict):  # nested node (not an interpolation)
            check_keys(cfg, f"{prefix}.{key}" if prefix else str(key), node[key])


def check_image_size(cfg: DictConfig, size_key: str = "data.image_size", model_key: str = "model") -> None:
    """Build the backbone on the ``meta`` device and run it on one empty ``size × size`` image: a size the
    model cannot take becomes an error naming ``size_key``, its value and the model's own limit."""
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    backbone_cfg = select(cfg, f"{model_key}.backbone")
    size = select(cfg, size_key)
    if backbone_cfg in (_ABSENT, None) or size in (_ABSENT, None) or not isinstance(backbone_cfg, DictConfig):
        return
    name = select(cfg, f"{model_key}.name")
    label = f"model '{name}'" if isinstance(name, str) else "the model"
    try:
        with torch.device("meta"):
            backbone = instantiate(backbone_cfg)
            backbone.eval()
            with torch.no_grad():
                backbone(torch.empty(2, 3, int(size), int(size)))
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError) and "size" in str(cause):
            raise ConfigurationError(f"{size_key}={size} is too small for {label}: {cause}") from None
        raise
    except (RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigurationError(f"{size_key}={size} does not fit {label} (the image is too small for its "
                                 f"layers: {first}); use a larger {size_key}.") from None


def check_semantic_on_real_data(cfg: DictConfig) -> None:
    """A semantic attribute (rendered only) needs rendered training data, or data that carries its control."""
    from hydra.utils import get_object

    attr = select(cfg, "attr.name")
    target = select(cfg, "data.module.train._target_")
    if attr in (_ABSENT, None, NO_ATTRIBUTE) or target in (_ABSENT, None) or get_attribute(attr).kind != "semantic":
        return
    from fr_invariance.data.datasets.synthetic import SyntheticFaces

    dataset = get_object(str(target))
    if isinstance(dataset, type) and (issubclass(dataset, SyntheticFaces) or getattr(dataset, "may_carry_controls", False)):
        return
    raise ConfigurationError(
        f"attr={attr} is a semantic attribute: only rendered faces (data=synthetic) can change it, and the "
        f"training data ({str(target).rsplit('.', 1)[-1]}) are real images; on real images attr takes an "
        f"image-level attribute: {', '.join(IMAGE_ATTRIBUTES)}."
    )


# --- the two entry points ----------------------------------------------------------------------------

_COMMON_NUMBERS = (
    Number("seed", "random seed", integer=True),
    Number("data.image_size", "image side in pixels", integer=True, low=1),
    Number("invariance.every_n_epochs", "measure invariance every n epochs", integer=True, low=1),
)

_TRAIN_NUMBERS = (
    Number("aug.strength", "augmentation strength: the targeted attribute's control ~ U(-s, s)", low=0, high=1),
    Number("data.batch_size", "training batch size per device", integer=True, low=1),
    Number("data.identities", "training identities", integer=True, low=2),
    Number("data.samples_per_epoch", "training images per epoch", integer=True, low=1),
    Number("data.num_workers", "data loader worker processes", integer=True, low=0),
    Number("data.val_identities", "held-out identities", integer=True, low=2),
    Number("data.val_pairs", "verification pairs", integer=True, low=2),
    Number("data.val_vary_pairs", "pairs of each vary_<attr> set", integer=True, low=0),
    Number("data.val_hard_impostors", "nearest identities an impostor is drawn from", integer=True, low=0),
    Number("data.val_nuisance_scale", "validation nuisance ranges relative to training", low=0),
    Number("data.max_bad_fraction", "unreadable samples tolerated", low=0, high=1, high_open=True),
    Number("trainer.max_epochs", "training epochs", integer=True, low=1),
    Number("trainer.gradient_clip_val", "gradient clipping norm", low=0, optional=True),
    Number("trainer.log_every_n_steps", "logging interval in steps", integer=True, low=1),
    Number("trainer.num_nodes", "nodes of a multi-node run", integer=True, low=1),
    Number("optim.lr", "learning rate", low=0, low_open=True),
    Number("optim.weight_decay", "weight decay", low=0),
    Number("optim.momentum", "SGD momentum", low=0, high=1, high_open=True),
    Number("head.s", "logit scale of the margin head", low=0, low_open=True),
    Number("head.m", "margin of the margin head", low=0),
    Number("head_lr_mult", "head learning rate relative to optim.lr", low=0),
    Number("head_warmup_steps", "steps that train only the head", integer=True, low=0),
    Number("checkpoint_every_n_steps", "steps between mid-epoch checkpoints; 0 = only at epoch ends",
           integer=True, low=0),
)


def validate_train_config(cfg: DictConfig) -> None:
    """Every user-facing value of a ``train.py`` config (see the module doc); raise on the first problem."""
    check_choice(cfg, "attr.name", (*ATTRIBUTE_NAMES, NO_ATTRIBUTE), "targeted attribute")
    for rule in (*_COMMON_NUMBERS, *_TRAIN_NUMBERS):
        check_number(cfg, rule)
    nuisance = select(cfg, "aug.nuisance")
    if isinstance(nuisance, DictConfig):
        for name in nuisance:
            if str(name) not in ATTRIBUTE_NAMES:
                raise ConfigurationError(f"aug.nuisance.{name}: unknown attribute; aug.nuisance takes "
                                         f"{', '.join(ATTRIBUTE_NAMES)}.")
            check_number(cfg, Number(f"aug.nuisance.{name}", "nuisance half-width (null = registry default)",
                                     low=0, high=1, optional=True))
    batch, samples = select(cfg, "data.batch_size"), select(cfg, "data.samples_per_epoch")
    if isinstance(batch, int) and isinstance(samples, int) and samples < batch:
        raise ConfigurationError(f"data.samples_per_epoch={samples} is smaller than data.batch_size={batch}: an epoch "
                                 "needs at least one batch (data.samples_per_epoch takes an integer >= data.batch_size).")
    for key, what in (("resume", "continue the run in its run directory"), ("freeze_bn", "freeze BatchNorm"),
                      ("freeze_trunk", "train only the embedding projection"), ("trust_checkpoint", "full unpickling"),
                      ("model.keep_head", "reuse the head of model.weights"),
                      ("trainer.deterministic", "deterministic algorithms"),
                      ("invariance.before_training", "measure before the first step")):
        check_bool(cfg, key, what)
    check_choice(cfg, "trainer.precision", PRECISIONS, "numeric precision")
    check_choice(cfg, "head_init", HEAD_INITS, "margin-head initialisation")
    if select(cfg, "head_init") == "imprint" and select(cfg, "model.keep_head") is True:
        raise ConfigurationError("head_init=imprint and model.keep_head=true both set the head: keep the "
                                 "checkpoint's head (model.keep_head=true) or imprint a new one (head_init=imprint).")
    check_choice(cfg, "trainer.accelerator", ACCELERATORS, "device type")
    check_choice(cfg, "model.weights_format", ("auto", "insightface", "lightning", "adaface"), "format of model.weights")
    check_threads(cfg)
    check_energy(cfg)
    check_probe(cfg)
    check_attribute_list(cfg, "data.val_vary", "attributes with a vary_<attr> pair set", allow_none=True)
    check_path(cfg, "model.weights", "warm-start weights", kind="file")
    check_path(cfg, "ckpt_path", "checkpoint to resume from", kind="file")
    for key in ("data.root", "data.val_root"):
        check_path(cfg, key, "data folder")
    check_path(cfg, "data.val_bins", "verification .bin sets", kind="file")
    check_semantic_on_real_data(cfg)
    check_keys(cfg)
    check_image_size(cfg)


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Every user-facing value of an ``evaluate.py`` config (see the module doc); raise on the first problem."""
    for rule in (*_COMMON_NUMBERS, Number("batch_size", "images per forward pass", integer=True, low=1)):
        check_number(cfg, rule)
    check_choice(cfg, "metric", ("cosine", "euclidean"), "position metric of embeddings_dir")
    device = select(cfg, "device")
    if device is not _ABSENT and not (isinstance(device, str) and (device in ("auto", "cpu", "cuda", "mps")
                                                                    or device.startswith("cuda:"))):
        raise ConfigurationError(f"device={_shown(device)} is not allowed: device takes auto, cpu, cuda, cuda:<index> "
                                 "or mps.")
    check_bool(cfg, "progress", "progress bars")
    check_bool(cfg, "trust_checkpoint", "full unpickling of trusted model files")
    check_threads(cfg)
    check_energy(cfg)
    check_probe(cfg)
    check_probe(cfg, "analysis.probe")
    check_path(cfg, "checkpoint", "model checkpoint or embeddings folder")
    check_path(cfg, "checkpoints", "model checkpoints")
    check_path(cfg, "embeddings_dir", "precomputed embeddings", kind="dir")
    check_path(cfg, "sweep_dir", "folder of a controlled experiment", kind="dir")
    check_path(cfg, "bins", "verification .bin sets", kind="file")
    check_path(cfg, "analysis.data.celeba_root", "CelebA folder", kind="dir")
    check_keys(cfg)
    if select(cfg, "model") not in (_ABSENT, None):
        check_image_size(cfg)


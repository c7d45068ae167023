"""The one loader for every checkpoint-like file (backbone ``.pth``, Lightning and AdaFace ``.ckpt``, our own files).

Policy: files from elsewhere never execute code. :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``:
tensors, plain containers and numbers, plus the few non-tensor types that real checkpoints hold, allowed by name
through torch's safe-globals mechanism (:data:`ALLOWED_GLOBALS`). Any other type is refused before it is imported
or called, with one line naming the file, the type and the opt-in. Full unpickling (which can run arbitrary code)
happens only with ``trust=True`` (``trust_checkpoint=true`` on the command line), never as a fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import torch
from torch.serialization import safe_globals

from fr_invariance.errors import ConfigurationError, MissingPathError, NotACheckpointError, UntrustedCheckpointError

OPT_IN = "trust_checkpoint=true"

_ATTRIBUTE_DICT = "fr_invariance.models.checkpoint_io:AttributeDictAsDict"
_PATH_TYPES = {"posix": ("PosixPath", "PureWindowsPath"), "nt": ("PurePosixPath", "WindowsPath")}
_POSIX_PATH, _WINDOWS_PATH = _PATH_TYPES["nt" if os.name == "nt" else "posix"]
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"

#: Pickled name -> ``module:attribute`` of the object bound to it (a name may map to a safer equivalent:
#: Lightning's ``AttributeDict`` to :class:`AttributeDictAsDict`, a Windows path read on Linux to a pure path).
ALLOWED_GLOBALS: dict[str, str] = {
    # Lightning hyper-parameter container (a dict with attribute access), under each generation's name
    "lightning.fabric.utilities.data.AttributeDict": _ATTRIBUTE_DICT,
    "lightning_fabric.utilities.data.AttributeDict": _ATTRIBUTE_DICT,
    "pytorch_lightning.utilities.parsing.AttributeDict": _ATTRIBUTE_DICT,
    # AdaFace (and other argparse-driven trainers) keep their hyper-parameters as a Namespace
    "argparse.Namespace": "argparse:Namespace",
    # paths in hyper-parameters
    **{f"{module}.{name}": f"pathlib:{target}"
       for module in ("pathlib", "pathlib._local")
       for name, target in (("PosixPath", _POSIX_PATH), ("WindowsPath", _WINDOWS_PATH),
                            ("PurePosixPath", "PurePosixPath"), ("PureWindowsPath", "PureWindowsPath"))},
    # OmegaConf containers: Lightning stores ``save_hyperparameters(DictConfig)`` as the container itself
    **{f"omegaconf.{name}": f"omegaconf.{name.rpartition('.')[0]}:{name.rpartition('.')[2]}" for name in (
        "dictconfig.DictConfig", "listconfig.ListConfig", "base.ContainerMetadata", "base.Metadata",
        "nodes.AnyNode", "nodes.StringNode", "nodes.IntegerNode", "nodes.FloatNode", "nodes.BooleanNode",
        "nodes.BytesNode", "nodes.PathNode")},
    # ... whose metadata records the annotated types of their values
    "typing.Any": "typing:Any",
    "collections.defaultdict": "collections:defaultdict",
    **{f"builtins.{name}": f"builtins:{name}" for name in ("dict", "list", "tuple", "int", "float", "str", "bool",
                                                            "bytes")},
    # numpy scalars and arrays (metrics logged as numpy values); the dtype classes are added below
    **{f"{module}.multiarray.{name}": f"{_NUMPY_CORE}.multiarray:{name}"
       for module in ("numpy.core", "numpy._core") for name in ("scalar", "_reconstruct")},
    "numpy.ndarray": "numpy:ndarray",
    "numpy.dtype": "numpy:dtype",
}

#: numpy dtype kinds whose dtype objects may be rebuilt (bool, integers, floats, complex; never object ``O``)
_NUMPY_DTYPE_CODES = "?bhilqBHILQefdgFDG"
_REFUSED_IN_TORCH_MESSAGE = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")
_TORCH_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_MAX_LISTED = 4
_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol-2 pickles use Python 2 names


class AttributeDictAsDict:
    """Bound to the names of Lightning's ``AttributeDict`` (a ``dict`` subclass holding hyper-parameters): builds
    a plain ``dict`` instead, because torch's tensors-only unpickler fills only plain dicts."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:  # type: ignore[misc]
        return dict(*args, **kwargs)


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@lru_cache(maxsize=1)
def allowed_safe_globals() -> tuple[tuple[Any, str], ...]:
    """``(object, pickled name)`` pairs for ``torch.serialization.safe_globals``: :data:`ALLOWED_GLOBALS` (entries
    whose package is not installed are skipped) and the numpy dtype classes of :data:`_NUMPY_DTYPE_CODES`."""
    pairs: list[tuple[Any, str]] = []
    for name, target in ALLOWED_GLOBALS.items():
        try:
            pairs.append((_resolve(target), name))
        except (ImportError, AttributeError):
            continue
    import numpy as np

    for code in _NUMPY_DTYPE_CODES:
        dtype_class = type(np.dtype(code))
        pairs.append((dtype_class, f"{dtype_class.__module__}.{dtype_class.__qualname__}"))
    return tuple(pairs)


def _pickle_streams(handle: IO[bytes]) -> Iterator[IO[bytes]]:
    """The pickle stream(s) of a file: ``data.pkl`` of a ``torch.save`` zip, else the file itself (a legacy
    ``torch.save`` file is several pickles in a row, a plain pickle one)."""
    if zipfile.is_zipfile(handle):
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            for name in archive.namelist():
                if name == "data.pkl" or name.endswith("/data.pkl"):
                    yield io.BytesIO(archive.read(name))
        return
    handle.seek(0)
    yield handle


def pickle_globals(path: str | Path) -> list[str]:
    """Every ``module.name`` a pickle-based file references (read statically: nothing is imported or called)."""
    found: list[str] = []
    with open(path, "rb") as handle:
        for stream in _pickle_streams(handle):
            while True:  # one pickle after the other, until the bytes stop being a pickle
                strings: list[Any] = []
                memo: dict[int, Any] = {}
                try:
                    for opcode, argument, _ in pickletools.genops(stream):
                        if opcode.name in _STRING_OPS:
                            strings.append(argument)
                        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                            strings.append(memo.get(int(argument)))
                        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                            memo[int(argument)] = strings[-1]
                        elif opcode.name == "MEMOIZE":
                            memo[len(memo)] = strings[-1] if strings else None
                        elif opcode.name in ("GLOBAL", "INST"):  # argument: "module name"
                            found.append(str(argument).replace(" ", ".", 1))
                        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:  # module, name pushed before
                            found.append(f"{strings[-2]}.{strings[-1]}")
                except Exception:  # noqa: BLE001 - the rest of the file is not a pickle (tensor bytes, garbage)
                    break
    normalised = []
    for entry in found:
        module, _, name = entry.partition(".")
        normalised.append(f"{_PYTHON2_MODULES.get(module, module)}.{name}")
    return list(dict.fromkeys(normalised))


def _refused_globals(path: Path, error: BaseException) -> list[str]:
    """The referenced types outside torch's defaults and :data:`ALLOWED_GLOBALS` (the torch message's name when
    the file cannot be scanned)."""
    defaults = getattr(getattr(torch, "_weights_only_unpickler", None), "_get_allowed_globals", dict)()
    allowed = set(defaults) | {name for _, name in allowed_safe_globals()}
    try:
        refused = [name for name in pickle_globals(path) if name not in allowed]
    except OSError:
        refused = []
    return refused or ["".join(names) for names in _REFUSED_IN_TORCH_MESSAGE.findall(str(error))]


def _reason(error: BaseException) -> str:
    """A short, one-line reason from a ``torch.load`` error."""
    text = str(error)
    match = _TORCH_REASON.search(text)
    line = match.group(1) if match else next((line for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {line.strip()[:200]}"


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def load_checkpoint(path: str | Path, *, trust: bool = False, mmap: bool = False) -> object:
    """Read a checkpoint-like file on the CPU without letting it run code.

    Args:
        path: a ``torch.save`` file (zip or legacy format): a state_dict, a Lightning/AdaFace ``.ckpt``...
        trust: full unpickling (``weights_only=False``), which runs whatever code the file carries; only for a
            file whose source the user trusts (``trust_checkpoint=true``).
        mmap: memory-map the tensors instead of reading them (zip-format files; ignored for legacy ones).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UntrustedCheckpointError: the file holds a type outside the allow-list (refused before it ran).
        NotACheckpointError: ``torch.load`` cannot read the file.
        ConfigurationError: ``trust`` is not a bool (e.g. ``trust_checkpoint=yes``).
    """
    if not isinstance(trust, bool):
        raise ConfigurationError(f"trust_checkpoint must be true or false, got {trust!r}.")
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint file not found: {path}")
    mmap = mmap and zipfile.is_zipfile(path)
    if trust:
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception as error:  # noqa: BLE001 - torch.load raises many types for a file it cannot read
            raise NotACheckpointError(f"{path} is not a torch checkpoint ({_reason(error)}).") from error
    try:
        with safe_globals(list(allowed_safe_globals())), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused or read: said below
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a file it cannot read
        failure = error
    refused = _refused_globals(path, failure)
    if refused:
        shown = ", ".join(refused[:_MAX_LISTED]) + (f" (+{len(refused) - _MAX_LISTED} more)"
                                                    if len(refused) > _MAX_LISTED else "")
        raise UntrustedCheckpointError(
            f"{path} was not loaded: it holds Python type(s) {shown}, outside what tensors-only loading allows "
            f"(unpickling them could run code); if you trust this file's source, rerun with {OPT_IN}."
        ) from failure
    if _looks_like_pickle(path):
        raise NotACheckpointError(
            f"{path} cannot be read by tensors-only loading ({_reason(failure)}); if it is a torch checkpoint "
            f"from a source you trust, rerun with {OPT_IN}."
        ) from failure
    raise NotACheckpointError(
        f"{path} is not a torch checkpoint ({_reason(failure)}); expected a file written by torch.save "
        "(a state_dict, or a Lightning/AdaFace .ckpt)."
    ) from failure

"""Restricted reading of insightface verification ``.bin`` sets, which are pickles by format.

A ``.bin`` holds ``(bins, issame)``: ``bins`` the encoded images (JPEG/PNG bytes), two per pair in a row, and
``issame`` one flag per pair (a list of bools, or a numpy bool array). Most published files were written by
Python 2, so they are read with ``encoding="bytes"`` (a Python 2 ``str`` becomes ``bytes``).

Unpickling may only rebuild what the format needs: containers, byte strings, numbers, numpy arrays of
``bool`` or ``uint8`` and numpy ``bool`` scalars. An encoded image may be a uint8 vector, ``(N,)`` or
``(N, 1)`` (``cv2.imencode``'s output, which insightface's AgeDB and CFP packers stored as it came). Any other
``module.name`` in the file is refused before it is imported or called
(:class:`~fr_invariance.errors.UnsafeFileError`): a pickle can carry code that runs when it is loaded.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fr_invariance.errors import ConfigurationError, MissingPathError, UnsafeFileError

_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"
_ALLOWED_DTYPES = (np.dtype(np.bool_), np.dtype(np.uint8))


class VerificationBinError(ConfigurationError):
    """A ``.bin`` that is not a verification set (not a pickle, or not ``(encoded images, issame flags)``)."""


def _numpy_core(module: str, name: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(f"{_NUMPY_CORE}.{module}"), name)


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` hands out only the few callables a verification set needs."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed: dict[str, Callable[..., Any]] = {
            # numpy arrays (issame as a bool array): protocol <= 4 and protocol 5 reconstruction
            **{f"{core}.multiarray._reconstruct": _numpy_core("multiarray", "_reconstruct")
               for core in ("numpy.core", "numpy._core")},
            **{f"{core}.numeric._frombuffer": _numpy_core("numeric", "_frombuffer")
               for core in ("numpy.core", "numpy._core")},
            **{f"{core}.multiarray.scalar": self._bool_scalar for core in ("numpy.core", "numpy._core")},
            "numpy.ndarray": np.ndarray,
            "numpy.dtype": self._dtype,
            # bytes in a protocol-2 pickle written by Python 3: _codecs.encode(text, "latin1")
            "_codecs.encode": self._latin1_encode,
        }

    def _refuse(self, what: str) -> UnsafeFileError:
        return UnsafeFileError(
            f"{self._path} was not loaded: its pickle references {what}, which a verification .bin (image bytes "
            "and same/different flags) never holds and which unpickling could run as code."
        )

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get(f"{module}.{name}")
        if found is None:
            raise self._refuse(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise self._refuse("a persistent id")

    def _dtype(self, spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
        dtype = np.dtype(spec.decode("latin-1") if isinstance(spec, bytes) else spec, align, copy)
        if dtype not in _ALLOWED_DTYPES:
            raise VerificationBinError(
                f"{self._path} holds a numpy {dtype} array; a verification .bin holds only bool (issame) or uint8 "
                "arrays."
            )
        return dtype

    def _bool_scalar(self, dtype: np.dtype, data: Any) -> np.bool_:
        """A pickled numpy scalar (an ``issame`` list of ``np.bool_``): bool dtype and one raw byte only."""
        if dtype != np.dtype(np.bool_) or not isinstance(data, bytes) or len(data) != 1:
            raise VerificationBinError(
                f"{self._path} holds a numpy {dtype} scalar; a verification .bin holds only bool flags.")
        return np.frombuffer(data, np.bool_)[0]

    def _latin1_encode(self, text: str, encoding: str = "utf-8") -> bytes:
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise self._refuse(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin-1")


def _image_bytes(item: Any) -> bytes | None:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("latin-1")
    vector = isinstance(item, np.ndarray) and (item.ndim == 1 or (item.ndim == 2 and item.shape[1] == 1))
    if vector and item.dtype == np.uint8:
        return item.tobytes()
    return None


def _flags(issame: Any) -> np.ndarray | None:
    if isinstance(issame, np.ndarray):
        flags = issame.reshape(-1)
    elif isinstance(issame, (list, tuple)) and all(isinstance(v, (bool, int, np.bool_)) for v in issame):
        flags = np.asarray(issame)
    else:
        return None
    if flags.dtype != np.bool_ and not np.isin(flags, (0, 1)).all():
        return None
    return flags.astype(bool)


def read_verification_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Read an insightface verification ``.bin`` with restricted unpickling.

    Returns:
        ``(encoded_images, issame)``: ``2 * P`` encoded image byte strings (pair ``k`` is images ``2k`` and
        ``2k + 1``) and a ``(P,)`` bool array.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeFileError: the pickle references a type outside what the format needs (refused before it ran).
        VerificationBinError: not a pickle, or not ``(list of encoded images, issame flags)`` with two images
            per flag.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"verification .bin not found: {path}")
    expected = "a pickle of (list of encoded images, list of issame flags)"
    try:
        with open(path, "rb") as handle:
            data = _RestrictedUnpickler(handle, path).load()
    except (UnsafeFileError, VerificationBinError):
        raise
    except Exception as error:  # noqa: BLE001 - unpickling garbage raises many types
        raise VerificationBinError(
            f"{path} is not a verification .bin ({expected}): {type(error).__name__}: {str(error)[:200]}"
        ) from error
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise VerificationBinError(f"{path} holds a {type(data).__name__}, not {expected}.")
    bins, issame = data
    images = [_image_bytes(item) for item in bins] if isinstance(bins, (list, tuple)) else [None]
    if not images or any(image is None for image in images):
        raise VerificationBinError(f"{path}: the first element must be a non-empty list of encoded image bytes.")
    flags = _flags(issame)
    if flags is None:
        raise VerificationBinError(f"{path}: the second element must be a list of bools (or a numpy bool array).")
    if len(images) != 2 * len(flags):
        raise VerificationBinError(
            f"{path} has {len(images)} images for {len(flags)} pairs; a verification .bin holds two images per pair."
        )
    return images, flags

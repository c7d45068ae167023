"""Locating pretrained face-recognition models that ship inside optional registry packages (DESIGN §13).

Nothing is downloaded: the files come with the wheels of the ``pretrained`` extra
(``pip install -e ".[pretrained]"``). A missing package is a user error that names that command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fr_invariance.errors import ConfigurationError

INSTALL_HINT = 'pip install -e ".[pretrained]"'


class PretrainedPackageMissing(ConfigurationError):
    """An optional package that ships a pretrained model (or runs it) is not installed."""


class InferenceOnlyModelError(ConfigurationError):
    """A model that can only embed (no gradients: an external library runs it) was asked to train."""


def package_file(package: str, relative: str, model: str) -> Path:
    """Path of ``relative`` inside the installed ``package`` (without importing the package).

    Raises:
        PretrainedPackageMissing: the package is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedPackageMissing(
            f"model={model} needs the optional package {package!r}, which ships its weights; install the "
            f"pretrained extra: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise PretrainedPackageMissing(
        f"model={model}: the installed package {package!r} has no {relative}; reinstall the pretrained extra: "
        f"{INSTALL_HINT}"
    )


def require_module(module: str, model: str, distribution: str | None = None):
    """Import ``module`` or raise :class:`PretrainedPackageMissing` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PretrainedPackageMissing(
            f"model={model} needs the optional package {distribution or module!r} ({error}); install the "
            f"pretrained extra: {INSTALL_HINT}"
        ) from error

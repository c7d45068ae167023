"""Shared behaviour of the entry points: user errors end in one clear line and exit code 2."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from fr_invariance.attributes import UnknownAttributeError
from fr_invariance.errors import ConfigurationError
from fr_invariance.models.weights import WeightLoadingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    UnknownAttributeError,
    WeightLoadingError,
    FileNotFoundError,
    ValueError,
)


def exit_with_user_error(error: BaseException) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with status 2 (no traceback).

    With ``HYDRA_FULL_ERROR=1`` the exception is re-raised so the full traceback is shown.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)

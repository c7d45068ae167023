"""Build the data module of a run from ``cfg.data.module`` (``_target_``: :class:`~fr_invariance.data.module.FaceDataModule`)."""

from __future__ import annotations

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from fr_invariance.errors import ConfigurationError, FrInvarianceError


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate ``cfg.data.module`` (training dataset and validation sources are nested ``_target_`` nodes).

    No file is read here: datasets on disk are scanned in the module's ``setup`` (or when ``num_classes``
    is first read). A missing mandatory value (``data.root=???``) becomes a :class:`ConfigurationError`;
    a user error (:class:`~fr_invariance.errors.FrInvarianceError`) raised inside a constructor is re-raised as itself.
    """
    try:
        return instantiate(cfg.data.module, _convert_="all")
    except MissingMandatoryValue as error:
        raise ConfigurationError(f"{error.full_key} is required: set {error.full_key}=... on the command line.") from None
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, FrInvarianceError):
            raise cause from None
        raise

"""Build the LightningDataModule named by ``data.source``."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from fr_invariance.errors import ConfigurationError


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """``data.source=synthetic`` (default) or ``data.source=image_folder``; ``attr``/``aug`` set the augmentation."""
    data = cfg.data
    nuisance = OmegaConf.to_container(cfg.aug.nuisance, resolve=True) if cfg.aug.get("nuisance") else None
    if data.source == "synthetic":
        from fr_invariance.data.synthetic import SyntheticFaceDataModule

        return SyntheticFaceDataModule(
            image_size=data.image_size,
            identities=data.identities,
            identity_seed=data.identity_seed,
            samples_per_epoch=data.samples_per_epoch,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            attr=cfg.attr.name,
            strength=cfg.aug.strength,
            nuisance=nuisance,
            val_identities=data.val_identities,
            val_identity_seed=data.val_identity_seed,
            val_pairs=data.val_pairs,
            val_nuisance_scale=data.val_nuisance_scale,
            seed=cfg.seed,
        )
    if data.source == "image_folder":
        from fr_invariance.data.image_folder_module import ImageFolderDataModule

        return ImageFolderDataModule(
            root=data.root,
            val_root=data.get("val_root"),
            image_size=data.image_size,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            attr=cfg.attr.name,
            strength=cfg.aug.strength,
            nuisance=nuisance,
            val_pairs=data.val_pairs,
            seed=cfg.seed,
        )
    raise ConfigurationError(f"Unknown data.source {data.source!r}: use data=synthetic or data=image_folder.")

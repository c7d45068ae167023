"""``EnergyProbe``: the one invariance measurement of the product (DESIGN §5, §9).

A probe is a fixed sampled curve design, fixed held-out synthetic identities and the energy settings
(the configured neighbourhood, plus kNN beside the ball). The training callback measures it every
epoch and ``evaluate.py analysis=energy`` measures it on checkpoints: same class, same config schema
(``conf/probe/``, ``conf/energy/``), so their numbers are the same measurement. The rendered probe
images are kept in memory (``image_cache_mb``) so a repeated measurement only runs the backbone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fr_invariance.data.paper_format import read_paper_embeddings, write_paper_embeddings
from fr_invariance.evaluation.embed import embed_images, embed_renders, iter_renders, model_device
from fr_invariance.evaluation.embedding_cache import CacheKey, open_cache
from fr_invariance.evaluation.invariance import (
    EnergySettings,
    InvarianceConfigError,
    declared_metric,
    identity_names,
    invariance_rows,
)
from fr_invariance.synth.designs import MOVING_DIMENSION, CurveDesign, sampled_design
from fr_invariance.synth.identity import sample_identities


def energy_settings(energy: Mapping[str, Any] | EnergySettings) -> list[EnergySettings]:
    """The settings a probe measures: the configured one, plus kNN at ``energy.knn`` (list of k) when the
    configured neighbourhood is not kNN and exact reproduction is off."""
    if isinstance(energy, EnergySettings):
        return [energy]
    options = OmegaConf.to_container(energy, resolve=True) if isinstance(energy, DictConfig) else dict(energy)
    knn = [int(k) for k in (options.pop("knn", None) or [])]
    options["params"] = tuple(options.get("params") or ())
    main = EnergySettings(**options)
    settings = [main]
    if knn and main.neighbourhood != "knn" and not getattr(main, "exact_repro", False):
        knn_options = {**options, "neighbourhood": "knn", "params": tuple(knn)}
        knn_options.pop("max_neighbours", None)
        settings.append(EnergySettings(**knn_options))
    return settings


class EnergyProbe:
    """Fixed held-out identities × a fixed sampled curve design × energy settings.

    Args:
        n_identities, identity_seed: probe identities ``sample_identities(n_identities, identity_seed)``
            (a seed different from the training and validation identities).
        n_curves, step, nuisance, attributes, design_seed: the sampled design (``sampled_design``; curves
            per attribute, half-step in control units, half-width of the centre box, attribute subset or
            None for all 8). Images per identity: ``n_curves · (1 + 2·A)``.
        energy: energy settings (``conf/energy``: ``neighbourhood``, ``params``, ``knn``, ``n_pairs``,
            ``seed``, ``exact_repro``, ``max_neighbours``, ``null_baseline``) or an ``EnergySettings``.
        batch_size: images per forward pass. 64 keeps a small CNN's activations in the CPU's caches: at 48 px
            the tiny backbone embedded up to twice as many images per second as with 256 (benchmarks/README.md).
        render_batch_size: images per rendering call (the renderer is fastest at 128–256).
        image_cache_mb: keep the rendered probe images in CPU memory when they fit in this budget.
    """

    def __init__(
        self,
        *,
        n_identities: int = 64,
        identity_seed: int = 10_000,
        n_curves: int = 12,
        step: float = 0.25,
        nuisance: float = 0.5,
        attributes: Sequence[str] | None = None,
        design_seed: int = 0,
        energy: Mapping[str, Any] | EnergySettings | None = None,
        batch_size: int = 64,
        render_batch_size: int = 256,
        image_cache_mb: float = 512.0,
    ) -> None:
        if n_identities < 1:
            raise InvarianceConfigError(f"probe.n_identities must be >= 1, got {n_identities}.")
        if min(batch_size, render_batch_size) < 1:
            raise InvarianceConfigError(
                f"probe.batch_size and probe.render_batch_size must be >= 1, got {batch_size} and {render_batch_size}.")
        self.n_identities = int(n_identities)
        self.identity_seed = int(identity_seed)
        self.design: CurveDesign = sampled_design(int(n_curves), attributes=list(attributes) if attributes else None,
                                                  step=float(step), nuisance=float(nuisance), seed=int(design_seed))
        self.settings = energy_settings(energy if energy is not None else EnergySettings())
        too_large = [int(k) for s in self.settings if s.neighbourhood == "knn" for k in s.params if k >= n_curves]
        if too_large:
            raise InvarianceConfigError(
                f"kNN with k={too_large} needs more than k curves per attribute, but probe.n_curves={n_curves}; "
                "raise probe.n_curves or lower energy.knn (or energy.params for neighbourhood=knn).")
        self.batch_size = int(batch_size)
        self.render_batch_size = int(render_batch_size)
        self.image_cache_mb = float(image_cache_mb)
        self.identities = sample_identities(self.n_identities, self.identity_seed)
        self.names = identity_names(self.n_identities)
        self._images: dict[int, torch.Tensor] = {}

    @property
    def attributes(self) -> list[str]:
        """The attributes with curves, in registry order."""
        labels = set(self.design.table["moving_dimension"].astype(str))
        return [name for name, label in MOVING_DIMENSION.items() if label in labels]

    @property
    def images_per_identity(self) -> int:
        return int(self.design.controls.shape[0])

    def describe(self) -> str:
        """One line for reports: identities, design and energy settings."""
        energies = "; ".join(f"{s.neighbourhood} {', '.join(s.param_label(p) for p in s.params) or ''}".strip()
                             for s in self.settings)
        curves = self.design.table["id_curve"].nunique() // max(1, self.design.table["moving_dimension"].nunique())
        return (f"{self.n_identities} held-out identities (seed {self.identity_seed}) × {curves} curves per attribute "
                f"({self.images_per_identity} images each); energy: {energies}; d̄ from "
                f"{self.settings[0].n_pairs} pairs (seed {self.settings[0].seed})")

    # -- embedding ------------------------------------------------------------------------------------
    def _cache_fits(self, image_size: int) -> bool:
        n_values = self.n_identities * self.images_per_identity * 3 * image_size**2
        return n_values * 4 <= self.image_cache_mb * 2**20

    def images(self, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """All probe images ``(I·N, 3, S, S)`` in [0, 1] on the CPU, rendered once per size and kept; None when
        they do not fit in ``image_cache_mb`` (then every measurement renders again)."""
        if image_size not in self._images:
            if not self._cache_fits(image_size):
                return None
            batches = iter_renders(self.identities, self.design.controls, image_size=image_size,
                                   batch_size=self.render_batch_size, device=device)
            self._images[image_size] = torch.cat([images.cpu() for images in batches])
        return self._images[image_size]

    def embed(self, backbone: nn.Module, *, image_size: int | None = None,
              progress: bool = False) -> dict[str, torch.Tensor]:
        """Identity name → ``(N, E)`` float32 embeddings of its probe images (backbone in eval mode, its
        train/eval mode restored)."""
        image_size = int(image_size or backbone.input_size)
        images = self.images(image_size, model_device(backbone))
        if images is not None:
            flat = embed_images(backbone, images, batch_size=self.batch_size, progress=progress)
            embeddings = flat.reshape(self.n_identities, self.images_per_identity, -1)
        else:
            embeddings = embed_renders(backbone, self.identities, self.design.controls, image_size=image_size,
                                       batch_size=self.batch_size, progress=progress)
        return {name: embeddings[k] for k, name in enumerate(self.names)}

    def embed_cached(self, backbone: nn.Module, cache_dir: str | Path, *, image_size: int | None = None,
                     progress: bool = False) -> dict[str, torch.Tensor]:
        """As :meth:`embed`, reusing / storing the embeddings in ``cache_dir`` (paper layout + a key file naming
        the weights, design, image size and identities; a different key is an error). Only identities not yet
        in the cache are embedded."""
        image_size = int(image_size or backbone.input_size)
        cache_dir = Path(cache_dir)
        cached = set(open_cache(cache_dir, CacheKey.of(backbone, self.design, image_size, self.identity_seed)))
        missing = [k for k, name in enumerate(self.names) if name not in cached]
        embeddings: dict[str, torch.Tensor] = {}
        if len(missing) == self.n_identities:
            embeddings = self.embed(backbone, image_size=image_size, progress=progress)
        elif missing:
            fresh = embed_renders(backbone, self.identities[missing], self.design.controls, image_size=image_size,
                                  batch_size=self.batch_size, progress=progress)
            embeddings = {self.names[k]: fresh[j] for j, k in enumerate(missing)}
        if embeddings:
            write_paper_embeddings(cache_dir, self.design.table, {k: v.numpy() for k, v in embeddings.items()})
        if cached:
            stored = read_paper_embeddings(cache_dir)
            embeddings.update({name: torch.from_numpy(np.asarray(stored.load(name), dtype=np.float32))
                               for name in self.names if name in cached})
        return {name: embeddings[name] for name in self.names}

    # -- measurement ----------------------------------------------------------------------------------
    def rows(self, embeddings: Mapping[str, torch.Tensor | np.ndarray], *, metric: str, run: str = "",
             epoch: int | None = None, progress: bool = False) -> pd.DataFrame:
        """Tidy rows (one per identity × attribute × neighbourhood × param) of every setting."""
        frames = [invariance_rows(embeddings, self.design.table, metric=metric, energy=settings, run=run,
                                  epoch=epoch, progress=progress) for settings in self.settings]
        return pd.concat(frames, ignore_index=True)

    def measure(self, backbone: nn.Module, *, image_size: int | None = None, run: str = "",
                epoch: int | None = None, cache_dir: str | Path | None = None,
                progress: bool = False) -> pd.DataFrame:
        """Embed the probe with ``backbone`` and measure every attribute under every setting."""
        if cache_dir is not None:
            embeddings = self.embed_cached(backbone, cache_dir, image_size=image_size, progress=progress)
        else:
            embeddings = self.embed(backbone, image_size=image_size, progress=progress)
        return self.rows(embeddings, metric=declared_metric(backbone), run=run, epoch=epoch, progress=progress)


def summary_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """Per attribute × setting, over identities: ``invariance/<attr>/energy@<label>`` (mean) and its standard
    error ``…_se``, and ``invariance/<attr>/magnitude`` (mean) with ``invariance/<attr>/magnitude_se``.

    Labels: ``0.6`` (ball ε), ``k10`` (kNN), ``invdist`` (inverse distance).
    """
    metrics: dict[str, float] = {}
    for (attribute, neighbourhood, param), group in rows.groupby(
        ["attribute", "neighbourhood", "param"], sort=False, dropna=False
    ):
        label = param_label(neighbourhood, param)
        energy = group["energy"].dropna().to_numpy(dtype=float)
        metrics[f"invariance/{attribute}/energy@{label}"] = float(energy.mean()) if energy.size else float("nan")
        metrics[f"invariance/{attribute}/energy@{label}_se"] = standard_error(energy)
    for attribute, group in rows.groupby("attribute", sort=False):
        per_identity = group.groupby("identity")["magnitude"].first().to_numpy(dtype=float)
        metrics[f"invariance/{attribute}/magnitude"] = float(per_identity.mean())
        metrics[f"invariance/{attribute}/magnitude_se"] = standard_error(per_identity)
    return metrics


def param_label(neighbourhood: str, param: float | None) -> str:
    """Short label of a neighbourhood parameter: ``0.6`` (ball), ``k10`` (knn), ``invdist``."""
    if neighbourhood == "knn":
        return f"k{int(param)}"
    if neighbourhood == "inverse_distance" or param is None or pd.isna(param):
        return "invdist"
    return f"{float(param):g}"


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean (``sd(ddof=1)/√n``); nan with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")


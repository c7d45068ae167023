"""Build and run an invariance evaluation from the ``conf/evaluate.yaml`` config (``evaluate.py`` calls :func:`evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fr_invariance.evaluation.checkpoints import load_model_source, open_embedding_source, source_names
from fr_invariance.evaluation.invariance import (
    EnergySettings,
    InvarianceConfigError,
    measure_invariance,
    measure_invariance_from_embeddings,
)
from fr_invariance.evaluation.report import summarise, write_report
from fr_invariance.synth.designs import CurveDesign, sampled_design


def requested_paths(cfg: DictConfig) -> list[str]:
    """``checkpoint``, then ``checkpoints``, then ``embeddings_dir`` (at least one is required)."""
    paths = [cfg.checkpoint] if cfg.checkpoint else []
    paths += list(cfg.checkpoints or [])
    paths += [cfg.embeddings_dir] if cfg.embeddings_dir else []
    if not paths:
        raise InvarianceConfigError(
            "Nothing to evaluate: pass checkpoint=PATH, checkpoints=[PATH1,PATH2] or embeddings_dir=DIR."
        )
    return [str(path) for path in paths]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise InvarianceConfigError(f"device={name} but CUDA is not available here; use device=auto or device=cpu.")
    return torch.device(name)


def build_design(design_cfg: DictConfig) -> CurveDesign:
    """The sampled curve design of the config."""
    return sampled_design(int(design_cfg.n_curves), attributes=design_cfg.attributes, step=float(design_cfg.step),
                          nuisance=design_cfg.nuisance, seed=int(design_cfg.seed))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Measure every requested source, write the report folder, return the JSON summary."""
    paths = requested_paths(cfg)
    names = source_names(paths)
    energy = EnergySettings(**OmegaConf.to_container(cfg.energy, resolve=True))
    attributes = list(cfg.design.attributes) if cfg.design.attributes else None
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None
    device = resolve_device(cfg.device)
    design: CurveDesign | None = None
    frames = []
    for path, name in zip(paths, names):
        if Path(path).is_dir():
            source = open_embedding_source(path, metric=cfg.metric, name=name)
            frames.append(measure_invariance_from_embeddings(
                source.embeddings, metric=source.metric, energy=energy, attributes=attributes, run=name,
                progress=cfg.progress))
            continue
        design = design or build_design(cfg.design)
        model = load_model_source(path, model_cfg=model_cfg, device=device, name=name)
        print(f"{name}: {model.weights_format} weights from {path}, {model.image_size} px, on {device}")
        cache_dir = Path(cfg.cache_dir) / name.replace("/", "__") if cfg.cache_dir else None
        frames.append(measure_invariance(
            model.backbone, design, n_identities=int(cfg.design.n_identities),
            identity_seed=int(cfg.design.identity_seed), image_size=model.image_size, energy=energy,
            batch_size=int(cfg.batch_size), cache_dir=cache_dir, run=name, epoch=model.epoch, progress=cfg.progress))
    rows = pd.concat(frames, ignore_index=True)
    settings = {
        "neighbourhood": energy.neighbourhood,
        "params (ε in multiples of d̄, or k)": ", ".join(f"{p:g}" for p in energy.params) or "–",
        "scale d̄": f"mean d_X over {energy.n_pairs} random pairs of each identity's images (seed {energy.seed})",
        "design": (f"sampled: {cfg.design.n_curves} curves per attribute, step {cfg.design.step}, nuisance box "
                   f"±{cfg.design.nuisance}, seed {cfg.design.seed}; identities sample_identities"
                   f"({cfg.design.n_identities}, seed {cfg.design.identity_seed})") if design is not None else "–",
        "sources": ", ".join(f"{name} = {path}" for name, path in zip(names, paths)),
    }
    output_dir = Path(cfg.output_dir)
    write_report(rows, output_dir, settings=settings)
    return {
        "output_dir": str(output_dir),
        "models": names,
        "neighbourhood": energy.neighbourhood,
        "param": energy.params[0] if energy.params else None,
        "n_identities": int(rows["identity"].nunique()),
        "energy": summarise(rows),
    }

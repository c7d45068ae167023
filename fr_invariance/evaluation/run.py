"""Run one analysis from the ``conf/evaluate.yaml`` config (``evaluate.py`` calls :func:`evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fr_invariance.evaluation.analyses.base import Analysis, AnalysisContext, AnalysisInputError, write_result
from fr_invariance.evaluation.checkpoints import source_names
from fr_invariance.errors import MissingPathError


def requested_paths(cfg: DictConfig) -> list[str]:
    """``checkpoint``, then ``checkpoints``, then ``embeddings_dir`` (each must exist)."""
    paths = [cfg.checkpoint] if cfg.get("checkpoint") else []
    paths += list(cfg.get("checkpoints") or [])
    paths += [cfg.embeddings_dir] if cfg.get("embeddings_dir") else []
    for path in paths:
        if not Path(path).exists():
            raise MissingPathError(f"{path} does not exist: pass checkpoint=, checkpoints=[...] or embeddings_dir= "
                                    "pointing to an existing file or folder.")
    return [str(path) for path in paths]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise AnalysisInputError(f"device={name} but CUDA is not available here; use device=auto or device=cpu.")
    return torch.device(name)


def build_context(cfg: DictConfig) -> AnalysisContext:
    """The sources, devices and output folder of an evaluation."""
    paths = requested_paths(cfg)
    return AnalysisContext(
        sources=paths,
        names=source_names(paths) if paths else [],
        model_cfg=OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None,
        device=resolve_device(cfg.device),
        batch_size=int(cfg.batch_size),
        progress=bool(cfg.progress),
        output_dir=Path(cfg.output_dir),
        trust_checkpoint=bool(cfg.get("trust_checkpoint", False)),
        metric=str(cfg.metric),
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.analysis`` on the requested sources, write its folder, return the JSON summary."""
    context = build_context(cfg)
    analysis: Analysis = instantiate(cfg.analysis)
    result = analysis.run(context)
    write_result(result, context.output_dir, title=f"{analysis.name} analysis")
    return {"output_dir": str(context.output_dir), "analysis": analysis.name, **result.summary}

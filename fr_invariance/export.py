"""Export a trained backbone: ONNX (dynamic batch, checked against onnxruntime) or insightface ``backbone.pth``.

    python -m fr_invariance.export checkpoint=runs/.../checkpoints/last.ckpt format=onnx
    python -m fr_invariance.export checkpoint=backbone.pth model=iresnet50 format=onnx output=r50.onnx
    python -m fr_invariance.export checkpoint=runs/.../checkpoints/last.ckpt format=pth   # insightface layout

The ONNX graph maps ``input`` ``(N, 3, S, S)`` float32 RGB in ``[-1, 1]`` (``pixel / 127.5 - 1``) to
``embedding`` ``(N, E)`` float32 (not normalised); ``N`` is dynamic. After writing it, the export runs the
same random inputs through PyTorch and onnxruntime at two batch sizes and reports the maximum absolute
difference and the smallest cosine similarity of the embeddings; a difference above ``parity_tolerance``
is an error. Settings: ``conf/export.yaml``. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fr_invariance.errors import ConfigurationError, FrInvarianceError, MissingPathError

FORMATS = ("onnx", "pth")


class ExportParityError(FrInvarianceError):
    """The exported ONNX graph does not reproduce the PyTorch embeddings within the tolerance."""


def export_onnx(backbone: nn.Module, path: str | Path, image_size: int, opset: int = 18, exporter: str = "dynamo") -> Path:
    """Write ``backbone`` (eval mode, on the CPU) as ONNX with a dynamic batch axis.

    Args:
        backbone: maps ``(N, 3, S, S)`` inputs in ``[-1, 1]`` to ``(N, E)`` embeddings.
        image_size: ``S`` in pixels.
        opset: ONNX opset version.
        exporter: ``dynamo`` (``torch.export``-based, needs ``onnxscript``) or ``torchscript`` (legacy).
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ConfigurationError(f"exporter={exporter!r}: use exporter=dynamo or exporter=torchscript.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone = backbone.cpu().eval()
    example = (torch.zeros(2, 3, image_size, image_size),)
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(backbone, example, str(path), input_names=["input"], output_names=["embedding"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                              dynamo=True, verbose=False)
        else:
            torch.onnx.export(backbone, example, str(path), input_names=["input"], output_names=["embedding"],
                              dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
    return path


def onnx_parity(backbone: nn.Module, path: str | Path, image_size: int, batch_sizes: tuple[int, ...] = (1, 5),
                seed: int = 0) -> dict[str, float]:
    """Compare PyTorch and onnxruntime on random inputs in ``[-1, 1]`` at each batch size.

    Returns ``{"max_abs_diff", "min_cosine", "mean_cosine"}`` over all embeddings.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    diffs, cosines = [], []
    backbone = backbone.cpu().eval()
    for batch in batch_sizes:
        inputs = torch.rand(batch, 3, image_size, image_size, generator=generator) * 2.0 - 1.0
        with torch.no_grad():
            expected = backbone(inputs).float().numpy()
        actual = session.run(["embedding"], {"input": inputs.numpy()})[0]
        if actual.shape != expected.shape:
            raise ExportParityError(f"ONNX output {actual.shape} differs from PyTorch's {expected.shape} at batch {batch}.")
        diffs.append(float(np.abs(actual - expected).max()))
        norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
        cosines.extend((np.sum(actual * expected, axis=1) / np.maximum(norms, 1e-12)).tolist())
    return {"max_abs_diff": max(diffs), "min_cosine": float(min(cosines)), "mean_cosine": float(np.mean(cosines))}


def default_output(checkpoint: Path, fmt: str) -> Path:
    """``last.ckpt`` in ``RUN/checkpoints/`` → ``RUN/checkpoints/last.onnx`` (``last_backbone.pth`` for pth)."""
    return checkpoint.with_name(f"{checkpoint.stem}.onnx" if fmt == "onnx" else f"{checkpoint.stem}_backbone.pth")


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.checkpoint`` (our ``.ckpt``, or bare weights with ``model=``), export it, return the summary."""
    from fr_invariance.evaluation.checkpoints import load_model_source
    from fr_invariance.models.weights import export_insightface

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigurationError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}.")
    if not cfg.get("checkpoint"):
        raise ConfigurationError("checkpoint= is required: a Lightning .ckpt of ours, or bare weights with model=<name>.")
    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.is_file():
        raise MissingPathError(f"checkpoint={checkpoint} does not exist: pass our Lightning .ckpt or bare backbone "
                               "weights (with model=<name>).")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None
    source = load_model_source(checkpoint, model_cfg=model_cfg, device="cpu",
                               trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    output = Path(str(cfg.output)) if cfg.get("output") else default_output(checkpoint, fmt)
    summary: dict[str, Any] = {"format": fmt, "output": str(output), "image_size": int(source.image_size)}
    if fmt == "pth":
        export_insightface(source.backbone, output)
        return summary
    export_onnx(source.backbone, output, source.image_size, int(cfg.opset), str(cfg.exporter))
    parity = onnx_parity(source.backbone, output, source.image_size, tuple(int(b) for b in cfg.parity_batch_sizes))
    summary.update(parity, batch_sizes=list(cfg.parity_batch_sizes))
    if parity["max_abs_diff"] > float(cfg.parity_tolerance):
        raise ExportParityError(
            f"{output}: onnxruntime differs from PyTorch by up to {parity['max_abs_diff']:.3g} (min cosine "
            f"{parity['min_cosine']:.6f}), above parity_tolerance={cfg.parity_tolerance}; try exporter=torchscript "
            "or another opset."
        )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    summary = run_export(cfg)
    if summary["format"] == "onnx":
        print(f"ONNX written to {summary['output']}: max |PyTorch - onnxruntime| = {summary['max_abs_diff']:.3g}, "
              f"min cosine {summary['min_cosine']:.6f} (batch sizes {summary['batch_sizes']})")
    else:
        print(f"insightface backbone written to {summary['output']}")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    from fr_invariance.cli import main_entry

    main_entry(main)

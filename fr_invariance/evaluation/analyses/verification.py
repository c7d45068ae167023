"""``evaluate.py analysis=verification``: insightface ``.bin`` pair sets (LFW, CFP-FP, AgeDB-30...) with the
exact protocol of DESIGN §11, for numbers comparable with published ones.

    python evaluate.py analysis=verification checkpoint=runs/.../last.ckpt bins=[lfw.bin,cfp_fp.bin]
    python evaluate.py analysis=verification checkpoint=backbone.pth model=iresnet50 bins=[lfw.bin]

Every image and its horizontal mirror are embedded and summed; squared L2 distance of the L2-normalised
pair; 10 folds, thresholds 0..4 step 0.01. Prints one insightface-style line per model and set
(``Accuracy-Flip: mean+-std``, best threshold, TAR@FAR) and writes ``verification.csv`` (one row per
model × set) and ``report.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from fr_invariance.data.datasets.verification_bin import load_verification_bin
from fr_invariance.evaluation.analyses.base import Analysis, AnalysisContext, AnalysisInputError, AnalysisResult
from fr_invariance.evaluation.embed import evaluation_mode, model_device
from fr_invariance.metrics.verification import VerificationResult, verification_accuracy
from fr_invariance.models.preprocess import to_model_input
from fr_invariance.errors import MissingPathError


def embed_pair_images(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Flip-summed embeddings ``(2P, E)`` float32 on the CPU of pair images ``(2P, 3, S, S)`` uint8 RGB
    (``model(x) + model(mirror(x))``, x in the backbones' ``[-1, 1]`` range; eval mode, no gradients)."""
    if batch_size < 1:
        raise AnalysisInputError(f"batch_size must be positive, got {batch_size}.")
    device = model_device(model)
    chunks = []
    with evaluation_mode(model):
        for start in range(0, images.shape[0], batch_size):
            batch = to_model_input(images[start : start + batch_size].to(device).float().div_(255.0))
            chunks.append((model(batch) + model(batch.flip(-1))).float().cpu())
    return torch.cat(chunks)


def far_label(far: float) -> str:
    """Column label of a FAR target: ``1e-03`` → ``tar@far1e-03``."""
    return f"tar@far{far:.0e}"


def result_row(model: str, set_name: str, result: VerificationResult) -> dict[str, object]:
    """One tidy row of ``verification.csv``."""
    return {
        "model": model,
        "set": set_name,
        "n_pairs": result.n_pairs,
        "accuracy_mean": result.accuracy_mean,
        "accuracy_std": result.accuracy_std,
        "threshold": result.threshold_mean,
        **{far_label(far): tar for far, tar in result.tar_at_far.items()},
    }


def insightface_line(row: dict[str, object], fars: Sequence[float]) -> str:
    """``[lfw][model] Accuracy-Flip: 0.99500+-0.00300  threshold 1.420  TAR@FAR=1e-03: 0.9800``."""
    tars = "  ".join(f"TAR@FAR={far:.0e}: {row[far_label(far)]:.4f}" for far in fars)
    return (f"[{row['set']}][{row['model']}] Accuracy-Flip: {row['accuracy_mean']:.5f}+-{row['accuracy_std']:.5f}  "
            f"threshold {row['threshold']:.3f}  {tars}")


class VerificationAnalysis(Analysis):
    """Verification accuracy of every model on every ``.bin`` set (DESIGN §11).

    Args:
        bins: paths of insightface verification ``.bin`` files; each set is named after its file stem.
        n_folds: folds of the threshold cross-validation (insightface: 10).
        far_targets: FAR values of the TAR@FAR columns (TAR = highest true-accept rate at a threshold
            whose false-accept rate on all pairs is <= the target).
        max_bad_fraction: fraction of undecodable pairs tolerated per set (each is warned about).
    """

    name = "verification"

    def __init__(
        self,
        bins: Sequence[str] = (),
        n_folds: int = 10,
        far_targets: Sequence[float] = (1e-4, 1e-3, 1e-2),
        max_bad_fraction: float = 0.0,
    ) -> None:
        self.bins = [Path(path) for path in (bins or ())]
        self.n_folds = int(n_folds)
        self.far_targets = tuple(float(far) for far in far_targets)
        self.max_bad_fraction = float(max_bad_fraction)

    def run(self, context: AnalysisContext) -> AnalysisResult:
        if not self.bins:
            raise AnalysisInputError("analysis=verification needs the pair sets: bins=[path/lfw.bin,path/cfp_fp.bin].")
        for path in self.bins:
            if not path.is_file():
                raise MissingPathError(f"Verification set {path} not found (bins= takes paths to .bin files).")
        names = [path.stem for path in self.bins]
        if len(set(names)) != len(names):
            raise AnalysisInputError(f"Two .bin files share a file stem ({', '.join(names)}); rename one.")
        if context.embedding_sources():
            raise AnalysisInputError("analysis=verification embeds the .bin images with a model: pass checkpoint= "
                                     "or checkpoints=[...], not embeddings_dir=.")
        decoded: dict[tuple[Path, int], tuple[torch.Tensor, torch.Tensor]] = {}
        rows = []
        for source in context.models():
            for path in self.bins:
                key = (path, int(source.image_size))
                if key not in decoded:
                    decoded[key] = load_verification_bin(path, source.image_size, self.max_bad_fraction)
                images, issame = decoded[key]
                embeddings = embed_pair_images(source.backbone, images, context.batch_size)
                result = verification_accuracy(embeddings, issame.numpy(), self.n_folds, self.far_targets)
                rows.append(result_row(source.name, path.stem, result))
                print(insightface_line(rows[-1], self.far_targets), flush=True)
        if not rows:
            raise AnalysisInputError("analysis=verification found no model: pass checkpoint= or checkpoints=[...].")
        table = pd.DataFrame(rows)
        return AnalysisResult(
            tables={"verification": table},
            markdown=self._markdown(table),
            summary={"verification": {f"{row['model']}/{row['set']}": row["accuracy_mean"] for row in rows}},
        )

    def _markdown(self, table: pd.DataFrame) -> str:
        header = "| model | set | pairs | accuracy (mean ± std) | threshold | " + " | ".join(
            f"TAR@FAR={far:.0e}" for far in self.far_targets) + " |"
        lines = ["## Verification (insightface protocol)", "",
                 f"Image + mirror embeddings summed, L2-normalised; squared L2 distance; {self.n_folds}-fold "
                 "threshold selection on a 0..4 grid (step 0.01); TAR at the highest threshold whose FAR on all "
                 "pairs is at most the target.", "", header, "|" + "---|" * (5 + len(self.far_targets))]
        for row in table.to_dict("records"):
            tars = " | ".join(f"{row[far_label(far)]:.4f}" for far in self.far_targets)
            lines.append(f"| {row['model']} | {row['set']} | {row['n_pairs']} | {row['accuracy_mean']:.4f} ± "
                         f"{row['accuracy_std']:.4f} | {row['threshold']:.3f} | {tars} |")
        return "\n".join(lines)

"""Probe embeddings on disk, in the paper layout (``df_param_step.csv`` + one ``<identity>.npy``), with a key
file naming everything they depend on (model weights, design, image size, identities), so a later evaluation
of the same model reuses them and a different model is refused instead of silently mixed in."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fr_invariance.atomic import atomic_write_text
from fr_invariance.evaluation.invariance import InvarianceConfigError
from fr_invariance.synth.designs import CurveDesign

CACHE_KEY_FILE = "cache_key.json"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state_dict (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything cached probe embeddings depend on."""

    model: str
    image_size: int
    identity_seed: int
    design: str = field(repr=False)

    @classmethod
    def of(cls, model: nn.Module, design: CurveDesign, image_size: int, identity_seed: int) -> CacheKey:
        digest = hashlib.sha256(design.controls.cpu().contiguous().numpy().tobytes())
        digest.update(design.table.to_csv(index=False).encode())
        return cls(model_fingerprint(model), image_size, identity_seed, digest.hexdigest())


def open_cache(cache_dir: Path, key: CacheKey) -> list[str]:
    """Create or check ``cache_dir`` for ``key``; return the identity names already cached there."""
    key_file = cache_dir / CACHE_KEY_FILE
    if key_file.exists():
        stored = json.loads(key_file.read_text())
        differing = [name for name, value in asdict(key).items() if stored.get(name) != value]
        if differing:
            raise InvarianceConfigError(
                f"cache_dir {cache_dir} holds embeddings of a different {' / '.join(differing)}; "
                "point cache_dir to a new folder (one per model) or delete the old one."
            )
        return sorted(path.stem for path in cache_dir.glob("*.npy"))
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise InvarianceConfigError(
            f"cache_dir {cache_dir} is not empty and has no {CACHE_KEY_FILE}; use an empty or new folder."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, json.dumps(asdict(key), indent=1))
    return []

"""Write the held-out synthetic verification sets of a training config as insightface ``.bin`` files.

The fine-tuned and the released model are then scored on the very same pairs with
``evaluate.py analysis=verification bins=[...]`` (DESIGN §11 protocol, flip-summed embeddings):

    python docs/sface_finetune/write_pairs.py OUT experiment=finetune_sface attr=head_angle data.val_pairs=1000

Writes ``OUT/<set>.bin`` for every set of ``data.module.validation.synthetic`` (``ordinary`` with hard
impostors, ``vary_<attr>``), images PNG-encoded (lossless) at ``data.image_size``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from fr_invariance.data.datasets.verification_bin import write_verification_bin

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def png_bytes(image_chw) -> bytes:
    """PNG encoding of one ``(3, S, S)`` uint8 RGB tensor."""
    buffer = io.BytesIO()
    Image.fromarray(image_chw.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def main(output: Path, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=overrides)
    source = instantiate(cfg.data.module.validation.synthetic)
    for pair_set in source.load(int(cfg.data.image_size)):
        path = write_verification_bin(output / f"{pair_set.name}.bin", [png_bytes(image) for image in pair_set.images],
                                      pair_set.issame.tolist())
        print(f"{path}: {pair_set.issame.numel()} pairs")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python docs/sface_finetune/write_pairs.py OUT [train.py overrides ...]")
    main(Path(sys.argv[1]), sys.argv[2:])

"""Contact sheet of the synthetic faces: identities (rows) x every attribute at t = -1, 0, +1 (columns).

    python -m fr_invariance.synth.contact_sheet [--out docs/synthetic_faces.png] [--size 96] [--identities 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fr_invariance.attributes import ATTRIBUTE_NAMES, NUM_ATTRIBUTES
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render

LEVELS = (-1.0, 0.0, 1.0)
HEADER = 34
GROUP_GAP = 6


def sheet_controls(num_identities: int) -> torch.Tensor:
    """Controls for the sheet, identity-major: per identity, per attribute, t in LEVELS (others 0)."""
    controls = torch.zeros(num_identities, NUM_ATTRIBUTES, len(LEVELS), NUM_ATTRIBUTES)
    for attribute in range(NUM_ATTRIBUTES):
        for k, level in enumerate(LEVELS):
            controls[:, attribute, k, attribute] = level
    return controls.reshape(-1, NUM_ATTRIBUTES)


def contact_sheet(num_identities: int = 8, size: int = 96, seed: int = 0) -> Image.Image:
    """Render the sheet as a PIL image with labelled column groups."""
    identities = sample_identities(num_identities, seed)
    per_identity = NUM_ATTRIBUTES * len(LEVELS)
    images = render(identities.repeat_interleave(per_identity, dim=0), sheet_controls(num_identities), size)
    tiles = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    group_width = len(LEVELS) * size
    width = NUM_ATTRIBUTES * group_width + (NUM_ATTRIBUTES - 1) * GROUP_GAP
    sheet = np.full((HEADER + num_identities * size, width, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, per_identity)
        group, level = divmod(column, len(LEVELS))
        x = group * (group_width + GROUP_GAP) + level * size
        sheet[HEADER + row * size : HEADER + (row + 1) * size, x : x + size] = tile
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for group, name in enumerate(ATTRIBUTE_NAMES):
        x = group * (group_width + GROUP_GAP)
        draw.text((x + 4, 3), name, fill=(0, 0, 0))
        for level_index, level in enumerate(LEVELS):
            draw.text((x + level_index * size + size // 2 - 8, 18), f"{level:+.0f}", fill=(90, 90, 90))
    return picture


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_faces.png"))
    parser.add_argument("--size", type=int, default=96, help="tile size in pixels")
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(args.identities, args.size, args.seed).save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()

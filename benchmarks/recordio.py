"""Images/s decoded from an insightface ``.rec`` vs from an image folder holding the same JPEG files.

    python benchmarks/recordio.py [--images 4000] [--identities 100] [--size 112] [--workers 2] [--device cpu]

Renders ``--images`` synthetic faces once, encodes them as JPEG (quality 95), writes them both as an image
folder (``root/<identity>/<n>.jpg``) and, byte for byte, as ``train.rec`` / ``train.idx``. Then times full
passes of the training loader (same ``DataLoader`` settings, same decode/resize code, same worker count,
batches moved to ``--device``) over :class:`~fr_invariance.data.datasets.recordio.RecordIOFaces` and
:class:`~fr_invariance.data.datasets.image_folder.ImageFolderFaces`, alternating, ``--repeats`` times
each after one warm-up pass each (files in the page cache for both). Reports the median pass of each, in
images per wall-clock second and, less sensitive to other jobs on a shared machine, per CPU second of the
loader (main process + workers). The last line is one JSON object with ``rec_images_per_s`` and
``folder_images_per_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

from fr_invariance.attributes import NUM_ATTRIBUTES
from fr_invariance.data.datasets.base import FaceImageDataset, collate_faces
from fr_invariance.data.datasets.image_folder import ImageFolderFaces
from fr_invariance.data.datasets.recordio import RecordIOFaces, pack_image_folder
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render


def write_faces(root: Path, images: int, identities: int, size: int, quality: int) -> int:
    """Render ``images`` faces (``identities`` identities, random controls) as JPEG files; returns total bytes."""
    people = sample_identities(identities, seed=0)
    labels = torch.arange(images) % identities
    controls = torch.rand(images, NUM_ATTRIBUTES, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
    total = 0
    for start in range(0, images, 256):
        rows = labels[start : start + 256]
        batch = render(people[rows], controls[start : start + 256], size=size)
        pixels = (batch * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for offset, (label, image) in enumerate(zip(rows.tolist(), pixels)):
            folder = root / f"id_{label:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
            (folder / f"{start + offset:07d}.jpg").write_bytes(data.tobytes())
            total += data.size
    return total


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its reaped children (the loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_pass(dataset: FaceImageDataset, workers: int, batch_size: int, device: torch.device) -> tuple[float, float]:
    """Images per wall-clock second and per CPU second (workers included) of one full pass of a fresh
    training-style loader (worker start-up inside the timing)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_faces,
                        pin_memory=device.type == "cuda")
    count = 0
    cpu, start = cpu_seconds(), time.perf_counter()
    iterator = iter(loader)
    for batch in iterator:
        images = batch["images"].to(device, non_blocking=True)
        count += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    del iterator  # workers are joined (and their CPU time reaped) when the exhausted iterator shuts down
    return count / wall, count / (cpu_seconds() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--size", type=int, default=112, help="side of the stored JPEGs and of the decoded images")
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where batches are moved (decoding runs in the CPU workers)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder, rec = Path(tmp) / "folder", Path(tmp) / "rec"
        jpeg_bytes = write_faces(folder, args.images, args.identities, args.size, args.quality)
        pack_image_folder(folder, rec)
        datasets = {"rec": RecordIOFaces(rec, image_size=args.size), "folder": ImageFolderFaces(folder, image_size=args.size)}
        for dataset in datasets.values():
            dataset.setup()
            one_pass(dataset, args.workers, args.batch_size, device)  # warm-up: page cache, worker start-up code
        rates: dict[str, list[float]] = {name: [] for name in datasets}
        per_cpu: dict[str, list[float]] = {name: [] for name in datasets}
        for _ in range(args.repeats):
            for name, dataset in datasets.items():
                wall, cpu = one_pass(dataset, args.workers, args.batch_size, device)
                rates[name].append(wall)
                per_cpu[name].append(cpu)
        rec_size = (rec / "train.rec").stat().st_size
    median = {name: statistics.median(values) for name, values in rates.items()}
    median_cpu = {name: statistics.median(values) for name, values in per_cpu.items()}
    summary = {
        "rec_images_per_s": round(median["rec"], 1),
        "folder_images_per_s": round(median["folder"], 1),
        "rec_to_folder": round(median["rec"] / median["folder"], 3),
        "rec_images_per_cpu_s": round(median_cpu["rec"], 1),
        "folder_images_per_cpu_s": round(median_cpu["folder"], 1),
        "rec_to_folder_cpu": round(median_cpu["rec"] / median_cpu["folder"], 3),
        "rec_passes": [round(r, 1) for r in rates["rec"]],
        "folder_passes": [round(r, 1) for r in rates["folder"]],
        "images": args.images,
        "identities": args.identities,
        "size": args.size,
        "mean_jpeg_bytes": round(jpeg_bytes / args.images),
        "rec_bytes": rec_size,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "device": str(device),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

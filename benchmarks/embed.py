"""Embedding throughput of the pretrained models (DESIGN §13): SFace as our torch module vs the released
int8 ONNX graph under onnxruntime on the same batch (the baseline), and dlib's ResNet.

    python benchmarks/embed.py [--device cpu|cuda] [--batch 64] [--repeats 5] [--threads N]

Renders one batch of faces (112 px for SFace, 150 px for dlib), then times, after a warm-up call each:
SFace torch (``torch.inference_mode``, eval), onnxruntime (CPU provider, or CUDA's when ``--device cuda``
and onnxruntime has it) and ``DlibResNet`` (chip extraction + dlib's network, CPU: the dlib-bin wheel has
no CUDA). Median over ``--repeats``. Also reports the minimum cosine between the torch and onnxruntime
embeddings of the batch. Needs the ``pretrained`` extra. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

import torch
from timing import median_seconds, torch_device

from fr_invariance.attributes import NUM_ATTRIBUTES
from fr_invariance.models import create_backbone
from fr_invariance.models.sface import onnxruntime_session
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render


def faces(n: int, size: int) -> torch.Tensor:
    """``n`` renders in ``[0, 1]`` with random controls."""
    controls = torch.rand(n, NUM_ATTRIBUTES, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    return render(sample_identities(n, seed=0), controls, size)


def images_per_s(call: Callable[[], object], count: int, repeats: int, synchronize: Callable[[], None]) -> float:
    """``count / median seconds`` of ``call`` over ``repeats`` runs after one warm-up run."""
    return count / median_seconds(call, repeats, synchronize)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark SFace (torch vs onnxruntime) and dlib ResNet embedding.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch / onnxruntime CPU threads")
    parser.add_argument("--dlib-batch", type=int, default=32, help="images per dlib call (it is slower)")
    args = parser.parse_args()
    device, synchronize = torch_device(args.device, args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} thread(s), device {device}, "
          f"load average {load[0]:.2f}")

    images = faces(args.batch, 112)
    model = create_backbone("sface").eval().to(device)
    inputs = (images * 2.0 - 1.0).to(device)

    def torch_call() -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs)

    torch_rate = images_per_s(torch_call, args.batch, args.repeats, synchronize)

    session = onnxruntime_session(threads=args.threads)
    if device.type == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            from fr_invariance.models.sface import load_onnx_model

            session = onnxruntime.InferenceSession(
                load_onnx_model().SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
    provider = session.get_providers()[0]
    native = {"data": (images * 255.0).numpy()}
    ort_rate = images_per_s(lambda: session.run(None, native), args.batch, args.repeats, lambda: None)
    reference = torch.from_numpy(session.run(None, native)[0])
    cosine = torch.nn.functional.cosine_similarity(torch_call().float().cpu(), reference).min().item()
    print(f"SFace torch: {torch_rate:.1f} images/s; onnxruntime ({provider}): {ort_rate:.1f} images/s "
          f"-> torch/onnxruntime {torch_rate / ort_rate:.2f}x; min cosine torch vs onnxruntime {cosine:.6f}")

    dlib_model = create_backbone("dlib_resnet", input_size=150)
    dlib_inputs = faces(args.dlib_batch, 150) * 2.0 - 1.0

    def dlib_call() -> torch.Tensor:
        with torch.inference_mode():
            return dlib_model(dlib_inputs)

    dlib_rate = images_per_s(dlib_call, args.dlib_batch, max(1, args.repeats // 2), lambda: None)
    print(f"dlib ResNet (chips + dlib, CPU): {dlib_rate:.1f} images/s")
    print(json.dumps({
        "sface_torch_images_per_s": round(torch_rate, 1),
        "sface_onnxruntime_images_per_s": round(ort_rate, 1),
        "dlib_images_per_s": round(dlib_rate, 1),
        "torch_over_onnxruntime": round(torch_rate / ort_rate, 2),
        "sface_min_cosine_vs_onnxruntime": round(cosine, 7),
        "onnxruntime_provider": provider,
        "device": str(device),
        "threads": args.threads,
        "batch": args.batch,
        "dlib_batch": args.dlib_batch,
        "load_avg_1min": round(load[0], 2),
    }))


if __name__ == "__main__":
    main()

"""One invariance-callback measurement against the machine's compute floor.

Times what the callback does per measurement on the default probe (``conf/probe/default.yaml``) with the
quickstart's backbone (``tiny`` at 48 px): ``EnergyProbe.embed`` on the cached probe images (ours) and
``EnergyProbe.rows`` (the energies), and sets them against

- the floor: the backbone's FLOPs per image (``torch.utils.flop_counter``) × probe images ÷ the FLOP rate of a
  2048² float32 GEMM on the same threads and device (the fastest the hardware runs dense arithmetic);
- the inference engines a user would try instead, on the same images: conv–BN folding (``torch.fx`` fuse),
  fused + channels-last, TorchScript frozen + ``optimize_for_inference``, onnxruntime (when installed) and,
  with ``--compile``, ``torch.compile``. Each
  reports images/s and its largest absolute difference from ours.

    python benchmarks/probe_inference.py [--device cpu|cuda] [--precision float32|bfloat16] [--threads N]
                                         [--compile] [--repeats 3]

``--precision bfloat16`` runs ours under autocast (the difference it makes is reported as
``bfloat16_max_abs_diff``). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.flop_counter import FlopCounterMode
from timing import median_seconds, torch_device

from fr_invariance.evaluation.embed import embed_images
from fr_invariance.evaluation.invariance import declared_metric
from fr_invariance.evaluation.probe import EnergyProbe
from fr_invariance.models import create_backbone

IMAGE_SIZE = 48
GEMM_SIDE = 2048


def gemm_flops_per_s(device: torch.device, repeats: int, synchronize: Callable[[], None]) -> float:
    """FLOP/s of a ``GEMM_SIDE``² float32 matrix product on ``device``."""
    a = torch.randn(GEMM_SIDE, GEMM_SIDE, device=device)
    b = torch.randn(GEMM_SIDE, GEMM_SIDE, device=device)
    return 2 * GEMM_SIDE**3 / median_seconds(lambda: a @ b, repeats, synchronize)


def flops_per_image(model: nn.Module, device: torch.device) -> float:
    """Forward FLOPs of ``model`` for one ``IMAGE_SIZE`` image."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device))
    return float(counter.get_total_flops())


def onnxruntime_forward(model: nn.Module, threads: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model exported to ONNX and run by onnxruntime's CPU provider; None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE), buffer, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda batch: torch.from_numpy(session.run(None, {"x": batch.numpy()})[0])


class ForwardAsModule(nn.Module):
    """A forward callable as an ``nn.Module`` on ``device``, so ``embed_images`` runs it as it runs ours."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
        super().__init__()
        self.forward_call = forward
        self.register_buffer("device_anchor", torch.zeros(0, device=device))  # embed_images reads the device

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.forward_call(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for ~30 s)")
    args = parser.parse_args()
    device, synchronize = torch_device(args.device, args.threads)
    load = os.getloadavg()[0]

    torch.manual_seed(0)
    model = create_backbone("tiny", input_size=IMAGE_SIZE).to(device)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for _ in range(3):
            model(torch.randn(256, 3, IMAGE_SIZE, IMAGE_SIZE, device=device))
    model.eval()
    probe = EnergyProbe()
    start = time.perf_counter()
    images = probe.images(IMAGE_SIZE, device)
    render_seconds = time.perf_counter() - start
    n_images = images.shape[0]
    print(f"{n_images} probe images rendered in {render_seconds:.2f} s; {args.threads} thread(s), device {device}, "
          f"load average {load:.2f}", flush=True)

    embeddings: dict[str, torch.Tensor] = {}

    def ours() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            embeddings.update(probe.embed(model, image_size=IMAGE_SIZE))

    embed_seconds = median_seconds(ours, args.repeats, synchronize)
    reference = torch.cat([embeddings[name] for name in probe.names])
    metric = declared_metric(model)
    energy_seconds = median_seconds(lambda: probe.rows(embeddings, metric=metric), args.repeats, lambda: None)

    flops = flops_per_image(model, device)
    gemm_rate = gemm_flops_per_s(device, args.repeats, synchronize)
    floor_seconds = flops * n_images / gemm_rate
    print(f"ours: embed {embed_seconds:.2f} s ({n_images / embed_seconds:.0f} images/s, "
          f"{flops * n_images / embed_seconds / 1e9:.0f} GFLOP/s), energies {energy_seconds:.2f} s; "
          f"floor {floor_seconds:.2f} s ({flops / 1e6:.1f} MFLOP/image, GEMM {gemm_rate / 1e9:.0f} GFLOP/s)",
          flush=True)

    fused = fuse(copy.deepcopy(model))
    fused_channels_last = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    engines: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "fx_fused": fused,
        "fx_fused_channels_last":
            lambda batch: fused_channels_last(batch.contiguous(memory_format=torch.channels_last)),
    }
    with torch.no_grad():
        engines["jit_frozen"] = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), images[:2].to(device) * 2.0 - 1.0)))
    if device.type == "cpu":
        onnx_forward = onnxruntime_forward(model, args.threads)
        if onnx_forward is not None:
            engines["onnxruntime"] = onnx_forward
    if args.compile:
        engines["torch_compile"] = torch.compile(copy.deepcopy(model))
    alternatives = {}
    for name, forward in engines.items():
        outputs: list[torch.Tensor] = []

        wrapped = ForwardAsModule(forward, device)

        def run(wrapped: nn.Module = wrapped, outputs: list[torch.Tensor] = outputs) -> None:
            outputs[:] = [embed_images(wrapped, images, batch_size=probe.batch_size)]

        seconds = median_seconds(run, args.repeats, synchronize)
        difference = float((outputs[0] - reference).abs().max())
        alternatives[name] = {"images_per_s": round(n_images / seconds, 1), "max_abs_diff": difference}
        print(f"{name}: {n_images / seconds:.0f} images/s, max |difference| {difference:.1e}", flush=True)

    result = {
        "device": str(device),
        "precision": args.precision,
        "threads": args.threads,
        "probe_images": n_images,
        "render_seconds": round(render_seconds, 2),
        "embed_seconds": round(embed_seconds, 3),
        "images_per_s": round(n_images / embed_seconds, 1),
        "energy_seconds": round(energy_seconds, 3),
        "measurement_seconds": round(embed_seconds + energy_seconds, 3),
        "mflop_per_image": round(flops / 1e6, 2),
        "achieved_gflops": round(flops * n_images / embed_seconds / 1e9, 1),
        "gemm_gflops": round(gemm_rate / 1e9, 1),
        "floor_seconds": round(floor_seconds, 3),
        "ratio_to_floor": round(embed_seconds / floor_seconds, 2),
        "alternatives": alternatives,
        "load_avg_1min": round(load, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

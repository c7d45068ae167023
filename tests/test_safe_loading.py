"""Files from elsewhere never execute code (issue 13).

Payload files (a pickle that creates a marker file when unpickled) go through the real entry points and the
``.bin`` reader: they must end in exit code 2 with one ``error:`` line naming the file and the opt-in, and the
marker must not exist. Every legitimate layout (our own checkpoints, insightface ``backbone.pth``, AdaFace and
Lightning checkpoints) loads without the opt-in; ``trust_checkpoint=true`` loads a benign non-tensor checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import pickle
import pickletools
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.fabric.utilities.data import AttributeDict
from omegaconf import OmegaConf

from fr_invariance.data.paper_format import PaperFormatError, read_paper_embeddings, write_paper_embeddings
from fr_invariance.data.safe_pickle import VerificationBinError, read_verification_bin
from fr_invariance.errors import ConfigurationError, NotACheckpointError, UnsafeFileError, UntrustedCheckpointError
from fr_invariance.evaluation.checkpoints import CheckpointError, load_model_source
from fr_invariance.models import create_backbone, iresnet18, load_backbone_weights
from fr_invariance.models.checkpoint_io import load_checkpoint, pickle_globals
from tests.entrypoints import run_entry_point, summary_of
from tests.test_train_cli import TINY
from tests.test_weights import ReferenceIR

SIZE = 32
OPT_IN = "trust_checkpoint=true"
TINY_MODEL = {"_target_": "fr_invariance.models.tiny.tiny", "input_size": SIZE, "dropout": 0.0, "embedding_size": 128}
TRAIN_ARGS = [o for o in TINY if not o.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1", "invariance=off"]


class Payload:
    """Unpickling this object creates ``marker`` (through ``os.system`` or ``builtins.exec``)."""

    def __init__(self, marker: Path, how: str = "system") -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {shlex.quote(str(self.marker))}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@dataclass
class Hparams:
    """Harmless hyper-parameters, but a type outside the allow-list."""

    lr: float = 0.1
    name: str = "tiny"


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_backbone("tiny", **{k: v for k, v in TINY_MODEL.items() if k != "_target_"}).state_dict()


def lightning_layout(state: dict[str, torch.Tensor], **extra: object) -> dict[str, object]:
    """Our Lightning checkpoint layout: ``backbone.*`` keys, the training config in ``hyper_parameters``."""
    config = {"model": {"name": "tiny", "backbone": dict(TINY_MODEL)}, "data": {"image_size": SIZE}}
    return {"state_dict": {f"backbone.{k}": v for k, v in state.items()}, "epoch": 3,
            "hyper_parameters": {"cfg": config, **extra}}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """name -> (file, marker its payload would create, refused type the error must name)."""
    root = tmp_path_factory.mktemp("payloads")
    files = {}
    marker = root / "raw.marker"  # (1) a plain pickle (protocol 4: STACK_GLOBAL)
    (root / "raw.pth").write_bytes(pickle.dumps({"conv.weight": Payload(marker)}, protocol=4))
    files["raw"] = (root / "raw.pth", marker, "posix.system")
    marker = root / "zip.marker"  # (2) torch.save of a real state_dict plus the payload
    torch.save({**tiny_state(), "extra": Payload(marker, "exec")}, root / "zip.pth")
    files["zip"] = (root / "zip.pth", marker, "builtins.exec")
    marker = root / "ckpt.marker"  # (3) a Lightning-style .ckpt with the payload in its hyper-parameters
    torch.save(lightning_layout(tiny_state(), note=Payload(marker)), root / "evil.ckpt")
    files["ckpt"] = (root / "evil.ckpt", marker, "posix.system")
    marker = root / "legacy.marker"  # (2b) the legacy (non-zip) torch.save format
    torch.save({**tiny_state(), "extra": Payload(marker)}, root / "legacy.pth", _use_new_zipfile_serialization=False)
    files["legacy"] = (root / "legacy.pth", marker, "posix.system")
    return files


@pytest.mark.parametrize("name", ["raw", "zip", "ckpt", "legacy"])
def test_payloads_are_live_under_full_unpickling(payloads, name):
    """The fixture is real: full unpickling of each file creates its marker (so the refusals below mean something)."""
    path, marker, _ = payloads[name]
    if name == "raw":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("entry", ["train", "evaluate"])
@pytest.mark.parametrize("name", ["raw", "zip", "ckpt"])
def test_entry_points_refuse_payload_files(payloads, name, entry, tmp_path):
    path, marker, refused = payloads[name]
    if entry == "train":
        args = ["train.py", *TRAIN_ARGS, f"model.weights={path}", f"hydra.run.dir={tmp_path / 'run'}"]
    else:
        args = ["evaluate.py", f"checkpoint={path}", "model=tiny", f"data.image_size={SIZE}", "progress=false",
                f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = run_entry_point(*args, check=False, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert str(path) in lines[0] and OPT_IN in lines[0] and refused in lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_resume_refuses_a_payload_checkpoint(payloads, tmp_path):
    path, marker, refused = payloads["ckpt"]
    result = run_entry_point("train.py", *TRAIN_ARGS, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}",
                             check=False, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and str(path) in lines[0] and OPT_IN in lines[0] and refused in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_pickles_of_every_protocol_are_refused_unrun(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=protocol))
    with pytest.raises(UntrustedCheckpointError, match="posix.system") as error:
        load_checkpoint(path)
    assert isinstance(error.value, ConfigurationError) and "\n" not in str(error.value)
    with pytest.raises(UntrustedCheckpointError):
        load_backbone_weights(create_backbone("tiny", input_size=SIZE), path)
    assert not marker.exists()


def test_legacy_format_payload_is_refused(payloads):
    path, marker, _ = payloads["legacy"]
    with pytest.raises(UntrustedCheckpointError, match=f"{path}.*posix.system.*{OPT_IN}"):
        load_checkpoint(path)
    assert not marker.exists()


def test_files_that_are_not_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(7, 256)) * 3)
    with pytest.raises(NotACheckpointError, match="not a torch checkpoint") as error:
        load_checkpoint(garbage)
    assert OPT_IN not in str(error.value)
    with pytest.raises(NotACheckpointError):
        load_checkpoint(garbage, trust=True)
    with pytest.raises(ConfigurationError, match="true or false"):
        load_checkpoint(garbage, trust="yes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")


def test_benign_custom_type_needs_the_opt_in(tmp_path):
    path = tmp_path / "custom.ckpt"
    torch.save(lightning_layout(tiny_state(), hparams=Hparams(lr=0.5)), path)
    assert any(name.endswith("Hparams") for name in pickle_globals(path))
    with pytest.raises(UntrustedCheckpointError, match=f"Hparams.*{OPT_IN}"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True)["hyper_parameters"]["hparams"] == Hparams(lr=0.5)
    backbone = create_backbone("tiny", input_size=SIZE)
    assert load_backbone_weights(backbone, path, trust_checkpoint=True) == "lightning"


@pytest.fixture(scope="module")
def trusted_run(tmp_path_factory) -> tuple[Path, dict]:
    """A benign Lightning-style checkpoint with a ``datetime`` in its hyper-parameters, and the summary of a tiny
    ``train.py`` run warm-started from it with the opt-in."""
    root = tmp_path_factory.mktemp("trusted")
    path = root / "dated.ckpt"
    torch.save(lightning_layout(tiny_state(seed=1), created=datetime.datetime(2024, 5, 1)), path)
    result = run_entry_point("train.py", *TRAIN_ARGS, f"model.weights={path}", OPT_IN,
                             f"hydra.run.dir={root / 'run'}", timeout=600)
    return path, summary_of(result)


def test_opt_in_on_the_command_line(trusted_run, tmp_path):
    path, summary = trusted_run
    assert Path(summary["last_checkpoint"]).is_file() and Path(summary["backbone_pth"]).is_file()
    refused = run_entry_point("train.py", *TRAIN_ARGS, f"model.weights={path}", f"hydra.run.dir={tmp_path}",
                              check=False, timeout=300)
    assert refused.returncode == 2
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "datetime.datetime" in lines[0] and OPT_IN in lines[0] and str(path) in lines[0]


def test_checkpoints_the_product_writes_load_without_opt_in(trusted_run):
    _, summary = trusted_run
    for written in (summary["last_checkpoint"], summary["backbone_pth"]):
        assert load_checkpoint(written) is not None
        assert load_backbone_weights(create_backbone("tiny", input_size=SIZE), written) in ("lightning", "insightface")
    source = load_model_source(summary["last_checkpoint"])
    assert source.weights_format == "lightning" and source.image_size == SIZE


def test_insightface_and_legacy_backbone_pth_load_without_opt_in(tmp_path):
    state = tiny_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "backbone.pth")  # DataParallel prefix
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("backbone.pth", "legacy.pth"):
        backbone = create_backbone("tiny", input_size=SIZE)
        assert load_backbone_weights(backbone, tmp_path / name) == "insightface"
        torch.testing.assert_close(backbone.state_dict(), state)


def test_adaface_checkpoint_with_namespace_hparams_loads_without_opt_in(tmp_path):
    reference = ReferenceIR((2, 2, 2, 2), side=2)
    hparams = argparse.Namespace(arch="ir_18", head="adaface", m=0.4, output_dir=Path("experiments/ir18"))
    path = tmp_path / "adaface_ir18.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()},
                "hyper_parameters": hparams, "epoch": 25}, path)
    assert load_checkpoint(path)["hyper_parameters"] == hparams
    ours = iresnet18(input_size=SIZE, first_stage_shortcut="subsample")
    assert load_backbone_weights(ours, path, bgr_to_rgb=True) == "adaface"


def test_allow_listed_hyper_parameter_types_load(tmp_path):
    path = tmp_path / "hparams.ckpt"
    hyper = AttributeDict(lr=0.1, root=Path("/data/faces"), best=np.float64(0.93), steps=np.int64(7),
                          weights=np.array([0.5, 0.25], dtype=np.float32), flags=np.array([True, False]),
                          cfg=OmegaConf.create({"a": 1, "b": [1, "x"]}))
    torch.save(lightning_layout(tiny_state(), extra=hyper), path)
    loaded = load_checkpoint(path)["hyper_parameters"]["extra"]
    assert loaded["root"] == Path("/data/faces") and loaded["best"] == 0.93 and loaded["steps"] == 7
    assert loaded["flags"].tolist() == [True, False] and loaded["cfg"]["b"][1] == "x"
    objects = tmp_path / "objects.ckpt"
    torch.save({"w": torch.zeros(1), "o": np.array([1, "a"], dtype=object)}, objects)
    with pytest.raises(UntrustedCheckpointError, match="ObjectDType"):
        load_checkpoint(objects)


class _LitTiny(L.LightningModule):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.save_hyperparameters(cfg)
        self.backbone = create_backbone("tiny", input_size=SIZE)

    def training_step(self, batch, batch_idx):
        return self.backbone(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_checkpoint_written_by_lightning_trainer_loads_without_opt_in(tmp_path):
    module = _LitTiny(OmegaConf.create({"lr": 0.01, "model": {"name": "tiny", "size": SIZE}}))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 3, SIZE, SIZE)), batch_size=4)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, data)
    path = tmp_path / "lit.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["hyper_parameters"]["model"]["name"] == "tiny"  # an OmegaConf DictConfig
    backbone = create_backbone("tiny", input_size=SIZE)
    assert load_backbone_weights(backbone, path) == "lightning"
    torch.testing.assert_close(backbone.state_dict(), module.backbone.state_dict())


@pytest.mark.parametrize("injection", ["target", "nested_target", "args"])
def test_model_config_inside_a_checkpoint_is_not_instantiated(tmp_path, injection):
    """The training config comes with the file: its ``_target_`` must never be imported or called."""
    marker = tmp_path / "marker"
    command = {"_target_": "os.system", "command": f"touch {shlex.quote(str(marker))}"}
    node = {
        "target": command,
        "nested_target": {**TINY_MODEL, "embedding_size": command},
        "args": {**TINY_MODEL, "_args_": [command]},
    }[injection]
    checkpoint = lightning_layout(tiny_state())
    checkpoint["hyper_parameters"]["cfg"]["model"]["backbone"] = node
    path = tmp_path / "config.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=OPT_IN):
        load_model_source(path)
    assert not marker.exists()


# --- verification .bin sets ---------------------------------------------------------------------------


class _Python2Pickler(pickle._Pickler):
    """Writes byte strings and ASCII text as Python 2 ``str`` (``SHORT_BINSTRING``/``BINSTRING``), like the
    published insightface ``.bin`` files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        header = bytes([len(obj)]) if len(obj) < 256 else struct.pack("<i", len(obj))
        self.write((pickle.SHORT_BINSTRING if len(obj) < 256 else pickle.BINSTRING) + header + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        if obj.isascii():
            self.save_bytes(obj.encode("ascii"))
        else:
            pickle._Pickler.save_str(self, obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


IMAGES = [b"\xff\xd8" + bytes([k]) * 300 for k in range(4)]


@pytest.mark.parametrize("layout", ["python2_list", "python2_numpy", "protocol2_numpy", "protocol5_numpy",
                                    "latin1_str", "imencode_columns", "numpy_bool_scalars"])
def test_verification_bin_layouts_load(tmp_path, layout):
    issame = [True, False]
    data = {
        "python2_list": lambda: python2_pickle((IMAGES, issame)),
        "python2_numpy": lambda: python2_pickle((IMAGES, np.array(issame))),
        "protocol2_numpy": lambda: pickle.dumps((IMAGES, np.array(issame)), protocol=2),
        "protocol5_numpy": lambda: pickle.dumps((IMAGES, np.array(issame)), protocol=5),
        "latin1_str": lambda: pickle.dumps(([image.decode("latin-1") for image in IMAGES], issame)),
        # insightface's agedb/cfp packers append cv2.imencode's output, an (N, 1) uint8 array in OpenCV 2-4
        "imencode_columns": lambda: pickle.dumps(([np.frombuffer(image, np.uint8).reshape(-1, 1) for image in IMAGES],
                                                  issame), protocol=2),
        "numpy_bool_scalars": lambda: pickle.dumps((IMAGES, [np.bool_(flag) for flag in issame])),
    }[layout]()
    if layout.startswith("python2"):
        opcodes = {op.name for op, _, _ in pickletools.genops(data)}
        assert "BINSTRING" in opcodes and not opcodes & {"BINBYTES", "SHORT_BINBYTES"} and b"_codecs" not in data
    path = tmp_path / "lfw.bin"
    path.write_bytes(data)
    images, flags = read_verification_bin(path)
    assert images == IMAGES and flags.dtype == np.bool_ and flags.tolist() == issame


def test_verification_bin_payload_is_refused_unrun(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((IMAGES, [Payload(marker), False])))
    with pytest.raises(UnsafeFileError) as error:
        read_verification_bin(path)
    message = str(error.value)
    assert isinstance(error.value, ConfigurationError) and "\n" not in message
    assert str(path) in message and "posix.system" in message
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload is live under plain pickle
    assert marker.exists()


@pytest.mark.parametrize("data", [
    b"not a pickle at all",
    pickle.dumps((IMAGES[:3], [True, False])),
    pickle.dumps((IMAGES, np.array([1.0, 0.0]))),
    pickle.dumps({"images": IMAGES}),
    pickle.dumps(([np.zeros((4, 4, 3), np.uint8)] * 4, [True, False])),  # decoded pixels, not encoded bytes
    pickle.dumps((IMAGES, [np.uint8(1), np.uint8(0)])),
])
def test_malformed_verification_bin(tmp_path, data):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(VerificationBinError, match="bad.bin"):
        read_verification_bin(path)


# --- paper-layout embeddings --------------------------------------------------------------------------


def test_paper_layout_npy_is_read_without_pickle(tmp_path):
    table = pd.DataFrame({"id_curve": [0, 0], "moving_dimension": ["age", "age"], "param_step": [0.0, 0.25],
                          "index": [0, 1]})
    write_paper_embeddings(tmp_path, table, {"alice": np.ones((2, 4))})
    marker = tmp_path / "marker"
    np.save(tmp_path / "mallory.npy", np.array([Payload(marker), 1], dtype=object), allow_pickle=True)
    layout = read_paper_embeddings(tmp_path)
    assert layout.load("alice").shape == (2, 4)
    with pytest.raises(PaperFormatError, match="mallory.npy"):
        layout.load("mallory")
    assert not marker.exists()
    for name in ("../outside", "a/b", "a\\b"):
        with pytest.raises(PaperFormatError, match="file stem"):
            write_paper_embeddings(tmp_path / "out", table, {name: np.ones((2, 4))})
    assert not (tmp_path / "outside.npy").exists()

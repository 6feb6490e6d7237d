"""The tiny CLIP teacher: fits SynthAV Places-style pairs (generated in memory), deterministic,
exact retrieval recall."""

import math

import numpy as np
import pytest
import torch

from assets.caches.video_frames import resize_center_crop
from assets.core.cache_layout import TINY_TEACHER_NAME
from assets.mining.tiny_teacher import FitConfig, fit_tiny_clip, recall_from_similarity, retrieval_recall
from data.synthav.generate import DEFAULT_DENSITY
from data.synthav.layouts import RenderSettings, item_clip
from data.synthav.render import render_picture
from data.synthav.world import DENSITIES, describe
from models.clip_teacher import ClipTeacher, TeacherSpec
from models.teacher_weights import save_weights
from models.tiny_clip import TINY_CLIP_CONFIG, create_tiny_clip, encode_images, encode_texts


def places_pairs(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The demo's Places pairs (its default density), drawn as data.synthav.layouts.make_places
    draws them; the picture resized and centre-cropped to 224 as the frame cache does (without
    the JPEG round trip)."""
    rs = RenderSettings(seed=seed, density=DEFAULT_DENSITY["places"])
    density = DENSITIES[rs.density]
    images, captions = [], []
    for i in range(n):
        spec, rng = item_clip("places", rs, split, i)
        captions.append(describe(spec, rng, style=int(rng.integers(len(density.templates))), density=density))
        images.append(resize_center_crop(render_picture(spec, 256, 256), 224))
    return np.stack(images), captions


FIT = FitConfig(epochs=12, batch_size=64, lr=1e-3, weight_decay=0.1, warmup_steps=10, seed=0)


@pytest.fixture(scope="module")
def train_pairs():
    return places_pairs("train", 400)


@pytest.fixture(scope="module")
def fitted(train_pairs):
    return fit_tiny_clip(*train_pairs, FIT)


def test_loss_decreases_and_model_is_frozen(fitted):
    model, losses = fitted
    assert len(losses) == FIT.epochs
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]          # measured: 4.10 -> 1.38
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_heldout_recall_well_above_chance(fitted):
    model, _ = fitted
    images, captions = places_pairs("val", 200)
    r = retrieval_recall(model, images, captions)
    chance = 1 / 200
    # measured with FIT on 400 train pairs (seed 0): R@1 i2t 0.125, t2i 0.130 (25x chance),
    # R@10 0.61 / 0.62; many held-out captions are near-duplicates, so R@1 stays far below 1
    assert r["i2t_R@1"] > 10 * chance and r["t2i_R@1"] > 10 * chance, r
    assert r["i2t_R@10"] > 0.35 and r["t2i_R@10"] > 0.35, r


def test_same_seed_bit_identical_and_global_state_restored(train_pairs):
    images, captions = train_pairs[0][:128], train_pairs[1][:128]
    cfg = FitConfig(epochs=2, batch_size=64, warmup_steps=2, seed=3)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    a, la = fit_tiny_clip(images, captions, cfg)
    b, lb = fit_tiny_clip(images, captions, cfg)
    assert la == lb
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c, _ = fit_tiny_clip(images, captions, FitConfig(epochs=2, batch_size=64, warmup_steps=2, seed=4))
    assert not torch.equal(sa["visual.conv1.weight"], c.state_dict()["visual.conv1.weight"])
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_create_is_deterministic():
    a, b = create_tiny_clip(7).state_dict(), create_tiny_clip(7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recall_from_similarity_hand_cases():
    r = recall_from_similarity(np.eye(5), ks=(1, 5))
    assert r["i2t_R@1"] == r["t2i_R@1"] == 1.0 and r["i2t_R@5"] == 1.0
    # all ties, counted against the model: the 3 wrong items rank ahead of the true one, rank 4 for all
    r = recall_from_similarity(np.zeros((4, 4)), ks=(1, 2, 4))
    assert r["i2t_R@1"] == r["t2i_R@1"] == 0.0
    assert r["i2t_R@2"] == r["t2i_R@2"] == 0.0 and r["i2t_R@4"] == r["t2i_R@4"] == 1.0
    assert r["i2t_median_rank"] == r["t2i_median_rank"] == 4.0
    # one tie: caption 1 scores as high for image 0 as caption 0 does -> image 0 at rank 2, the rest 1
    r = recall_from_similarity(np.array([[0.5, 0.5], [0.1, 0.9]]), ks=(1, 2))
    assert (r["i2t_R@1"], r["i2t_R@2"], r["t2i_R@1"]) == (0.5, 1.0, 1.0)
    # image 1's best caption is caption 0 (i2t miss), but caption 1's best image is image 1
    sim = np.array([[0.9, 0.1, 0.0],
                    [0.8, 0.7, 0.0],
                    [0.0, 0.0, 0.5]])
    r = recall_from_similarity(sim, ks=(1,))
    assert r["i2t_R@1"] == pytest.approx(2 / 3)
    assert r["t2i_R@1"] == pytest.approx(1.0)


def test_fit_schedule_hand_values():
    """Linear warmup to lr, then a cosine that reaches 0 one step after the last step."""
    cfg = FitConfig(lr=1e-3, warmup_steps=4)
    assert [cfg.lr_at(s, 10) for s in range(4)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3]
    assert cfg.lr_at(4, 10) == 1e-3  # the cosine starts at the peak
    assert cfg.lr_at(7, 10) == pytest.approx(0.5e-3)  # halfway through the 6 decay steps
    assert cfg.lr_at(9, 10) == pytest.approx(0.5e-3 * (1 - math.sqrt(3) / 2))  # last step: 5/6 of the way, not 0
    assert cfg.lr_at(10, 10) == 0.0
    demo = FitConfig()  # 20 epochs x 19 steps on the demo's 2501 pairs
    assert demo.lr_at(0, 380) == 2e-5 and demo.lr_at(49, 380) == demo.lr_at(50, 380) == 1e-3
    assert demo.lr_at(379, 380) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 329 / 330)))


def test_fitted_model_loads_as_the_clip_teacher(fitted, train_pairs, tmp_path):
    """Saved as the demo saves it (state dict + open_clip config), the ClipTeacher wrapper gives the
    fitted model's own embeddings: the same 224 -> 64 downscale, the same tokenizer."""
    model, _ = fitted
    path = tmp_path / "tiny.pt"
    save_weights(model, path)
    teacher = ClipTeacher(TeacherSpec(model_name=TINY_TEACHER_NAME, pretrained="", weights_path=str(path), device="cpu",
                                      batch_size=16), model_config=TINY_CLIP_CONFIG)
    images, captions = train_pairs[0][:32], train_pairs[1][:32]
    np.testing.assert_allclose(teacher.encode_images(images), encode_images(model, images), atol=1e-5)
    np.testing.assert_allclose(teacher.encode_texts(captions), encode_texts(model, captions), atol=1e-5)

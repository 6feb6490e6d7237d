"""The trainer on a synthetic clip set with a tiny audio ViT: exact resume, the gradient cache
equals the full-batch gradient, the batch loader, mined neighbours within a training subset."""

import numpy as np
import pytest
import torch
from open_clip.model import CLIP
from safetensors.torch import load_file

from assets.caches.fbank_stats import Normaliser
from assets.training.data import BatchLoader, ClipSet
from assets.training.experiments import parse_experiment
from assets.training.runs import neighbours_within
from assets.training.trainer import FINAL_WEIGHTS, Trainer, TrainInputs
from models.audio_encoder import build_audio_encoder

TINY = {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
MODEL = {"kind": "audio_vit", "time_frames": 48, "mel_bins": 16, "patch": [16, 16], "stride": [8, 16]}
N, L, D = 24, 4, 8


@pytest.fixture(scope="module")
def visual():
    torch.manual_seed(0)
    return CLIP(**TINY).visual


def tiny_clips() -> ClipSet:
    """N clips of random (48, 16) features and L unit frame embeddings of width D."""
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((N, L, D)).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    return ClipSet([f"c{i}" for i in range(N)], ["train"] * N, rng.standard_normal((N, 48, 16)).astype(np.float16),
                   np.full(N, 48), frames)


@pytest.fixture(scope="module")
def clips():
    return tiny_clips()


def _exp(**over):
    body = {"dataset": "d", "model": MODEL, "epochs": 2, "batch_size": 8, "seeds": [3],
            "optim": {"optimizer": "lars", "lr_weights": 0.5, "lr_biases": 0.05, "warmup_epochs": 1}} | over
    return parse_experiment(body, "t", "t.yaml")


def _inputs(clips, exp):
    neighbours = None
    if exp.loss.kind == "mined":
        ring = (np.arange(N)[:, None] + np.arange(1, 4)[None, :]) % N  # clip i's neighbours: i+1, i+2, i+3
        neighbours = {t: ring for t in exp.loss.tables if t != "org"}
    return TrainInputs(clips, Normaliser({"mean": 0.5, "std": 2.0}), neighbours, groups=np.arange(N) % 6)


def _train(visual, clips, exp, out, stop=None):
    model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"})
    return Trainer(exp, 3, model, _inputs(clips, exp), out, torch.device("cpu"), log=lambda _: None).fit(stop)


@pytest.mark.parametrize("over", [
    {"frames": {"strategy": "nearest", "nearest_start_epoch": 1}, "loss": {"kind": "mined", "tables": ["t2t", "i2t"], "k": 2}},
    {"frames": {"strategy": "multiframe"}, "optim": {"optimizer": "adamw", "lr_weights": 1e-3, "lr_biases": 1e-3}},
])
def test_resume_after_a_kill_gives_the_same_weights(visual, clips, tmp_path, over):
    exp = _exp(**over)
    straight = _train(visual, clips, exp, tmp_path / "straight")
    assert _train(visual, clips, exp, tmp_path / "resumed", stop=0) == {}  # "killed" after epoch 0's checkpoint
    assert not (tmp_path / "resumed" / FINAL_WEIGHTS).exists()
    resumed = _train(visual, clips, exp, tmp_path / "resumed")
    assert resumed["resumed_at_epoch"] == 1
    a, b = load_file(str(tmp_path / "straight" / FINAL_WEIGHTS)), load_file(str(tmp_path / "resumed" / FINAL_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    start = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"}).state_dict()
    assert any(not torch.equal(start[k], a[k]) for k in a)  # it did train


def test_spec_augment_masks_training_batches_only(visual, clips, tmp_path, monkeypatch):
    import assets.training.trainer as trainer_module

    seen = []

    def recording(fbank, freq_mask, time_mask, generator):
        seen.append((tuple(fbank.shape), freq_mask, time_mask))
        return trainer_module_spec_augment(fbank, freq_mask, time_mask, generator)

    trainer_module_spec_augment = trainer_module.spec_augment
    monkeypatch.setattr(trainer_module, "spec_augment", recording)
    exp = _exp(train={"freq_mask": 4, "time_mask": 10})
    model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"})
    inputs = _inputs(clips, exp)
    inputs.val = clips
    trainer = Trainer(exp, 3, model, inputs, tmp_path, torch.device("cpu"), log=lambda _: None)
    summary = trainer.fit()
    assert seen == [((8, 48, 16), 4, 10)] * (2 * 3)  # every training step of 2 epochs x 3 batches, nothing else
    assert all("val_A->I_R@1" in h for h in summary["history"])  # the per-epoch validation ran, unmasked
    seen.clear()
    trainer._validate()
    assert seen == []


def test_multiframe_scores_with_one_similarity_in_training_and_evaluation(visual, clips):
    """The evaluation's multiframe score of every (audio, clip) pair equals the training loss's similarity
    on the same clips (eq. 4 on raw segments), and the common protocol uses the segment mean vs frame 1 of 4."""
    from assets.training.evaluation import (AudioOutput, audio_image_similarity, common_similarity, embed_clips,
                                            encode_audio, retrieval_report)
    from losses.frame_matching import multiframe_similarity

    model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"}).eval()
    norm = Normaliser({"mean": 0.5, "std": 2.0})
    out = AudioOutput(segments=L)
    batch = next(iter(BatchLoader(clips, np.arange(N), N, norm, drop_last=False)))
    with torch.no_grad():
        train_sim = multiframe_similarity(encode_audio(model, batch.audio, batch.lengths, out), batch.frames)
    emb = embed_clips(model, clips, norm, torch.device("cpu"), out, batch_size=5)
    assert emb.shape == (N, L, D)
    np.testing.assert_allclose(audio_image_similarity(emb, clips.frames, "multiframe"), train_sim.numpy(), atol=1e-5)
    mean = emb.mean(axis=1)
    frame1 = clips.frames[:, 1]
    direct = (mean / np.linalg.norm(mean, axis=1, keepdims=True)) @ (frame1 / np.linalg.norm(frame1, axis=1, keepdims=True)).T
    np.testing.assert_allclose(common_similarity(emb, clips.frames), direct, atol=1e-5)
    report = retrieval_report(emb, clips, "multiframe", with_text=False)
    assert set(report) == {"A->I", "I->A", "A->I common", "I->A common"}


def test_segment_mean_pooling_for_fine_tuning(visual, clips):
    """model.pool: segments -> the clip embedding is the mean of the segment embeddings, not the class token."""
    from assets.training.evaluation import AudioOutput, encode_audio
    from assets.training.trainer import audio_output

    model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"}).eval()
    x = torch.randn(3, 48, 16)
    lengths = torch.tensor([48, 40, 48])
    with torch.no_grad():
        pooled = encode_audio(model, x, lengths, AudioOutput(mean_of=4))
        torch.testing.assert_close(pooled, model.forward_segments(x, 4, lengths).mean(dim=1))
        assert not torch.allclose(pooled, model(x))
    ft = parse_experiment({"dataset": "d", "stage": "audio_text", "model": MODEL | {"pool": "segments"}}, "ft", "ft.yaml")
    assert audio_output(ft, clips) == AudioOutput(mean_of=4)
    assert audio_output(_exp(frames={"strategy": "multiframe"}), clips) == AudioOutput(segments=L)
    assert audio_output(_exp(), clips) == AudioOutput()


def test_gradient_cache_equals_the_full_batch_gradient(visual, clips):
    """grad_accum 4 (chunks of 2) must give the gradient of the loss over the whole batch of 8."""
    grads = {}
    for accum in (1, 4):
        exp = _exp(grad_accum=accum, loss={"kind": "mined", "tables": ["t2t"], "k": 3})
        model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"})
        trainer = Trainer(exp, 3, model, _inputs(clips, exp), "/nonexistent", torch.device("cpu"))
        loader = BatchLoader(clips, np.arange(N), 8, trainer.inputs.normalise)
        batch = next(iter(loader))
        trainer.optimizer.zero_grad()
        gen = torch.Generator().manual_seed(0)
        if accum == 1:
            trainer._loss(trainer._encode(batch), batch, 0, gen).backward()
        else:
            trainer._cached_gradient_step(batch, 0, gen)
        grads[accum] = {n: p.grad.clone() for n, p in trainer.modules.named_parameters() if p.grad is not None}
    assert grads[1].keys() == grads[4].keys() and len(grads[1]) > 5
    for name in grads[1]:
        torch.testing.assert_close(grads[4][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_loader_order_normalisation_and_caption_picks(clips):
    caps = [np.full((1 + i % 3, D), float(i), np.float32) for i in range(N)]
    with_caps = ClipSet(clips.clip_ids, clips.splits, clips.features, clips.lengths, clips.frames, caps)
    order = np.random.default_rng(1).permutation(N)
    norm = Normaliser({"mean": 0.5, "std": 2.0})
    one = list(BatchLoader(with_caps, order, 5, norm, caption_seed=7, workers=1))
    three = list(BatchLoader(with_caps, order, 5, norm, caption_seed=7, workers=3, prefetch=2))
    inline = list(BatchLoader(with_caps, order, 5, norm, caption_seed=7, workers=0))  # the CPU default: no thread
    assert all(torch.equal(a.audio, c.audio) and torch.equal(a.captions, c.captions) for a, c in zip(one, inline))
    assert len(one) == 4  # 24 // 5, the last partial batch dropped
    for a, b, start in zip(one, three, range(0, 20, 5)):
        idx = order[start:start + 5]
        assert a.index.tolist() == b.index.tolist() == idx.tolist()
        expected = (torch.from_numpy(clips.features[idx]).float() - 0.5) / 2.0
        assert torch.equal(a.audio, expected) and torch.equal(b.audio, expected)
        assert torch.equal(a.captions, b.captions)  # picks do not depend on thread timing
        assert a.captions[:, 0].tolist() == [float(i) for i in idx]  # each clip's own caption
    assert len(list(BatchLoader(with_caps, order, 5, norm, drop_last=False))) == 5


def test_batch_loader_surfaces_a_worker_error(clips):
    class Broken(ClipSet):
        pass
    broken = Broken(clips.clip_ids, clips.splits, clips.features[:10], clips.lengths, clips.frames)  # rows >= 10 missing
    loader = BatchLoader(broken, np.arange(N), 8, Normaliser({"mean": 0.0, "std": 1.0}), workers=2)
    with pytest.raises(IndexError):
        list(loader)


def test_per_bin_normaliser_for_both_layouts():
    stats = {"per_bin": True, "bin_mean": [1.0, 2.0, 3.0], "bin_std": [1.0, 2.0, 0.0]}  # constant bin: std 1
    x = torch.tensor([[[1.0, 4.0, 5.0]]])  # (1, frames=1, bins=3)
    assert Normaliser(stats, std_scale=2.0)(x).tolist() == [[[0.0, 0.5, 1.0]]]
    assert Normaliser(stats, layout="bins,frames")(x.transpose(1, 2)).tolist() == [[[0.0], [1.0], [2.0]]]


def test_neighbours_within_a_training_subset():
    ids = np.array([[1, 2, 3, 4], [0, 4, 2, 3], [3, -1, 0, 1]])
    keep = np.array([True, False, True, True, False])  # clips 1 and 4 are outside the subset
    assert neighbours_within(ids, keep, 2).tolist() == [[2, 3], [0, 2], [3, 0]]
    assert neighbours_within(ids, keep, 4).tolist() == [[2, 3, -1, -1], [0, 2, 3, -1], [3, 0, -1, -1]]

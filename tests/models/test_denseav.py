"""DenseAV's model parts: aligners, LoRA on the image tower, patch tokens, masks and phases."""

import pytest
import torch

from assets.training.audio_window import random_windows, silence_outside
from models.audio_vit import AudioViT
from models.clip_patch_tokens import ImagePatchTokens
from models.denseav import DenseAV, audio_token_mask, resize_mask
from models.denseav_aligners import AudioAligner, ImageAligner
from models.lora import add_lora
from models.tiny_clip import create_tiny_clip

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def visual():
    return create_tiny_clip(seed=0).visual


def _model(visual, train_image="lora", time_pools=1):
    audio = AudioViT(visual, time_frames=200, mel_bins=64, stride=(16, 16), patch=(16, 16), layers=1)
    image = ImagePatchTokens(visual, MEAN, STD, lora_rank=8 if train_image == "lora" else None)
    torch.manual_seed(0)
    return DenseAV(audio, image, code_dim=24, time_pools=time_pools, image_pool=1, train_image=train_image)


def test_aligner_shapes_and_head_padding():
    aligner = AudioAligner(in_dim=10, code_dim=20, time_pools=2)
    out = aligner(torch.randn(2, 10, 4, 29), torch.randn(2, 10))
    assert out.shape == (2, 20, 1, 3)  # 29 -> 9 -> 3 time steps, frequency averaged
    assert aligner.padding == 4  # 20 channels padded to 24 for 6 attention heads
    assert aligner.out_steps(29) == 3
    with pytest.raises(ValueError, match="time steps"):
        aligner(torch.randn(1, 10, 1, 8), torch.randn(1, 10))
    assert ImageAligner(10, 20)(torch.randn(2, 10, 3, 4)).shape == (2, 20, 3, 4)


def test_lora_starts_at_the_original_weight_and_trains_only_its_factors():
    mha = torch.nn.MultiheadAttention(8, 2)
    x = torch.randn(3, 1, 8)
    before = mha(x, x, x)[0].detach()
    delta = add_lora(mha, "in_proj_weight", rank=2, alpha=4.0)
    assert torch.allclose(mha(x, x, x)[0], before)
    with torch.no_grad():
        delta.b.fill_(0.5)
    expected = mha.parametrizations.in_proj_weight.original + 2.0 * (delta.b @ delta.a)
    assert torch.allclose(mha.in_proj_weight, expected)
    mha(x, x, x)[0].sum().backward()
    assert mha.parametrizations.in_proj_weight.original.grad is None
    assert delta.a.grad is not None and delta.b.grad is not None


def test_patch_tokens_are_open_clips_output_tokens(visual):
    tokens = ImagePatchTokens(visual, MEAN, STD)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    grid = tokens(frames)
    assert grid.shape == (2, 128, 4, 4)
    reference = visual.eval()
    reference.output_tokens = True
    try:
        _, ref_tokens = reference(tokens.preprocess(frames))
    finally:
        reference.output_tokens = False
    # row-major: grid[:, :, r, c] is token r * 4 + c (row 0 the top of the frame)
    assert torch.allclose(grid.flatten(2).transpose(1, 2), ref_tokens, atol=1e-5)
    assert tokens.embed_patches(frames).shape == (2, 128, 4, 4)  # tiny CLIP's embedding dim


def test_token_mask_follows_lengths_and_windows(visual):
    audio = AudioViT(visual, time_frames=200, mel_bins=64, stride=(16, 16), patch=(16, 16), layers=1)
    # 12 time rows, centres 8, 24, ..., 184
    mask = audio_token_mask(audio, torch.tensor([200, 40, 100]), 12, starts=torch.tensor([0, 0, 50]))
    assert mask[0].all()
    assert mask[1].tolist() == [True] * 3 + [False] * 9  # centres 8, 24, 40 <= 40
    assert mask[2].tolist() == [False] * 3 + [True] * 3 + [False] * 6  # centres 56, 72, 88 in [50, 100]
    resized = resize_mask(torch.tensor([[True] * 6 + [False] * 6]), 4)
    assert resized.tolist() == [[True, True, False, False]]


def test_phases_decide_what_gets_gradients(visual):
    model = _model(visual)
    fbank, lengths = torch.randn(2, 200, 64), torch.tensor([200, 120])
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    out = model(fbank, lengths, frames, train_backbones=False)
    assert out.audio.shape == (2, 24, 1, 4) and out.image.shape == (2, 24, 4, 4) and out.mask.shape == (2, 4)
    (out.audio.sum() + out.image.sum()).backward()
    lora = [p for n, p in model.named_parameters() if ".a" in n[-2:] or ".b" in n[-2:]]
    assert lora and all(p.grad is None for p in lora)
    assert model.audio_backbone.conv.weight.grad is None  # warm-up: backbones frozen
    assert model.audio_aligner.pools[0].weight.grad is not None and model.image_aligner.conv.weight.grad is not None
    model.zero_grad(set_to_none=True)
    out = model(fbank, lengths, frames, train_backbones=True)
    (out.audio.sum() + out.image.square().sum()).backward()
    assert model.audio_backbone.conv.weight.grad is not None
    assert all(p.grad is not None for p in lora)
    assert model.image_backbone.visual.conv1.weight.grad is None  # the tower itself stays frozen


def test_frozen_image_side_never_learns(visual):
    model = _model(visual, train_image="frozen")
    out = model(torch.randn(2, 200, 64), torch.tensor([200, 200]), torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert not out.image.requires_grad and out.audio.requires_grad


def test_random_windows_and_silence():
    gen = torch.Generator().manual_seed(0)
    starts, ends = random_windows(torch.tensor([1000] * 64 + [40]), gen)
    windowed = (starts > 0) | (ends < 1000)
    assert 16 < int(windowed[:64].sum()) < 48  # about half
    assert ((ends - starts)[:64][windowed[:64]] >= 50).all() and (ends[:64] <= 1000).all()
    assert starts[64] == 0 and ends[64] == 40  # too short to window
    audio = torch.zeros(1, 6, 2)
    out = silence_outside(audio, torch.tensor([2]), torch.tensor([4]), torch.tensor([-1.0, -2.0]))
    assert out[0, :, 0].tolist() == [-1, -1, 0, 0, -1, -1] and out[0, 0, 1] == -2

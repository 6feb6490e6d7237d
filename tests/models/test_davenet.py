"""DAVEnet: shapes, the time downsampling and the length-aware mean pooling."""

import pytest
import torch

from models.davenet import DaveNet, pooled_lengths


def test_full_size_shapes_and_time_downsampling():
    model = DaveNet(embed_dim=512).eval()
    assert model.conv5.out_channels == 1024 and model.conv1.kernel_size == (40, 1)
    with torch.no_grad():
        frames = model.frames(torch.randn(2, 40, 2048))
        assert frames.shape == (2, 1024, 256)  # time / 8
        assert model(torch.randn(2, 40, 2048)).shape == (2, 512)


def test_pooled_lengths_follow_the_three_pools():
    # each pool (k 3, s 2, p 1) maps n frames to ceil(n / 2)
    assert pooled_lengths(torch.tensor([2048, 1000, 17, 1])).tolist() == [256, 125, 3, 1]
    model = DaveNet(embed_dim=8, width=1 / 16).eval()
    for t in (1000, 17):
        assert model.frames(torch.randn(1, 40, t)).shape[2] == pooled_lengths(torch.tensor([t])).item()


def test_mean_pool_uses_only_frames_from_real_audio():
    torch.manual_seed(0)
    model = DaveNet(embed_dim=8, width=1 / 16).eval()
    x = torch.randn(2, 40, 64)
    lengths = torch.tensor([64, 20])
    with torch.no_grad():
        out = model(x, lengths)
        frames = model.frames(x)
        n = pooled_lengths(lengths)  # 8 and 3
        direct = torch.stack([frames[b, :, : n[b]].mean(dim=1) for b in range(2)]) @ model.proj.weight.T + model.proj.bias
    torch.testing.assert_close(out, direct)
    with pytest.raises(ValueError, match="expected log-mel"):
        model(torch.randn(1, 128, 64))


def test_trimmed_padding_gives_the_same_embeddings_in_eval_mode():
    """Cutting a batch after its longest caption + the receptive margin changes no valid output frame."""
    torch.manual_seed(0)
    full = DaveNet(embed_dim=8, width=1 / 16).eval()
    trimmed = DaveNet(embed_dim=8, width=1 / 16, trim_padding=True).eval()
    trimmed.load_state_dict(full.state_dict())
    with torch.no_grad():
        full.input_norm.running_mean.fill_(-20.0)  # padding (0 dB) normalises to a non-zero value
        trimmed.input_norm.running_mean.fill_(-20.0)
    lengths = torch.tensor([300, 123, 57])
    x = torch.zeros(3, 40, 2048)
    for i, n in enumerate(lengths.tolist()):
        x[i, :, :n] = -40 * torch.rand(40, n)
    with torch.no_grad():
        torch.testing.assert_close(trimmed(x, lengths), full(x, lengths), rtol=1e-5, atol=1e-6)
        # and the cut does happen: a caption of 300 frames runs on 432 (300 + 128, rounded up to 8)
        assert trimmed.frames(x[..., :432]).shape[2] == 54

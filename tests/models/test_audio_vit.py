"""The audio ViT initialised from a CLIP image tower: patch weights, position embeddings, shapes."""

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP

from models.audio_vit import AudioViT, audio_grid, interpolate_position_embedding

TINY32 = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
          "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def visual():
    torch.manual_seed(0)
    return CLIP(**TINY32).visual.eval()


def test_position_embedding_bilinear_hand_case():
    # 2x2 grid [[0, 1], [2, 3]] (one channel) -> 4x2: rows at source coordinates -0.25 (clamped),
    # 0.25, 0.75, 1.25 (clamped) with align_corners=False
    pos = torch.tensor([[9.0], [0.0], [1.0], [2.0], [3.0]])
    out = interpolate_position_embedding(pos, (2, 2), (4, 2))
    assert out[:, 0].tolist() == [9.0, 0.0, 1.0, 0.5, 1.5, 1.5, 2.5, 2.0, 3.0]
    assert torch.equal(interpolate_position_embedding(pos, (2, 2), (2, 2)), pos)


def test_initialisation_from_the_image_tower(visual):
    audio = AudioViT(visual)
    assert audio.grid == (61, 5) == audio_grid(1000, 128, (32, 32), (16, 24))
    torch.testing.assert_close(audio.conv.weight, visual.conv1.weight.mean(dim=1, keepdim=True), rtol=0, atol=0)
    assert audio.conv.stride == (16, 24) and audio.conv.kernel_size == (32, 32)
    pos = audio.positional_embedding.detach()
    assert pos.shape == (1 + 61 * 5, 32)
    torch.testing.assert_close(pos[0], visual.positional_embedding[0].detach())
    direct = torch.nn.functional.interpolate(
        visual.positional_embedding[1:].detach().reshape(2, 2, 32).permute(2, 0, 1)[None], size=(61, 5),
        mode="bilinear", align_corners=False)[0].permute(1, 2, 0).reshape(305, 32)
    torch.testing.assert_close(pos[1:], direct)
    assert torch.equal(audio.proj, visual.proj) and audio.proj is not visual.proj  # copied, not shared


def test_output_shapes_for_1000x128_fbank(visual):
    audio = AudioViT(visual).eval()
    x = torch.randn(2, 1000, 128)
    with torch.no_grad():
        assert audio(x).shape == (2, 16)
        seg = audio.forward_segments(x, 4)
    assert seg.shape == (2, 4, 16)
    with pytest.raises(ValueError, match="expected FBANK"):
        audio(torch.randn(2, 998, 128))
    with pytest.raises(ValueError, match="segments=62"):
        audio.forward_segments(x, 62)


def test_segments_pool_contiguous_time_rows(visual):
    """One segment = the mean of all patch tokens, projected like the class token."""
    audio = AudioViT(visual).eval()
    x = torch.randn(1, 1000, 128)
    with torch.no_grad():
        tokens = audio._tokens(x)[:, 1:]
        one = audio.forward_segments(x, 1)[:, 0]
        torch.testing.assert_close(one, audio.ln_post(tokens.mean(dim=1)) @ audio.proj)
        rows = tokens.reshape(1, 61, 5, -1)
        bounds = np.linspace(0, 61, 5).round().astype(int)  # 4 segments: rows 0-15, 15-30, 30-46, 46-61
        second = audio.ln_post(rows[:, bounds[1]:bounds[2]].mean(dim=(1, 2))) @ audio.proj
        torch.testing.assert_close(audio.forward_segments(x, 4)[:, 1], second)


def test_vit_b32_geometry():
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    audio = AudioViT(model.visual).eval()
    assert tuple(model.visual.grid_size) == (7, 7) and audio.positional_embedding.shape == (306, 768)
    with torch.no_grad():
        assert audio(torch.randn(1, 1000, 128)).shape == (1, 512)

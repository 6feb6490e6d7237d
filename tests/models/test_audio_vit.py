"""The audio ViT initialised from a CLIP image tower: patch weights, position embeddings, shapes."""

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP

from models.audio_vit import AudioViT, audio_grid, interpolate_position_embedding, segment_weights

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


def test_segments_pool_the_time_rows_nearest_each_frame(visual):
    """One segment = the mean of all patch tokens, projected like the class token; with 4 frames at
    0 / 3.33 / 6.67 / 10 s the 61 rows (centres 16 r + 16 frames) split at 1.67 / 5 / 8.33 s."""
    audio = AudioViT(visual).eval()
    x = torch.randn(2, 1000, 128)
    with torch.no_grad():
        tokens = audio._tokens(x)[:, 1:]
        one = audio.forward_segments(x, 1)[:, 0]
        torch.testing.assert_close(one, audio.ln_post(tokens.mean(dim=1)) @ audio.proj)
        rows = tokens.reshape(2, 61, 5, -1)
        four = audio.forward_segments(x, 4)
        for seg, (lo, hi) in enumerate([(0, 10), (10, 31), (31, 52), (52, 61)]):
            direct = audio.ln_post(rows[:, lo:hi].mean(dim=(1, 2))) @ audio.proj
            torch.testing.assert_close(four[:, seg], direct)
        # a clip of 5 s (500 frames, padded to 1000): its frames sit at 0 / 1.67 / 3.33 / 5 s and rows past 5 s
        # are left out: rows 0-4, 5-14, 15-25, 26-30 (centres 16..496)
        short = audio.forward_segments(x, 4, torch.tensor([500, 1000]))
        for seg, (lo, hi) in enumerate([(0, 5), (5, 15), (15, 26), (26, 31)]):
            direct = audio.ln_post(rows[:1, lo:hi].mean(dim=(1, 2))) @ audio.proj
            torch.testing.assert_close(short[:1, seg], direct)
        torch.testing.assert_close(short[1:], four[1:])


def test_segment_windows_in_seconds():
    """Each segment covers the audio around its frame: the rows nearest each frame time, no gaps."""
    w = segment_weights(61, 32, 16, torch.tensor([1000]), 4)[0]
    rows = [torch.nonzero(w[s]).flatten().tolist() for s in range(4)]
    assert [(r[0], r[-1]) for r in rows] == [(0, 9), (10, 30), (31, 51), (52, 60)]
    assert sorted(sum(rows, [])) == list(range(61))  # every row in exactly one segment
    assert torch.allclose(w.sum(dim=1), torch.ones(4))
    frame_times = np.linspace(0, 10, 4)
    for s, r in enumerate(rows):  # each segment's span (row starts 0.16 r s, ends +0.32 s) contains its frame
        assert 0.16 * r[0] <= frame_times[s] <= 0.16 * r[-1] + 0.32 + 0.08  # the grid's last row ends at 9.92 s
    tiny = segment_weights(61, 32, 16, torch.tensor([20]), 4)[0]  # a 0.2 s clip: every frame takes row 0
    assert torch.equal(tiny, torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 61).float())


def test_vit_b32_geometry():
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    audio = AudioViT(model.visual).eval()
    assert tuple(model.visual.grid_size) == (7, 7) and audio.positional_embedding.shape == (306, 768)
    with torch.no_grad():
        assert audio(torch.randn(1, 1000, 128)).shape == (1, 512)

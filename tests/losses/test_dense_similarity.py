"""DenseAV's similarity and aggregation against direct loops over small hand cases."""

import itertools

import pytest
import torch

from losses.dense_similarity import (aggregate, dense_similarity, heatmaps, masked_mean, paired_similarity,
                                     retrieval_similarity, similarity_volume)


def _case(seed=0, a=2, v=3, c=4, f=2, t=3, h=2, w=2):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(a, c, f, t, generator=g, dtype=torch.float64)
    image = torch.randn(v, c, h, w, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, True]])[:a]
    return audio, image, mask


def _loop_similarity(audio, image, mask, heads, image_rule="max", time_rule="mean", combine="max_elementwise"):
    """The reference's computation written out element by element."""
    a_n, c, f_n, t_n = audio.shape
    v_n, _, h_n, w_n = image.shape
    ck = c // heads
    out = torch.zeros(a_n, v_n, dtype=audio.dtype)
    for a, v in itertools.product(range(a_n), range(v_n)):
        def s(k, h, w, f, t):
            return sum(audio[a, k * ck + cc, f, t] * image[v, k * ck + cc, h, w] for cc in range(ck))

        def agg(value):  # value(h, w, f, t) -> scalar, aggregated as misa / mima / sisa
            per_t = []
            for t in range(t_n):
                per_f = []
                for f in range(f_n):
                    cells = torch.stack([value(h, w, f, t) for h in range(h_n) for w in range(w_n)])
                    per_f.append(cells.max() if image_rule == "max" else cells.mean())
                per_t.append(torch.stack(per_f).mean())
            valid = torch.stack([per_t[t] for t in range(t_n) if mask[a, t]])
            return valid.mean() if time_rule == "mean" else valid.max()

        if combine == "max_elementwise":
            out[a, v] = agg(lambda h, w, f, t: torch.stack([s(k, h, w, f, t) for k in range(heads)]).max())
        else:
            out[a, v] = sum(agg(lambda h, w, f, t, k=k: s(k, h, w, f, t)) for k in range(heads))
    return out


@pytest.mark.parametrize("heads", [1, 2])
def test_dense_similarity_matches_the_loop_in_values_and_gradients(heads):
    audio, image, mask = _case()
    audio.requires_grad_(True)
    image.requires_grad_(True)
    weights = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fast = dense_similarity(audio, image, mask, heads).double()
    slow = _loop_similarity(audio, image, mask, heads)
    assert torch.allclose(fast, slow, atol=1e-6)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (audio, image))
    grads_slow = torch.autograd.grad((slow * weights).sum(), (audio, image))
    for gf, gs in zip(grads_fast, grads_slow):
        assert torch.allclose(gf.double(), gs, atol=1e-5)


def test_retrieval_sums_heads_aggregated_separately():
    audio, image, mask = _case(seed=1)
    expected = _loop_similarity(audio, image, mask, heads=2, combine="sum")
    got = retrieval_similarity(audio.float(), image.float(), mask, heads=2, image_chunk=2).double()
    assert torch.allclose(got, expected, atol=1e-5)
    # with one head, training and retrieval similarity agree
    assert torch.allclose(retrieval_similarity(audio, image, mask, 1), dense_similarity(audio, image, mask, 1), atol=1e-5)


def test_mima_and_sisa_follow_their_rules():
    audio, image, mask = _case(seed=2)
    for name, rules in (("mima", ("max", "max")), ("sisa", ("mean", "mean"))):
        got = dense_similarity(audio, image, mask, 1, aggregation=name).double()
        assert torch.allclose(got, _loop_similarity(audio, image, mask, 1, *rules), atol=1e-6)


def test_masked_mean_over_time_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    out = masked_mean(x, mask, -1)
    assert out.shape == (2, 1)
    assert out[0, 0] == pytest.approx(2.0)  # (1 + 3) / 2
    assert out[1, 0] == 0.0  # nothing unmasked: 0 / 0.001


def test_masked_time_steps_do_not_count():
    audio, image, mask = _case(seed=3)
    base = dense_similarity(audio, image, mask, 1)
    audio2 = audio.clone()
    audio2[0, :, :, 2] += 100.0  # clip 0's time step 2 is masked
    assert torch.allclose(dense_similarity(audio2, image, mask, 1), base)


def test_paired_similarity_is_the_diagonal_per_head():
    audio, image, mask = _case(seed=4, v=2)
    per_head = paired_similarity(audio, image, mask, heads=2)
    full = aggregate(similarity_volume(audio, image, 2), mask)
    assert per_head.shape == (2, 2)
    assert torch.allclose(per_head.double(), torch.stack([full[0, 0], full[1, 1]]).double(), atol=1e-6)


def test_heatmap_points_at_the_sounding_patch():
    """The audio matches the image only at row 0, column 2 (top right of a 2 x 3 grid): the heatmap
    has its maximum there, per head and combined, and keeps the image's orientation."""
    c, h, w = 4, 2, 3
    image = torch.zeros(1, c, h, w)
    image[0, :, 0, 2] = 1.0
    image[0, :, 1, 0] = -1.0
    audio = torch.ones(1, c, 1, 5)
    mask = torch.tensor([[True, True, True, False, False]])
    maps = heatmaps(audio, image, mask, heads=2)
    assert maps.shape == (1, 3, h, w)
    for k in range(3):
        assert divmod(int(maps[0, k].argmax()), w) == (0, 2)
        assert maps[0, k, 1, 0] < 0
    assert maps[0, 0, 0, 2] == pytest.approx(2.0)  # head 0: 2 channels x 1 x 1

"""Losses against direct, loop-based computations of their formulas (values and gradients)."""

import math

import pytest
import torch

from losses.contrastive import MultiPositiveInfoNCE, SymmetricInfoNCE, cosine_similarity_matrix, symmetric_cross_entropy
from losses.frame_matching import (eval_frame_index, multiframe_similarity, nearest_match_similarity,
                                   random_frame_similarity)


def _sim(seed=0, b=5, d=4):
    g = torch.Generator().manual_seed(seed)
    return cosine_similarity_matrix(torch.randn(b, d, generator=g), torch.randn(b, d, generator=g))


def _loop_info_nce(sim: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 1 term by term: -log of each softmax probability of the true pair, rows and columns."""
    b = len(sim)
    total = 0
    for j in range(b):
        row = sum(torch.exp(scale * sim[j, k]) for k in range(b))
        col = sum(torch.exp(scale * sim[q, j]) for q in range(b))
        total = total - torch.log(torch.exp(scale * sim[j, j]) / row) - torch.log(torch.exp(scale * sim[j, j]) / col)
    return total / (2 * b)


def _loop_multi_positive(sim, scale, pos):
    b = len(sim)
    total = 0
    for direction in (sim, sim.T):
        p = pos if direction is sim else pos.T
        for i in range(b):
            denom = sum(torch.exp(scale * direction[i, k]) for k in range(b))
            mine = [j for j in range(b) if p[i, j] or i == j]
            total = total - sum(torch.log(torch.exp(scale * direction[i, j]) / denom) for j in mine) / len(mine)
    return total / (2 * b)


def test_symmetric_info_nce_matches_the_formula_and_its_gradients():
    sim = _sim().requires_grad_()
    loss_fn = SymmetricInfoNCE()
    assert loss_fn.scale().item() == pytest.approx(1 / 0.07)
    loss = loss_fn(sim)
    ref_sim = sim.detach().clone().requires_grad_()
    ref_scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    ref = _loop_info_nce(ref_sim, ref_scale.exp())
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(sim.grad, ref_sim.grad)
    torch.testing.assert_close(loss_fn.logit_scale.grad, ref_scale.grad)


def test_hand_case_two_items():
    # sim = [[1, 0], [0, 1]], scale 1: each term is -log(e / (e + 1))
    loss = SymmetricInfoNCE(temperature=1.0)(torch.eye(2))
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1)))
    assert symmetric_cross_entropy(torch.eye(2)).item() == pytest.approx(-math.log(math.e / (math.e + 1)))


def test_symmetric_cross_entropy_is_the_info_nce_on_scaled_similarities():
    """The loss's cross-entropy part, shared with the tiny teacher's fit: the same graph, bit for bit."""
    sim = _sim(seed=3, b=6)
    loss_fn = SymmetricInfoNCE(temperature=0.05)
    assert torch.equal(loss_fn(sim), symmetric_cross_entropy(loss_fn.scale() * sim))
    # rows and columns weigh the same: an asymmetric case against the formula
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5]])
    rows = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.exp(0.5) / (math.exp(1) + math.exp(0.5)))) / 2
    cols = -(math.log(math.exp(2) / (math.exp(2) + math.exp(1))) + math.log(math.exp(0.5) / (1 + math.exp(0.5)))) / 2
    assert symmetric_cross_entropy(logits).item() == pytest.approx(0.5 * (rows + cols))


def test_temperature_is_clamped_at_100():
    loss_fn = SymmetricInfoNCE(temperature=1e-4)
    assert loss_fn.scale().item() == pytest.approx(100.0)


def test_multi_positive_matches_the_formula_and_reduces_to_info_nce():
    sim = _sim(1, b=6).requires_grad_()
    pos = torch.zeros(6, 6, dtype=torch.bool)
    pos[0, 3] = pos[3, 0] = pos[2, 5] = True  # one-sided on purpose: columns use the transpose
    loss_fn = MultiPositiveInfoNCE()
    loss = loss_fn(sim, pos)
    ref_sim = sim.detach().clone().requires_grad_()
    ref = _loop_multi_positive(ref_sim, loss_fn.scale().detach(), pos)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(sim.grad, ref_sim.grad)
    diag_only = MultiPositiveInfoNCE()(sim.detach(), torch.zeros(6, 6, dtype=torch.bool))
    torch.testing.assert_close(diag_only, SymmetricInfoNCE()(sim.detach()))


def test_a_mined_positive_is_pulled_instead_of_pushed():
    sim = _sim(2, b=4).requires_grad_()
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    MultiPositiveInfoNCE()(sim, pos).backward()
    assert sim.grad[0, 1] < 0  # descending the loss raises sim[0, 1]
    sim2 = sim.detach().clone().requires_grad_()
    SymmetricInfoNCE()(sim2).backward()
    assert sim2.grad[0, 1] > 0  # plain InfoNCE pushes the same pair apart


def _frames(seed=3, b=3, l=4, d=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, l, d, generator=g)


def test_nearest_match_is_the_max_over_frames_after_epoch_n():
    audio, frames = _frames()
    sim = nearest_match_similarity(audio, frames, epoch=5, start_epoch=5, generator=torch.Generator().manual_seed(0))
    for a in range(3):
        for c in range(3):
            direct = max(torch.nn.functional.cosine_similarity(audio[a], frames[c, l], dim=0) for l in range(4))
            assert sim[a, c].item() == pytest.approx(direct.item(), abs=1e-6)


def test_nearest_match_per_clip_uses_the_frame_of_the_clips_own_audio():
    """Hand case, D = 2: clip 0's own audio points at its frame 1, clip 1's at its frame 0; every audio is
    then compared with that frame, even audio 1, whose best frame of clip 0 is frame 0."""
    audio = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],    # clip 0: frames along x, y
                           [[1.0, 0.0], [1.0, 1.0]]])   # clip 1: x, diagonal
    gen = torch.Generator().manual_seed(0)
    per_clip = nearest_match_similarity(audio, frames, 1, 0, gen, rule="per_clip")
    pairwise = nearest_match_similarity(audio, frames, 1, 0, gen, rule="pairwise")
    r = 2 ** -0.5
    torch.testing.assert_close(per_clip, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # columns: clip 0 -> y, clip 1 -> x
    torch.testing.assert_close(pairwise, torch.tensor([[1.0, r], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="nearest rule"):
        nearest_match_similarity(audio, frames, 1, 0, gen, rule="best")


def test_vipant_evaluation_frame():
    assert [eval_frame_index(n) for n in (1, 2, 3, 4, 5)] == [0, 0, 1, 1, 2]  # int(np.ceil(L / 2)) - 1


def test_before_epoch_n_a_seeded_random_frame():
    audio, frames = _frames()
    early = nearest_match_similarity(audio, frames, epoch=0, start_epoch=5, generator=torch.Generator().manual_seed(7))
    pick = torch.randint(4, (3,), generator=torch.Generator().manual_seed(7))
    for a in range(3):
        for c in range(3):
            direct = torch.nn.functional.cosine_similarity(audio[a], frames[c, pick[c]], dim=0)
            assert early[a, c].item() == pytest.approx(direct.item(), abs=1e-6)
    again = random_frame_similarity(audio, frames, torch.Generator().manual_seed(7))
    torch.testing.assert_close(early, again)


def test_multiframe_is_the_cosine_of_the_flattened_embeddings():
    g = torch.Generator().manual_seed(4)
    a, i = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    sim = multiframe_similarity(a, i)
    for p in range(3):
        for q in range(3):
            fa, fi = a[p].reshape(-1), i[q].reshape(-1)
            assert sim[p, q].item() == pytest.approx((fa @ fi / (fa.norm() * fi.norm())).item(), abs=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        multiframe_similarity(a, i[:, :2])


def _reference_masked_contrastive(feat_a, feat_b, index, scale):
    """SpeechCLIP's MaskedContrastiveLoss.forward (avssl/module/losses.py), dcl off, both directions."""
    index = index.unsqueeze(1)
    neg_mask = index != index.t()
    pos_mask = torch.eye(len(feat_a), dtype=torch.bool)
    neg_mask[pos_mask] = True
    logits = feat_a @ feat_b.t() * scale
    pos_logits = logits[pos_mask]
    exp_logits = logits.exp() * neg_mask.float()
    loss_a2b = (-pos_logits + torch.log(exp_logits.sum(1))).mean()
    loss_b2a = (-pos_logits + torch.log(exp_logits.sum(0))).mean()
    return (loss_a2b + loss_b2a) / 2


def test_shared_image_infonce_matches_speechclips_masked_loss():
    from losses.contrastive import SharedImageInfoNCE
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=-1)
    image = torch.tensor([0, 1, 0, 2, 1, 3])  # clips 0 and 2, 1 and 4 are captions of one picture
    loss = SharedImageInfoNCE(temperature=0.07, learnable=False).double()
    got = loss(a @ b.T, image[:, None] == image[None, :])
    assert got.item() == pytest.approx(_reference_masked_contrastive(a, b, image, loss.scale().item()).item(), rel=1e-10)
    # with every image distinct it is the plain symmetric InfoNCE
    plain = SymmetricInfoNCE(temperature=0.07, learnable=False).double()(a @ b.T)
    assert loss(a @ b.T, torch.eye(6, dtype=torch.bool)).item() == pytest.approx(plain.item(), rel=1e-12)
    with pytest.raises(ValueError, match="same_image must be a"):
        loss(a @ b.T, image[:, None] == image[None, :2])

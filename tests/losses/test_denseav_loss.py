"""DenseAV's calibrator, regularisers and total loss against their formulas (losses/denseav.py)."""

import itertools
import math

import pytest
import torch

from losses.contrastive import symmetric_cross_entropy
from losses.dense_similarity import dense_similarity, paired_volume, split_heads
from losses.denseav import (DenseAVLoss, RegulariserWeights, SimilarityCalibrator, calibration_balance, nonneg_pressure,
                            silence_l1, specialization, total_variation)


def _features(b=3, c=4, f=2, t=4, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, f, t, generator=g), torch.randn(b, c, h, w, generator=g)


def test_calibrator_clamps_and_centres():
    cal = SimilarityCalibrator(1.0)
    assert float(cal.weight().detach()) == pytest.approx(1.0)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out = cal(x)
    assert torch.allclose(out, x - 3.0) and float(out.mean().detach()) == pytest.approx(0.0)
    with torch.no_grad():
        cal.log_w.fill_(math.log(1000.0))
    assert float(cal.weight().detach()) == pytest.approx(100.0)
    with torch.no_grad():
        cal.log_w.fill_(math.log(1e-5))
    assert float(cal.weight().detach()) == pytest.approx(0.01)


def test_calibration_balance_only_below_init():
    assert float(calibration_balance(torch.tensor([2.0]), 1.0)) == 0.0
    assert float(calibration_balance(torch.tensor([0.5]), 1.0)) == pytest.approx(math.log(2.0) ** 2)


def test_total_variation_by_hand():
    paired = torch.zeros(1, 1, 1, 1, 1, 4)
    paired[..., :] = torch.tensor([0.0, 1.0, 3.0, 3.0])
    assert float(total_variation(paired)) == pytest.approx((1 + 4 + 0) / 3)


def test_specialization_is_the_mean_over_head_pairs():
    paired = torch.randn(2, 3, 2, 2, 1, 3, generator=torch.Generator().manual_seed(1))
    expected = sum((paired[:, i].abs() * paired[:, j].abs()).mean() for i, j in itertools.combinations(range(3), 2)) / 3
    assert float(specialization(paired)) == pytest.approx(float(expected))
    assert float(specialization(paired[:, :1])) == 0.0  # one head: nothing to specialise


def test_nonneg_pressure_matches_its_sampled_formula():
    audio, image = _features()
    a, v = split_heads(audio, 2), split_heads(image, 2)
    got = nonneg_pressure(a, v, torch.Generator().manual_seed(7), samples=5)
    g = torch.Generator().manual_seed(7)  # the same draws, in the same order: b, t, f, h, w
    rb, rt, rf, rh, rw = (torch.randint(0, n, (5,), generator=g) for n in (3, 4, 2, 2, 3))
    total, count = 0.0, 0
    for i, j in itertools.product(range(5), range(5)):
        for k in range(2):
            s = float((a[rb[i], k, :, rf[i], rt[i]] * v[rb[j], k, :, rh[j], rw[j]]).sum())
            total += min(s, 0.0) ** 2
            count += 1
    assert float(got) == pytest.approx(total / count, rel=1e-5)


def test_silence_l1_over_every_masked_position_and_skipped_when_too_few():
    audio, image = _features()
    a, v = split_heads(audio, 2), split_heads(image, 2)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False], [True, True, True, True]])
    assert silence_l1(a, v, mask, torch.Generator(), samples=4) is None  # 3 masked positions < 4
    got = silence_l1(a, v, mask, torch.Generator().manual_seed(0), samples=3)  # all 3, in some order
    values = []
    for bb, tt in ((0, 2), (0, 3), (1, 3)):
        silent = a[bb, :, :, :, tt].mean(-1)  # (K, c): mean over frequency
        for b2, k, h, w in itertools.product(range(3), range(2), range(2), range(3)):
            values.append(abs(float((v[b2, k, :, h, w] * silent[k]).sum())))
    assert float(got) == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_total_loss_is_the_weighted_sum():
    audio, image = _features(t=300)  # 3 x 300 time steps: enough masked positions for the silence term
    mask = torch.ones(3, 300, dtype=torch.bool)
    mask[:, 100:] = False
    w = RegulariserWeights()
    loss_fn = DenseAVLoss(heads=2, weights=w)
    loss = loss_fn(audio, mask, image, torch.Generator().manual_seed(3))
    parts = loss_fn.parts
    assert set(parts) == {"nce", "nonneg_pressure", "silence_l1", "tv", "cal_balance", "specialization"}
    sims = dense_similarity(audio, image, mask, 2)
    assert float(parts["nce"]) == pytest.approx(float(symmetric_cross_entropy(sims - sims.mean())), rel=1e-5)
    paired = paired_volume(audio, image, mask, 2)
    assert float(parts["tv"]) == pytest.approx(float(total_variation(paired)), rel=1e-5)
    expected = (parts["nce"] + w.nonneg_pressure * parts["nonneg_pressure"] + w.silence_l1 * parts["silence_l1"]
                + w.tv * parts["tv"] + w.cal_balance * parts["cal_balance"] + w.specialization * parts["specialization"])
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    one_head = DenseAVLoss(heads=1)
    one_head(audio, mask, image, torch.Generator())
    assert "specialization" not in one_head.parts

"""SpecAugment (VIP-ANT's FrequencyMasking(32) + TimeMasking(200)): where the masks fall, parity with
torchaudio's transforms, seeding, and that only training masks."""

import numpy as np
import pytest
import torch
import torchaudio.transforms as T

from assets.training.spec_augment import spec_augment


def test_one_clip_equals_torchaudio_under_the_same_seed():
    """VIP-ANT: x.T -> FrequencyMasking(32) -> TimeMasking(200) -> .T on each (T, F) clip; torchaudio draws
    from the global generator, ours from a passed one seeded the same: the same four numbers, the same masks."""
    x = torch.randn(1000, 128) + 5.0  # no zeros before masking
    for seed in range(20):
        torch.manual_seed(seed)
        ref = T.TimeMasking(200)(T.FrequencyMasking(32)(x.T.unsqueeze(0)))[0].T
        ours = spec_augment(x[None], 32, 200, torch.Generator().manual_seed(seed))[0]
        assert torch.equal(ours, ref), seed


def test_masks_are_one_band_and_one_span_within_the_widths():
    x = torch.ones(64, 1000, 128)
    out = spec_augment(x, 32, 200, torch.Generator().manual_seed(0))
    zero = out == 0
    freq = zero.all(dim=1)  # (B, F): bins masked in every frame
    time = zero.all(dim=2)  # (B, T): frames masked in every bin
    for b in range(64):
        f_idx, t_idx = np.flatnonzero(freq[b]), np.flatnonzero(time[b])
        assert len(f_idx) < 32 and len(t_idx) < 200
        for idx in (f_idx, t_idx):  # one contiguous interval (or none)
            assert len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)
        expect = torch.zeros(1000, 128, dtype=torch.bool)
        expect[:, f_idx] = True
        expect[t_idx, :] = True
        assert torch.equal(zero[b], expect)  # nothing else is touched
    assert freq.sum(dim=1).float().mean() == pytest.approx(15.5, abs=3)  # widths ~ U{0..31}
    assert time.sum(dim=1).float().mean() == pytest.approx(99.5, abs=20)
    assert torch.equal(x, torch.ones(64, 1000, 128))  # the input is not modified


def test_seeded_and_off_when_zero():
    x = torch.randn(8, 100, 40)
    a = spec_augment(x, 10, 30, torch.Generator().manual_seed(3))
    b = spec_augment(x, 10, 30, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, spec_augment(x, 10, 30, torch.Generator().manual_seed(4)))
    assert torch.equal(spec_augment(x, 0, 0, torch.Generator().manual_seed(3)), x)
    with pytest.raises(ValueError, match="B, T, F"):
        spec_augment(x[0], 10, 30, torch.Generator())

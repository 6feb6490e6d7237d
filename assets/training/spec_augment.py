"""SpecAugment as VIP-ANT trains with it: one frequency mask and one time mask per clip.

VIP-ANT (`configs/running/audio/default.yaml`: `fbank_transforms: [[FrequencyMasking, [32]],
[TimeMasking, [200]]]`, applied in `cvap/data/image_audio.py` to training items only, after the
FBANK is normalised) runs torchaudio's `FrequencyMasking(32)` then `TimeMasking(200)` on each clip.
torchaudio's rule (`torchaudio.functional.mask_along_axis`), per mask:

    width = U(0, param) * 1.0;  start = U(0, size - width)
    masked: indices [floor(start), floor(start) + floor(width))   set to 0 (= the mean after normalising)

so a mask covers 0 to param - 1 bins or frames. This module draws the same numbers in the same
order (frequency width, frequency start, time width, time start; for a batch, each draw is a
vector over its clips) from a passed torch.Generator, so a seeded run repeats exactly, and a
batch of one clip reproduces torchaudio's masks under the same seed (tests/training).

Input: normalised FBANK batches (B, T, F), time-major as the caches store them.
"""

from __future__ import annotations

import torch


def _interval_mask(batch: int, size: int, param: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, size) bool: one interval per row, torchaudio's width and start draws."""
    width = torch.rand(batch, generator=generator) * param
    start = torch.rand(batch, generator=generator) * (size - width)
    lo = start.long()
    hi = lo + width.long()
    pos = torch.arange(size)
    return (pos >= lo[:, None]) & (pos < hi[:, None])


def spec_augment(fbank: torch.Tensor, freq_mask: int, time_mask: int, generator: torch.Generator) -> torch.Tensor:
    """A masked copy of `fbank` (B, T, F): per clip one band of up to `freq_mask` - 1 mel bins, then
    one span of up to `time_mask` - 1 frames, set to 0. A parameter of 0 turns that mask off."""
    if fbank.ndim != 3:
        raise ValueError(f"spec_augment needs FBANK batches (B, T, F), got shape {tuple(fbank.shape)}")
    b, t, f = fbank.shape
    out = fbank.clone()
    if freq_mask > 0:
        out.masked_fill_(_interval_mask(b, f, freq_mask, generator).to(fbank.device)[:, None, :], 0.0)
    if time_mask > 0:
        out.masked_fill_(_interval_mask(b, t, time_mask, generator).to(fbank.device)[:, :, None], 0.0)
    return out

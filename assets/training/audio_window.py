"""DenseAV's extra audio masking (`extra_audio_masking: true`; `denseav/shared.py`,
`_get_random_window`), on the normalised FBANK instead of the waveform.

With probability 1/2, a clip longer than `min_frames` keeps only a random window of its audio:
length uniform in [min_frames, length) (torch.randint's exclusive top, as the reference), start
uniform in [0, length - window); the frames outside become digital silence and are masked, so
the silence regulariser and the masked time mean see them as the reference does. Digital
silence in the FBANK cache is log(FLT_EPSILON) in every bin (`assets.caches.audio_features`:
the log is floored there), normalised like any frame. The reference's 0.5 s is 50 frames at
the 10 ms shift.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SILENT_FBANK = math.log(float(np.finfo(np.float32).eps))  # -15.94: a frame of zeros through kaldi fbank
MIN_WINDOW_FRAMES = 50  # 0.5 s


def random_windows(lengths: torch.Tensor, gen: torch.Generator, min_frames: int = MIN_WINDOW_FRAMES
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, ends) per clip, int64; (0, length) where the clip keeps all its audio."""
    lengths = lengths.cpu().long()
    starts, ends = torch.zeros_like(lengths), lengths.clone()
    for i, n in enumerate(lengths.tolist()):
        if torch.rand((), generator=gen) <= 0.5 or n <= min_frames:
            continue  # the reference windows when random.random() > .5
        size = int(torch.randint(min_frames, n, (), generator=gen)) if n - 1 > min_frames else min_frames
        start = int(torch.randint(0, n - size, (), generator=gen)) if n > size else 0
        starts[i], ends[i] = start, start + size
    return starts, ends


def silence_outside(audio: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, silent: torch.Tensor) -> torch.Tensor:
    """(B, T, bins) normalised FBANK with frames outside [start, end) set to `silent` (bins,)."""
    t = torch.arange(audio.shape[1], device=audio.device)
    outside = (t[None, :] < starts.to(audio.device)[:, None]) | (t[None, :] >= ends.to(audio.device)[:, None])
    return torch.where(outside[:, :, None], silent.to(audio.device, audio.dtype).view(1, 1, -1), audio)

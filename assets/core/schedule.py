"""The learning-rate schedule every fit here uses: linear warmup, then a cosine decay.

The callers differ in where the warmup starts and how long the decay lasts, so each one states
it: the audio encoders' trainer (`assets.training.optim.lr_factor`) follows VIP-ANT
(`cvap/module/lars.py: adjust_learning_rate`): the warmup starts from 0 (`warmup_offset=0`) and the
cosine reaches its floor one step after the last step (`decay_steps = total - warmup`); the tiny
CLIP teacher's fit (`assets.mining.tiny_teacher.FitConfig.lr_at`) starts its warmup at
`peak / warmup_steps` (`warmup_offset=1`), with the same decay length.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup_steps: int, decay_steps: int, final: float = 0.0,
                  warmup_offset: int = 1) -> float:
    """Value at `step` (0-based): `peak * (step + warmup_offset) / warmup_steps` during the first
    `warmup_steps` steps, then a cosine from `peak` down to `final`, reached `decay_steps` steps after
    the warmup and held from there on. (The arithmetic order is part of the contract: the fits'
    weights are checked bit for bit.)"""
    if step < warmup_steps:
        return peak * (step + warmup_offset) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))

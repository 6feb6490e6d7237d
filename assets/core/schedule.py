"""The learning-rate schedule every fit here uses: linear warmup, then a cosine decay.

The callers differ in how long the decay lasts, so each one states it: the audio encoders'
trainer (`assets.training.optim.lr_factor`) reaches the final value at its last step
(`decay_steps = total - warmup - 1`); the tiny CLIP teacher's fit
(`assets.mining.tiny_teacher.FitConfig.lr_at`) one step after its last step
(`decay_steps = total - warmup`), so its last step still has a small learning rate.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup_steps: int, decay_steps: int, final: float = 0.0) -> float:
    """Value at `step` (0-based): `peak * (step + 1) / warmup_steps` during the first `warmup_steps`
    steps, then a cosine from `peak` down to `final`, reached `decay_steps` steps after the warmup
    and held from there on. (The arithmetic order is part of the contract: the fits' weights are
    checked bit for bit.)"""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))

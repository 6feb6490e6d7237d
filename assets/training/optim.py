"""Optimisers and learning-rate schedules for the audio encoders, as VIP-ANT computes them
(seed 001 follows VIP-ANT for what it does not state; github zhaoyanpeng/vipant,
`cvap/module/lars.py`, `cvap/monitor/cvap.py`, `configs/optimizer/standard.yaml`).

Parameter groups, as VIP-ANT splits them: weights (tensors of 2 or more dimensions: linear and
conv kernels, position embeddings) and the rest (biases, norm scales and shifts, class token,
temperature), the second without weight decay and without LARS adaptation. LARS is timm's
`Lars` with trust coefficient 0.001 (VIP-ANT's eta) and momentum 0.9; it leaves groups with
weight_decay = 0 unadapted, as VIP-ANT's `exclude_bias_or_norm` filter does. (timm divides by
|g| + wd|w| where VIP-ANT divides by |g + wd w|: at weight decay 1e-6 the two trust ratios differ
in the sixth digit.) AdamW is the alternative.

Learning rate per step (`lr_scaling: batch256`, VIP-ANT's `adjust_learning_rate`):
    base = batch_size / 256 (the global batch)
    step t < W:  base * t / W                               (warmup from 0 over W steps)
    step t >= W: base * q + 0.001 * base * (1 - q),  q = (1 + cos(pi * (t - W) / (T - W))) / 2
and each group's rate is that times its own factor: `lr_weights` (0.2 in seed 001's Table I) for
weights, `lr_biases` (4.8e-3) for the rest. With `lr_scaling: none` base is 1, so `lr_weights` and
`lr_biases` are the peak rates themselves (the AdamW files). The floor (0.001 in VIP-ANT) is
`min_lr_ratio`. T = epochs x steps per epoch, W = warmup_epochs x steps per epoch.

No gradient clipping: VIP-ANT's optimizer config carries `max_norm: 0.5`, but no code reads it
(neither its LARS nor its Adam path calls clip_grad_norm_), so the trainer does not clip either.

DenseAV (`denseav/train.py`, `configs/av_align.yaml`): Adam with eps 1e-7 (`adam`), a linear
warm-up then a constant rate (`lr_schedule: ~`: min_lr_ratio 1), and each parameter tensor's
gradient clipped to norm 10 on its own (`clip_gradients_per_tensor`; its "adaptive" clipping
against a rolling average never fires, as nothing fills that average).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from assets.core.schedule import warmup_cosine
from assets.training.experiments import OptimSpec

_SPEC = OptimSpec()  # the one place the optimiser's default numbers are written


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = _SPEC.optimizer  # lars | adamw | adam
    lr_weights: float = _SPEC.lr_weights
    lr_biases: float = _SPEC.lr_biases
    weight_decay: float = _SPEC.weight_decay
    momentum: float = _SPEC.momentum  # LARS
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW
    warmup_steps: int = 100  # OptimSpec counts epochs; the trainer converts (trainer.optim_config)
    min_lr_ratio: float = _SPEC.min_lr_ratio
    # lr_weights / lr_biases here are the peak rates: the trainer has applied OptimSpec.lr_scaling


def lr_scale(scaling: str, batch_size: int) -> float:
    """The schedule's base: batch_size / 256 (`batch256`, VIP-ANT) or 1 (`none`: the rates are the peaks)."""
    if scaling == "batch256":
        return batch_size / 256
    if scaling == "none":
        return 1.0
    raise ValueError(f"lr_scaling must be 'batch256' or 'none', got {scaling!r}")


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    weights, others = [], []
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            (weights if p.ndim >= 2 else others).append(p)
    return [{"params": weights, "lr": cfg.lr_weights, "weight_decay": cfg.weight_decay, "name": "weights"},
            {"params": others, "lr": cfg.lr_biases, "weight_decay": 0.0, "name": "biases"}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=cfg.lr_weights, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr_weights, betas=cfg.betas)
    if cfg.optimizer == "adam":  # DenseAV's: torch's default betas, eps 1e-7; weight_decay as L2 (DenseAV: 0)
        return torch.optim.Adam(groups, lr=cfg.lr_weights, eps=1e-7)
    raise ValueError(f"optimizer must be 'lars', 'adamw' or 'adam', got {cfg.optimizer!r}")


def clip_gradients_per_tensor(parameters, max_norm: float) -> None:
    """Scale each parameter's gradient to norm <= max_norm on its own (DenseAV's per-parameter
    `clip_grad_norm_`), not the global norm over all of them."""
    for p in parameters:
        if p.grad is not None:
            torch.nn.utils.clip_grad_norm_(p, max_norm)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `step` (0-based), VIP-ANT's: step / warmup during the
    warmup (0 at step 0), then a cosine from 1 that would reach min_lr_ratio at step total_steps."""
    return warmup_cosine(step, 1.0, warmup_steps, decay_steps=total_steps - warmup_steps, final=min_lr_ratio,
                         warmup_offset=0)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio))

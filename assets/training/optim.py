"""Optimisers and learning-rate schedules for the audio encoders (seed 001, Table II).

Parameters split in two groups, as LARS practice and seed 001 have it: weights (tensors of 2
or more dimensions: linear and conv kernels, embeddings) and the rest (biases, norm scales
and shifts, class token, temperature), each with its own learning rate (defaults: the
experiment files' `OptimSpec`, seed 001 Table I) and the second without weight decay. LARS
(timm's `Lars`) rescales each weight tensor's step by its trust ratio; the no-decay group is
left unadapted (plain momentum SGD), as timm does for groups with weight_decay = 0. AdamW is
the alternative.

The schedule is linear warmup then cosine decay to `min_lr_ratio` of the peak at the last step
(`assets.core.schedule.warmup_cosine`), per step.
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
    optimizer: str = _SPEC.optimizer  # lars | adamw
    lr_weights: float = _SPEC.lr_weights
    lr_biases: float = _SPEC.lr_biases
    weight_decay: float = _SPEC.weight_decay
    momentum: float = _SPEC.momentum  # LARS
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW
    warmup_steps: int = 100  # OptimSpec counts epochs; the trainer converts (trainer.optim_config)
    min_lr_ratio: float = _SPEC.min_lr_ratio


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
    raise ValueError(f"optimizer must be 'lars' or 'adamw', got {cfg.optimizer!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `step` (0-based): (step + 1) / warmup during the
    warmup, then a cosine from 1 down to min_lr_ratio at the last step (step total_steps - 1)."""
    return warmup_cosine(step, 1.0, warmup_steps, decay_steps=total_steps - warmup_steps - 1, final=min_lr_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio))

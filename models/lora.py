"""Low-rank adaptation (LoRA, Hu et al. 2021) of a frozen weight matrix, as a parametrisation.

    W = W0 + (alpha / r) B A,   A (r, in) Kaiming-uniform (a = sqrt(5)), B (out, r) zeros

so an adapted model starts equal to the original, and only A and B train (peft's defaults,
which DenseAV uses: r = 8, alpha = 32). Registered with `torch.nn.utils.parametrize` on the
weight tensor itself, so it also adapts weights a module reads directly rather than through a
Linear's forward: open_clip's attention is `nn.MultiheadAttention`, whose fused q/k/v
projection is the `in_proj_weight` tensor (one A and one B for the (3 x width, width) matrix,
as peft adapts DINO's fused `qkv` Linear). peft's dropout on the LoRA input (0.1) has no place
in a weight parametrisation and is left out.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class LoRADelta(nn.Module):
    def __init__(self, out_features: int, in_features: int, rank: int = 8, alpha: float = 32.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.a = nn.Parameter(torch.empty(rank, in_features))
        self.b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scaling = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scaling * (self.b @ self.a).to(weight.dtype)


def add_lora(module: nn.Module, tensor_name: str, rank: int = 8, alpha: float = 32.0) -> LoRADelta:
    """Freeze `module.<tensor_name>` (a 2-D weight) and adapt it with a trainable LoRADelta."""
    weight = getattr(module, tensor_name)
    if weight.ndim != 2:
        raise ValueError(f"LoRA adapts 2-D weights; {tensor_name} is {tuple(weight.shape)}")
    weight.requires_grad_(False)
    delta = LoRADelta(weight.shape[0], weight.shape[1], rank, alpha)
    parametrize.register_parametrization(module, tensor_name, delta)
    return delta

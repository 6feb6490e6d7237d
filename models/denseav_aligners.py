"""DenseAV's aligners (github mhamilton723/DenseAV, `denseav/aligners.py`): small trainable heads
that take a backbone's dense features to the shared `code_dim` space.

- image (`image_linear`): a channel LayerNorm (eps 1e-4) then a 1x1 convolution, (B, C_in, H, W) ->
  (B, code_dim, H, W). The reference also projects the image class token; its similarity never
  reads it (`sim_use_cls: False`), so it is left out here.
- audio (`audio_sa_3_3_pool_2`, the released config): mean over frequency, channel LayerNorm,
  `time_pools` strided (1, 3) convolutions (the first C_in -> code_dim, the others code_dim ->
  code_dim; stride 3 over time each), then one pre-norm transformer block (6 heads, MLP x4,
  LayerNorm eps 1e-4; channels zero-padded at the front to a multiple of 6 and the padding
  dropped after, as the reference) over the time steps with a class token in front:
  (B, C_in, F, T) -> (B, code_dim, 1, T'), T' = T // 3 // 3 for two pools. The class token is
  DenseAV's learned audio token (`learn_audio_cls: True`: a randn(C_in) parameter, normed with
  the features and projected by the first pool's linear layer); only the block's attention
  reads it, the similarity does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-4
BLOCK_HEADS = 6


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) features (and of a (B, C) class token)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageAligner(nn.Module):
    def __init__(self, in_dim: int, code_dim: int):
        super().__init__()
        self.norm = ChannelNorm(in_dim)
        self.conv = nn.Conv2d(in_dim, code_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class TransformerBlock(nn.Module):
    """DINO's ViT block: x + attn(norm1(x)), then + mlp(norm2(x)); qkv with bias, scale 1/sqrt(head dim)."""

    def __init__(self, dim: int, heads: int = BLOCK_HEADS, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


class AudioAligner(nn.Module):
    def __init__(self, in_dim: int, code_dim: int, time_pools: int = 2, pool_width: int = 3):
        super().__init__()
        self.norm = ChannelNorm(in_dim)
        dims = [in_dim] + [code_dim] * time_pools
        self.pools = nn.ModuleList(nn.Conv2d(i, o, kernel_size=(1, pool_width), stride=(1, pool_width))
                                   for i, o in zip(dims[:-1], dims[1:]))
        self.cls_proj = nn.Linear(in_dim, code_dim)  # the first pool's `cls_layer`
        self.padding = (-code_dim) % BLOCK_HEADS
        self.block = TransformerBlock(code_dim + self.padding)

    def out_steps(self, steps: int) -> int:
        """Time steps out of `steps` in (each pool: floor(n / width))."""
        for pool in self.pools:
            steps = (steps - pool.kernel_size[1]) // pool.stride[1] + 1
        return steps

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, F, T), cls (B, C_in) -> (B, code_dim, 1, T')."""
        if self.out_steps(x.shape[-1]) < 1:
            raise ValueError(f"{x.shape[-1]} audio time steps are fewer than the aligner's "
                             f"{len(self.pools)} stride-{self.pools[0].stride[1]} pools need")
        x = self.norm(x.mean(2, keepdim=True))
        cls = self.cls_proj(self.norm.norm(cls))
        for pool in self.pools:
            x = pool(x)
        b, c, _, t = x.shape
        tokens = torch.cat([cls[:, None, :], x[:, :, 0].transpose(1, 2)], dim=1)  # (B, 1 + T', C)
        tokens = self.block(F.pad(tokens, (self.padding, 0)))[:, :, self.padding:]
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, 1, t)

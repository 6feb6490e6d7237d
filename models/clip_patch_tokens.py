"""The CLIP teacher's image tower as a dense backbone: patch tokens on the image grid.

`ImagePatchTokens(visual, mean, std)` copies an open_clip `VisionTransformer` (class-token
pooling, as ViT-B/32) and returns, for (B, S, S, 3) uint8 frames (the frame cache's crops):
- `forward` -> (B, width, gh, gw): the last block's patch tokens after `ln_post`, what open_clip
  returns with `output_tokens=True` (DenseAV's image featurizers return the last layer's tokens);
- `embed_patches` -> (B, D, gh, gw): each patch token through `proj` as the class token is, so
  it lies in the teacher's embedding space (the global baseline's heatmap compares them with a
  global audio embedding).
Row 0 of the grid is the top of the frame, column 0 its left (the patch convolution's order).

Frames go in as `ClipTeacher.encode_images` takes them: to [0, 1], resized with antialiased
bilinear interpolation when they are not at the model's input size (the demo's tiny teacher
takes 64 x 64 of the 224 x 224 crops), normalised with the teacher's mean and std.

`train_image` decides what of the tower can learn: `lora` adds LoRA (models.lora) to every
block's fused q/k/v projection (DenseAV's paper: rank 8 on the attention projections),
everything else frozen; `frozen` freezes all of it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from models.lora import add_lora


class ImagePatchTokens(nn.Module):
    def __init__(self, visual: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], lora_rank: int | None = None,
                 lora_alpha: float = 32.0):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
            raise ValueError("ImagePatchTokens needs an open_clip VisionTransformer with class-token pooling")
        self.visual = copy.deepcopy(visual)
        self.visual.requires_grad_(False)
        size = self.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.grid = tuple(self.visual.grid_size)
        self.width = int(self.visual.conv1.out_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        if lora_rank:
            for block in self.visual.transformer.resblocks:
                if not isinstance(block.attn, nn.MultiheadAttention):
                    raise ValueError("LoRA on the image tower needs nn.MultiheadAttention blocks")
                add_lora(block.attn, "in_proj_weight", lora_rank, lora_alpha)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 3, H, W) normalised float at the tower's input size."""
        x = frames.float().div(255.0).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def _tokens(self, frames: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.ln_post(v.transformer(v._embeds(self.preprocess(frames))))
        return x[:, 1:]  # (B, gh * gw, width), row-major

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, *self.grid)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self._grid(self._tokens(frames))

    def embed_patches(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = self._tokens(frames)
        return self._grid(tokens @ self.visual.proj if self.visual.proj is not None else tokens)

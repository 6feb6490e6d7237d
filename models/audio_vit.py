"""The audio encoder of VIP-ANT / seed 001: CLIP's image ViT re-used on FBANK.

Initialised from the CLIP teacher's image tower (an open_clip `VisionTransformer`, class-token
pooling, as ViT-B/32):
- patch embedding: one input channel, its kernel the mean of the RGB kernels; the same
  32x32 patch but a stride of 16 (time) x 24 (frequency), so patches overlap: a 1000 x 128
  FBANK gives a 61 x 5 grid (305 tokens, "about 300" in seed 001);
- position embeddings: the image grid's (7 x 7 for ViT-B/32 at 224) bilinearly interpolated
  to the audio grid; the class token's position embedding is kept as it is;
- everything after the patch embedding (class token, ln_pre, transformer, ln_post, proj)
  copied from the image tower, so the output lives in the teacher's embedding space.

`forward(fbank)` -> (B, D); `forward_segments(fbank, L, lengths)` -> (B, L, D) for Multiframe
Match: each time row of the output patch grid goes to the video frame nearest to it in time, and
each frame's rows are mean-pooled, then ln_post and proj as for the class token
(`segment_weights`). The frame cache takes L frames evenly spaced over the clip including both
ends (`assets.caches.video_frames.frame_timestamps`: 0, 3.33, 6.67, 10 s for L = 4), so with the
full model (1000 frames, patch 32, stride 16: 61 rows) segment l covers the audio around frame l:
rows 0-9 (0-1.76 s), 10-30 (1.60-5.12 s), 31-51 (4.96-8.48 s), 52-60 (8.32-9.92 s). A clip shorter
than the input is padded: its frames span its own length, and rows past it are left out.

Tiny variants (tests, the CPU demo) keep the same construction with two knobs:
- `patch`: a kernel size other than the teacher's (the demo's tiny teacher has 16x16 patches);
  the averaged kernel is resized bilinearly and scaled by the area ratio, so a smooth input
  gives the same response (FlexiViT's simple resize);
- `layers`: keep only the first N transformer blocks of the image tower;
and `stride` (default 16 x 24) and the input size as for the full model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def interpolate_position_embedding(pos: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, W) -> (1 + th*tw, W): the class row kept, the grid resized bilinearly
    (align_corners=False, as torch.nn.functional.interpolate; rows = time, columns = frequency)."""
    gh, gw = src_grid
    if pos.shape[0] != 1 + gh * gw:
        raise ValueError(f"position embedding has {pos.shape[0]} rows; expected 1 + {gh}x{gw}")
    grid = pos[1:].reshape(gh, gw, -1).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(grid, size=dst_grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], resized[0].permute(1, 2, 0).reshape(dst_grid[0] * dst_grid[1], -1)])


def resize_kernel(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, *size): bilinear, scaled by kh*kw / (size area) so that a constant
    input patch gives the same response; unchanged when the size already matches."""
    if tuple(kernel.shape[-2:]) == tuple(size):
        return kernel
    area = kernel.shape[-2] * kernel.shape[-1] / (size[0] * size[1])
    return F.interpolate(kernel, size=size, mode="bilinear", align_corners=False) * area


def audio_grid(time_frames: int, mel_bins: int, patch: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    if time_frames < patch[0] or mel_bins < patch[1]:
        raise ValueError(f"input {time_frames}x{mel_bins} is smaller than the {patch[0]}x{patch[1]} patch")
    return (time_frames - patch[0]) // stride[0] + 1, (mel_bins - patch[1]) // stride[1] + 1


class AudioViT(nn.Module):
    def __init__(self, visual: nn.Module, time_frames: int = 1000, mel_bins: int = 128,
                 stride: tuple[int, int] = (16, 24), patch: tuple[int, int] | None = None, layers: int | None = None):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
                or getattr(visual, "final_ln_after_pool", False):
            raise ValueError("AudioViT needs an open_clip VisionTransformer with class-token pooling (as ViT-B/32)")
        visual = copy.deepcopy(visual)
        src_conv = visual.conv1
        patch = tuple(patch) if patch is not None else tuple(src_conv.kernel_size)
        self.time_frames, self.mel_bins, self.stride, self.patch = time_frames, mel_bins, tuple(stride), patch
        self.grid = audio_grid(time_frames, mel_bins, patch, self.stride)
        self.conv = nn.Conv2d(1, src_conv.out_channels, kernel_size=patch, stride=self.stride, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(resize_kernel(src_conv.weight.mean(dim=1, keepdim=True), patch))
        if layers is not None:
            blocks = visual.transformer.resblocks
            if not 1 <= layers <= len(blocks):
                raise ValueError(f"layers={layers} but the image tower has {len(blocks)} transformer blocks")
            visual.transformer.resblocks = blocks[:layers]
            visual.transformer.layers = layers
        src_grid = tuple(visual.grid_size)
        self.class_embedding = nn.Parameter(visual.class_embedding.detach().clone())
        self.positional_embedding = nn.Parameter(
            interpolate_position_embedding(visual.positional_embedding.detach(), src_grid, self.grid))
        self.ln_pre, self.transformer, self.ln_post = visual.ln_pre, visual.transformer, visual.ln_post
        self.proj = visual.proj

    def _tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        if fbank.ndim != 3 or tuple(fbank.shape[1:]) != (self.time_frames, self.mel_bins):
            raise ValueError(f"expected FBANK (B, {self.time_frames}, {self.mel_bins}), got {tuple(fbank.shape)}")
        x = self.conv(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)  # (B, rows * cols, W), time-major
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_post(x)
        return x @ self.proj if self.proj is not None else x

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, F) FBANK -> (B, D), in the teacher's embedding space (not normalised)."""
        return self._project(self._tokens(fbank)[:, 0])

    def forward_segments(self, fbank: torch.Tensor, segments: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) -> (B, L, D): one embedding per video frame, from the time rows nearest to it
        (`segment_weights`); `lengths` (B,): each clip's true FBANK frames (None: all T)."""
        rows, cols = self.grid
        if not 1 <= segments <= rows:
            raise ValueError(f"segments={segments} must be in [1, {rows}] (time rows of the patch grid)")
        if lengths is None:
            lengths = torch.full((fbank.shape[0],), self.time_frames)
        tokens = self._tokens(fbank)[:, 1:].reshape(fbank.shape[0], rows, cols, -1).mean(dim=2)  # (B, rows, W)
        weights = segment_weights(rows, self.patch[0], self.stride[0], lengths.cpu(), segments)
        return self._project(torch.einsum("blr,brw->blw", weights.to(tokens.device, tokens.dtype), tokens))


def segment_weights(rows: int, patch: int, stride: int, lengths: torch.Tensor, segments: int) -> torch.Tensor:
    """(B, L, rows) pooling weights: row r (input frames [r*stride, r*stride + patch), centre
    r*stride + patch/2) belongs to the frame l whose time l * length / (L - 1) is nearest (ties:
    the earlier frame; L = 1: the clip's middle); rows centred past the clip's length are left out.
    Each frame's weights are 1 / its row count; a frame no row is nearest to (a very short clip)
    takes the row nearest to it."""
    lengths = torch.as_tensor(lengths, dtype=torch.float64).clamp(min=1)
    centres = torch.arange(rows, dtype=torch.float64) * stride + patch / 2  # (rows,)
    if segments == 1:
        times = (lengths / 2)[:, None]
    else:
        times = lengths[:, None] * torch.arange(segments, dtype=torch.float64) / (segments - 1)  # (B, L)
    distance = (centres[None, None, :] - times[:, :, None]).abs()  # (B, L, rows)
    nearest = distance.argmin(dim=1)  # (B, rows): argmin returns the first, i.e. the earlier frame, on ties
    member = nn.functional.one_hot(nearest, segments).transpose(1, 2).bool()  # (B, L, rows)
    inside = (centres[None, :] <= lengths[:, None]) | (torch.arange(rows) == 0)[None, :]  # (B, rows); row 0 always
    member &= inside[:, None, :]
    empty = ~member.any(dim=2)  # (B, L)
    if empty.any():
        fallback = nn.functional.one_hot(distance.argmin(dim=2), rows).bool()  # (B, L, rows): each frame's nearest row
        member |= fallback & empty[:, :, None]
    weights = member.to(torch.float32)
    return weights / weights.sum(dim=2, keepdim=True)

"""DAVEnet (Harwath et al., 2018): the speech encoder for Places-style spoken captions.

Input: the log-mel cache's (B, 40, T) spectrogram (`assets.caches.audio_features.davenet_logmel`).
A batch norm on the single input channel, then five convolutions over time:

    conv1  1 -> 128,   kernel 40 x 1 (all mel bins at once)       ReLU
    conv2  128 -> 256, kernel 1 x 11, pad 5                        ReLU, max-pool
    conv3  256 -> 512, kernel 1 x 17, pad 8                        ReLU, max-pool
    conv4  512 -> 512, kernel 1 x 17, pad 8                        ReLU, max-pool
    conv5  512 -> 1024, kernel 1 x 17, pad 8                       ReLU

each max-pool 1 x 3, stride 2, pad 1 (time / 8 overall). The clip embedding is the mean of
the output frames that come from real audio (`lengths`: true input frames; padding frames
are left out), then a linear projection into the teacher's embedding space (seed 000 uses
DAVEnet as the student of CLIP). `width` scales the channel counts for tiny test models.

`trim_padding` (off by default, as the reference): the cache pads every caption to 2048
frames (20 s) while a spoken caption is often a few seconds, so most of the convolutions run
on padding. When on, a batch is cut after its longest caption plus RECEPTIVE_MARGIN frames
(rounded up to a multiple of 8). No valid output frame can see past that point, so in eval
mode the embeddings equal the untrimmed ones (tested); in training the input batch norm's
batch statistics then cover less of the 0 dB padding, which is the one difference from the
reference's computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TIME_DOWNSAMPLE = 8  # three stride-2 pools
# Input frames beyond a caption's last frame that its valid output frames can see: conv2 +-5,
# conv3 +-8 at 1/2 rate, conv4 +-8 at 1/4, conv5 +-8 at 1/8, and one frame per pool: 124.
RECEPTIVE_MARGIN = 128


def pooled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Output frames that come from each input's first `lengths` frames (each pool: ceil(n / 2))."""
    out = lengths.clone()
    for _ in range(3):
        out = torch.div(out + 1, 2, rounding_mode="floor")
    return out.clamp(min=1)


class DaveNet(nn.Module):
    def __init__(self, embed_dim: int, mel_bins: int = 40, width: float = 1.0, trim_padding: bool = False):
        super().__init__()
        self.trim_padding = trim_padding
        c = [max(1, round(n * width)) for n in (128, 256, 512, 512, 1024)]
        self.input_norm = nn.BatchNorm2d(1)
        self.conv1 = nn.Conv2d(1, c[0], kernel_size=(mel_bins, 1))
        self.conv2 = nn.Conv2d(c[0], c[1], kernel_size=(1, 11), padding=(0, 5))
        self.conv3 = nn.Conv2d(c[1], c[2], kernel_size=(1, 17), padding=(0, 8))
        self.conv4 = nn.Conv2d(c[2], c[3], kernel_size=(1, 17), padding=(0, 8))
        self.conv5 = nn.Conv2d(c[3], c[4], kernel_size=(1, 17), padding=(0, 8))
        self.pool = nn.MaxPool2d(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))
        self.proj = nn.Linear(c[4], embed_dim)
        self.mel_bins = mel_bins

    def frames(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, mel_bins, T) -> (B, C, ceil(T / 8)) frame features."""
        if logmel.ndim != 3 or logmel.shape[1] != self.mel_bins:
            raise ValueError(f"expected log-mel (B, {self.mel_bins}, T), got {tuple(logmel.shape)}")
        x = self.input_norm(logmel.unsqueeze(1))
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = self.pool(F.relu(self.conv4(x)))
        return F.relu(self.conv5(x)).squeeze(2)

    def trim(self, logmel: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """With `trim_padding`: the batch cut after its longest caption plus the receptive field."""
        if self.trim_padding and lengths is not None:
            keep = -(-(int(lengths.max()) + RECEPTIVE_MARGIN) // TIME_DOWNSAMPLE) * TIME_DOWNSAMPLE
            logmel = logmel[..., :keep]
        return logmel

    def forward(self, logmel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, mel_bins, T) and true lengths (B,) -> (B, embed_dim) in the teacher's space."""
        x = self.frames(self.trim(logmel, lengths))
        if lengths is None:
            pooled = x.mean(dim=2)
        else:
            n = pooled_lengths(lengths.to(x.device)).clamp(max=x.shape[2])
            valid = torch.arange(x.shape[2], device=x.device)[None, :] < n[:, None]
            pooled = (x * valid[:, None, :]).sum(dim=2) / n[:, None]
        return self.proj(pooled)

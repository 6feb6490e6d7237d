"""DenseAV (seed 004): an audio backbone and the CLIP teacher's image tower, each followed by its
aligner (`models.denseav_aligners`), giving dense features in one `code_dim` space for the
similarity of `losses.dense_similarity`.

Backbones (DenseAV's own are HuBERT and DINO; here the pipeline's student and teacher):
- audio: the audio ViT's patch tokens after `ln_post` on its time x frequency grid,
  (B, width, F = grid columns, T = grid rows); or DaveNet's time features (B, 1024, 1, T / 8)
  for speech. Time step r of the ViT covers input frames [r s, r s + p); it counts as audio
  when its centre is inside the clip's true length (as `models.audio_vit.segment_weights`).
- image: `models.clip_patch_tokens.ImagePatchTokens` of one frame per clip, (B, width, gh, gw).

The audio mask follows the features down the aligner's time pools as the reference's
`interpolate_mask` does: bilinear (align_corners=False) to the new length, kept where > 0.01;
a clip left with no time step keeps its first (the reference picks a random one).
Training-only average pooling of the aligned image features (`image_pool`, the config's
`image_pool_width: 2`) as the reference's `prep_feats`.

Two phases (`train_backbones`): during the aligner warm-up only the aligners learn (the
backbones run without gradients); then the audio backbone is fine-tuned
(`finetune_audio_model: True`) and the image side learns as `train_image` says:
`lora` (the paper: LoRA rank 8 on the image tower's attention projections, plus the aligner),
`aligner` (the tower frozen, its aligner trained) or `frozen` (the released code, whose
`forward_image` runs entirely under no_grad: neither the tower nor its aligner ever learns).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.audio_vit import AudioViT
from models.clip_patch_tokens import ImagePatchTokens
from models.davenet import TIME_DOWNSAMPLE, DaveNet, pooled_lengths
from models.denseav_aligners import AudioAligner, ImageAligner

TRAIN_IMAGE = ("lora", "aligner", "frozen")


@dataclass
class DenseFeatures:
    audio: torch.Tensor  # (B, code_dim, 1, T')
    mask: torch.Tensor  # (B, T') bool: audio (not padding or silence)
    image: torch.Tensor  # (B, code_dim, H, W)


def audio_token_mask(model: nn.Module, lengths: torch.Tensor, steps: int, starts: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """(B, steps) bool: which of the backbone's time steps come from audio, i.e. input frames
    [starts, lengths) (starts: the random window's first frame, `assets.training.audio_window`;
    None: 0). A clip with no such step keeps its first."""
    ends = lengths.to(torch.float64)
    starts = torch.zeros_like(ends) if starts is None else starts.to(ends.device, torch.float64)
    if isinstance(model, AudioViT):
        centres = torch.arange(steps, dtype=torch.float64, device=ends.device) * model.stride[0] + model.patch[0] / 2
        mask = (centres[None, :] <= ends[:, None]) & (centres[None, :] >= starts[:, None])
    elif isinstance(model, DaveNet):
        step = torch.arange(steps, device=ends.device)[None, :]
        mask = (step < pooled_lengths(ends.long())[:, None]) & (step >= (starts // TIME_DOWNSAMPLE)[:, None])
    else:
        raise TypeError(f"no dense audio features for {type(model).__name__}")
    mask[~mask.any(dim=1), 0] = True
    return mask


def resize_mask(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) bool -> (B, steps) bool as the reference's interpolate_mask (see module doc)."""
    b, t = mask.shape
    out = F.interpolate(mask.float().reshape(b, 1, 1, t), size=(1, steps), mode="bilinear",
                        align_corners=False).reshape(b, steps) > 0.01
    out[~out.any(dim=1), 0] = True
    return out


class DenseAV(nn.Module):
    def __init__(self, audio_backbone: nn.Module, image_backbone: ImagePatchTokens, code_dim: int = 384,
                 time_pools: int = 2, image_pool: int = 2, train_image: str = "lora"):
        super().__init__()
        if train_image not in TRAIN_IMAGE:
            raise ValueError(f"train_image must be one of {TRAIN_IMAGE}, got {train_image!r}")
        self.audio_backbone, self.image_backbone = audio_backbone, image_backbone
        self.train_image, self.image_pool = train_image, image_pool
        audio_dim = audio_backbone.conv.out_channels if isinstance(audio_backbone, AudioViT) else audio_backbone.conv5.out_channels
        self.audio_cls = nn.Parameter(torch.randn(audio_dim))  # DenseAV's learned audio class token
        self.audio_aligner = AudioAligner(audio_dim, code_dim, time_pools)
        self.image_aligner = ImageAligner(image_backbone.width, code_dim)
        if train_image == "frozen":
            self.image_aligner.requires_grad_(False)

    def audio_tokens(self, audio: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's (B, C, F, T) features and (B, T) mask."""
        m = self.audio_backbone
        if isinstance(m, AudioViT):
            rows, cols = m.grid
            tokens = m.ln_post(m._tokens(audio))[:, 1:]  # (B, rows * cols, W), time-major
            feats = tokens.reshape(audio.shape[0], rows, cols, -1).permute(0, 3, 2, 1)
        else:
            feats = m.frames(audio).unsqueeze(2)
        return feats, audio_token_mask(m, lengths.to(feats.device), feats.shape[-1], starts)

    def audio_features(self, audio: torch.Tensor, lengths: torch.Tensor, train_backbone: bool = True,
                       starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and train_backbone):
            feats, mask = self.audio_tokens(audio, lengths, starts)
        cls = self.audio_cls.to(feats.dtype).expand(feats.shape[0], -1)
        aligned = self.audio_aligner(feats, cls)
        return aligned, resize_mask(mask, aligned.shape[-1])

    def image_features(self, frames: torch.Tensor | None, train_backbone: bool = True,
                       image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Aligned image features of frames (B, S, S, 3) uint8, or of the tower's tokens (B, width, gh, gw)
        read from the patch-token cache (only when the tower does not learn)."""
        grad = torch.is_grad_enabled()
        if image_tokens is not None:
            if self.train_image == "lora":
                raise ValueError("cached patch tokens cannot train LoRA on the image tower; use train_image aligner or frozen")
            tokens = image_tokens.float()
        else:
            with torch.set_grad_enabled(grad and train_backbone and self.train_image == "lora"):
                tokens = self.image_backbone(frames)
        with torch.set_grad_enabled(grad and self.train_image != "frozen"):
            aligned = self.image_aligner(tokens)
        if self.training and self.image_pool > 1:
            aligned = F.avg_pool2d(aligned, self.image_pool)
        return aligned

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor | None,
                train_backbones: bool = True, starts: torch.Tensor | None = None,
                image_tokens: torch.Tensor | None = None) -> DenseFeatures:
        """audio (B, ...) as the backbone takes it, its frames [starts, lengths) audio (B,) each,
        frames (B, S, S, 3) uint8 (or, instead, the tower's cached `image_tokens`)."""
        feats, mask = self.audio_features(audio, lengths, train_backbones, starts)
        return DenseFeatures(feats, mask, self.image_features(frames, train_backbones, image_tokens))

"""A tiny open_clip model: the demo's CLIP teacher when no pretrained CLIP weights are available
(no network, CPU only). It is fitted on SynthAV image-caption pairs by
`assets.mining.tiny_teacher.fit_tiny_clip`; this module holds only the model.

Pure functions on in-memory arrays (torch + open_clip + numpy, no file I/O; the demo asset
`teacher/tiny_clip` saves the state dict with `models.teacher_weights.save_weights`, and
`ClipTeacher` loads it like any open_clip checkpoint):

- `TINY_CLIP_CONFIG`: an open_clip model config (same structure as open_clip's
  `model_configs/*.json`; `create_tiny_clip` passes it to open_clip.model.CLIP directly).
- `create_tiny_clip(seed)`: the model, deterministic initialisation.
- `preprocess_images`, `tokenize`: its inputs; `encode_images`, `encode_texts`: its
  L2-normalised embeddings as numpy arrays.

Images arrive as (N, S, S, 3) uint8 RGB (the frame cache's 224x224 CLIP crops); they are
resized to the model's 64x64 input with antialiased bilinear interpolation and normalised
with CLIP's mean/std (`preprocess_images`). Captions are tokenised with open_clip's
SimpleTokenizer (CLIP BPE) truncated to the config's context length (32 tokens; SynthAV
captions are at most ~30 words).

Why 64x64 with 16x16 patches (16 tokens): SynthAV pictures are flat-coloured shapes on simple
backgrounds, so colour, size, shape and scene survive the downscale. On 2 CPU cores 16 patches
take about 5 s an epoch and reach a higher held-out R@1 than 64 patches (8x8) at twice the
cost; 224/32 (49 tokens) costs about as much per step as 64/8 and would need the full 224x224
float inputs (12x the bytes). The demo fit's time and zero-shot R@k: docs/mining.md.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

TINY_CLIP_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {
        "image_size": 64,
        "layers": 3,
        "width": 128,
        "head_width": 32,      # 4 heads
        "mlp_ratio": 2.0,
        "patch_size": 16,      # 4x4 = 16 patch tokens
    },
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,   # open_clip's SimpleTokenizer (CLIP BPE)
        "width": 128,
        "heads": 4,
        "layers": 3,
        "mlp_ratio": 2.0,
    },
}

# CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN / STD)
_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def create_tiny_clip(seed: int = 0, config: dict | None = None) -> nn.Module:
    """open_clip CLIP with `TINY_CLIP_CONFIG` (or `config`), initialised from `seed` (the
    global torch RNG is left as it was)."""
    from open_clip.model import CLIP

    cfg = copy.deepcopy(config if config is not None else TINY_CLIP_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**cfg)
    return model.float()


def preprocess_images(images: np.ndarray, image_size: int, batch: int = 256) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, image_size, image_size) float32, CLIP-normalised;
    antialiased bilinear resize when S != image_size."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
    out = torch.empty((len(images), 3, image_size, image_size), dtype=torch.float32)
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch])).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        out[s:s + batch] = (x - _MEAN) / _STD
    return out


def tokenize(captions: Sequence[str], context_length: int) -> torch.Tensor:
    return open_clip.tokenize(list(captions), context_length=context_length)


def _context_length(model: nn.Module) -> int:
    return int(getattr(model, "context_length", TINY_CLIP_CONFIG["text_cfg"]["context_length"]))


def _image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, embed_dim) float32, L2-normalised."""
    x = preprocess_images(images, _image_size(model))
    model.eval()
    return torch.cat([model.encode_image(x[s:s + batch], normalize=True)
                      for s in range(0, len(x), batch)]).numpy() if len(x) else np.zeros((0, 0), np.float32)


@torch.no_grad()
def encode_texts(model: nn.Module, captions: Sequence[str], batch: int = 256) -> np.ndarray:
    """N captions -> (N, embed_dim) float32, L2-normalised."""
    t = tokenize(captions, _context_length(model))
    model.eval()
    return torch.cat([model.encode_text(t[s:s + batch], normalize=True)
                      for s in range(0, len(t), batch)]).numpy() if len(t) else np.zeros((0, 0), np.float32)

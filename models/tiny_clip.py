"""A tiny open_clip model fitted on SynthAV image-caption pairs: the demo's CLIP teacher when
no pretrained CLIP weights are available (no network, CPU only).

Pure functions on in-memory arrays (torch + open_clip + numpy, no file I/O; the demo asset
`teacher/tiny_clip` saves the state dict with `models.clip_teacher.save_weights`, and
`ClipTeacher` loads it like any open_clip checkpoint):

- `TINY_CLIP_CONFIG`: an open_clip model config (same structure as open_clip's
  `model_configs/*.json`; `create_tiny_clip` passes it to open_clip.model.CLIP directly).
- `create_tiny_clip(seed)`: the model, deterministic initialisation.
- `fit_tiny_clip(images, captions, cfg)`: symmetric InfoNCE with a learnable logit scale,
  AdamW + linear warmup + cosine decay, fixed data order from a numpy Generator,
  deterministic on CPU. Returns the model in eval mode with frozen parameters and the mean
  loss per epoch.
- `retrieval_recall(model, images, captions)`: exact image->text and text->image R@k with
  one caption per image.

Images arrive as (N, S, S, 3) uint8 RGB (the frame cache's 224x224 CLIP crops); they are
resized to the model's 64x64 input with antialiased bilinear interpolation and normalised
with CLIP's mean/std (`preprocess_images`). Captions are tokenised with open_clip's
SimpleTokenizer (CLIP BPE) truncated to the config's context length (32 tokens; SynthAV
captions are at most ~30 words).

Why 64x64 with 16x16 patches (16 tokens): measured on 2 CPU cores, 2500 train / 1000
held-out SynthAV Places pairs. 64/8 (64 tokens) took ~10 s/epoch and reached held-out R@1
0.125/0.134 (i2t/t2i) after 15 epochs (159 s); 64/16 takes ~5 s/epoch and reached
0.185/0.176 after 20 epochs (101 s); with the defaults on the demo's 2501 training pairs
(asset teacher/tiny_clip) the fit takes 118 s and R@1 on the 1000 held-out pairs is
0.194/0.192 (chance 0.001). 224/32 (49 tokens) costs about as much per step as
64/8 and would need the full 224x224 float inputs (12x the bytes). SynthAV pictures are
flat-coloured shapes on simple backgrounds, so colour, size, shape and scene survive the
downscale and 16 patches are enough.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAME = "clipkt-tiny"

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


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    threads: int = 2
    max_logit_scale: float = 100.0   # clamp of exp(logit_scale), as open_clip's training does
    hflip: bool = True               # random horizontal flips (captions never say left/right)


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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on biases, norms, embeddings, logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, total: int, cfg: FitConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    done = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, done)))


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised features (what open_clip.ClipLoss computes on one process)."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class _Deterministic:
    """Thread count and deterministic algorithms for the duration of a fit, restored after."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.prev_threads = torch.get_num_threads()
        self.prev_det = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev_threads)
        torch.use_deterministic_algorithms(self.prev_det, warn_only=self.prev_warn)
        return False


def fit_tiny_clip(images: np.ndarray, captions: list[str], cfg: FitConfig = FitConfig(),
                  progress: Callable[[int, float], None] | None = None,
                  config: dict | None = None) -> tuple[nn.Module, list[float]]:
    """Fit a tiny CLIP on (N, S, S, 3) uint8 images and their N captions.

    Deterministic on CPU for a fixed (data, cfg, thread count): same seed -> bit-identical
    weights. `progress(epoch, mean_loss)` is called after each epoch. Returns the model
    (eval mode, parameters frozen) and the mean training loss per epoch."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise ValueError("need at least 2 pairs for a contrastive loss")
    with _Deterministic(cfg.threads), torch.random.fork_rng(devices=[]):
        model = create_tiny_clip(cfg.seed, config)
        x_all = preprocess_images(images, _image_size(model))
        t_all = tokenize(captions, _context_length(model))
        n = len(x_all)
        batch = min(cfg.batch_size, n)
        steps_per_epoch = n // batch          # drop the last partial batch (contrastive batches stay full)
        total = steps_per_epoch * cfg.epochs
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        order_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x7C11]))
        max_log_scale = math.log(cfg.max_logit_scale)
        model.train()
        losses: list[float] = []
        step = 0
        for epoch in range(cfg.epochs):
            perm = order_rng.permutation(n)
            flips = order_rng.random(n) < 0.5 if cfg.hflip else np.zeros(n, bool)
            total_loss = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * batch:(b + 1) * batch]
                idx_t = torch.from_numpy(idx)
                x = x_all[idx_t]
                f = torch.from_numpy(flips[idx])
                if f.any():
                    x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total, cfg)
                img_f = model.encode_image(x, normalize=True)
                txt_f = model.encode_text(t_all[idx_t], normalize=True)
                loss = clip_loss(img_f, txt_f, model.logit_scale.exp())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, max_log_scale)
                total_loss += float(loss.detach())
                step += 1
            losses.append(total_loss / max(1, steps_per_epoch))
            if progress is not None:
                progress(epoch, losses[-1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses


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


def recall_from_similarity(sim: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Exact R@k from an (N, N) similarity matrix whose diagonal holds the true pairs (rows =
    images, columns = captions). Ranks come from a stable argsort of -sim, so ties go to the
    lower index. Keys: "i2t_R@k", "t2i_R@k" (fractions in [0, 1]), plus median ranks (1-based)."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"need a square similarity matrix, got {sim.shape}")
    n = sim.shape[0]
    out: dict = {"n": n}
    for name, m in (("i2t", sim), ("t2i", sim.T)):
        order = np.argsort(-m, axis=1, kind="stable")
        ranks = np.argmax(order == np.arange(n)[:, None], axis=1)   # 0-based rank of the true pair
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(ranks < k))
        out[f"{name}_median_rank"] = float(np.median(ranks + 1))
    return out


def retrieval_recall(model: nn.Module, images: np.ndarray, captions: Sequence[str],
                     ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Image->text and text->image R@k with one caption per image (caption i belongs to image i)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    with torch.inference_mode():
        sim = encode_images(model, images) @ encode_texts(model, captions).T
    return recall_from_similarity(sim, ks)

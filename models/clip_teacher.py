"""The frozen CLIP teacher: an open_clip model that embeds frames and captions.

Weights come either from an open_clip pretrained tag (``ViT-B-32`` / ``openai``) or from a
local checkpoint file (``weights_path``) for machines without network; resolving,
downloading and hashing them is `models.teacher_weights`' job. A model config dict may be
passed for tiny models that are not in open_clip's registry (the offline demo teacher, the
tests).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import get_pretrained_cfg

from models.teacher_weights import TeacherLoadError, file_sha256, register_model_config, resolve_checkpoint

# keys of an open_clip pretrained-tag cfg that describe preprocessing
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


@dataclass(frozen=True)
class TeacherSpec:
    model_name: str = "ViT-B-32"
    pretrained: str = "openai"  # an open_clip pretrained tag, or "" when weights_path is given
    weights_path: str = ""  # a local checkpoint file (state dict, as open_clip saves / as downloaded)
    device: str = "auto"  # auto -> cuda if available else cpu
    batch_size: int = 256
    precision: str = "auto"  # auto -> "amp" on CUDA, "fp32" on CPU
    cache_dir: str = ""  # open_clip download cache; "" -> open_clip's / huggingface's default


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextmanager
def _quiet_random_init_warning():
    """open_clip warns "No pretrained weights loaded ... initialized randomly" when built without a
    tag; the teacher loads its checkpoint right after, so that warning would only mislead."""
    def drop(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "amp" if device.type == "cuda" else "fp32"
    if precision not in ("amp", "fp32"):
        raise ValueError(f"precision must be 'auto', 'amp' or 'fp32', not {precision!r}")
    return precision


def _tag_config(spec: TeacherSpec, model_config: dict | None) -> dict:
    """open_clip's config of the pretrained tag ({} without one), after checking that the model and
    its weights can be named at all."""
    name = spec.model_name
    if model_config is not None:
        register_model_config(name, model_config)
    if name not in open_clip.list_models():
        raise TeacherLoadError(
            f"unknown open_clip model {name!r}: not in open_clip's registry and no model_config given; "
            f"use one of open_clip.list_models() or pass model_config"
        )
    if not spec.pretrained and not spec.weights_path:
        raise TeacherLoadError(
            f"no weights for CLIP teacher {name}: set pretrained (an open_clip tag, e.g. 'openai') "
            f"or weights_path (a local checkpoint file)"
        )
    tag_cfg = get_pretrained_cfg(name, spec.pretrained) if spec.pretrained else {}
    if spec.pretrained and not tag_cfg and not spec.weights_path:
        raise TeacherLoadError(
            f"unknown pretrained tag {spec.pretrained!r} for {name}; known tags: "
            f"{open_clip.list_pretrained_tags_by_model(name)}; or set weights_path to a local checkpoint"
        )
    return tag_cfg


def _load_model(name: str, checkpoint: str, tag_cfg: dict) -> torch.nn.Module:
    """The open_clip model with the checkpoint's weights, preprocessing and activation as the tag says."""
    try:
        with _quiet_random_init_warning():
            model = open_clip.create_model(
                name,
                pretrained=None,
                device="cpu",
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                force_preprocess_cfg={k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg} or None,
            )
        open_clip.load_checkpoint(model, checkpoint, strict=True)
    except Exception as e:
        raise TeacherLoadError(
            f"could not load CLIP teacher weights {checkpoint} into {name}: {type(e).__name__}: {e}. "
            f"Check that model_name (and model_config) match the checkpoint"
        ) from e
    return model


def _tokenizer(name: str, cache_dir: str):
    try:
        return open_clip.get_tokenizer(name, cache_dir=cache_dir or None)
    except Exception as e:
        raise TeacherLoadError(
            f"could not build the tokenizer for {name} ({type(e).__name__}: {e}); "
            f"it may need a download: run once with network to fill the cache"
        ) from e


class ClipTeacher:
    """A frozen open_clip model that embeds frames and captions as unit vectors."""

    def __init__(self, spec: TeacherSpec, model_config: dict | None = None):
        self.spec = spec
        self.model_name, self.pretrained, self.weights_path = spec.model_name, spec.pretrained, spec.weights_path
        self.device = _resolve_device(spec.device)
        self.precision = _precision(spec.precision, self.device)
        if spec.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {spec.batch_size}")
        tag_cfg = _tag_config(spec, model_config)
        checkpoint = resolve_checkpoint(spec.model_name, spec.pretrained, spec.weights_path, tag_cfg, spec.cache_dir)
        self.weights_sha256 = file_sha256(checkpoint)
        model = _load_model(spec.model_name, checkpoint, tag_cfg)
        self.tokenizer = _tokenizer(spec.model_name, spec.cache_dir)
        model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        self._set_preprocessing(model)

    @classmethod
    def from_files(cls, spec: TeacherSpec, model_config_path: str | None = None) -> "ClipTeacher":
        """The teacher with an open_clip model config JSON for a model outside open_clip's registry."""
        config = json.loads(Path(model_config_path).read_text()) if model_config_path else None
        return cls(spec, model_config=config)

    def _set_preprocessing(self, model) -> None:
        pcfg = open_clip.get_model_preprocess_cfg(model)
        size = pcfg.get("size", model.visual.image_size)
        self.image_size: tuple[int, int] = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = tuple(float(m) for m in pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(s) for s in pcfg.get("std", open_clip.OPENAI_DATASET_STD))
        # full transform for PIL images (resize + centre crop + ToTensor + Normalize)
        self.preprocess = open_clip.image_transform(self.image_size, is_train=False, mean=self.mean, std=self.std)
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        self.embed_dim = int(getattr(model, "embed_dim", 0) or getattr(model.visual, "output_dim", 0) or self._probe_dim())

    def _probe_dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[1])

    def _autocast(self):
        if self.precision == "amp":
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                dtype = torch.bfloat16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB frames, already resized + centre-cropped -> (N, D) float32, unit norm.

        Frames at the model's input size (the frame cache's 224x224 crops for ViT-B/32) go
        straight in. Square frames of another size are resized to it with antialiased
        bilinear interpolation first: the demo's tiny teacher takes 64x64 and was fitted on
        the same downscale of the same crops (`models.tiny_clip.preprocess_images`)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        if frames.shape[1] != frames.shape[2] and tuple(frames.shape[1:3]) != self.image_size:
            raise ValueError(
                f"frames are {frames.shape[1]}x{frames.shape[2]} but {self.model_name} expects "
                f"{self.image_size[0]}x{self.image_size[1]} (resize + centre-crop them first)"
            )
        out = []
        for i in range(0, len(frames), self.spec.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.spec.batch_size])).to(self.device)
            x = x.float().div_(255.0)  # ToTensor, in place on the contiguous (N, H, W, 3) copy
            if tuple(x.shape[1:3]) != self.image_size:
                x = x.permute(0, 3, 1, 2)
                x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
                x = x.permute(0, 2, 3, 1)
            # Normalize, channel last (same arithmetic as torchvision's, bit for bit), then an
            # (N, 3, H, W) channels-last view: no layout copy before the patch convolution
            x = x.sub_(self._mean_t.view(3)).div_(self._std_t.view(3)).permute(0, 3, 1, 2)
            with self._autocast():
                emb = self.model.encode_image(x)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Captions -> (N, D) float32, unit norm."""
        texts = list(texts)
        out = []
        for i in range(0, len(texts), self.spec.batch_size):
            tokens = self.tokenizer(texts[i : i + self.spec.batch_size]).to(self.device)
            with self._autocast():
                emb = self.model.encode_text(tokens)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        if not out:
            return np.zeros((0, getattr(self, "embed_dim", 0)), np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "device": str(self.device),
            "precision": self.precision,
            "embed_dim": self.embed_dim,
            "image_size": list(self.image_size),
        }

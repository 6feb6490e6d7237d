"""The frozen CLIP teacher: an open_clip model that embeds frames and captions.

Weights come either from an open_clip pretrained tag (``ViT-B-32`` / ``openai``, downloaded
and cached by open_clip) or from a local checkpoint file (``weights_path``) for machines
without network. A model config dict may be passed for tiny models that are not in
open_clip's registry (the offline demo teacher, the tests).

Only torch, numpy and open_clip here: no Dagster.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import download_pretrained, get_pretrained_cfg

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


class TeacherLoadError(RuntimeError):
    """The teacher could not be built; the message says what failed and how to fix it."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> str:
    """Save a model's state dict as a checkpoint ClipTeacher can load; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return file_sha256(path)


def register_model_config(model_name: str, model_config: dict) -> None:
    """Make a model config dict known to open_clip (create_model, get_tokenizer) under model_name."""
    if hasattr(open_clip, "factory") and hasattr(open_clip.factory, "_MODEL_CONFIGS"):
        open_clip.factory._MODEL_CONFIGS[model_name] = copy.deepcopy(model_config)
        return
    import json  # fallback through the public API: a config file in a persistent temp dir
    import tempfile

    d = Path(tempfile.gettempdir()) / "clipkt_open_clip_configs"
    d.mkdir(exist_ok=True)
    (d / f"{model_name}.json").write_text(json.dumps(model_config))
    open_clip.add_model_config(d)


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline_if_unreachable():
    """huggingface_hub retries an unreachable Hub with backoff for ~45 s per file; when a quick probe
    shows no route to the Hub (and no proxy is configured), switch it to offline mode for the
    download: cached files still resolve, missing ones fail at once."""
    try:
        from huggingface_hub import constants as hc
    except ImportError:
        yield
        return
    proxied = any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    host = urlparse(hc.ENDPOINT).hostname or "huggingface.co"
    if hc.HF_HUB_OFFLINE or proxied or _reachable(host):
        yield
        return
    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ClipTeacher:
    def __init__(self, spec: TeacherSpec, model_config: dict | None = None):
        self.spec = spec
        self.model_name = spec.model_name
        self.pretrained = spec.pretrained
        self.weights_path = spec.weights_path
        self.device = _resolve_device(spec.device)
        precision = spec.precision
        if precision == "auto":
            precision = "amp" if self.device.type == "cuda" else "fp32"
        if precision not in ("amp", "fp32"):
            raise ValueError(f"precision must be 'auto', 'amp' or 'fp32', not {spec.precision!r}")
        self.precision = precision
        if spec.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {spec.batch_size}")

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

        # resolve the checkpoint file
        if spec.weights_path:
            checkpoint = Path(spec.weights_path).expanduser()
            if not checkpoint.is_file():
                raise TeacherLoadError(
                    f"CLIP teacher weights file not found: {checkpoint}; fix weights_path "
                    f"(a state dict saved by open_clip / downloaded, .safetensors/.bin/.pt)"
                )
            checkpoint = str(checkpoint)
        else:
            try:
                with _hub_offline_if_unreachable():
                    checkpoint = download_pretrained(tag_cfg, cache_dir=spec.cache_dir or None)
            except Exception as e:  # huggingface_hub / urllib / OSError ...
                raise TeacherLoadError(
                    f"could not download pretrained weights for {name}/{spec.pretrained} (no network?): "
                    f"{type(e).__name__}: {e}. Download them elsewhere and set "
                    f"weights_path: /path/to/open_clip_model.safetensors (or .bin/.pt)"
                ) from e
            if not checkpoint or not os.path.isfile(checkpoint):
                raise TeacherLoadError(
                    f"open_clip gave no weights file for {name}/{spec.pretrained}; download them and set "
                    f"weights_path: /path/to/open_clip_model.safetensors (or .bin/.pt)"
                )
        self.weights_sha256 = file_sha256(checkpoint)

        # build and load
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
        try:
            self.tokenizer = open_clip.get_tokenizer(name, cache_dir=spec.cache_dir or None)
        except Exception as e:
            raise TeacherLoadError(
                f"could not build the tokenizer for {name} ({type(e).__name__}: {e}); "
                f"it may need a download: run once with network to fill the cache"
            ) from e

        model.eval().requires_grad_(False)
        self.model = model.to(self.device)

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

"""The frozen CLIP teacher's weights: where they come from and what they are.

An open_clip pretrained tag (``ViT-B-32`` / ``openai``) is resolved to a downloaded file
(open_clip's download, with the Hugging Face Hub switched to offline mode when a quick probe
finds no route, so a machine without network fails in seconds instead of retrying for
minutes); a local checkpoint (``weights_path``) is used as it is. A model config dict for a
model outside open_clip's registry (the offline demo teacher, the tests) is registered
under its name. Files are identified by their sha256.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.pretrained import download_pretrained


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
        # Through a file object: torch then names the zip's records "archive/..." instead of after
        # the file, so the same weights give the same bytes (and sha256) whatever the file is called.
        with open(path, "wb") as f:
            torch.save(state, f)
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


def resolve_checkpoint(model_name: str, pretrained: str, weights_path: str, tag_cfg: dict, cache_dir: str = "") -> str:
    """The checkpoint file to load: `weights_path` when given (it must exist), else the download of the
    pretrained tag. Raises TeacherLoadError saying what failed and how to fix it."""
    if weights_path:
        checkpoint = Path(weights_path).expanduser()
        if not checkpoint.is_file():
            raise TeacherLoadError(
                f"CLIP teacher weights file not found: {checkpoint}; fix weights_path "
                f"(a state dict saved by open_clip / downloaded, .safetensors/.bin/.pt)"
            )
        return str(checkpoint)
    try:
        with _hub_offline_if_unreachable():
            checkpoint = download_pretrained(tag_cfg, cache_dir=cache_dir or None)
    except Exception as e:  # huggingface_hub / urllib / OSError ...
        raise TeacherLoadError(
            f"could not download pretrained weights for {model_name}/{pretrained} (no network?): "
            f"{type(e).__name__}: {e}. Download them elsewhere and set "
            f"weights_path: /path/to/open_clip_model.safetensors (or .bin/.pt)"
        ) from e
    if not checkpoint or not os.path.isfile(checkpoint):
        raise TeacherLoadError(
            f"open_clip gave no weights for {model_name}/{pretrained}; download them and set "
            f"weights_path: /path/to/open_clip_model.safetensors (or .bin/.pt)"
        )
    return checkpoint

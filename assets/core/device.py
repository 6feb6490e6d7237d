"""Where training runs and at what precision: chosen at run time.

`resolve_device("auto")` is CUDA when present, else the CPU. On CUDA, matmuls and
convolutions may use TF32 and the forward pass runs under autocast (bfloat16 where the GPU
supports it, else float16 with a gradient scaler); on the CPU everything is float32, so
runs are bit-reproducible.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return d


def enable_tf32(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (bfloat16 if supported, else float16); None (no AMP) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Enabled only for float16 autocast (bfloat16 and float32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)

"""Training checkpoints: safetensors weights plus the optimiser, scheduler and RNG state.

`<dir>/epoch_0003.safetensors` (the model's state dict) and `<dir>/epoch_0003.state.pt`
(optimiser, scheduler, epoch, the torch / numpy / python RNG states and free-form extras),
each written atomically; the state file is written last, so a checkpoint counts only when
both are there. `latest_checkpoint` finds the newest complete one; resuming from it gives
the same weights as a run that was never interrupted (exactly, on CPU).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from assets.core.atomic_io import atomic_path

_NAME = re.compile(r"epoch_(\d{4})\.state\.pt$")


def save_checkpoint(directory: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, extra: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"epoch_{epoch:04d}"
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
             "extra": extra or {}}
    state_path = stem.with_suffix(".state.pt")
    with atomic_path(state_path) as tmp:
        torch.save(state, tmp)
    return state_path


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest epoch whose weights and state files are both complete, or None."""
    if not directory.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name)))
    for _, state in reversed(found):
        if state.with_name(state.name.replace(".state.pt", ".safetensors")).exists():
            return state
    return None


def load_checkpoint(state_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore everything save_checkpoint wrote; returns {"epoch", "extra"}."""
    weights = state_path.with_name(state_path.name.replace(".state.pt", ".safetensors"))
    model.load_state_dict(load_file(str(weights)))
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {"epoch": state["epoch"], "extra": state["extra"]}

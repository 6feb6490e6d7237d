"""Build a student audio encoder by name: the audio ViT (from the teacher's image tower) or DaveNet.

Both output vectors in the teacher's embedding space (`embed_dim`). DaveNet's weights are
initialised from `seed`; the audio ViT is a deterministic copy of the image tower.
"""

from __future__ import annotations

import torch
from torch import nn

from models.audio_vit import AudioViT
from models.davenet import DaveNet
from models.speechclip import HubertFeaturizer, SpeechCLIP


def build_audio_encoder(kind: str, visual: nn.Module | None, embed_dim: int, seed: int = 0, *,
                        time_frames: int = 1000, mel_bins: int = 128, patch: tuple[int, int] | None = None,
                        stride: tuple[int, int] = (16, 24), layers: int | None = None, width: float = 1.0,
                        trim_padding: bool = False,
                        logmel_bins: int = 40, weights: str | None = None, layer_norm_states: bool = False) -> nn.Module:
    if kind == "audio_vit":
        if visual is None:
            raise ValueError("the audio ViT is initialised from the CLIP teacher's image tower; none given")
        return AudioViT(visual, time_frames=time_frames, mel_bins=mel_bins, stride=tuple(stride),
                        patch=None if patch is None else tuple(patch), layers=layers)
    if kind == "davenet":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DaveNet(embed_dim, mel_bins=logmel_bins, width=width, trim_padding=trim_padding)
    if kind == "hubert":
        if not weights:
            raise ValueError("the HuBERT featurizer loads a local checkpoint directory; none given")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return HubertFeaturizer(weights, normalize=layer_norm_states)
    raise ValueError(f"unknown audio encoder {kind!r}; choose audio_vit, davenet or hubert")


def takes_lengths(model: nn.Module) -> bool:
    """DaveNet pools over the true length of each (padded) spectrogram, SpeechCLIP masks its padding frames;
    the ViT sees fixed-size input."""
    return isinstance(model, (DaveNet, SpeechCLIP)) or bool(getattr(model, "takes_lengths", False))

"""Retrieval evaluation of a trained audio encoder against the teacher's image and text embeddings.

How an audio clip is scored against a video depends on the experiment's frame strategy,
the same similarity it was trained with (seed 001):
- random (VIP-ANT): the audio embedding against the video's middle frame (frame L // 2);
- nearest: the maximum over the video's L frames (eq. 3);
- multiframe: L audio segments against L frames, flattened (eq. 4).
Audio-text: the audio embedding against each caption embedding (cosine).

Protocol (`assets.core.recall`): a query's rank is the best rank of any of its true
matches, ties count against the model. A->I / I->A: one true match. A->T: a clip's captions
(all 5 on AudioCaps test), T->A: every caption is a query with its one clip.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assets.caches.fbank_stats import Normaliser
from assets.core.device import autocast
from assets.core.recall import caption_matches, recall_metrics
from assets.training.data import BatchLoader, ClipSet
from models.audio_encoder import takes_lengths

SIMILARITY_NAMES = {
    "random": "audio vs the middle frame",
    "nearest": "audio vs the best of the L frames (max)",
    "multiframe": "L audio segments vs L frames, flattened",
}


def encode_audio(model: nn.Module, audio: torch.Tensor, lengths: torch.Tensor, segments: int | None = None) -> torch.Tensor:
    """(B, D), or (B, L, D) segment embeddings when `segments` is given (audio ViT only)."""
    if segments is not None:
        return model.forward_segments(audio, segments)
    return model(audio, lengths) if takes_lengths(model) else model(audio)


@torch.no_grad()
def embed_clips(model: nn.Module, clips: ClipSet, normalise: Normaliser, device: torch.device,
                segments: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm audio embeddings of every clip, (N, D) or (N, L, D), float32 on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    loader = BatchLoader(clips, np.arange(len(clips)), batch_size, normalise, drop_last=False)
    try:
        for batch in loader:
            b = batch.to(device)
            with autocast(device):
                emb = encode_audio(model, b.audio, b.lengths, segments)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def audio_image_similarity(audio: np.ndarray, frames: np.ndarray, strategy: str) -> np.ndarray:
    """(N_audio, N_video) similarity under the strategy's scoring (see module doc)."""
    a, v = torch.from_numpy(np.asarray(audio, np.float32)), torch.from_numpy(np.asarray(frames, np.float32))
    v = F.normalize(v, dim=-1)
    if strategy == "random":
        return (F.normalize(a, dim=-1) @ v[:, v.shape[1] // 2].T).numpy()
    if strategy == "nearest":
        return torch.einsum("ad,bld->abl", F.normalize(a, dim=-1), v).max(dim=2).values.numpy()
    if strategy == "multiframe":
        if a.ndim != 3 or a.shape[1] != v.shape[1]:
            raise ValueError(f"multiframe needs (N, L, D) audio segments matching L={v.shape[1]} frames, got {tuple(a.shape)}")
        return (F.normalize(a.flatten(1), dim=-1) @ F.normalize(v.flatten(1), dim=-1).T).numpy()
    raise ValueError(f"unknown frame strategy {strategy!r}")


def audio_text_similarity(audio: np.ndarray, captions: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """((N_audio, N_captions) cosine, the clip index of each caption), captions of all clips stacked."""
    owner = [i for i, c in enumerate(captions) for _ in range(len(c))]
    caps = F.normalize(torch.from_numpy(np.concatenate(captions).astype(np.float32)), dim=-1)
    a = torch.from_numpy(np.asarray(audio, np.float32))
    if a.ndim == 3:  # multiframe models: their segments' mean stands for the clip
        a = a.mean(dim=1)
    return (F.normalize(a, dim=-1) @ caps.T).numpy(), owner


def retrieval_report(audio: np.ndarray, clips: ClipSet, strategy: str, with_text: bool) -> dict:
    """{"A->I": {...}, "I->A": {...}, "A->T": ..., "T->A": ...} recall metrics (fractions) for the clips."""
    out: dict = {}
    if clips.frames is not None:
        sim = audio_image_similarity(audio, clips.frames, strategy)
        one = [[i] for i in range(len(clips))]
        out["A->I"] = recall_metrics(sim, one)
        out["I->A"] = recall_metrics(sim.T, one)
    if with_text and clips.captions is not None:
        sim, owner = audio_text_similarity(audio, clips.captions)
        a2t, t2a = caption_matches(owner, len(clips))
        out["A->T"] = recall_metrics(sim, a2t)
        out["T->A"] = recall_metrics(sim.T, t2a)
    return out

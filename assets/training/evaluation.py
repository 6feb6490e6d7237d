"""Retrieval evaluation of a trained audio encoder against the teacher's image and text embeddings.

Every audio-image run is scored twice:
- with its own similarity, the one it was trained with (`losses.frame_matching`, the same
  functions): random (VIP-ANT) the audio against the frame VIP-ANT evaluates on; nearest the
  max over the video's L frames (eq. 3, for either `nearest_rule`: at retrieval time there is no
  "own audio" to pick a clip's frame with); multiframe the L raw audio segments against the L
  frames, flattened (eq. 4). Directions `A->I`, `I->A`.
- with one common protocol, VIP-ANT's: one audio embedding per clip (a multiframe model's is the
  mean of its segment embeddings) against one frame per clip, frame `ceil(L/2) - 1` (VIP-ANT's
  `int(np.ceil(len(images) / 2)) - 1`: frame 1 of 4). Directions `A->I common`, `I->A common`:
  these compare training methods rather than scoring rules. For random-frame runs both are the same.
Audio-text: the audio embedding (a multiframe model's segment mean) against each caption embedding.

Protocol (`assets.core.recall`): a query's rank is the best rank of any of its true
matches, ties count against the model. A->I / I->A: one true match. A->T: a clip's captions
(all 5 on AudioCaps test), T->A: every caption is a query with its one clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assets.caches.fbank_stats import Normaliser
from assets.core.device import autocast
from assets.core.recall import caption_matches, recall_metrics
from assets.training.data import Batch, BatchLoader, ClipSet
from losses.frame_matching import eval_frame_index, max_frame_similarity, multiframe_similarity, single_frame_similarity
from models.audio_encoder import takes_lengths

T = TypeVar("T")

SIMILARITY_NAMES = {
    "random": "audio vs frame ceil(L/2)-1 (VIP-ANT's evaluation frame)",
    "nearest": "audio vs the best of the L frames (max, eq. 3)",
    "multiframe": "L raw audio segments vs L frames, flattened (eq. 4)",
}
COMMON_PROTOCOL = "one audio embedding (multiframe: the segment mean) vs frame ceil(L/2)-1, cosine (VIP-ANT)"


@dataclass(frozen=True)
class AudioOutput:
    """What the encoder is asked for: (B, D) from its class token, (B, L, D) segment embeddings
    (`segments`: Multiframe Match), or (B, D) as the mean of `mean_of` segment embeddings
    (`model.pool: segments`, fine-tuning a Multiframe run from what its pretraining trained)."""
    segments: int | None = None
    mean_of: int | None = None


def encode_audio(model: nn.Module, audio: torch.Tensor, lengths: torch.Tensor, out: AudioOutput = AudioOutput()) -> torch.Tensor:
    if out.segments is not None:
        return model.forward_segments(audio, out.segments, lengths)
    if out.mean_of is not None:
        return model.forward_segments(audio, out.mean_of, lengths).mean(dim=1)
    return model(audio, lengths) if takes_lengths(model) else model(audio)


@torch.no_grad()
def eval_pass(models: nn.Module | Sequence[nn.Module], clips: ClipSet, normalise: Normaliser, device: torch.device,
              step: Callable[[Batch], T], batch_size: int = 64, workers: int = 0,
              frame_pick: str | None = None) -> list[T]:
    """`step` on every batch of `clips` in order (on `device`, under autocast, without gradients), the
    models in eval mode and put back as they were afterwards; the list of what it returned.
    `frame_pick`: the batches carry each clip's frame pixels (`BatchLoader`)."""
    models = [models] if isinstance(models, nn.Module) else list(models)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    loader = BatchLoader(clips, np.arange(len(clips)), batch_size, normalise, drop_last=False, workers=workers,
                         frame_pick=frame_pick)
    out = []
    try:
        for batch in loader:
            with autocast(device):
                out.append(step(batch.to(device)))
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return out


def embed_clips(model: nn.Module, clips: ClipSet, normalise: Normaliser, device: torch.device,
                out: AudioOutput = AudioOutput(), batch_size: int = 64) -> np.ndarray:
    """Audio embeddings of every clip, float32 on the CPU: (N, D) unit-norm, or (N, L, D) raw
    segment embeddings (eq. 4 scores the flattened raw segments)."""
    def step(b: Batch) -> torch.Tensor:
        emb = encode_audio(model, b.audio, b.lengths, out).float()
        return (emb if emb.ndim == 3 else F.normalize(emb, dim=-1)).cpu()

    return torch.cat(eval_pass(model, clips, normalise, device, step, batch_size, workers=1)).numpy()


def _clip_embedding(audio: torch.Tensor) -> torch.Tensor:
    """(N, D) from (N, D) or (N, L, D): a multiframe model's clip embedding is its segments' mean."""
    return audio.mean(dim=1) if audio.ndim == 3 else audio


def audio_image_similarity(audio: np.ndarray, frames: np.ndarray, strategy: str) -> np.ndarray:
    """(N_audio, N_video) similarity under the strategy's own scoring (see module doc)."""
    a, v = torch.from_numpy(np.asarray(audio, np.float32)), torch.from_numpy(np.asarray(frames, np.float32))
    if strategy == "random":
        return single_frame_similarity(a, v, eval_frame_index(v.shape[1])).numpy()
    if strategy == "nearest":
        return max_frame_similarity(a, v).numpy()
    if strategy == "multiframe":
        if a.ndim != 3:
            raise ValueError(f"multiframe needs (N, L, D) audio segments, got {tuple(a.shape)}")
        return multiframe_similarity(a, v).numpy()
    raise ValueError(f"unknown frame strategy {strategy!r}")


def common_similarity(audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N_audio, N_video) under the common protocol: one audio embedding vs frame ceil(L/2) - 1."""
    a, v = torch.from_numpy(np.asarray(audio, np.float32)), torch.from_numpy(np.asarray(frames, np.float32))
    return single_frame_similarity(_clip_embedding(a), v, eval_frame_index(v.shape[1])).numpy()


def audio_text_similarity(audio: np.ndarray, captions: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """((N_audio, N_captions) cosine, the clip index of each caption), captions of all clips stacked."""
    owner = [i for i, c in enumerate(captions) for _ in range(len(c))]
    caps = F.normalize(torch.from_numpy(np.concatenate(captions).astype(np.float32)), dim=-1)
    a = _clip_embedding(torch.from_numpy(np.asarray(audio, np.float32)))
    return (F.normalize(a, dim=-1) @ caps.T).numpy(), owner


def retrieval_report(audio: np.ndarray, clips: ClipSet, strategy: str, with_text: bool) -> dict:
    """{"A->I": {...}, "I->A": {...}, "A->I common": ..., "I->A common": ..., "A->T": ..., "T->A": ...}
    recall metrics (fractions) for the clips."""
    out: dict = {}
    if clips.frames is not None:
        one = [[i] for i in range(len(clips))]
        for suffix, sim in (("", audio_image_similarity(audio, clips.frames, strategy)),
                            (" common", common_similarity(audio, clips.frames))):
            out[f"A->I{suffix}"] = recall_metrics(sim, one)
            out[f"I->A{suffix}"] = recall_metrics(sim.T, one)
    if with_text and clips.captions is not None:
        sim, owner = audio_text_similarity(audio, clips.captions)
        a2t, t2a = caption_matches(owner, len(clips))
        out["A->T"] = recall_metrics(sim, a2t)
        out["T->A"] = recall_metrics(sim.T, t2a)
    return out

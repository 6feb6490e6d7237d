"""How an audio clip is compared with its video's L frames (seed 001, section II-C).

- Random frame (VIP-ANT): each clip's image is one of its frames chosen at random.
- Nearest Match (eq. 3): sim(a, i) = max over frames l of sim(a, i_l) from epoch n on;
  before epoch n, a random frame. Applied to every (audio, clip) pair of the batch, so the
  frame chosen for a clip depends on the audio it is compared with.
- Multiframe Match (eq. 4): the audio encoder's L segment embeddings and the L frame
  embeddings, each flattened to L*D, compared by cosine.

All return a (B, B) cosine similarity matrix (row = audio, column = clip) for the losses in
`losses.contrastive`. Frame embeddings are (B, L, D); random choices come from a passed
torch.Generator, so a seeded run repeats exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_frame_similarity(audio: torch.Tensor, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """audio (B, D), frames (B, L, D): one random frame per clip, then cosine."""
    _check(audio, frames)
    pick = torch.randint(frames.shape[1], (frames.shape[0],), generator=generator, device="cpu").to(frames.device)
    chosen = frames[torch.arange(frames.shape[0], device=frames.device), pick]
    return F.normalize(audio, dim=-1) @ F.normalize(chosen, dim=-1).T


def nearest_match_similarity(audio: torch.Tensor, frames: torch.Tensor, epoch: int, start_epoch: int,
                             generator: torch.Generator) -> torch.Tensor:
    """Eq. 3: max over each clip's frames of the cosine with the audio (epoch >= start_epoch), else random."""
    _check(audio, frames)
    if epoch < start_epoch:
        return random_frame_similarity(audio, frames, generator)
    per_frame = torch.einsum("ad,bld->abl", F.normalize(audio, dim=-1), F.normalize(frames, dim=-1))
    return per_frame.max(dim=2).values


def multiframe_similarity(audio_segments: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 4: audio (B, L, D) and frames (B, L, D), each flattened to L*D, compared by cosine."""
    if audio_segments.shape != frames.shape or frames.ndim != 3:
        raise ValueError(f"audio segments {tuple(audio_segments.shape)} and frames {tuple(frames.shape)} "
                         "must both be (B, L, D)")
    a = F.normalize(audio_segments.flatten(1), dim=-1)
    i = F.normalize(frames.flatten(1), dim=-1)
    return a @ i.T


def _check(audio: torch.Tensor, frames: torch.Tensor) -> None:
    if audio.ndim != 2 or frames.ndim != 3 or audio.shape[0] != frames.shape[0] or audio.shape[1] != frames.shape[2]:
        raise ValueError(f"need audio (B, D) and frames (B, L, D), got {tuple(audio.shape)} and {tuple(frames.shape)}")

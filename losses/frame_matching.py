"""How an audio clip is compared with its video's L frames (seed 001, section II-C).

- Random frame (VIP-ANT): each clip's image is one of its frames chosen at random.
- Nearest Match (eq. 3): from epoch n on, sim(a, i) = max over frames l of sim(a, i_l); before
  epoch n, a random frame. Two readings of eq. 3, `nearest_rule`:
  - `pairwise` (eq. 3 as written, the default): the max is taken for every (audio, clip) pair of
    the batch, so the frame a clip shows depends on the audio it is compared with;
  - `per_clip`: each clip's frame is the argmax for its own audio, and every audio of the batch
    is compared with that one frame (the negatives see the positive's frame).
- Multiframe Match (eq. 4): sim(a, i) = cos(flatten(a_all), flatten(i_all)), the L raw segment
  embeddings and the L frame embeddings each flattened to L*D. Eq. 4 is defined on the
  embeddings themselves, so segments are not normalised one by one: a segment's weight in the
  score is its share of the flattened norm. Training and evaluation both call
  `multiframe_similarity` (evaluation used to normalise each segment first).

All return a (B, B) cosine similarity matrix (row = audio, column = clip) for the losses in
`losses.contrastive`. Frame embeddings are (B, L, D); random choices come from a passed
torch.Generator, so a seeded run repeats exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_frame_similarity(audio: torch.Tensor, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """audio (B, D), frames (B, L, D): one random frame per clip, then cosine."""
    _check(audio, frames)
    pick = torch.randint(frames.shape[1], (frames.shape[0],), generator=generator, device="cpu").to(frames.device)
    chosen = frames[torch.arange(frames.shape[0], device=frames.device), pick]
    return F.normalize(audio, dim=-1) @ F.normalize(chosen, dim=-1).T


NEAREST_RULES = ("pairwise", "per_clip")


def eval_frame_index(num_frames: int) -> int:
    """VIP-ANT's evaluation frame, `int(np.ceil(len(images) / 2)) - 1`: frame 1 of 4 (3.3 s), 0 of 1."""
    return math.ceil(num_frames / 2) - 1


def single_frame_similarity(audio: torch.Tensor, frames: torch.Tensor, index: int) -> torch.Tensor:
    """audio (B, D), frames (B, L, D): cosine with each clip's frame `index`."""
    _check(audio, frames)
    return F.normalize(audio, dim=-1) @ F.normalize(frames[:, index], dim=-1).T


def max_frame_similarity(audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 3 as written: for every (audio, clip) pair, the max over the clip's frames of the cosine."""
    _check(audio, frames)
    per_frame = torch.einsum("ad,bld->abl", F.normalize(audio, dim=-1), F.normalize(frames, dim=-1))
    return per_frame.max(dim=2).values


def own_nearest_frame_similarity(audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Per clip: the frame nearest to the clip's own audio (row b of `audio` is clip b's), chosen
    without gradient, then every audio against that frame."""
    _check(audio, frames)
    a, f = F.normalize(audio, dim=-1), F.normalize(frames, dim=-1)
    with torch.no_grad():
        pick = torch.einsum("bd,bld->bl", a, f).argmax(dim=1)
    return a @ f[torch.arange(f.shape[0], device=f.device), pick].T


def nearest_match_similarity(audio: torch.Tensor, frames: torch.Tensor, epoch: int, start_epoch: int,
                             generator: torch.Generator, rule: str = "pairwise") -> torch.Tensor:
    """Eq. 3 from epoch `start_epoch` on (`rule`: pairwise | per_clip, see the module doc), before it a random frame."""
    if epoch < start_epoch:
        return random_frame_similarity(audio, frames, generator)
    if rule == "pairwise":
        return max_frame_similarity(audio, frames)
    if rule == "per_clip":
        return own_nearest_frame_similarity(audio, frames)
    raise ValueError(f"nearest rule must be one of {NEAREST_RULES}, got {rule!r}")


def multiframe_similarity(audio_segments: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 4: raw audio segments (Na, L, D) and frames (Nv, L, D), each flattened to L*D, compared by cosine."""
    if audio_segments.shape[1:] != frames.shape[1:] or frames.ndim != 3:
        raise ValueError(f"audio segments {tuple(audio_segments.shape)} and frames {tuple(frames.shape)} "
                         "must both be (N, L, D) with the same L and D")
    a = F.normalize(audio_segments.flatten(1), dim=-1)
    i = F.normalize(frames.flatten(1), dim=-1)
    return a @ i.T


def _check(audio: torch.Tensor, frames: torch.Tensor) -> None:
    if audio.ndim != 2 or frames.ndim != 3 or audio.shape[0] != frames.shape[0] or audio.shape[1] != frames.shape[2]:
        raise ValueError(f"need audio (B, D) and frames (B, L, D), got {tuple(audio.shape)} and {tuple(frames.shape)}")
